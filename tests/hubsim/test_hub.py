"""The Hub stand-in follows the real Hub where ``hub-fidelity.md`` has evidence (deviations ranked 1–6
and 8), checked through the real ``huggingface_hub`` client and raw HTTP."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hubdata import T0, repo
from huggingface_hub import HfApi
from huggingface_hub.errors import BadRequestError, HfHubHTTPError, RevisionNotFoundError

from crawler.http import pin_endpoint
from hubsim import HubSim, SimFile


def test_base_models_are_expand_only_and_expand_is_checked_per_endpoint(hub: HubSim) -> None:  # 1, 3
    api = HfApi(endpoint=hub.endpoint)
    raw = httpx2.get(f"{hub.endpoint}/api/models/alice/ft").json()
    assert "baseModels" not in raw and "childrenModelCount" not in raw  # the recorded real payload has neither
    assert "base_model:finetune:org/base" in raw["tags"]  # …but the tags say it
    info = api.model_info("alice/ft", expand=["baseModels"])
    assert info.base_models == {"relation": "finetune", "models": [{"_id": hub.repos["org/base"]._id, "id": "org/base"}]}
    children = httpx2.get(f"{hub.endpoint}/api/models/org/base", params={"expand": "childrenModelCount"}).json()
    assert children["childrenModelCount"] == {"adapter": 0, "merge": 0, "quantized": 0, "finetune": 1}
    with pytest.raises(BadRequestError):
        api.model_info("alice/ft", expand=["bogus"])  # type: ignore[list-item]
    with pytest.raises(BadRequestError):  # valid for model_info, refused in listings
        list(api.list_models(expand=["baseModels"]))
    assert httpx2.get(f"{hub.endpoint}/api/models", params={"expand": "usedStorage"}).status_code == 400
    assert next(m.id for m in api.list_models(expand=["sha", "createdAt"], sort="created_at")) == "meta/gated"


def test_small_files_and_renamed_repos_answer_same_origin_307s(hub: HubSim, tmp_path: Path) -> None:  # 2
    base = f"{hub.endpoint}/org/base/resolve/main/config.json"
    r = httpx2.head(base)
    assert r.status_code == 307 and r.headers["Location"].startswith("/api/resolve-cache/models/org/base/")
    assert r.headers["X-Repo-Commit"] == hub.repos["org/base"].sha
    assert httpx2.get(base, follow_redirects=True).content == (hub.repos["org/base"].files["config.json"].path.read_bytes())
    hub.rename("org/base", "org/base-v2")
    r = httpx2.get(f"{hub.endpoint}/api/models/org/base?blobs=true")
    assert r.status_code == 307 and r.headers["Location"] == "/api/models/org/base-v2?blobs=true"
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info("org/base")  # the client follows the relative 307, as on the Hub
    assert info.id == "org/base-v2" and vars(info)["_id"] == hub.repos["org/base-v2"]._id
    assert api.model_info("ORG/Base-V2").id == "org/base-v2"  # a case-mismatched id: 307 too
    pin_endpoint(hub.endpoint)
    path = api.hf_hub_download("org/base", "config.json", cache_dir=str(tmp_path))
    assert Path(path).read_bytes() == hub.repos["org/base-v2"].files["config.json"].path.read_bytes()


def test_legacy_single_segment_ids_answer_a_307_to_the_canonical_id(hub: HubSim, tmp_path: Path) -> None:
    """As ``/api/models/bert-base-uncased`` → ``/api/models/google-bert/bert-base-uncased`` on the Hub
    (huggingface_hub's recorded cassettes)."""
    hub.legacy("base", "org/base")
    r = httpx2.get(f"{hub.endpoint}/api/models/base?expand=sha")
    assert r.status_code == 307 and r.headers["Location"] == "/api/models/org/base?expand=sha"
    r = httpx2.get(f"{hub.endpoint}/api/models/base/revision/main")
    assert r.status_code == 307 and r.headers["Location"] == "/api/models/org/base/revision/main"
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info("base")  # the client follows it
    assert info.id == "org/base" and vars(info)["_id"] == hub.repos["org/base"]._id
    r = httpx2.get(f"{hub.endpoint}/base/resolve/main/config.json", follow_redirects=True)
    assert r.status_code == 200 and r.content == hub.repos["org/base"].files["config.json"].path.read_bytes()
    assert httpx2.get(f"{hub.endpoint}/api/models/nobody").status_code == 401  # an unknown one: the usual miss
    with pytest.raises(HfHubHTTPError):
        api.model_info("nobody")


def test_refs_commits_paths_info_trees_and_dotfiles(hub: HubSim, tmp_path: Path) -> None:  # 36.5
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi(endpoint=hub.endpoint)
    r = hub.repos["alice/ft"]
    old = r.sha
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\n---\n")
    new = hub.commit("alice/ft", {"README.md": SimFile("README.md", readme)}, T0 + timedelta(days=1))
    pr = hub.open_pr("alice/ft", {"README.md": SimFile("README.md", tmp_path / "README.md")})
    refs = api.list_repo_refs("alice/ft", include_pull_requests=True)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", new)] and refs.tags == []
    assert [p.ref for p in refs.pull_requests or []] == [pr]
    assert [c.commit_id for c in api.list_repo_commits("alice/ft")] == [new, old]
    assert [c.commit_id for c in api.list_repo_commits("alice/ft", revision=old)] == [old]
    info = api.get_paths_info("alice/ft", ["config.json", "nope.json", ".gitattributes", "model.safetensors"])
    assert sorted(x.path for x in info) == [".gitattributes", "config.json", "model.safetensors"]
    assert next(x for x in info if x.path == "model.safetensors").lfs is not None  # type: ignore[union-attr]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("alice/ft", path_in_repo="nope"))
    assert ".gitattributes" in {s.rfilename for s in api.model_info("alice/ft").siblings or []}
    # a suffix range is the file's last bytes; the resolve cache answers a current If-None-Match with 304
    cfg = r.files["config.json"]
    loc = httpx2.head(f"{hub.endpoint}/alice/ft/resolve/main/config.json").headers["Location"]
    cached = httpx2.get(hub.endpoint + loc, headers={"If-None-Match": f'"{cfg.sha1}"'})
    assert cached.status_code == 304 and cached.content == b""
    tail = httpx2.get(hub.endpoint + loc, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == cfg.path.read_bytes()[-10:]


def test_lfs_follows_the_hubs_gitattributes_and_its_10_mb_rule(hub: HubSim, models: dict[str, Path],
                                                                tmp_path: Path) -> None:  # 36.3
    from hubdata import repo

    from hubsim.repos import MAX_GIT_FILE_BYTES

    src = tmp_path / "tok"
    src.mkdir()
    for f in models["base"].iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "tokenizer.model").write_bytes(b"sentencepiece" * 10)  # small, but *.model is in LFS on the Hub
    (src / "notes.txt").write_bytes(b"x" * (MAX_GIT_FILE_BYTES + 1))  # too large for a regular git file
    repo(hub, "erin/tok", src, 30)
    status = {n: httpx2.head(f"{hub.endpoint}/erin/tok/resolve/main/{n}").status_code
              for n in ("tokenizer.model", "notes.txt", "config.json", "model.safetensors")}
    assert status == {"tokenizer.model": 302, "notes.txt": 302, "config.json": 307, "model.safetensors": 302}
    attributes = httpx2.get(f"{hub.endpoint}/erin/tok/resolve/main/.gitattributes", follow_redirects=True).text
    assert "*.model filter=lfs diff=lfs merge=lfs -text" in attributes and "*tfevents*" in attributes
    api = HfApi(endpoint=hub.endpoint)
    pin_endpoint(hub.endpoint)
    files = {f.rfilename: f for f in api.model_info("erin/tok", files_metadata=True).siblings or []}
    assert files["tokenizer.model"].lfs is not None and files["config.json"].lfs is None
    got = api.hf_hub_download("erin/tok", "tokenizer.model", cache_dir=str(tmp_path / "cache"))  # via the CDN
    assert Path(got).read_bytes() == b"sentencepiece" * 10 and hub.bytes_served[("erin/tok", "tokenizer.model")] == 130


def test_tags_are_those_of_the_hubs_default_payload(hub: HubSim, models: dict[str, Path], tmp_path: Path) -> None:  # 36.2
    from hubdata import repo, with_card

    src = with_card(models["ft"], tmp_path / "tagged", "base_model: org/base\nlicense: apache-2.0\nlanguage: [en, fr]\n"
                    "datasets: [org/corpus]\ntags: [chat, trl]")
    (src / "README.md").write_text((src / "README.md").read_text() + "See https://arxiv.org/abs/2307.09288.\n")
    repo(hub, "erin/tagged", src, 50)
    api = HfApi(endpoint=hub.endpoint)
    tags = api.model_info("erin/tagged").tags or []
    assert tags[:3] == ["transformers", "safetensors", "llama"]  # library, files, model_type
    assert {"text-generation", "chat", "trl", "dataset:org/corpus", "en", "fr", "base_model:org/base",
            "base_model:finetune:org/base", "arxiv:2307.09288", "license:apache-2.0", "autotrain_compatible",
            "endpoints_compatible", "region:us"} <= set(tags)
    assert "erin/tagged" in {m.id for m in api.list_models(filter="llama")}  # found by its model type
    assert {m.id for m in api.list_models(filter="trl")} == {"erin/tagged"}


def test_any_commit_short_sha_and_pr_ref_resolve(hub: HubSim, tmp_path: Path) -> None:  # 4
    api = HfApi(endpoint=hub.endpoint)
    old = hub.repos["alice/ft"].sha
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\n---\n")
    new = hub.commit("alice/ft", {"README.md": SimFile("README.md", readme)}, T0 + timedelta(days=1))
    assert new != old and api.model_info("alice/ft").sha == new
    assert api.model_info("alice/ft", revision=old).sha == old  # an older commit is still served
    assert api.model_info("alice/ft", revision=old[:7]).sha == old
    r = httpx2.get(f"{hub.endpoint}/alice/ft/resolve/{old[:7]}/README.md")
    assert r.status_code == 307 and f"/resolve/{old}/" in r.headers["Location"]
    assert b"license: llama2" in httpx2.get(f"{hub.endpoint}/alice/ft/resolve/{old}/README.md", follow_redirects=True).content
    pr = hub.open_pr("alice/ft", {"README.md": SimFile("README.md", readme)})
    assert pr == "refs/pr/1" and api.model_info("alice/ft", revision=pr).sha != old
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/ft", revision="refs/pr/2")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/ft", revision="0" * 40)
    # a pull request's head is an ordinary commit: its sha (handed out in X-Repo-Commit) reads like any other
    other = tmp_path / "other.md"
    other.write_text("---\nlicense: apache-2.0\n---\n")
    pr2 = hub.open_pr("alice/ft", {"README.md": SimFile("README.md", other)})
    head = httpx2.head(f"{hub.endpoint}/alice/ft/resolve/{pr2.replace('/', '%2F')}/README.md").headers["X-Repo-Commit"]
    assert head not in (old, new) and api.model_info("alice/ft", revision=head).sha == head
    r = httpx2.get(f"{hub.endpoint}/alice/ft/resolve/{head}/README.md", follow_redirects=True)  # via the resolve cache
    assert r.status_code == 200 and b"apache-2.0" in r.content


