"""Fill a :class:`HubSim` from a model-zoo manifest (``bench.zoo`` writes one).

Each zoo model becomes a public repo under its manifest ``id``, created one minute after the previous
one, in manifest order (parents before children). Two cases the zoo has no model for are added, as the
Hub has them: exact re-uploads (a copy of a derivative's files under another name, no card) and a gated
base (``gated: "manual"``: metadata readable, files 401).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from crawler.hubsim.repos import SimRepo, files_of
from crawler.hubsim.server import HubSim

EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)


def read_manifest(zoo: Path) -> list[dict[str, Any]]:
    """The ``models`` list of ``zoo/manifest.json``; entries are validated where they are used."""
    try:
        data = json.loads((zoo / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{zoo} has no readable manifest.json ({e}); build a zoo with "
                                "`python -m bench.zoo build`") from e
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ValueError(f"{zoo / 'manifest.json'} has no 'models' list")
    return models


def populate(sim: HubSim, zoo: Path, start: datetime = EPOCH, copies: int = 2,
             gated: tuple[str, ...] = ()) -> list[SimRepo]:
    """Add every zoo model (and ``copies`` exact re-uploads) to ``sim``; return the repos in order.

    ``gated`` names manifest ids to serve as gated (their weights cannot be read anonymously).
    """
    out: list[SimRepo] = []
    t = start
    models = read_manifest(zoo)
    for m in models:
        repo_id, path = str(m["id"]), zoo / str(m["path"])
        if "/" not in repo_id or not path.is_dir():
            raise ValueError(f"manifest entry {m.get('name')!r}: bad id {repo_id!r} or missing directory {path}")
        t += timedelta(minutes=1)
        out.append(sim.add(SimRepo(repo_id, files_of(path), created_at=t, last_modified=t,
                                   gated="manual" if repo_id in gated else False)))
    # exact re-uploads of the first derivatives: same weight bytes, no card (a "mirror" account)
    derived = [m for m in models if m.get("parents") and m.get("format", "hf") == "hf"][:copies]
    for m in derived:
        t += timedelta(minutes=1)
        files = {k: v for k, v in files_of(zoo / str(m["path"])).items() if k != "README.md"}
        out.append(sim.add(SimRepo(f"mirror/{str(m['id']).split('/')[1]}", files, created_at=t, last_modified=t)))
    return out
