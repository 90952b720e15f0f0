"""lineage alerts list|show|ack|mute|unmute|test|deliver|dead, over a small graph in a real home."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord
from graph.sqlite import SqliteStore
from lineage.cli import main

T = 1_700_000_000_000


def run(home: Path, *args: str) -> Any:
    r = CliRunner().invoke(main, ["alerts", *args], env={"LINEAGE_HOME": str(home)})
    return r


def graph(home: Path, license: str = "apache-2.0") -> None:
    s = SqliteStore(home / "graph.sqlite")
    s.ensure_schema()
    s.upsert_models([ModelRecord(key="b", id="meta/base", license="llama2"), ModelRecord(key="f", id="frank/moe",
                     license=license), ModelRecord(key="j", id="judy/lora", license="llama2")], T)
    s.upsert_families([FamilyRecord("base", "b", "base", "llama2")], T)
    s.set_families([InFamily("b", "base", "root"), InFamily("f", "base", "matched"), InFamily("j", "base", "matched")], T)
    s.upsert_derived([DerivedEdge("f", "b", 0.98, 30.0), DerivedEdge("j", "b", 0.97, 28.0)], T)
    s.upsert_declared([DeclaredEdge("f", "b", "finetune", "model_card")], T)
    s.close()


def test_the_alerts_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    graph(home)
    out = tmp_path / "alerts.jsonl"
    (home / "alerts.json").write_text(json.dumps({"subscriptions": [{"name": "log", "sink": "jsonl", "path": str(out)}]}))
    r = run(home, "deliver", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["by_kind"] == {"license_conflict": 1, "undeclared_base": 1} and doc["subscriptions"] == {"log": {"sent": 2}}
    assert len(out.read_text().splitlines()) == 2
    rows = json.loads(run(home, "list", "--kind", "license_conflict", "--json").stdout)["findings"]
    assert [x["model_id"] for x in rows] == ["frank/moe"]
    assert json.loads(run(home, "list", "--model", "judy/lora", "--json").stdout)["findings"][0]["kind"] == "undeclared_base"
    key = rows[0]["dedup_key"]
    shown = json.loads(run(home, "show", key[:8], "--json").stdout)
    assert shown["evidence"]["rule"] == "llama-2" and [e["type"] for e in shown["events"]] == ["opened"]
    assert run(home, "ack", key[:8]).exit_code == 0
    assert json.loads(run(home, "list", "--json").stdout)["findings"][0]["acked"]
    assert run(home, "mute", "--org", "judy").exit_code == 0
    assert next(x for x in json.loads(run(home, "list", "--json").stdout)["findings"] if x["model_id"] == "judy/lora")["muted"]
    assert run(home, "unmute", "--org", "judy").exit_code == 0
    r = run(home, "test", "log", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sent"] is True
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "lineage.finding.test"
    graph(home, license="llama2")  # frank fixes its card
    doc = json.loads(run(home, "deliver", "--json").stdout)
    assert doc["sync"]["resolved"] == 1 and doc["subscriptions"] == {"log": {"sent": 1}}
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "lineage.finding.resolved"
    assert json.loads(run(home, "dead", "--json").stdout) == {"dead": []}
    human = run(home, "list", "--status", "all")
    assert human.exit_code == 0 and "frank/moe" in human.output and "license_conflict" in human.output


def test_errors_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for args in (["show", "nosuchkey"], ["test", "nobody"], ["mute"]):
        r = run(home, *args)
        assert r.exit_code == 2 and r.output.count("\n") <= 4 and "Traceback" not in r.output, (args, r.output)
    (home / "alerts.json").write_text('{"subscriptions": [{"name": "x", "sink": "webhook"}]}')
    r = run(home, "test", "x")
    assert r.exit_code == 2 and r.output.startswith("Error: ") and "needs url" in r.output and r.output.count("\n") == 1


def test_alerts_test_sends_one_test_event_even_to_a_new_subscription(tmp_path: Path) -> None:
    # a subscription's first delivery starts with every open finding: `alerts test` used to be that
    # delivery (42 findings on the demo), and a bad URL sent them all to the dead letters
    home = tmp_path / "home"
    home.mkdir()
    graph(home)
    out = tmp_path / "new.jsonl"
    (home / "alerts.json").write_text(json.dumps({"subscriptions": [
        {"name": "old", "sink": "jsonl", "path": str(tmp_path / "old.jsonl")},
        {"name": "new", "sink": "jsonl", "path": str(out)}]}))
    assert run(home, "deliver", "--json").exit_code == 0  # two open findings, delivered to both
    out.unlink()
    (home / "alerts.json").write_text(json.dumps({"subscriptions": [
        {"name": "old", "sink": "jsonl", "path": str(tmp_path / "old.jsonl")},
        {"name": "fresh", "sink": "jsonl", "path": str(out)}]}))
    r = run(home, "test", "fresh")
    assert r.exit_code == 0 and "accepted by its jsonl sink" in r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["lineage.finding.test"] and lines[0]["data"]["test"] is True
    # the test event is not in the outbox: the next delivery sends "fresh" its start, "old" nothing new
    doc = json.loads(run(home, "deliver", "--json").stdout)
    assert doc["subscriptions"] == {"fresh": {"sent": 2}}
    # a sink that refuses: one error line with its answer, exit 2, nothing dead-lettered
    (home / "alerts.json").write_text(json.dumps({"subscriptions": [
        {"name": "hook", "sink": "webhook", "url": "http://127.0.0.1:9/x"}]}))
    r = run(home, "test", "hook")
    assert r.exit_code == 2 and r.output.startswith("Error: hook: ") and "configuration error" in r.output
    assert json.loads(run(home, "dead", "--json").stdout) == {"dead": []}


def test_dead_letters_can_be_retried_and_a_fixed_subscription_re_arms_them(tmp_path: Path) -> None:
    # dead letters were final: after fixing alerts.json nothing was ever re-sent
    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(400)  # this payload refused: the event goes to the dead letters
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        home = tmp_path / "home"
        home.mkdir()
        graph(home)
        conf = home / "alerts.json"
        hook = {"name": "hook", "sink": "webhook", "allow_private": True,
                "url": f"http://127.0.0.1:{server.server_address[1]}/x"}
        conf.write_text(json.dumps({"subscriptions": [hook]}))
        assert json.loads(run(home, "deliver", "--json").stdout)["subscriptions"] == {"hook": {"dead": 2}}
        assert len(json.loads(run(home, "dead", "--json").stdout)["dead"]) == 2
        # retry puts them back; with the same configuration they die again
        assert json.loads(run(home, "retry", "hook", "--json").stdout) == {"subscription": "hook", "rearmed": 2}
        assert json.loads(run(home, "deliver", "--json").stdout)["subscriptions"] == {"hook": {"dead": 2}}
        assert run(home, "retry").exit_code == 2  # neither a subscription nor --all
        # the subscription fixed (same name, another sink): its dead letters are re-armed and sent
        out = tmp_path / "hook.jsonl"
        conf.write_text(json.dumps({"subscriptions": [{"name": "hook", "sink": "jsonl", "path": str(out)}]}))
        doc = json.loads(run(home, "deliver", "--json").stdout)
        assert doc["subscriptions"] == {"hook": {"sent": 2}} and len(out.read_text().splitlines()) == 2
        assert json.loads(run(home, "dead", "--json").stdout) == {"dead": []}
        # and an unchanged configuration re-arms nothing
        assert json.loads(run(home, "deliver", "--json").stdout)["subscriptions"] == {}
        assert json.loads(run(home, "retry", "--all", "--json").stdout)["rearmed"] == 0
    finally:
        server.shutdown()
