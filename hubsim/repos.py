"""The repositories a loopback Hub stand-in serves: files on disk plus the metadata the Hub computes.

A :class:`SimRepo` is one model repo at its current commit, with the ``.gitattributes`` the Hub writes. A
file its patterns match (weights, ``tokenizer.model``, ``*.npy``...) or one over 10 MB (the Hub refuses
larger regular files) is an LFS file: the stand-in redirects it to its "CDN" origin, as the Hub does.
Everything else is a small git file, served through the resolve cache. Dates are the tests' to control.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

#: The patterns of the ``.gitattributes`` the Hub writes into every new model repo (its
#: ``huggingface_hub`` upload template): files matching one are stored in LFS and served from the CDN.
HUB_LFS_PATTERNS = ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
                    "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
                    "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
                    "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
                    "*.zst", "*tfevents*", "*.gguf")
#: The Hub refuses a regular (non-LFS) git file over 10 MB: any larger file of a real repo is in LFS.
MAX_GIT_FILE_BYTES = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in HUB_LFS_PATTERNS)


def is_lfs(name: str, size: int) -> bool:
    """Whether the Hub stores ``name`` (``size`` bytes) in LFS: a pattern of its ``.gitattributes``
    matches, or the file is too large to be a regular git file."""
    base = name.rsplit("/", 1)[-1]
    return size > MAX_GIT_FILE_BYTES or any(
        fnmatch(base, p) or fnmatch(name, p) or (p.endswith("/**/*") and name.startswith(p[:-4]))
        for p in HUB_LFS_PATTERNS)


def gitattributes_file() -> Path:
    """The default ``.gitattributes``, written once to the temp directory (every repo serves it)."""
    p = Path(tempfile.gettempdir()) / f"hubsim-gitattributes-{hashlib.sha1(GITATTRIBUTES.encode()).hexdigest()[:12]}"
    if not p.exists():
        tmp = p.with_suffix(f".{os.getpid()}")
        tmp.write_text(GITATTRIBUTES, "utf-8")
        tmp.replace(p)
    return p

Gated = Literal[False, "auto", "manual"]
#: framework tags the Hub adds from a repo's files
FRAMEWORK_TAGS = (("pytorch", (".bin", ".pt", ".pth")), ("tf", (".h5",)), ("jax", (".msgpack",)),
                  ("onnx", (".onnx",)), ("safetensors", (".safetensors",)), ("gguf", (".gguf",)))


def _card_list(v: object) -> list[str]:
    """A card field that may be one string or a list of them."""
    items = [v] if isinstance(v, str) else v if isinstance(v, list) else []
    return [x for x in items if isinstance(x, str) and x][:50]


def iso(t: datetime) -> str:
    """The Hub's timestamp format: ``2026-11-21T10:00:00.000Z``."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def object_id(repo_id: str) -> str:
    """A stable 24-hex ``_id`` (the Hub's are Mongo object ids); it survives renames in the stand-in."""
    return hashlib.sha1(("_id:" + repo_id).encode()).hexdigest()[:24]


