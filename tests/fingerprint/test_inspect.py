"""``lineage inspect`` reads headers only and reports the byte ranges a fingerprint needs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from click.testing import CliRunner
from tinymodels import build_hf

from lineage.cli import main
from zoo.convert import shard, to_gguf


def test_inspect_sharded_reads_only_headers(tmp_path: Path) -> None:
    src = shard(build_hf("qwen2", tmp_path / "q"), tmp_path / "qs", n_shards=3)
    res = CliRunner().invoke(main, ["inspect", str(src), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    headers = 0
    for f in src.glob("*.safetensors"):
        (n,) = struct.unpack("<Q", f.read_bytes()[:8])
        headers += 8 + n
    assert r["bytes_read"] == headers  # exactly the three headers, not one tensor byte
    assert len(r["files"]) == 3
    names = [t["name"] for t in r["needed"]]
    assert "model.embed_tokens.weight" in names and "model.layers.1.self_attn.k_proj.bias" in names
    assert not any("mlp" in n or "v_proj" in n or "o_proj" in n for n in names)
    assert r["bytes_needed"] == sum(t["end"] - t["start"] for t in r["needed"])
    assert 0 < r["share_needed"] < 1


def test_inspect_gguf_human_output(tmp_path: Path) -> None:
    g = to_gguf(build_hf("llama", tmp_path / "l"), tmp_path / "l.gguf", "Q8_0")
    res = CliRunner().invoke(main, ["inspect", str(g)])
    assert res.exit_code == 0, res.output
    assert "gguf" in res.output and "blk.0.attn_q.weight" in res.output and "bytes needed" in res.output


def test_inspect_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown architecture 'MambaForCausalLM'" in res.output and "Traceback" not in res.output