def test_token_semantics(models: dict[str, Path]) -> None:  # 5
    with HubSim(tokens=frozenset({"hf_good"}), accepted_tokens=frozenset({"hf_terms"})) as sim:
        repo(sim, "org/base", models["base"], 1)
        anon = httpx2.get(f"{sim.endpoint}/api/models/org/missing")
        assert anon.status_code == 401 and "X-Error-Code" not in anon.headers  # the Hub will not say why
        assert anon.headers["X-Error-Message"] == "Invalid username or password."
        good = {"Authorization": "Bearer hf_good"}
        authed = httpx2.get(f"{sim.endpoint}/api/models/org/missing", headers=good)
        assert authed.status_code == 404 and authed.headers["X-Error-Code"] == "RepoNotFound"
        for url in ("/api/models", "/api/models/org/base", "/org/base/resolve/main/config.json"):
            bad = httpx2.get(sim.endpoint + url, headers={"Authorization": "Bearer hf_typo"})
            assert bad.status_code == 401 and bad.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
        assert httpx2.get(f"{sim.endpoint}/api/models/org/base", headers=good).status_code == 200
        sim.revoke("hf_good")
        with pytest.raises(HfHubHTTPError) as e:
            HfApi(endpoint=sim.endpoint, token="hf_good").model_info("org/base")
        assert e.value.response.status_code == 401
        assert HfApi(endpoint=sim.endpoint, token="hf_terms").model_info("org/base").id == "org/base"


