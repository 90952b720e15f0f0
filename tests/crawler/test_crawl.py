"""The crawler against the loopback Hub stand-in, through the real ``huggingface_hub`` client."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hubdata import T0, repo, with_card

from crawler.crawl import Crawler, CrawlOptions
from crawler.errors import HubRequestError, RangeNotHonouredError
from crawler.http import HttpFileSource, HttpRepo, pin_endpoint
from fingerprint.canonical import open_model
from fingerprint.inspect import inspect_model
from fingerprint.sketch import load, sketch_model
from hubsim import Fault, HubSim, files_of

ROOT = Path(__file__).parents[2]


def crawler(sim: HubSim, home: Path, **kw: Any) -> Crawler:
    return Crawler(CrawlOptions(endpoint=sim.endpoint, home=home, attempts=4, **kw), progress=False)


def test_pages_watermarks_gated_and_duplicates(hub: HubSim, tmp_path: Path) -> None:
    c = crawler(hub, tmp_path)
    s = c.run()
    assert s.discovered == 5
    cursors = [p for m, p, st in hub.log if p.startswith("/api/models?") and "cursor=" in p]
    assert len(cursors) >= 4  # 5 repos, 2 per page, two listings
    res = {r["id"]: r for r in c.state.results()}
    assert res["meta/gated"]["status"] == "gated"
    assert res["meta/gated"]["model"]["gated"] == "manual"
    assert hub.served("meta/gated") == 0  # metadata only, not a byte of its files
    # the gated repo's weights are byte-identical to org/base: recorded, no read needed
    assert {r["status"] for n, r in res.items() if n != "meta/gated"} == {"fingerprinted"}
    assert res["alice/ft"]["model"]["base_models"] == ["org/base"]
    assert res["alice/ft"]["model"]["license"] == "llama2"
    # a second pass finds nothing new; a newer repo is found and only it is processed
    assert c.run().discovered == 0
    repo(hub, "dave/copy", tmp_path_copy(hub, "org/base", tmp_path), 10)
    s = c.run()
    assert s.discovered == 1 and s.statuses == {"duplicate": 1}
    assert hub.served("dave/copy") == 0
    assert c.state.results()[-1]["duplicate_of"][1] == "org/base"
    c.close()


def test_a_legacy_base_id_on_a_card_is_declared_under_its_canonical_id(hub: HubSim, models: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """``base_model: gpt2`` on a card: the crawler asks the Hub, follows its 307 to the canonical id and
    declares that base (it used to drop a single-segment id silently)."""
    hub.legacy("base", "org/base")
    repo(hub, "erin/legacy", with_card(models["ft2"], tmp_path / "legacy-card", "base_model: base\nlicense: mit"), 20)
    placed: list[Any] = []
    c = crawler(hub, tmp_path / "home")
    c.run(place=placed.append)
    c.close()
    out = next(o for o in placed if o.model is not None and o.model.id == "erin/legacy")
    assert out.model.base_models == ("org/base",) and out.base_keys == {"org/base": hub.repos["org/base"]._id}
    stored = next(r for r in Crawler(CrawlOptions(endpoint=hub.endpoint, home=tmp_path / "home"), progress=False)
                  .state.results() if r["id"] == "erin/legacy")
    assert stored["model"]["base_models"] == ["org/base"]


def test_a_pull_request_head_is_fingerprinted_at_its_sha(hub: HubSim, models: dict[str, Path], tmp_path: Path) -> None:
    """A PR that replaces the weights: the crawler reads the model at the PR head's sha (metadata, the
    small files through the resolve cache, the weights through the CDN) and fingerprints the PR's weights."""
    from crawler.fetch import fingerprint_repo
    from hubsim import SimFile

    pr = hub.open_pr("org/base", {"model.safetensors": SimFile("model.safetensors", models["ft2"] / "model.safetensors")})
    head = hub.at(hub.repos["org/base"], pr)[1]  # type: ignore[index]
    c = crawler(hub, tmp_path)
    m = c.info("org/base", head)
    out = c.receive(fingerprint_repo(m, c.fetch_options), {})
    c.close()
    assert m.sha == head != hub.repos["org/base"].sha and out.status == "fingerprinted", out.reason
    local = sketch_model(open_model(models["ft2"]), source="org/base", revision=head)
    assert out.sketch is not None and np.array_equal(out.sketch.embed, local.embed)