@dataclass
class SimFile:
    """One file of a repo: its bytes live at ``path``; hashes are computed once."""

    name: str
    path: Path
    size: int = 0
    sha1: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        self.size = self.path.stat().st_size
        # git's blob id is sha1("blob <size>\0" + content); LFS keys on sha256 of the content. Streamed:
        # a served checkpoint may be many gigabytes (bench.service's 1B shapes).
        sha1, sha256 = hashlib.sha1(b"blob %d\x00" % self.size), hashlib.sha256()
        with open(self.path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                sha1.update(chunk)
                sha256.update(chunk)
        self.sha1, self.sha256 = sha1.hexdigest(), sha256.hexdigest()

    @property
    def lfs(self) -> bool:
        return is_lfs(self.name, self.size)


@dataclass
class SimRepo:
    """A model repo as the stand-in serves it."""

    repo_id: str
    files: dict[str, SimFile]
    created_at: datetime
    last_modified: datetime
    gated: Gated = False
    private: bool = False
    card: dict[str, Any] = field(default_factory=dict)
    pipeline_tag: str | None = "text-generation"
    library_name: str | None = None
    _id: str = ""
    #: earlier commits of ``main``: sha -> files (:meth:`hubsim.HubSim.commit` keeps them readable)
    history: dict[str, dict[str, SimFile]] = field(default_factory=dict)
    prs: list[dict[str, SimFile]] = field(default_factory=list)  # ``refs/pr/N`` is ``prs[N-1]``
    origin: str = ""  # the id the repo was created under: a rename keeps its commits' shas

    def __post_init__(self) -> None:
        # every repo the Hub creates has its .gitattributes (listed in siblings and trees like any file)
        self.files.setdefault(".gitattributes", SimFile(".gitattributes", gitattributes_file()))
        self.origin = self.origin or self.repo_id
        self._id = self._id or object_id(self.repo_id)
        if not self.card and "README.md" in self.files:
            self.card = front_matter(self.files["README.md"].path.read_text("utf-8", errors="replace"))
        self.library_name = self.library_name or self.card.get("library_name") or (
            "gguf" if any(f.endswith(".gguf") for f in self.files) else "transformers")

    @property
    def author(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def sha(self) -> str:
        """The commit: a hash of every file's name and blob id, so any change of content changes it."""
        h = hashlib.sha1(self.origin.encode())
        for name in sorted(self.files):
            h.update(f"{name}\x00{self.files[name].sha1}\x00".encode())
        return h.hexdigest()

    def config(self) -> dict[str, Any] | None:
        f = self.files.get("config.json")
        if f is None:
            return None
        try:
            cfg = json.loads(f.path.read_text("utf-8"))
        except ValueError:
            return None
        keep = ("architectures", "model_type", "tokenizer_config", "quantization_config")
        return {k: cfg[k] for k in keep if k in cfg} if isinstance(cfg, dict) else None

    def tags(self) -> list[str]:
        """The tags of the Hub's default payload, in its order: the library, framework tags from the
        files, the ``model_type``, the pipeline tag, the card's own ``tags:``, ``dataset:``s, languages,
        ``base_model:`` pairs, ``arxiv:`` ids linked in the README, the licence, the inference flags
        and the storage region (huggingface_hub's recorded payloads)."""
        names = list(self.files)
        tags = [self.library_name or "transformers"]
        for tag, suffixes in FRAMEWORK_TAGS:
            if any(n.endswith(suffixes) for n in names) and tag not in tags:
                tags.append(tag)
        cfg = self.config() or {}
        if isinstance(cfg.get("model_type"), str):
            tags.append(cfg["model_type"])
        if self.pipeline_tag:
            tags.append(self.pipeline_tag)
        tags += [t for t in _card_list(self.card.get("tags")) if t not in tags]
        tags += [f"dataset:{d}" for d in _card_list(self.card.get("datasets"))]
        tags += _card_list(self.card.get("language"))
        base = self.base_models()
        if base:
            for m in base["models"]:
                tags += [f"base_model:{m['id']}", f"base_model:{base['relation']}:{m['id']}"]
        readme = self.files.get("README.md")
        if readme is not None:
            text = readme.path.read_text("utf-8", errors="replace")
            tags += [f"arxiv:{x}" for x in dict.fromkeys(re.findall(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})", text))]
        lic = self.card.get("license")
        if isinstance(lic, str):
            tags.append(f"license:{lic}")
        if (self.library_name or "transformers") == "transformers" and self.pipeline_tag == "text-generation":
            tags.append("autotrain_compatible")
        if self.library_name in (None, "transformers") and "config.json" in self.files:
            tags.append("endpoints_compatible")
        tags.append("region:us")
        return tags

    def base_models(self) -> dict[str, Any] | None:
        """``baseModels`` as the Hub computes it from the card (relation inferred when not declared)."""
        base = self.card.get("base_model")
        if not base:
            return None
        ids = [base] if isinstance(base, str) else [b for b in base if isinstance(b, str)]
        relation = self.card.get("base_model_relation")
        if relation not in ("finetune", "adapter", "merge", "quantized"):
            if any(n.endswith(".gguf") for n in self.files):
                relation = "quantized"
            elif "adapter_config.json" in self.files:
                relation = "adapter"
            else:
                relation = "merge" if len(ids) > 1 else "finetune"
        return {"relation": relation, "models": [{"_id": object_id(i), "id": i} for i in ids]}

    def safetensors_info(self) -> dict[str, Any] | None:
        """``safetensors`` parameter counts per dtype, from the headers (as the Hub computes it)."""
        params: dict[str, int] = {}
        for f in self.files.values():
            if not f.name.endswith(".safetensors"):
                continue
            with open(f.path, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            for k, v in header.items():
                if k != "__metadata__":
                    count = 1
                    for s in v["shape"]:
                        count *= s
                    params[v["dtype"]] = params.get(v["dtype"], 0) + count
        return {"parameters": params, "total": sum(params.values())} if params else None

    def sibling(self, f: SimFile, blobs: bool) -> dict[str, Any]:
        s: dict[str, Any] = {"rfilename": f.name}
        if blobs:
            s.update(size=f.size, blobId=f.sha1)
            if f.lfs:
                s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
        return s

    def info(self, blobs: bool = False) -> dict[str, Any]:
        """Every field the stand-in knows, expand-only ones included (:meth:`hubsim.HubSim.shape` picks)."""
        return {
            "_id": self._id, "id": self.repo_id, "modelId": self.repo_id, "author": self.author,
            "sha": self.sha, "createdAt": iso(self.created_at), "lastModified": iso(self.last_modified),
            "private": self.private, "gated": self.gated, "disabled": False, "downloads": 0, "likes": 0,
            "tags": self.tags(), "pipeline_tag": self.pipeline_tag, "library_name": self.library_name,
            "cardData": self.card or None, "config": self.config(),
            "siblings": [self.sibling(f, blobs) for f in sorted(self.files.values(), key=lambda f: f.name)],
            "safetensors": self.safetensors_info(), "spaces": [],
            "usedStorage": sum(f.size for f in self.files.values()),
            # expand-only on the Hub: never in a default payload
            "baseModels": self.base_models(), "downloadsAllTime": 0, "trendingScore": 0,
        }


_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card, parsed as the Hub parses it (full YAML, safely: no object
    construction); anything that is not a mapping is no metadata."""
    import yaml

    m = _FRONT.match(text)
    if not m:
        return {}
    try:
        doc = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    if not isinstance(doc, dict):
        return {}
    # JSON-shaped, as the Hub's cardData is (a YAML date becomes its text)
    return {str(k): v for k, v in json.loads(json.dumps(doc, default=str)).items() if v not in (None, [], "")}


def files_of(directory: Path) -> dict[str, SimFile]:
    """Every file under ``directory`` keyed by its POSIX relative name."""
    return {p.relative_to(directory).as_posix(): SimFile(p.relative_to(directory).as_posix(), p)
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(".")}
