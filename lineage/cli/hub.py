"""``lineage crawl``, ``lineage hubsim``, ``lineage index bootstrap``: the commands that talk to a Hub."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import click

from lineage.output import emit_json, fmt_bytes, handle_errors, output_options, table
from lineage.settings import Settings


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


def make_crawler(endpoint: str | None, settings: Settings | None = None, store: Any = None, progress: bool = True,
                 token: str | None = None, **options: Any) -> Any:
    """A :class:`crawler.crawl.Crawler` whose sink is the pipeline into the configured store and index."""
    from crawler.crawl import Crawler, CrawlOptions
    from fingerprint.index import Index
    from lineage.pipeline import Pipeline
    from lineage.store import open_store

    s = settings or Settings.from_env()
    opts = CrawlOptions(endpoint=endpoint or s.hub_endpoint, home=s.home / "crawl",
                        token=token or os.environ.get("HF_TOKEN") or None, **options)
    store = store or open_store(s)
    pipe = Pipeline(store, Index(s.home / "index"))
    c = Crawler(opts, sink=pipe, progress=progress and not s.disable_progress_bars)
    c.pipeline = pipe  # type: ignore[attr-defined]
    return c


def add_from_hub(repo_id: str, family: str | None, endpoint: str | None, settings: Settings | None = None,
                 store: Any = None, token: str | None = None) -> Any:
    """Fingerprint ``repo_id`` from the Hub, index it as a family root and write it to the store."""
    from crawler.records import valid_repo_id
    from fingerprint.index import Index
    from lineage.pipeline import register_base

    if valid_repo_id(repo_id) is None:
        raise click.BadParameter(f"{repo_id!r} is neither an existing path nor a Hub repo id (namespace/name)")
    s = settings or Settings.from_env()
    c = make_crawler(endpoint, s, store=store, progress=False, token=token)
    try:
        out = c.fetch(repo_id)
        index = Index(s.home / "index")
        register_base(c.pipeline.store, index, out.model, str(out.fingerprint), family or repo_id)
        return index.entries[repo_id]
    finally:
        c.close()
        if store is None:
            c.pipeline.store.close()


def catalog() -> list[dict[str, Any]]:
    """The shipped catalog of well-known base families (``lineage/data/catalog.json``)."""
    data = json.loads(resources.files("lineage").joinpath("data/catalog.json").read_text("utf-8"))
    return list(data["families"])


@click.command()
@click.option("--endpoint", default=None, help="Hub URL (default $LINEAGE_HUB_ENDPOINT, https://huggingface.co).")
@click.option("--since", default=None, help="First run only: list back to this date or age (7d, 24h, 2026-11-01). "
              "Default: everything (use it on the real Hub).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Process at most N models per pass.")
@click.option("--once", is_flag=True, help="One pass, then exit (default: a pass every --interval minutes).")
@click.option("--interval", type=click.FloatRange(0.1), default=15.0, show_default=True, help="Minutes between passes.")
@click.option("--sweep", is_flag=True, help="Also list every model once (finds private repos made public).")
@click.option("--pipeline-tag", "pipeline_tags", multiple=True, help="Keep only this pipeline tag (repeatable).")
@click.option("--library", "libraries", multiple=True, help="Keep only this library, e.g. transformers (repeatable).")
@click.option("--min-params", type=click.IntRange(0), default=None, help="Skip models with fewer parameters.")
@click.option("--max-params", type=click.IntRange(0), default=None, help="Skip models with more parameters.")
@click.option("--author", "allow_authors", multiple=True, help="Only these authors (repeatable).")
@click.option("--exclude-author", "deny_authors", multiple=True, help="Never these authors (repeatable).")
@output_options
@handle_errors
def crawl(endpoint: str | None, since: str | None, limit: int | None, once: bool, interval: float, sweep: bool,
          pipeline_tags: tuple[str, ...], libraries: tuple[str, ...], min_params: int | None, max_params: int | None,
          allow_authors: tuple[str, ...], deny_authors: tuple[str, ...], as_json: bool) -> None:
    """Find new and changed models on the Hub, fingerprint them by ranged reads, place them in the graph.

    State (watermarks, queue, results) lives in $LINEAGE_HOME/crawl; an interrupted crawl resumes.

    Example:

        lineage crawl --since 24h --pipeline-tag text-generation --once
    """
    c = make_crawler(endpoint, progress=not as_json, since=parse_since(since), sweep=sweep,
                     pipeline_tags=pipeline_tags, libraries=libraries, min_params=min_params, max_params=max_params,
                     allow_authors=allow_authors, deny_authors=deny_authors)

    def one_pass() -> None:
        s = c.run(limit)
        doc = s.as_dict()
        doc["phases"].update({k: round(v, 3) for k, v in c.pipeline.seconds.items()})
        if as_json:
            emit_json(doc)
        else:
            print_summary(doc)

    try:
        one_pass()
        if not once:
            from apscheduler.schedulers.blocking import BlockingScheduler

            sched = BlockingScheduler(timezone="UTC")
            # one pass at a time; a pass that overruns the interval is not stacked
            sched.add_job(one_pass, "interval", minutes=interval, max_instances=1, coalesce=True)
            click.echo(f"next pass in {interval:g} min (Ctrl-C to stop)", err=True)
            sched.start()
    except KeyboardInterrupt:
        click.echo("stopped; the next run resumes from the saved state", err=True)
    finally:
        c.close()
        c.pipeline.store.close()


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
def hubsim(zoo: str, port: int, gated: tuple[str, ...], tokens: tuple[str, ...]) -> None:
    """Serve a model zoo through the loopback Hub stand-in until Ctrl-C (for trying lineage crawl).

    Example:

        lineage hubsim ~/.lineage/zoo/tiny --port 8765 &
        lineage crawl --endpoint http://127.0.0.1:8765 --once
    """
    from crawler.hubsim import HubSim, populate

    with HubSim(port=port, accepted_tokens=frozenset(tokens)) as hub:
        repos = populate(hub, Path(zoo), gated=gated)
        click.echo(f"serving {len(repos)} repos at {hub.endpoint} (CDN {hub.cdn}); Ctrl-C to stop", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@click.command()
@click.option("--family", "families", multiple=True, help="Only this catalog family (repeatable).")
@click.option("--endpoint", default=None, help="Hub URL (default $LINEAGE_HUB_ENDPOINT).")
@click.option("--list", "list_only", is_flag=True, help="Print the catalog and exit.")
@output_options
@handle_errors
def bootstrap(families: tuple[str, ...], endpoint: str | None, list_only: bool, as_json: bool) -> None:
    """Fingerprint the catalog of well-known base families from the Hub into the index.

    Gated families (Llama, Gemma) need HF_TOKEN for an account that accepted their terms; they are
    reported and skipped otherwise. The catalog is lineage/data/catalog.json.

    Example:

        HF_TOKEN=hf_... lineage index bootstrap --family llama-2 --family mistral
    """
    cat = [f for f in catalog() if not families or f["family"] in families]
    unknown = set(families) - {f["family"] for f in cat}
    if unknown:
        raise click.BadParameter(f"not in the catalog: {', '.join(sorted(unknown))}")
    if list_only:
        rows = [[f["family"], f["license"], "yes" if f["gated"] else "", ", ".join(f["repos"])] for f in cat]
        emit_json(cat) if as_json else click.echo(table(rows, ["family", "license", "gated", "repos"]))
        return
    from crawler.errors import CrawlerError

    done, failed = [], []
    for f in cat:
        for repo in f["repos"]:
            try:
                add_from_hub(repo, f["family"], endpoint)
                done.append(repo)
                if not as_json:
                    click.echo(f"indexed {repo} ({f['family']})", err=True)
            except CrawlerError as e:
                failed.append({"repo": repo, "error": str(e)})
                if not as_json:
                    click.echo(f"skipped {repo}: {e}", err=True)
    if as_json:
        emit_json({"indexed": done, "failed": failed})
    else:
        click.echo(f"{len(done)} bases indexed, {len(failed)} skipped")