def test_a_tokenizer_over_10_mb_is_read_through_the_cdn_redirect(hub: HubSim, models: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    """On the Hub a file over 10 MB is in LFS: a large ``tokenizer.json`` arrives by a 302 to the CDN, a
    second origin, not through the resolve cache. The crawler reads it there and fingerprints the model
    as it would from disk."""
    import json

    from tinymodels import build_hf, write_wordlevel_tokenizer

    from hubsim.repos import MAX_GIT_FILE_BYTES

    src = build_hf("llama", tmp_path / "bigtok", seed=17)  # weights no other repo of the stand-in has
    write_wordlevel_tokenizer(src, json.loads((src / "config.json").read_text())["vocab_size"])
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["padding_note"] = "x" * (MAX_GIT_FILE_BYTES + 1000)  # what a 250k-token vocabulary weighs
    (src / "tokenizer.json").write_text(json.dumps(tok))
    repo(hub, "erin/bigtok", src, 40)
    c = crawler(hub, tmp_path / "home")
    c.run()
    r = next(x for x in c.state.results() if x["id"] == "erin/bigtok")
    c.close()
    assert r["status"] == "fingerprinted", r["reason"]
    via = [st for _, p, st in hub.log if p.startswith("/erin/bigtok/resolve/") and p.endswith("/tokenizer.json")]
    assert via and set(via) == {302}  # the Hub origin only redirected; the CDN served the bytes
    assert hub.bytes_served[("erin/bigtok", "tokenizer.json")] == (src / "tokenizer.json").stat().st_size
    local = sketch_model(open_model(src), source="erin/bigtok", revision=hub.repos["erin/bigtok"].sha)
    assert np.array_equal(load(r["fingerprint"]).embed, local.embed)


def test_a_pass_within_the_anonymous_limits_never_meets_a_429(hub: HubSim, tmp_path: Path) -> None:
    """The stand-in enforces its windows (shrunk to 3 s and a dozen API requests, so that one pass spans
    several); the crawler paces every request to what the last ``RateLimit`` header left and waits for
    the reset instead of spending the window and being refused."""
    from crawler.pacing import PACER

    hub.enforce_limits, hub.window_s = True, 3
    hub.quota["anonymous"] = {"api": 12, "resolvers": 15}
    waited = PACER.waited_s
    c = crawler(hub, tmp_path)
    s = c.run()
    c.close()
    assert hub.requests["429"] == 0, hub.requests
    assert s.statuses == {"fingerprinted": 4, "gated": 1} and PACER.waited_s > waited  # it did wait for windows
    hub.enforce_limits = False


def test_a_pass_over_its_time_budget_leaves_the_rest_queued(hub: HubSim, tmp_path: Path) -> None:
    """A sweep that queued the whole Hub yields: a pass stops claiming once its budget is spent, and the
    next pass takes up the queue where it stopped."""
    first = crawler(hub, tmp_path, budget_s=1e-9).run()
    assert first.discovered == 5 and sum(first.statuses.values()) == 0 and first.pending == 5
    rest = crawler(hub, tmp_path).run()
    assert rest.discovered == 0 and sum(rest.statuses.values()) == 5 and rest.pending == 0


def tmp_path_copy(sim: HubSim, repo_id: str, tmp: Path) -> Path:
    out = tmp / f"copy-{repo_id.replace('/', '_')}"
    out.mkdir()
    for name, f in sim.repos[repo_id].files.items():
        (out / name).write_bytes(f.path.read_bytes())
    return out


def test_late_weight_commit_and_private_flip(models: dict[str, Path], tmp_path: Path) -> None:
    with HubSim() as sim:
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "README.md").write_text("---\nlicense: mit\n---\n")
        r = repo(sim, "org/late", empty, 1)
        old = repo(sim, "org/secret", models["other"], -600, private=True)  # created long ago, private
        c = crawler(sim, tmp_path / "home")
        c.run()
        assert [x["status"] for x in c.state.results()] == ["no-weights"]
        # the weights land in a second commit, hours later: only lastModified moves
        sim.commit("org/late", files_of(models["ft"]), T0 + timedelta(hours=5))
        s = c.run()
        assert s.discovered == 1 and s.statuses == {"fingerprinted": 1}
        assert r.sha == c.state.results()[-1]["sha"]
        # made public with its old dates: invisible to both watermarks, found by the sweep
        sim.publish("org/secret")
        assert c.run().discovered == 0
        sweep = crawler(sim, tmp_path / "home", sweep=True)
        s = sweep.run()
        assert s.discovered == 1 and s.statuses == {"fingerprinted": 1}
        assert c.state.results()[-1]["id"] == old.repo_id
        c.close()
        sweep.close()


