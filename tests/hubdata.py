"""Helpers for tests that serve models through the Hub stand-in (the ``models`` and ``hub`` fixtures
live in conftest)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hubsim import HubSim, SimRepo, files_of

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def repo(sim: HubSim, repo_id: str, path: Path, minutes: int, **kw: Any) -> SimRepo:
    t = T0 + timedelta(minutes=minutes)
    return sim.add(SimRepo(repo_id, files_of(path), created_at=t, last_modified=t, **kw))


def with_card(src: Path, dst: Path, card: str) -> Path:
    """A copy of the model directory ``src`` at ``dst`` whose README front matter is ``card``."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    (dst / "README.md").write_text(f"---\n{card}\n---\n")
    return dst


def dump_graph(home: Path) -> dict[str, Any]:
    """The embedded graph of ``home`` without timestamps: what two crawls are compared on."""
    from graph.sqlite import SqliteStore

    s = SqliteStore(home / "graph.sqlite")
    d = s.dump()
    s.close()
    return {k: [{a: b for a, b in r.items() if not a.endswith("_ms")} for r in v] for k, v in d.items()}
