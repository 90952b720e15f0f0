"""The ``lineage`` command line: a group of thin commands (parse → one call into :mod:`lineage.app` → render)."""

from __future__ import annotations

import click

from lineage import __version__
from lineage.cli import alerts, check, demo, graph, hub, index, logs, models, picture, service, web


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lineage")
@click.option("-v", "--verbose", count=True, help="-v for info logs, -vv for debug (and tracebacks).")
def main(verbose: int) -> None:
    """Model lineage: is a model derived from a known base, and does its licence say so?

    Example:

    \b
        lineage demo                      # the whole loop, offline
        lineage inspect ./my-model --json
    """
    logs.configure(verbose)


for _cmd in (demo.demo, *models.COMMANDS, hub.crawl, hub.hubsim, *index.COMMANDS, *graph.COMMANDS, *alerts.COMMANDS,
             *service.COMMANDS, web.web, picture.picture, *check.COMMANDS):
    main.add_command(_cmd)