def test_ranged_reads_match_local_fingerprint(hub: HubSim, models: dict[str, Path], tmp_path: Path) -> None:
    c = crawler(hub, tmp_path)
    c.run()
    for rid, name in [("org/base", "base"), ("alice/ft", "ft"), ("carol/other", "other")]:
        r = next(x for x in c.state.results() if x["id"] == rid)
        remote = load(r["fingerprint"])
        local = sketch_model(open_model(models[name]), source=rid, revision=hub.repos[rid].sha)
        assert remote.keys == local.keys
        assert np.array_equal(remote.embed, local.embed)
        assert all(np.array_equal(a, b) for a, b in zip(remote.q, local.q, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(remote.k, local.k, strict=True))
        need = inspect_model(models[name])
        small = sum(f.size for n, f in hub.repos[rid].files.items() if not f.lfs and n != "README.md")
        weights = sum(v for (rr, n), v in hub.bytes_served.items() if rr == rid and n.endswith(".safetensors"))
        # ranged reads: the needed tensors plus the header read, never the whole file
        assert weights <= need["bytes_needed"] + 100_000, (rid, weights, need["bytes_needed"])
        assert weights < hub.repos[rid].files["model.safetensors"].size
        assert hub.served(rid) - weights <= small, {n: v for (rr, n), v in hub.bytes_served.items() if rr == rid}
    # every weight read went to the CDN origin after a 302
    resolves = [(p, st) for m, p, st in hub.log if "/resolve/" in p and p.endswith(".safetensors")]
    assert resolves and all(st == 302 for _, st in resolves)
    c.close()


@pytest.mark.slow
def test_429_storm_and_5xx_mid_download(hub: HubSim, models: dict[str, Path], tmp_path: Path) -> None:
    hub.inject(Fault("429", "api", count=3, retry_after=0))
    hub.inject(Fault("status", "cdn", count=2, status=503, after=1))
    hub.inject(Fault("truncate", "cdn", count=1, after=3))
    c = crawler(hub, tmp_path)
    s = c.run()
    assert hub.requests["429"] == 3 and hub.requests["fault"] >= 6
    assert s.statuses == {"fingerprinted": 4, "gated": 1}
    r = next(x for x in c.state.results() if x["id"] == "org/base")
    local = sketch_model(open_model(models["base"]))
    remote = load(r["fingerprint"])
    assert np.array_equal(remote.embed, local.embed)
    c.close()


def test_a_model_failing_past_its_retries_waits_for_the_next_pass(hub: HubSim, tmp_path: Path) -> None:
    c = crawler(hub, tmp_path)  # 4 attempts per request
    c.discover()
    hub.inject(Fault("status", "cdn", count=4, status=503))  # the first model's first range, past its retries
    s = c.process()
    assert s.statuses == {"fingerprinted": 3, "gated": 1, "retry later": 1}  # not tried again in this pass
    assert c.state.counts() == {"done": 4, "pending": 1} and s.pending == 1
    s = c.run()
    assert s.statuses == {"fingerprinted": 1} and c.state.counts() == {"done": 5}
    assert next(r for r in c.state.results() if r["id"] == "org/base")["status"] == "fingerprinted"
    c.close()


def test_errors_are_typed(hub: HubSim, tmp_path: Path) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError

    pin_endpoint(hub.endpoint)  # hf_hub_download builds its URL from the global endpoint
    api = HfApi(endpoint=hub.endpoint)
    with pytest.raises(RemoteEntryNotFoundError):
        api.hf_hub_download("org/base", "nope.json", cache_dir=str(tmp_path))
    with pytest.raises(GatedRepoError):
        api.hf_hub_download("meta/gated", "config.json", cache_dir=str(tmp_path))
    sizes = {"missing.safetensors": 10}
    with pytest.raises(HubRequestError) as e:
        HttpRepo(hub.endpoint, "org/base", hub.repos["org/base"].sha, sizes, attempts=1).source("missing.safetensors")
    assert e.value.status == 404
    # a server that ignores Range (here: a JSON route answering 200 with the whole body) is refused
    import httpx2

    src = HttpFileSource(httpx2.Client(), f"{hub.endpoint}/api/models", 10_000, "org/base", "x.safetensors", attempts=1)
    with pytest.raises(RangeNotHonouredError):
        src.read(0, 16)


@pytest.mark.slow
def test_sigkill_mid_crawl_resumes_without_loss_or_repeats(hub: HubSim, tmp_path: Path) -> None:
    home = tmp_path / "home"
    hub.delay_s = 0.05  # slow enough to be killed mid-way
    code = ("import sys; from pathlib import Path; from crawler.crawl import CrawlOptions, Crawler; "
            "Crawler(CrawlOptions(endpoint=sys.argv[1], home=Path(sys.argv[2])), progress=False).run()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    p = subprocess.Popen([sys.executable, "-c", code, hub.endpoint, str(home)], env=env)
    db = home / "crawl.sqlite"
    done = 0
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    done = con.execute("SELECT COUNT(*) FROM result").fetchone()[0]
            except sqlite3.OperationalError:
                pass
        if done >= 2:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    p.wait(30)
    assert p.returncode == -signal.SIGKILL, "the crawler finished before it could be killed"
    served_before = {r: hub.served(r) for r in hub.repos}
    c = crawler(hub, home)
    assert c.state.counts().get("done", 0) == done
    s = c.run()
    results = c.state.results()
    assert sorted(r["id"] for r in results) == sorted(hub.repos)  # none lost, none twice
    assert s.discovered == 0  # the queue survived the kill
    finished_before = [r["id"] for r in results[:done]]
    for rid in finished_before:  # models done before the kill were not read again
        assert hub.served(rid) == served_before[rid]
    c.close()


def test_recheck_queues_a_card_edit_and_a_repo_that_opened(models: dict[str, Path], tmp_path: Path) -> None:
    from hubsim import SimFile

    with HubSim() as sim:
        repo(sim, "org/base", models["base"], 1)
        repo(sim, "alice/ft", models["ft"], 2, card={"license": "apache-2.0", "base_model": "org/base"})
        repo(sim, "meta/gated", models["base"], 3, gated="manual")
        c = Crawler(CrawlOptions(endpoint=sim.endpoint, home=tmp_path), progress=False)
        c.run()
        assert c.recheck(days=3650) == {"checked": 3, "new_commit": 0, "opened": 0, "gone": 0}
        # after publication: alice relicenses (a README commit), meta opens its repo (no commit)
        readme = tmp_path / "README.md"
        readme.write_text("---\nlicense: mit\nbase_model: org/base\n---\n", "utf-8")
        sim.repos["alice/ft"].card = {"license": "mit", "base_model": "org/base"}
        sim.commit("alice/ft", {"README.md": SimFile("README.md", readme)}, T0 + timedelta(days=3))
        sim.repos["meta/gated"].gated = False
        assert c.recheck(days=3650) == {"checked": 3, "new_commit": 1, "opened": 1, "gone": 0}
        served = sim.served("alice/ft")
        s = c.process()
        assert dict(s.statuses) == {"duplicate": 2}  # alice: same weights; meta: the bytes of org/base
        assert sim.served("alice/ft") == served  # weights unchanged: not read again
        latest = {r["id"]: r for r in c.state.results()}
        assert latest["alice/ft"]["model"]["license"] == "mit" and latest["alice/ft"]["sha"] == sim.repos["alice/ft"].sha
        assert latest["meta/gated"]["status"] == "duplicate"  # the same bytes as org/base, now readable
        assert c.recheck(days=3650) == {"checked": 3, "new_commit": 0, "opened": 0, "gone": 0}
        assert c.recheck(days=1) == {"checked": 0, "new_commit": 0, "opened": 0, "gone": 0}  # created a month ago
        c.close()
