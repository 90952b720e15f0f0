"""lineage.workers: the local process pool and a real local Ray cluster give the graph an inline crawl
gives, and a worker killed mid-task costs a retry, not a model."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubdata import dump_graph

from crawler.crawl import Crawler, CrawlOptions
from hubsim import HubSim
from lineage.app import open_app
from lineage.settings import Settings
from lineage.workers import LocalExecutor, RayExecutor, open_executor


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned workers import huggingface_hub afresh: they must not inherit the suite's HF_HUB_OFFLINE
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def crawl(hub: HubSim, home: Path, workers: str, during: Any = None) -> tuple[dict[str, Any], int]:
    """One `lineage crawl` pass through the app with ``LINEAGE_WORKERS=workers``; ``during`` runs
    in a thread beside it with the app's executor. Returns the graph and the crawl's statuses, and how
    many workers were replaced."""
    env = {**os.environ, "LINEAGE_HOME": str(home), "LINEAGE_WORKERS": workers, "LINEAGE_WORKER_COUNT": "2"}
    with open_app(Settings.from_env(env)) as app:
        with open_app(Settings.from_env(env), store=app.store) as seed:  # the base family, as a user indexes it
            seed.add_base("org/base", "base", endpoint=hub.endpoint)
        ex = app.executor()
        if hasattr(ex, "start"):
            ex.start()  # here, not in the side thread: one thread starts workers
        side = threading.Thread(target=during, args=(ex,), daemon=True) if during else None
        if side:
            side.start()
        c = app.crawler(hub.endpoint, progress=False)
        s = app.crawl(c)
        if side:
            side.join(60)
        restarts = int(getattr(ex, "restarts", 0))
    return {"graph": dump_graph(home), "statuses": dict(s.statuses)}, restarts


def kill_when_reading(hub: HubSim, pids: Any, count: int = 1) -> Any:
    """A side task: once the stand-in serves weight bytes, SIGKILL ``count`` busy workers."""
    def run(ex: Any) -> None:
        before = sum(hub.bytes_served.values())
        deadline = time.time() + 60
        while time.time() < deadline and sum(hub.bytes_served.values()) == before:
            time.sleep(0.02)
        for pid in pids(ex)[:count]:
            os.kill(pid, signal.SIGKILL)
    return run


@pytest.mark.slow
def test_local_pool_crawl_equals_an_inline_crawl_and_survives_a_killed_worker(
        hub: HubSim, tmp_path: Path, online: None) -> None:
    inline, _ = crawl(hub, tmp_path / "inline", "inline")
    assert inline["statuses"] == {"fingerprinted": 4, "gated": 1}
    assert len(inline["graph"]["DERIVED_FROM"]) >= 2
    assert crawl(hub, tmp_path / "local", "local") == (inline, 0)
    hub.delay_s = 0.05  # reads slow enough to be caught mid-task
    killed = crawl(hub, tmp_path / "killed", "local",
                   kill_when_reading(hub, lambda ex: ex.pids(), count=2))
    hub.delay_s = 0.0
    assert killed == (inline, 2)  # both workers died mid-task, were replaced, and their models read again


def test_a_model_whose_worker_keeps_dying_is_failed_with_the_reason(hub: HubSim, tmp_path: Path, online: None) -> None:
    c = Crawler(CrawlOptions(endpoint=hub.endpoint, home=tmp_path), progress=False)
    models = [c.info("org/base", hub.repos["org/base"].sha)]
    ex = LocalExecutor(1, attempts=2)
    ex.start()
    stop = threading.Event()

    def killer() -> None:  # whatever worker holds the task dies, every time
        while not stop.is_set():
            for pid in ex.pids():
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    t = threading.Thread(target=killer, daemon=True)
    hub.delay_s = 0.5
    t.start()
    try:
        [out] = ex(models, c.fetch_options)
    finally:
        stop.set()
        hub.delay_s = 0.0
        t.join(5)
    assert out.status == "failed" and "the worker died 2 times" in (out.reason or ""), out.reason
    assert ex.restarts >= 2
    [again] = ex(models, c.fetch_options)  # the pool is whole again
    assert again.status == "fingerprinted"
    ex.close()
    c.close()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real local Ray cluster (``ray.init(num_cpus=2)``, about 10 s) for this module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a loopback-only cluster (read at import)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray = pytest.importorskip("ray", reason="Ray is the optional [ray] extra; CI installs it")
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))  # ray writes ~/.ray
        mp.delenv("HF_HUB_OFFLINE", raising=False)  # the actors import huggingface_hub afresh
        mp.delenv("RAY_ADDRESS", raising=False)
        ex = RayExecutor(None, workers=2, device="cpu")
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray
        ex.close()


@pytest.mark.slow
def test_ray_crawl_equals_the_local_pool_and_a_killed_actor_is_retried(
        hub: HubSim, tmp_path: Path, online: None, ray_cluster: Any) -> None:
    assert ray_cluster.is_initialized()
    local, _ = crawl(hub, tmp_path / "local", "local")
    assert crawl(hub, tmp_path / "ray", "ray") == (local, 0)
    hub.delay_s = 0.05
    killed = crawl(hub, tmp_path / "ray-killed", "ray", kill_when_reading(hub, lambda ex: ex.pids(), count=1))
    hub.delay_s = 0.0
    assert killed == (local, 1)


def test_workers_setting_is_checked_at_start_up() -> None:
    from lineage.errors import SettingsError

    with pytest.raises(SettingsError, match="LINEAGE_WORKERS"):
        Settings.from_env({"LINEAGE_WORKERS": "dask"})
    with pytest.raises(SettingsError, match="LINEAGE_WORKER_COUNT"):
        Settings.from_env({"LINEAGE_WORKER_COUNT": "-1"})
    assert open_executor("inline", None, "cpu").batch() == 1
    assert open_executor("local", 3, "cpu").batch() == 6
