from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinymodels import HF_ARCHITECTURES, build_hf, build_llava


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every cache and store of a test inside its own temporary directory."""
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / "lineage-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("LINEAGE_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny fixed-seed model per supported HF architecture, plus a LLaVA wrapper."""
    root = tmp_path_factory.mktemp("tiny")
    out = {name: build_hf(name, root / name) for name in HF_ARCHITECTURES}
    out["llava"] = build_llava(root / "llava")
    return out
