"""The jobs the service schedules, and the record of every run.

APScheduler persists a job as a ``module:function`` reference plus picklable arguments, so every job
is :func:`run` with the job's name: it opens the application afresh for that run (its own store and
crawl-state connections, in the scheduler's worker thread), does one pass, and records when it ran
and what came of it in ``$LINEAGE_HOME/service.sqlite`` (:mod:`lineage.service.runs`).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lineage.service.runs import ServiceRecord
from lineage.settings import Settings

LOG = logging.getLogger("lineage.service")

def _pass_options(settings: Settings) -> dict[str, Any]:
    """What every service pass crawls and for how long: the models the fingerprint reads
    (``LINEAGE_CRAWL_PIPELINE_TAGS``), at most ``LINEAGE_PASS_MINUTES`` of claiming (the rest stays queued)."""
    return {"pipeline_tags": settings.crawl_pipeline_tags,
            "budget_s": settings.pass_minutes * 60 if settings.pass_minutes else None}


def _crawl(settings: Settings, sweep: bool) -> dict[str, Any]:
    from lineage.app import open_app

    # every writing job holds the home's writer lock (lineage.writer), across processes: two jobs of
    # this service take turns, and so do a job and a `lineage index add` from another shell
    with open_app(settings, writer="service job " + ("sweep" if sweep else "crawl")) as app:
        crawler = app.crawler(progress=False, sweep=sweep, **_pass_options(settings))
        return app.crawl(crawler).as_dict()


def crawl_pass(settings: Settings) -> dict[str, Any]:
    """One crawl pass of ``LINEAGE_HUB_ENDPOINT``: new and changed models into the graph."""
    return _crawl(settings, sweep=False)


def sweep(settings: Settings) -> dict[str, Any]:
    """A pass that also lists every model once (private repos made public with old dates)."""
    return _crawl(settings, sweep=True)


def cards(settings: Settings) -> dict[str, Any]:
    """Re-read the metadata of the last two weeks' models (licences, declared bases and gating change
    after publication), then process what that queued."""
    from lineage.app import open_app

    with open_app(settings, writer="service job cards") as app:
        crawler = app.crawler(progress=False, **_pass_options(settings))
        found = crawler.recheck()
        summary = app.crawl(crawler) if found["new_commit"] or found["opened"] else None
        return {**found, "pass": summary.as_dict() if summary else None}


def rematch(settings: Settings) -> dict[str, Any]:
    """When a base family joined the index, place again the models that have no detected parent."""
    from lineage.app import open_app

    with open_app(settings, writer="service job rematch") as app:
        return app.rematch(app.crawler(progress=False))


def relations(settings: Settings) -> dict[str, Any]:
    """Type the detected edges placed since the last pass from both ends' weights (ranged reads)."""
    from lineage.app import open_app

    with open_app(settings, writer="service job relations") as app:
        return app.type_edges(app.crawler(progress=False), limit=200)


def alerts(settings: Settings) -> dict[str, Any]:
    """Evaluate findings from the graph and deliver what changed to every subscription."""
    from lineage.app import open_app

    with open_app(settings) as app:
        findings, sync = app.evaluate_alerts()
        report = app.deliver_alerts()
        counts = app.alert_state().open_counts()
    return {"findings": sum(counts.values()), "evaluated": len(findings), "sync": vars(sync), **report.as_dict()}


@dataclass(frozen=True)
class JobSpec:
    """A job: its function, its default interval in minutes, and whether it writes the graph (writers run
    one at a time on their own executor; a reader never waits behind them)."""

    func: Callable[[Settings], dict[str, Any]]
    minutes: float
    help: str
    writes: bool = True
    at_start: bool = True
    """Run when the service first schedules it (else after one interval)."""

    @property
    def executor(self) -> str:
        """The scheduler's executor the job runs on (``lineage.service.scheduler.scheduler``)."""
        return "writers" if self.writes else "readers"


JOBS: dict[str, JobSpec] = {
    "crawl": JobSpec(crawl_pass, 15.0, "crawl pass: new and changed models"),
    "sweep": JobSpec(sweep, 24 * 60.0, "full listing once a day"),
    "cards": JobSpec(cards, 6 * 60.0, "re-read recent models' cards and gating"),
    "rematch": JobSpec(rematch, 30.0, "place unmatched models again when a base family joins the index"),
    "relations": JobSpec(relations, 30.0, "type new detected edges from the weights", at_start=False),
    "alerts": JobSpec(alerts, 10.0, "evaluate findings and deliver alerts", writes=False),
}


def run(name: str) -> None:
    """Run job ``name`` once and record it (the function every scheduled job points at)."""
    settings = Settings.from_env()
    with ServiceRecord(settings.home) as record:
        run_id = record.start_run(name)
        outcome, summary = "ok", None
        try:
            summary = JOBS[name].func(settings)
            LOG.info("%s: %s", name, json.dumps(summary, default=str)[:500])
        except Exception as e:  # a failed pass is recorded and logged; the next one runs as scheduled
            outcome, summary = "failed", {"error": f"{type(e).__name__}: {e}"}
            LOG.error("%s failed: %s\n%s", name, e, traceback.format_exc(limit=5))
        finally:
            record.finish_run(run_id, outcome, summary)
