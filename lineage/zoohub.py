"""Serve a built model zoo through the Hub stand-in: the glue between :mod:`zoo` and :mod:`hubsim`.

Each zoo model becomes a public repo under its manifest ``id``, created one minute after the previous
one, in manifest order (parents before children). Two cases the zoo has no model for are added, as the
Hub has them: exact re-uploads (a copy of a derivative's files under another name, no card) and a gated
base (``gated: "manual"``: metadata readable, files 401).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from hubsim import HubSim, SimRepo, files_of
from zoo.manifest import Manifest, ManifestError, read_manifest

EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)


def zoo_repos(manifest: Manifest, start: datetime = EPOCH, copies: int = 2,
              gated: tuple[str, ...] = ()) -> list[SimRepo]:
    """The repos a zoo is served as: every model, then ``copies`` card-less re-uploads of the first
    derivatives under a ``mirror`` account; ``gated`` names manifest ids served as gated."""
    out: list[SimRepo] = []
    t = start
    for m in manifest:
        path = manifest.dir_of(m)
        if "/" not in m.id or not path.is_dir():
            raise ManifestError(f"manifest entry {m.name!r}: bad id {m.id!r} or missing directory {path}")
        t += timedelta(minutes=1)
        out.append(SimRepo(m.id, files_of(path), created_at=t, last_modified=t,
                           gated="manual" if m.id in gated else False))
    for m in [m for m in manifest if m.parents and m.format == "hf"][:copies]:
        t += timedelta(minutes=1)
        files = {k: v for k, v in files_of(manifest.dir_of(m)).items() if k != "README.md"}
        out.append(SimRepo(f"mirror/{m.id.split('/')[1]}", files, created_at=t, last_modified=t))
    return out


def populate(sim: HubSim, zoo: Path, start: datetime = EPOCH, copies: int = 2,
             gated: tuple[str, ...] = ()) -> list[SimRepo]:
    """Add the zoo built in ``zoo`` to ``sim`` (see :func:`zoo_repos`); return the repos in order."""
    return [sim.add(r) for r in zoo_repos(read_manifest(zoo), start, copies, gated)]