def test_signed_cdn_urls_expire(hub: HubSim) -> None:  # 6
    r = httpx2.head(f"{hub.endpoint}/org/base/resolve/main/model.safetensors")
    assert r.status_code == 302 and "Signature=" in r.headers["Location"] and "Expires=" in r.headers["Location"]
    cdn = r.headers["Location"]
    assert httpx2.get(cdn, headers={"Range": "bytes=0-7"}).status_code == 206
    assert httpx2.get(cdn.replace("Signature=", "Signature=0"), headers={"Range": "bytes=0-7"}).status_code == 403
    hub.advance(3601)
    late = httpx2.get(cdn, headers={"Range": "bytes=0-7"})
    assert late.status_code == 403 and b"Request has expired" in late.content and "X-Error-Code" not in late.headers


def test_listing_defaults_filters_and_rate_limit_headers(hub: HubSim) -> None:  # 8
    api = HfApi(endpoint=hub.endpoint)
    assert [m.id for m in api.list_models(gated=True)] == ["meta/gated"]
    assert "meta/gated" not in [m.id for m in api.list_models(gated=False)]
    # no sort: trendingScore, all tied in the stand-in, so _id ascending (the Hub's tie order)
    ids = [m.id for m in api.list_models()]
    assert ids == sorted(hub.repos, key=lambda i: hub.repos[i]._id)
    first = httpx2.get(f"{hub.endpoint}/api/models/org/base")
    second = httpx2.get(f"{hub.endpoint}/api/models/org/base")
    left = [int(r.headers["RateLimit"].split("r=")[1].split(";")[0]) for r in (first, second)]
    # the published quotas: 500 API requests per 5 minutes anonymous, 1,000 with an account's token
    assert left[1] == left[0] - 1 and first.headers["RateLimit-Policy"] == '"fixed window";"api";q=500;w=300'
    authed = httpx2.get(f"{hub.endpoint}/api/models/org/base", headers={"Authorization": "Bearer hf_user"})
    assert authed.headers["RateLimit-Policy"] == '"fixed window";"api";q=1000;w=300'
    assert "RateLimit" in httpx2.head(f"{hub.endpoint}/org/base/resolve/main/config.json").headers


