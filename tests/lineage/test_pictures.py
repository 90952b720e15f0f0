"""lineage.pictures and ``lineage picture`` over a real crawled home: a model id, a family sheet, a directory
sheet, hostile labels, one-line errors, and the web UI's picture panel and PNG route."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from hubsim import HubSim
from lineage.cli import main
from lineage.pictures import MAX_LABEL, label, labels


@pytest.fixture
def crawled(hub: HubSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path))
    r = CliRunner().invoke(main, ["index", "add", "org/base", "--family", "base", "--endpoint", hub.endpoint])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["crawl", "--endpoint", hub.endpoint])
    assert r.exit_code == 0, r.output
    return tmp_path


def test_picture_of_a_crawled_model_and_its_family_sheet(crawled: Path) -> None:
    from PIL import Image

    r = CliRunner().invoke(main, ["picture", "alice/ft", "-o", str(crawled / "ft.png"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["size"] == 256 and len(doc["latent"]) == 32 and Image.open(crawled / "ft.png").size == (256, 256)
    base = CliRunner().invoke(main, ["picture", "org/base", "-o", str(crawled / "base.png"), "--json"])
    other = CliRunner().invoke(main, ["picture", "carol/other", "-o", str(crawled / "other.png"), "--json"])
    zb, zo = json.loads(base.stdout)["latent"], json.loads(other.stdout)["latent"]
    # the fine-tune's latent is near its base's, the unrelated model's is not
    near = sum((a - b) ** 2 for a, b in zip(doc["latent"], zb)) ** 0.5
    far = sum((a - b) ** 2 for a, b in zip(zo, zb)) ** 0.5
    assert near < far / 3, (near, far)
    r = CliRunner().invoke(main, ["picture", "--sheet", "alice/ft", "-o", str(crawled / "sheet.png"), "--json"])
    assert r.exit_code == 0, r.output
    sheet = json.loads(r.stdout)
    assert sheet["labels"][0] == "org/base" and "alice/ft" in sheet["labels"] and "carol/other" not in sheet["labels"]
    im = Image.open(crawled / "sheet.png")
    assert im.size == (128 * len(sheet["labels"]), 128 + 16)


def test_directory_sheet_and_one_line_errors(crawled: Path) -> None:
    fps = crawled / "index" / "fingerprints"  # the one store the crawler and the index share
    r = CliRunner().invoke(main, ["picture", "--sheet", str(fps), "-o", str(crawled / "dir.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pictures"] == len(list(fps.glob("*.lfp"))) >= 3
    for args, says in [(["nobody/none"], "neither a file nor a model"), (["--sheet", "no-such-family"], "no family or model"),
                       (["--sheet", str(crawled / "index")], "no .lfp")]:
        r = CliRunner().invoke(main, ["picture", *args, "-o", str(crawled / "x.png")])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(main, ["picture", "alice/ft", "-o", "/nonexistent-dir/x.png"])
    assert r.exit_code == 2 and "is not a directory" in r.output and not Path("/nonexistent-dir").exists()


def test_json_without_an_output_prints_the_latent_and_writes_nothing(crawled: Path) -> None:
    before = set(crawled.rglob("*.png"))
    r = CliRunner().invoke(main, ["picture", "alice/ft", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["output"] is None and len(doc["latent"]) == 32 and set(crawled.rglob("*.png")) == before
    with_file = json.loads(CliRunner().invoke(main, ["picture", "alice/ft", "-o", str(crawled / "a.png"), "--json"]).stdout)
    assert with_file["latent"] == doc["latent"]
    r = CliRunner().invoke(main, ["picture", "alice/ft"])  # neither a file nor --json: say what to give
    assert r.exit_code == 2 and "give -o FILE.png" in r.output


def test_labels_are_printable_and_bounded() -> None:
    assert label("org/model\x1b[31m\u202e") == "org/model?[31m?"
    assert len(label("x" * 500)) == MAX_LABEL and label("ünï/cödé") == "?n?/c?d?"


def test_labels_on_one_sheet_tell_the_models_apart() -> None:
    # cut from the start, the three attacked copies printed as one label ("mallory/llama-a-sft-p~")
    names = [f"mallory/llama-a-sft-{a}" for a in ("permute_heads", "permute_hidden", "permute_mlp")]
    names += ["mallory/llama-d-cpt-permute_heads", "meta-zoo/llama-a", "grace/llama-a-sft-sft2"]
    out = labels(names)
    assert len(set(out)) == len(out) and all(len(x) <= MAX_LABEL for x in out), out
    assert out[0] == "llama-a-~permute_heads" and out[4] == "meta-zoo/llama-a"  # short ids stay whole
    # names that still print alike are numbered
    twins = labels(["a/" + "x" * 30 + "-one", "b/" + "x" * 30 + "-one"])
    assert twins[0] != twins[1] and twins[1].endswith("#2") and len(twins[1]) == MAX_LABEL


def test_web_model_page_shows_the_picture(crawled: Path) -> None:
    from fingerprint.index import Index
    from lineage.pictures import HomePictures
    from lineage.settings import Settings
    from lineage.store import open_store
    from web.app import create_app

    cli = CliRunner().invoke(main, ["picture", "alice/ft", "-o", str(crawled / "ft.png")])
    assert cli.exit_code == 0, cli.output
    s = Settings.from_env()
    store = open_store(s)
    try:
        with TestClient(create_app(store, pictures=HomePictures(s.home, Index(s.home / "index")))) as client:
            page = client.get("/model/alice/ft")
            assert page.status_code == 200 and '<img src="/picture/alice/ft.png"' in page.text
            assert client.get("/model/alice/ft.json").json()["picture"] == "/picture/alice/ft.png"
            png = client.get("/picture/alice/ft.png")
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content == (crawled / "ft.png").read_bytes()  # the page shows what the CLI draws
            assert client.get("/picture/nobody/none.png").status_code == 404
            assert client.get("/picture/alice/ft").status_code == 404
        with TestClient(create_app(store)) as client:  # no pictures configured: no panel, no route
            assert client.get("/model/alice/ft.json").json()["picture"] is None
            assert client.get("/picture/alice/ft.png").status_code == 404
    finally:
        store.close()
    assert io.BytesIO(png.content).read(8) == b"\x89PNG\r\n\x1a\n"
