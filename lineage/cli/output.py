"""Shared CLI plumbing: ``--json`` output, one-line errors, logging from ``-v``."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def output_options(f: F) -> F:
    """Add ``--json`` (one JSON document on stdout, no progress bars) to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(f)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def existing_parent(output: Path) -> Path:
    """Refuse an output file whose directory does not exist, before any long work, and never create it
    (a typo in ``-o`` is not a new directory tree)."""
    if not output.parent.is_dir():
        raise click.UsageError(f"{output.parent} is not a directory")
    return output


def handle_errors(f: F) -> F:
    """Turn the packages' errors into one line on stderr and exit status 2 (traceback with -v)."""
    from alerts.errors import AlertsError
    from crawler.errors import CrawlerError
    from fingerprint.errors import FingerprintError
    from graph.errors import GraphError
    from lineage.errors import LineageError
    from zoo.manifest import ManifestError

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except BrokenPipeError:
            # the reader went away (``lineage family x | head``): stop quietly, as shell tools do on SIGPIPE;
            # stdout goes to /dev/null so the interpreter's final flush does not complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except (FingerprintError, GraphError, CrawlerError, LineageError, AlertsError, ManifestError, OSError) as e:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
