"""lineage.check: the provenance gate's exit codes, policy, override log and cache, through the CLI and the stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubsim import HubSim
from lineage.check import LicenceRules, Policy, PolicyError, apply_policy


def _check(args: list[str], home: Path, hub: HubSim) -> tuple[int, dict]:
    from lineage.cli import main

    r = CliRunner().invoke(main, ["check", *args, "--endpoint", hub.endpoint, "--json"], env={"LINEAGE_HOME": str(home)})
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"output": r.output})


def test_every_exit_code_override_log_and_cache(hub: HubSim, tmp_path: Path) -> None:
    from lineage.cli import main

    r = CliRunner().invoke(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint],
                           env={"LINEAGE_HOME": str(tmp_path)})
    assert r.exit_code == 0, r.output
    code, doc = _check(["alice/ft"], tmp_path, hub)  # derived, and its card declares org/base: the weights confirm it
    assert (code, doc["outcome"], doc["evidence"]["family"]) == (0, "verified", "base"), doc
    code, doc = _check(["bob/ft2"], tmp_path, hub)  # derived from org/base, but the card declares nothing
    assert (code, doc["outcome"], doc["cached"]) == (10, "family", False), doc
    served = hub.served("bob/ft2")
    code, doc = _check(["bob/ft2"], tmp_path, hub)
    assert (code, doc["cached"]) == (10, True) and hub.served("bob/ft2") == served  # no weight read again
    code, doc = _check(["carol/other"], tmp_path, hub)  # unrelated to every indexed base
    assert (code, doc["outcome"]) == (20, "inconclusive") and doc["warnings"], doc

    policy = tmp_path / "policy.toml"
    policy.write_text('[provenance]\nrequire_declared_base = true\nunknown = "fail"\n')
    code, doc = _check(["carol/other", "--policy", str(policy)], tmp_path, hub)
    assert (code, doc["outcome"]) == (30, "violation") and "unknown provenance" in doc["reasons"][0]
    code, doc = _check(["bob/ft2", "--policy", str(policy)], tmp_path, hub)
    assert (code, doc["outcome"]) == (30, "violation") and "declares no base" in doc["reasons"][0]
    code, doc = _check(["bob/ft2", "--policy", str(policy), "--override", "reviewed by legal, ticket 7"], tmp_path, hub)
    assert code == 0 and doc["outcome"] == "violation" and doc["override"]["reason"] == "reviewed by legal, ticket 7"
    log = [json.loads(x) for x in (tmp_path / "check" / "overrides.jsonl").read_text().splitlines()]
    assert [(x["model"], x["outcome"], x["reason"]) for x in log] == [("bob/ft2", "violation", "reviewed by legal, ticket 7")]
    assert log[0]["user"] and log[0]["identity"].startswith("hub:bob/ft2@")

    code, doc = _check(["bob/ft2", "--override", "too short"], tmp_path, hub)
    assert code == 2 and "at least 10 characters" in doc["output"]
    code, doc = _check(["not a repo!"], tmp_path, hub)
    assert code == 2 and doc["output"].count("\n") == 1 and "Hub repo id" in doc["output"]
    policy.write_text("[provenance]\nunknown = 'maybe'\n")
    code, doc = _check(["bob/ft2", "--policy", str(policy)], tmp_path, hub)
    assert code == 2 and doc["output"].startswith("Error: policy") and doc["output"].count("\n") == 1


def test_licence_rules_per_family_replace_the_global_ones(tmp_path: Path) -> None:
    ev = {"family": "llama-2", "verdict": "derived", "declared": [], "family_entries": [], "family_license": "llama2"}
    assert apply_policy(ev, Policy())[0] == "family"
    blocked = Policy(LicenceRules(blocked=("llama2",)))
    assert apply_policy(ev, blocked)[0] == "violation"
    allowed_here = Policy(LicenceRules(blocked=("llama2",)), {"llama-2": LicenceRules(warn=("llama2",))})
    outcome, reasons, warnings = apply_policy(ev, allowed_here)
    assert outcome == "family" and not reasons and "needs review" in warnings[0]
    only_permissive = Policy(LicenceRules(allowed=("apache-2.0", "mit")))
    assert "not allowed" in apply_policy(ev, only_permissive)[1][0]
    (tmp_path / "p.toml").write_text('[licenses]\nallowed = ["MIT"]\n[families.llama-2]\nblocked = ["llama2"]\n')
    p = Policy.load(tmp_path / "p.toml")
    assert p.licences.allowed == ("mit",) and p.families["llama-2"].blocked == ("llama2",)
    (tmp_path / "bad.toml").write_text("[licences]\nallowed = 1\n")
    with pytest.raises(PolicyError, match="unknown section"):
        Policy.load(tmp_path / "bad.toml")
