"""``lineage check``: a provenance gate with graded exit codes for pipelines that pull models."""

from __future__ import annotations

import sys

import click

from lineage.cli.output import emit_json, handle_errors, output_options


@click.command()
@click.argument("model")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A policy file (TOML): licences allowed / warned / blocked, per family or for all, a required "
                   "declared base, unknown provenance fail-closed or not. Default: refuse nothing.")
@click.option("--override", default=None,
              help="Pass a refused model anyway; the reason (at least 10 characters) is appended with user and time "
                   "to $LINEAGE_HOME/check/overrides.jsonl.")
@click.option("--endpoint", default=None, help="Hub to read a REPO_ID from (default $LINEAGE_HUB_ENDPOINT).")
@output_options
@handle_errors
def check(model: str, policy: str | None, override: str | None, endpoint: str | None, as_json: bool) -> None:
    """Gate MODEL (a checkpoint directory, .gguf, .lfp or Hub REPO_ID) on its lineage and a policy.

    Exit codes: 0 verified (derived from an indexed family, and this exact variant is known: its
    fingerprint is indexed or its card declares a base the weights confirm); 10 family only (derived, the
    exact variant not verified); 20 inconclusive (unknown provenance); 30 policy violation; 2 error.
    Evidence is cached by commit sha (Hub) or file sizes and times (local) and the index's state.

    Example:

    \b
        lineage check org/new-model --policy policy.toml
        lineage check ./downloaded-model --json
        lineage check org/new-model --override "legal approved in TICKET-123"
    """
    from lineage.app import check_target

    if override is not None and len(override.strip()) < 10:
        raise click.UsageError("--override needs a reason of at least 10 characters (it is logged)")
    r = check_target(model, policy, endpoint, override)
    if as_json:
        emit_json(r)
    else:
        ev = r["evidence"]
        fam = f"family {ev['family']} (licence {ev.get('family_license') or '?'}), verdict {ev['verdict']}, " \
              f"score {ev['score']}" if ev.get("family") else "no indexed family matched"
        exact = f"; this exact variant is indexed as {ev['base']}" if ev.get("exact_entry") else ""
        click.echo(f"{r['model']}: {r['outcome']} (exit {r['exit_code']}): {fam}{exact}" + (" [cached]" if r["cached"] else ""))
        for line in r["reasons"]:
            click.echo(f"  refused: {line}")
        for line in r["warnings"]:
            click.echo(f"  warning: {line}")
        if "override" in r:
            click.echo(f"  overridden by {r['override']['user']}: {r['override']['reason']}")
    sys.exit(r["exit_code"])


COMMANDS = [check]
