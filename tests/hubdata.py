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
