"""``lineage crawl``, ``lineage hubsim``: the commands that talk to a Hub (or serve a stand-in of one)."""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click

from lineage.cli.output import emit_json, fmt_bytes, handle_errors, output_options
from lineage.errors import LineageError


def parse_since(value: str | None) -> datetime | None:
    """``7d``, ``24h``, ``90m`` (ago) or an ISO date/time (UTC when no zone)."""
    if not value:
        return None
    m = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]
        return datetime.now(timezone.utc) - delta
    try:
        d = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: use 7d / 24h / 90m or an ISO date like 2026-11-01") from e
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


@click.command()
@click.option("--endpoint", default=None, help="Hub URL (default $LINEAGE_HUB_ENDPOINT, https://huggingface.co).")
@click.option("--since", default=None, help="First run only: list back to this date or age (7d, 24h, 2026-11-01). "
              "Default: everything (use it on the real Hub).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Process at most N models in this pass.")
@click.option("--once", is_flag=True, hidden=True, help="Accepted for older scripts: every crawl is one pass.")
@click.option("--interval", type=float, default=None, hidden=True,
              help="Gone: passes every N minutes are lineage service run --crawl-minutes N.")
@click.option("--sweep", is_flag=True, help="Also list every model once (finds private repos made public).")
@click.option("--pipeline-tag", "pipeline_tags", multiple=True, help="Keep only this pipeline tag (repeatable).")
@click.option("--library", "libraries", multiple=True, help="Keep only this library, e.g. transformers (repeatable).")
@click.option("--min-params", type=click.IntRange(0), default=None, help="Skip models with fewer parameters.")
@click.option("--max-params", type=click.IntRange(0), default=None, help="Skip models with more parameters.")
@click.option("--author", "allow_authors", multiple=True, help="Only these authors (repeatable).")
@click.option("--exclude-author", "deny_authors", multiple=True, help="Never these authors (repeatable).")
@output_options
@handle_errors
def crawl(endpoint: str | None, since: str | None, limit: int | None, once: bool, interval: float | None, sweep: bool,
          pipeline_tags: tuple[str, ...], libraries: tuple[str, ...], min_params: int | None, max_params: int | None,
          allow_authors: tuple[str, ...], deny_authors: tuple[str, ...], as_json: bool) -> None:
    """One pass: find new and changed models on the Hub, fingerprint them by ranged reads, place them.

    State (watermarks, queue, results) lives in $LINEAGE_HOME/crawl; an interrupted crawl resumes. A pass
    holds the home's writer lock: beside a running service (or another crawl) it waits its turn
    (LINEAGE_WRITER_WAIT). For a pass every N minutes, unattended, run lineage service run.

    Example:

        lineage crawl --since 24h --pipeline-tag text-generation
    """
    from lineage.app import open_app

    if interval is not None:
        raise LineageError("lineage crawl does one pass; for a pass every N minutes run "
                           "lineage service run --crawl-minutes N (one scheduler per home)")
    with open_app(writer="lineage crawl") as app:
        c = app.crawler(endpoint, progress=not as_json, since=parse_since(since), sweep=sweep,
                        pipeline_tags=pipeline_tags, libraries=libraries, min_params=min_params, max_params=max_params,
                        allow_authors=allow_authors, deny_authors=deny_authors)
        try:
            doc = app.crawl(c, limit).as_dict()
        except KeyboardInterrupt:
            click.echo("stopped; the next run resumes from the saved state", err=True)
            raise SystemExit(130) from None
    if as_json:
        emit_json(doc)
    else:
        print_summary(doc)


def print_summary(doc: dict[str, Any]) -> None:
    click.echo(f"discovered {doc['discovered']} new model commits; processed {doc['processed']} "
               f"in {doc['seconds']:.1f} s ({doc['models_per_minute'] or 0:.0f} models/min); {doc['pending']} still queued")
    if doc["statuses"]:
        click.echo("  " + ", ".join(f"{k} {v}" for k, v in sorted(doc["statuses"].items())))
    if doc["filtered"]:
        click.echo("  skipped by filter: " + ", ".join(f"{k} {v}" for k, v in sorted(doc["filtered"].items())))
    if doc["checkpoint_bytes"]:
        click.echo(f"  read {fmt_bytes(doc['bytes_read'])} of {fmt_bytes(doc['checkpoint_bytes'])} of checkpoints "
                   f"({100 * doc['bytes_share']:.1f}%)")


@click.command()
@click.argument("zoo", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="API port (0: any free port).")
@click.option("--gated", multiple=True, help="Serve this repo id as gated (repeatable).")
@click.option("--accept-token", "tokens", multiple=True, help="A token whose account accepted gated terms.")
@handle_errors
def hubsim(zoo: str, port: int, gated: tuple[str, ...], tokens: tuple[str, ...]) -> None:
    """Serve a model zoo through the loopback Hub stand-in until Ctrl-C (for trying lineage crawl).

    ZOO is a built zoo: lineage demo builds the tiny one into the zoo cache,
    ~/.cache/model-lineage/zoo/tiny-<key> (or $LINEAGE_ZOO_CACHE/tiny-<key>).

    Example:

    \b
        lineage hubsim ~/.cache/model-lineage/zoo/tiny-* --port 8765 &
        lineage crawl --endpoint http://127.0.0.1:8765
    """
    from hubsim import HubSim
    from lineage.zoohub import populate
    from zoo.manifest import read_manifest

    read_manifest(zoo)  # a directory that is not a zoo fails here, before anything listens
    with ExitStack() as stack:
        try:
            hub = stack.enter_context(HubSim(port=port, accepted_tokens=frozenset(tokens)))
        except OSError as e:
            raise LineageError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from e
        repos = populate(hub, Path(zoo), gated=gated)
        click.echo(f"serving {len(repos)} repos at {hub.endpoint} (CDN {hub.cdn}); Ctrl-C to stop", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


COMMANDS = (crawl, hubsim)
