"""``lineage web``: `--get` answers one page or its JSON twin in process (no server, no socket); the server
binds its port before it announces the URL."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from click.testing import CliRunner

from lineage.cli import main


def run(*args: str, code: int = 0) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


def test_get_prints_a_pages_json_twin_the_same_as_the_json_path(loaded: None) -> None:
    twin = json.loads(run("web", "--get", "/model/bob/sft3.json"))
    assert twin["model"]["id"] == "bob/sft3" and [p["parent"] for p in twin["detected_parents"]] == ["bob/sft2"]
    assert json.loads(run("web", "--get", "/model/bob/sft3", "--json")) == twin  # Accept: application/json
    fam = json.loads(run("web", "--get", "/family/llama-x.json?focus=alice/sft"))
    assert fam["family"] == "llama-x" and fam["focus"] == "alice/sft" and fam["root"] == "meta/base"


def test_get_prints_the_html_page(loaded: None) -> None:
    page = run("web", "--get", "/model/bob/sft3")
    assert page.lstrip().lower().startswith("<!doctype html>") and "bob/sft3" in page


def test_get_of_a_missing_page_is_one_error_line(loaded: None) -> None:
    r = CliRunner().invoke(main, ["web", "--get", "/model/nobody/none.json"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("Error: GET /model/nobody/none.json answered 404") and r.stderr.count("\n") == 1
    r = CliRunner().invoke(main, ["web", "--get", "model/x"])
    assert r.exit_code == 2 and "starts with '/'" in r.stderr


def test_a_busy_port_is_one_error_line_before_any_url_is_announced(loaded: None) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = CliRunner().invoke(main, ["web", "--port", str(busy.getsockname()[1])])
    assert r.exit_code == 2 and "http://" not in r.stderr
    assert r.stderr.startswith("Error: cannot listen on 127.0.0.1:") and r.stderr.count("\n") == 1


def test_the_server_answers_on_the_port_it_announced(loaded: None) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lineage", "web", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/model/bob/sft3.json", timeout=5) as resp:
                    assert json.loads(resp.read())["model"]["id"] == "bob/sft3"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
