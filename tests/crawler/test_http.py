"""The crawler on each way the real Hub differs from a naive stand-in (``hub-fidelity.md`` 1–6): tag
relations, same-origin redirects, older commits, renames, refused tokens and expired CDN URLs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hubdata import T0, repo
from huggingface_hub import HfApi

from crawler.crawl import Crawler, CrawlOptions
from crawler.errors import HubAuthError, RepoNotFoundError
from crawler.http import HttpRepo
from crawler.records import from_info
from fingerprint.canonical import open_model
from fingerprint.sketch import load, sketch_model
from hubsim import HubSim, files_of


def crawler(sim: HubSim, home: Path, **kw: Any) -> Crawler:
    return Crawler(CrawlOptions(endpoint=sim.endpoint, home=home, attempts=3, backoff_s=0.01, **kw), progress=False)


def test_relation_comes_from_the_tags_of_the_default_payload(hub: HubSim) -> None:  # 1
    m = from_info(HfApi(endpoint=hub.endpoint).model_info("alice/ft", files_metadata=True))
    assert m.base_models == ("org/base",) and m.relation == "finetune" and m.base_keys == ()


def test_small_files_follow_the_resolve_cache_with_the_token(models: dict[str, Path]) -> None:  # 2
    with HubSim(accepted_tokens=frozenset({"hf_ok"})) as sim:
        repo(sim, "meta/gated", models["base"], 1, gated="manual")
        sizes = {n: f.size for n, f in sim.repos["meta/gated"].files.items()}
        r = HttpRepo(sim.endpoint, "meta/gated", sim.repos["meta/gated"].sha, sizes, token="hf_ok")
        src = r.source("config.json")  # a small file: served by the Hub origin after a relative 307
        assert "/api/resolve-cache/models/meta/gated/" in src.url and src.headers  # the token goes along
        want = sim.repos["meta/gated"].files["config.json"].path.read_bytes()
        assert src.read(0, 20) == want[:20]
        assert r.read_bytes("config.json") == want
        cdn = r.source("model.safetensors").url
        assert cdn.startswith(sim.cdn) and not r.source("model.safetensors").headers  # no token to the CDN
        anon = HttpRepo(sim.endpoint, "meta/gated", sim.repos["meta/gated"].sha, sizes)
        with pytest.raises(Exception, match="gated"):
            anon.source("config.json")


def test_expired_cdn_url_is_resolved_again(hub: HubSim, models: dict[str, Path]) -> None:  # 6
    sizes = {n: f.size for n, f in hub.repos["org/base"].files.items()}
    r = HttpRepo(hub.endpoint, "org/base", hub.repos["org/base"].sha, sizes, attempts=1)
    src = r.source("model.safetensors")
    head = src.read(0, 8)
    hub.advance(3700)  # an hour later: the signed URL has expired
    assert src.read(0, 8) == head and src.relocations == 1
    assert src.read(8, 8) and src.relocations == 1  # the fresh URL is kept


def test_a_push_after_the_listing_fingerprints_the_listed_commit_then_the_new_one(
        hub: HubSim, models: dict[str, Path], tmp_path: Path) -> None:  # 4
    c = crawler(hub, tmp_path)
    c.discover()
    listed = hub.repos["carol/other"].sha
    hub.commit("carol/other", files_of(models["ft"]), T0 + timedelta(days=1))  # new weights land meanwhile
    c.process()
    first = next(r for r in c.state.results() if r["id"] == "carol/other")
    assert first["sha"] == listed and first["status"] == "fingerprinted"
    assert np.array_equal(load(first["fingerprint"]).embed, sketch_model(open_model(models["other"])).embed)
    s = c.run()  # the next listing sees the new commit: alice/ft's weights, so a duplicate of it
    assert s.discovered == 1 and s.statuses == {"duplicate": 1}
    latest = [r for r in c.state.results() if r["id"] == "carol/other"][-1]
    assert latest["sha"] == hub.repos["carol/other"].sha and latest["duplicate_of"][1] == "alice/ft"
    c.close()


def test_a_repo_renamed_after_the_listing_is_crawled_under_its_new_name(hub: HubSim, tmp_path: Path) -> None:  # 2
    c = crawler(hub, tmp_path)
    c.discover()
    key = hub.repos["bob/ft2"]._id
    hub.rename("bob/ft2", "bob/ft2-renamed")
    s = c.process()
    assert s.statuses["fingerprinted"] == 4
    r = next(r for r in c.state.results() if r["key"] == key)
    assert r["status"] == "fingerprinted" and r["model"]["id"] == "bob/ft2-renamed"
    c.close()


def test_a_refused_token_stops_the_pass_and_loses_nothing(models: dict[str, Path], tmp_path: Path) -> None:  # 5
    with HubSim(tokens=frozenset({"hf_good"}), page_size=2) as sim:
        for i, name in enumerate(["base", "ft", "ft2", "other"]):
            repo(sim, f"org/{name}", models[name], i)
        c = crawler(sim, tmp_path, token="hf_good")
        c.discover()
        assert c.process(limit=1).statuses == {"fingerprinted": 1}
        sim.revoke("hf_good")  # the token expires mid-run
        with pytest.raises(HubAuthError, match="refused the token"):
            c.process()
        assert {r["status"] for r in c.state.results()} == {"fingerprinted"}  # nothing recorded as gone
        assert c.state.counts() == {"done": 1, "pending": 3}
        c.close()
        with pytest.raises(HubAuthError):  # discovery with the refused token stops too
            crawler(sim, tmp_path, token="hf_good").discover()
        sim.tokens = frozenset({"hf_new"})  # the operator sets a new token
        c2 = crawler(sim, tmp_path, token="hf_new")
        assert c2.run().statuses == {"fingerprinted": 3}
        c2.close()
        anon = crawler(sim, tmp_path / "anon")
        with pytest.raises(RepoNotFoundError):  # anonymous 401 without X-Error-Code: missing, not refused
            anon.info("org/missing", "main")
        anon.close()


def test_the_crawler_lists_only_fields_listings_accept_and_always_sorts(hub: HubSim, tmp_path: Path) -> None:  # 3, 8
    from crawler.crawl import LIST_FIELDS
    from hubsim.hub import EXPAND_INFO, EXPAND_LIST

    assert set(LIST_FIELDS) <= EXPAND_LIST
    refused = EXPAND_INFO - EXPAND_LIST
    assert refused == {"baseModels", "childrenModelCount", "usedStorage"}
    c = crawler(hub, tmp_path, sweep=True)
    c.run()
    listings = [p for _, p, _ in hub.log if p.startswith("/api/models?")]
    assert listings and all("sort=" in p for p in listings)  # the Hub's default (trendingScore) is not an order
    assert not [p for _, p, st in hub.log if st == 400]
    c.close()