@pytest.fixture
def tls_hub(models: dict[str, Path]) -> Any:
    """The stand-in over HTTPS with a throwaway CA (trustme), the Hub client trusting that CA only."""
    import ssl

    import trustme
    from hubdata import repo
    from huggingface_hub.utils import _http

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    _http.set_client_factory(lambda: httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook]},
                                                   follow_redirects=True, timeout=None, verify=client))
    try:
        with HubSim(tls=server, accepted_tokens=frozenset({"hf_terms"})) as sim:
            repo(sim, "org/base", models["base"], 1)
            repo(sim, "meta/gated", models["ft"], 2, gated="manual")
            yield sim
    finally:
        _http.set_client_factory(_http.default_client_factory)


def test_over_https_an_anonymous_401_is_repository_not_found_and_gated_texts_match(tls_hub: HubSim,
                                                                                  tmp_path: Path) -> None:  # 36.6
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from crawler.crawl import Crawler, CrawlOptions

    assert tls_hub.endpoint.startswith("https://") and tls_hub.cdn.startswith("https://")
    api = HfApi(endpoint=tls_hub.endpoint)
    with pytest.raises(RepositoryNotFoundError):  # the client's https-only mapping (401, no X-Error-Code)
        api.model_info("org/missing")
    pin_endpoint(tls_hub.endpoint)
    with pytest.raises(GatedRepoError, match="You must have access to it and be authenticated"):
        api.hf_hub_download("meta/gated", "config.json", cache_dir=str(tmp_path / "a"))
    with pytest.raises(GatedRepoError, match="you are not in the authorized list"):
        api.hf_hub_download("meta/gated", "config.json", cache_dir=str(tmp_path / "b"), token="hf_other")
    # the crawler over https: the base fingerprinted (ranged reads from the https CDN), the gated repo recorded
    c = Crawler(CrawlOptions(endpoint=tls_hub.endpoint, home=tmp_path / "home", attempts=2), progress=False)
    c.run()
    status = {r["id"]: r["status"] for r in c.state.results()}
    c.close()
    assert status == {"org/base": "fingerprinted", "meta/gated": "gated"}
