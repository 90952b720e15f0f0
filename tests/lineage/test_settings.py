"""lineage.settings and lineage.app: every variable read once, checked at start-up, and used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from graph.sqlite import SqliteStore
from lineage.app import open_app
from lineage.cli import main
from lineage.errors import SettingsError
from lineage.settings import SETTINGS, Settings


def test_every_variable_is_read_into_a_field() -> None:
    env = {s.env: s.default for s in SETTINGS} | {"HF_TOKEN": " hf_abc ", "LINEAGE_DEVICE": "CPU"}
    s = Settings.from_env(env)
    assert s.hub_token == "hf_abc" and s.device == "cpu"
    assert Settings.from_env({}).hub_token is None and Settings.from_env({}).device == "auto"


def test_bad_values_fail_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="LINEAGE_DEVICE='gpu'"):
        Settings.from_env({"LINEAGE_DEVICE": "gpu"})
    f = tmp_path / "a-file"
    f.write_text("")
    with pytest.raises(SettingsError, match="not a directory"):
        Settings.from_env({"LINEAGE_HOME": str(f)})


@pytest.mark.parametrize(("value", "message"), [
    ("gpu", "LINEAGE_DEVICE='gpu': use auto, cpu, cuda or cuda:N"),
    ("cuda:7", "device 'cuda:7': torch sees"),
])
def test_a_bad_device_is_one_line_from_any_command(tmp_path: Path, value: str, message: str) -> None:
    if value.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that many GPUs")
    r = CliRunner().invoke(main, ["match", str(tmp_path)], env={"LINEAGE_DEVICE": value})
    assert r.exit_code == 2 and r.output.startswith("Error: ") and message in r.output and r.output.count("\n") == 1


def test_open_app_honours_the_device_and_leaves_a_passed_store_open(tmp_path: Path) -> None:
    s = Settings.from_env({"LINEAGE_HOME": str(tmp_path), "LINEAGE_DEVICE": "cpu"})
    store = SqliteStore(tmp_path / "mine.sqlite")
    store.ensure_schema()
    with open_app(s, store=store) as app:
        assert app.device == torch.device("cpu") and app.store is store and app.index.root == tmp_path / "index"
    assert store.get_models(["x"]) == []  # still open
    store.close()
    with open_app(s) as app:  # the app's own store, in the home
        assert (tmp_path / "graph.sqlite").exists()


def test_service_pass_settings() -> None:
    s = Settings.from_env({})
    assert s.crawl_pipeline_tags == ("text-generation", "feature-extraction", "sentence-similarity", "fill-mask",
                                     "text2text-generation") and s.pass_minutes == 10.0 and s.writer_wait == 600.0
    s = Settings.from_env({"LINEAGE_CRAWL_PIPELINE_TAGS": "*", "LINEAGE_PASS_MINUTES": "0", "LINEAGE_WRITER_WAIT": "0"})
    assert s.crawl_pipeline_tags == () and s.pass_minutes is None and s.writer_wait == 0.0
    for env, value in (("LINEAGE_CRAWL_PIPELINE_TAGS", "text generation"), ("LINEAGE_PASS_MINUTES", "-1"),
                       ("LINEAGE_WRITER_WAIT", "soon")):
        with pytest.raises(SettingsError, match=env):
            Settings.from_env({env: value})
