"""``lineage alerts list|show|ack|mute|unmute|test|deliver|dead``: suspected unlicensed derivatives."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import click

from lineage.cli.output import emit_json, handle_errors, output_options, table


@click.group()
def alerts() -> None:
    """Findings on suspected unlicensed derivatives, and their delivery (webhook, Slack, e-mail, JSONL).

    Subscriptions live in $LINEAGE_HOME/alerts.json (docs/alerts.md).

    Example:

    \b
        lineage alerts deliver             # evaluate the graph, send what changed to every subscription
        lineage alerts list --kind license_conflict
    """


def _scope(model: str | None, org: str | None, family: str | None, kind: str | None) -> tuple[str, str]:
    from alerts.outbox import MUTE_SCOPES

    given = [(s, v) for s, v in zip(MUTE_SCOPES, (model, org, family, kind)) if v]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --model, --org, --family, --kind")
    return given[0]


def _scope_options(f: Any) -> Any:
    for name, help in (("--kind", "A finding kind."), ("--family", "A family name."),
                       ("--org", "An organisation (the id's namespace)."), ("--model", "A model id.")):
        f = click.option(name, default=None, help=help)(f)
    return f


def _set_mute(scope: str, value: str, on: bool, as_json: bool) -> None:
    from lineage.app import open_alerts

    with closing(open_alerts()) as state:
        state.mute(scope, value, on=on)
        mutes = state.mutes()
    if as_json:
        emit_json({"mutes": [{"scope": s, "value": v} for s, v in mutes]})
    else:
        click.echo(f"{'muted' if on else 'unmuted'} {scope} {value}")


@alerts.command("list")
@click.option("--status", type=click.Choice(["open", "resolved", "all"]), default="open", show_default=True)
@click.option("--kind", default=None, help="Only this kind (license_conflict, undeclared_base, ...).")
@click.option("--family", default=None, help="Only this family.")
@click.option("--model", default=None, help="Only this model id.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@output_options
@handle_errors
def list_(status: str, kind: str | None, family: str | None, model: str | None, limit: int, as_json: bool) -> None:
    """Findings as last evaluated (run lineage alerts deliver to re-evaluate the graph).

    Example:

        lineage alerts list --kind license_conflict --family llama-2
    """
    from lineage.app import open_alerts

    with closing(open_alerts()) as state:
        rows = state.findings(status=status, kind=kind, family=family, model=model, limit=limit)
    if as_json:
        emit_json({"findings": rows})
        return
    if not rows:
        click.echo(f"No {status if status != 'all' else ''} findings.".replace("  ", " "))
        return
    click.echo(table([[r["dedup_key"][:10], r["severity"], r["kind"], r["model_id"], r["base_id"] or "-", r["license"],
                       ("muted " if r["muted"] else "") + ("acked" if r["acked"] else "")] for r in rows],
                     ["key", "severity", "kind", "model", "base", "licence", "state"]))


@alerts.command()
@click.argument("key")
@output_options
@handle_errors
def show(key: str, as_json: bool) -> None:
    """One finding with its evidence and events (KEY: a unique prefix of its dedup key).

    Example:

        lineage alerts show 3f9a1c
    """
    from lineage.app import open_alerts

    with closing(open_alerts()) as state:
        f = state.finding(key)
    if as_json:
        emit_json(f)
        return
    click.echo(f"{f['severity'].upper()} {f['kind']}: {f['model_id']} ({f['status']})")
    click.echo(f"  reason    {f['reason']}")
    click.echo(f"  base      {f['base_id'] or '-'}   family {f['family'] or '-'}   licence {f['license']}")
    for k, v in sorted(f["evidence"].items()):
        click.echo(f"  {k:9s} {v}")
    click.echo("  events    " + ", ".join(f"{e['type']} {e['id'][:12]}" for e in f["events"]))


@alerts.command()
@click.argument("key")
@output_options
@handle_errors
def ack(key: str, as_json: bool) -> None:
    """Acknowledge a finding: no more "changed" notices for it (a "resolved" one is still sent).

    Example:

        lineage alerts ack 3f9c2a1b        # a dedup key, or a unique prefix of 6+ characters
    """
    from lineage.app import open_alerts

    with closing(open_alerts()) as state:
        full = state.ack(key)
    emit_json({"acknowledged": full}) if as_json else click.echo(f"acknowledged {full}")


@alerts.command()
@_scope_options
@output_options
@handle_errors
def mute(model: str | None, org: str | None, family: str | None, kind: str | None, as_json: bool) -> None:
    """Stop notices for a model, an organisation, a family or a kind (findings are still listed).

    Example:

        lineage alerts mute --org mirror
    """

    scope, value = _scope(model, org, family, kind)
    _set_mute(scope, value, True, as_json)


@alerts.command()
@_scope_options
@output_options
@handle_errors
def unmute(model: str | None, org: str | None, family: str | None, kind: str | None, as_json: bool) -> None:
    """Undo lineage alerts mute.

    Example:

        lineage alerts unmute --org mirror
    """

    scope, value = _scope(model, org, family, kind)
    _set_mute(scope, value, False, as_json)


@alerts.command()
@click.argument("subscription")
@output_options
@handle_errors
def test(subscription: str, as_json: bool) -> None:
    """Send one test event (marked as a test, not a finding) through one subscription of
    $LINEAGE_HOME/alerts.json now, and say what its sink answered. Nothing is queued or marked sent.

    Example:

        lineage alerts test security-webhook
    """
    from alerts.delivery import send_test
    from alerts.errors import SubscriptionError
    from alerts.subscriptions import load
    from lineage.settings import Settings

    s = Settings.from_env()
    subs = [x for x in load(s.home / "alerts.json") if x.name == subscription]
    if not subs:
        raise SubscriptionError(f"no subscription {subscription!r} in {s.home / 'alerts.json'}")
    doc = send_test(subs[0])
    if as_json:
        emit_json(doc)
    elif doc["sent"]:
        click.echo(f"{subscription}: test event {doc['event_id']} accepted by its {subs[0].sink} sink")
    if not doc["sent"]:
        what = ("a configuration error: fix alerts.json" if doc["configuration"] else
                "refused: retrying will not help" if doc["permanent"] else "may pass: try again later")
        click.echo(f"Error: {subscription}: {doc['error']} ({what})", err=True)
        raise SystemExit(2)


@alerts.command()
@click.option("--full", is_flag=True, help="Evaluate every model, not only those changed since the last evaluation.")
@output_options
@handle_errors
def deliver(full: bool, as_json: bool) -> None:
    """Evaluate findings from the graph (the models changed since the last evaluation, or every model
    with --full), then deliver new, changed and resolved ones to every subscription.

    Example:

        lineage alerts deliver --json
    """
    from lineage.app import open_app

    with open_app() as app:
        findings, sync = app.evaluate_alerts(full)
        report = app.deliver_alerts()
        by_kind = app.alert_state().open_counts()
    total = sum(by_kind.values())
    doc = {"findings": total, "evaluated": len(findings), "by_kind": by_kind, "sync": vars(sync), **report.as_dict()}
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{total} open findings (" + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
               + f"); {sync.opened} opened, {sync.changed} changed, {sync.resolved} resolved since the last evaluation")
    for name, counts in report.counts.items():
        click.echo(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for e in report.errors:
        click.echo(f"  {e}", err=True)


@alerts.command()
@click.argument("subscription", required=False)
@click.option("--all", "every", is_flag=True, help="Re-arm the dead letters of every subscription.")
@output_options
@handle_errors
def retry(subscription: str | None, every: bool, as_json: bool) -> None:
    """Put dead letters back in the queue, their attempts reset: the next lineage alerts deliver (or the
    service's alerts job) sends them. A subscription whose configuration changed in alerts.json has its
    dead letters re-armed by itself on the next delivery.

    Example:

    \b
        lineage alerts retry security-webhook
        lineage alerts retry --all
    """
    from lineage.app import open_alerts

    if (subscription is None) == (not every):
        raise click.UsageError("give a SUBSCRIPTION or --all")
    with closing(open_alerts()) as state:
        n = state.retry_dead(subscription)
    if as_json:
        emit_json({"subscription": subscription, "rearmed": n})
    else:
        who = subscription or "every subscription"
        click.echo(f"{who}: {n} dead deliveries back in the queue" + ("; lineage alerts deliver sends them" if n else ""))


@alerts.command()
@output_options
@handle_errors
def dead(as_json: bool) -> None:
    """Deliveries that gave up (a permanent refusal, or too many failures).

    Example:

        lineage alerts dead --json
    """
    from lineage.app import open_alerts

    with closing(open_alerts()) as state:
        rows = state.dead_letters()
    if as_json:
        emit_json({"dead": rows})
    elif not rows:
        click.echo("No dead letters.")
    else:
        click.echo(table([[r["subscription"], r["event_id"], r["type"], r["attempts"], r["error"]] for r in rows],
                         ["subscription", "event", "type", "attempts", "error"]))


COMMANDS = (alerts,)
