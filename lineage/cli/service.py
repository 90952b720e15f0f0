"""``lineage service run|status|jobs|pause|resume|run-now``: the scheduler that keeps watching the Hub."""

from __future__ import annotations

from typing import Any

import click

from lineage.cli.output import emit_json, handle_errors, output_options, table
from lineage.service.jobs import JOBS


@click.group()
def service() -> None:
    """Scheduled crawl passes, sweeps and alert deliveries, one scheduler per $LINEAGE_HOME.

    Example:

    \b
        lineage service run --alerts-minutes 5
        lineage service status
    """


def _intervals(f: Any) -> Any:
    """One ``--JOB-minutes`` option per job of :data:`JOBS`, defaulting to the job's interval."""
    for name, spec in reversed(JOBS.items()):
        f = click.option(f"--{name}-minutes", f"{name}_minutes", type=click.FloatRange(0.01), default=spec.minutes,
                         show_default=True, help=f"Minutes between runs: {spec.help}.")(f)
    return f


@service.command("run")
@_intervals
@handle_errors
def run(**minutes: float) -> None:
    """Run the scheduler in the foreground (for systemd or a container) until SIGINT/SIGTERM.

    Jobs persist in $LINEAGE_HOME/jobs.sqlite, runs in $LINEAGE_HOME/service.sqlite, logs go to
    $LINEAGE_HOME/service.log and stderr. The Hub is LINEAGE_HUB_ENDPOINT, the token HF_TOKEN; the
    workers are LINEAGE_WORKERS. A job cut short by the last stop runs again at start-up.

    Example:

        lineage service run --crawl-minutes 15
    """
    import logging

    from lineage.service.scheduler import run_service
    from lineage.settings import Settings

    logging.getLogger("lineage").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_service(Settings.from_env(), {k.removesuffix("_minutes"): v for k, v in minutes.items()})


@service.command()
@output_options
@handle_errors
def status(as_json: bool) -> None:
    """Whether a service runs on this home, each job's next run and its last run's outcome.

    Example:

        lineage service status --json
    """
    from lineage.service.scheduler import status as get
    from lineage.settings import Settings

    doc = get(Settings.from_env())
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{doc['home']}: " + (f"running ({doc['holder']})" if doc["running"] else "no service running"))
    rows = []
    for name, j in doc["jobs"].items():
        last = j.get("last") or {}
        rows.append([name, "paused" if j.get("paused") else (j.get("next_run") or "-"), j.get("runs", 0),
                     last.get("outcome", "-")])
    click.echo(table(rows, ["job", "next run", "runs", "last outcome"]))


@service.command()
@output_options
def jobs(as_json: bool) -> None:
    """The jobs a service schedules, with their default intervals.

    Example:

        lineage service jobs
    """
    rows = [{"job": k, "minutes": v.minutes, "what": v.help} for k, v in JOBS.items()]
    if as_json:
        emit_json(rows)
    else:
        click.echo(table([[r["job"], f"{r['minutes']:g}", r["what"]] for r in rows], ["job", "every (min)", "what"]))


def _control(action: str) -> click.Command:
    @click.argument("job", type=click.Choice(list(JOBS)))
    @handle_errors
    def cmd(job: str) -> None:
        from lineage.service.scheduler import control
        from lineage.settings import Settings

        click.echo(f"{action} {job}: {control(Settings.from_env(), action, job)}")

    what = {"pause": "Pause a job (it keeps its place in the store).", "resume": "Resume a paused job.",
            "run-now": "Run a job now (in the running service, or here when none runs)."}[action]
    cmd.__doc__ = f"{what}\n\n    Example:\n\n        lineage service {action} {'crawl' if action != 'run-now' else 'alerts'}\n    "
    return service.command(action)(cmd)


for _a in ("pause", "resume", "run-now"):
    _control(_a)

COMMANDS = (service,)
