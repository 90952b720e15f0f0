"""What the crawler knows about a Hub model: frozen records parsed once, at the boundary.

Nothing past this module sees a raw API payload. Every field from the Hub is validated (type, length,
path safety) because every header, size and name from the Hub is untrusted.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, cast, get_args

from crawler.errors import PayloadError
from fingerprint.errors import UnsafePathError
from fingerprint.io.source import safe_relative_name
from fingerprint.sketch import Sketch
from graph.records import Relation  # one definition: a card's relation becomes a DECLARES_BASE property

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_LEGACY_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_FILES = 10_000
MAX_TAGS = 200
#: the relations a card or the Hub can state (``unknown`` is what the graph writes when neither does)
RELATIONS = tuple(r for r in get_args(Relation) if r != "unknown")
#: what the client's or our own parsing of a hostile record raises, turned into a PayloadError
PARSE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)


def valid_repo_id(s: object) -> str | None:
    """``s`` if it is a well-formed ``namespace/name`` repo id (no traversal, no URL), else None."""
    if isinstance(s, str) and _REPO_ID.match(s) and ".." not in s:
        return s
    return None


def valid_base_id(s: object) -> str | None:
    """``s`` if it can name a base on a card: a repo id, or a legacy single-segment id (``gpt2``,
    ``bert-base-uncased``: the Hub answers those with a 307 to the canonical ``namespace/name``), else None."""
    if isinstance(s, str) and _LEGACY_ID.match(s) and ".." not in s:
        return s
    return valid_repo_id(s)


@dataclass(frozen=True)
class WeightFile:
    """A weight file of a repo. ``sha256`` is the LFS content hash: equal hashes are equal bytes."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class HubModel:
    """One model repo at one commit, as listed and described by the Hub.

    Attributes:
        key: the Hub's ``_id`` (stable across renames); the graph's node key.
        id: ``namespace/name``.
        sha: the commit the metadata (and any weights read) belong to.
        gated: ``False``, ``"auto"`` or ``"manual"``.
        license, license_name, license_link: from the card.
        base_models: declared bases (``base_model`` in the card, else ``baseModels`` or the
            ``base_model:…`` tags), validated ids.
        base_keys: ``(id, _id)`` of declared bases the payload's ``baseModels`` names (the Hub sends it
            only when asked by ``expand``, which excludes the LFS hashes: usually empty).
        relation: declared (card) or Hub-inferred relation to the bases (``baseModels``, or the
            ``base_model:{relation}:{id}`` tag the Hub adds to every default payload).
        architecture: ``config.architectures[0]`` read through the API (not ``/resolve``).
        weights: safetensors/GGUF files with sizes and LFS hashes.
        file_sizes: every file's size (what a ranged reader may be asked to read).
        params: the server's parameter count (``safetensors.total``), if any.
        adapter, gguf, quantized: flags from files, config and dtypes.
    """

    key: str
    id: str
    sha: str
    author: str
    created_at: datetime | None
    last_modified: datetime | None
    private: bool
    gated: str | bool
    license: str | None
    license_name: str | None
    license_link: str | None
    base_models: tuple[str, ...]
    base_keys: tuple[tuple[str, str], ...]
    relation: Relation | None
    tags: tuple[str, ...]
    pipeline_tag: str | None
    library: str | None
    architecture: str | None
    weights: tuple[WeightFile, ...]
    file_sizes: dict[str, int] = field(hash=False, compare=False)
    params: int | None = None
    adapter: bool = False
    gguf: bool = False
    quantized: bool = False
    claims: str | None = None
    """A quote of the card text's "trained from scratch" claim (:mod:`crawler.claims`), read with the weights."""

    @property
    def weight_bytes(self) -> int:
        return sum(w.size for w in self.weights)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> HubModel:
        """The model as :meth:`Outcome.record` stored it in the crawl state (without ``file_sizes``).

        Raises:
            KeyError, TypeError, ValueError: not a stored model record.
        """
        kw = {f: d[f] for f in cls.__dataclass_fields__ if f in d and f != "file_sizes"}
        for f in ("base_models", "tags"):
            kw[f] = tuple(kw.get(f) or ())
        kw["base_keys"] = tuple((str(a), str(b)) for a, b in kw.get("base_keys") or ())
        kw["weights"] = tuple(WeightFile(str(w["name"]), int(w["size"]), w.get("sha256")) for w in kw.get("weights") or ())
        kw["created_at"], kw["last_modified"] = _date(kw.get("created_at")), _date(kw.get("last_modified"))
        return cls(file_sizes={}, **kw)


def _str(v: object, limit: int = 512) -> str | None:
    return v[:limit] if isinstance(v, str) and v else None


def _date(v: object) -> datetime | None:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return None


def base_tags(tags: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """The Hub-inferred relation and base ids in ``base_model:{id}`` / ``base_model:{relation}:{id}``
    tags (in every default ``model_info``, unlike ``baseModels``); one relation only if all agree."""
    relations: set[str] = set()
    ids: list[str] = []
    for t in tags:
        parts = t.split(":")
        if parts[0] != "base_model" or len(parts) not in (2, 3):
            continue
        if len(parts) == 3 and parts[1] in RELATIONS:
            relations.add(parts[1])
        rid = valid_base_id(parts[-1])
        if rid is not None and rid not in ids:
            ids.append(rid)
    return (relations.pop() if len(relations) == 1 else None), ids


def from_payload(doc: object) -> HubModel:
    """A :class:`HubModel` from a raw ``model_info`` JSON body, as the client would build it.

    Raises:
        PayloadError: anything that is not a valid model record (the client's own parsing errors too).
    """
    from huggingface_hub.hf_api import ModelInfo

    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise PayloadError(type(doc).__name__, "not a JSON object")
    what = str(doc.get("id"))
    try:
        info = ModelInfo(**doc)  # type: ignore[no-untyped-call]  # the client's own constructor
    except PARSE_ERRORS as e:
        raise PayloadError(what, f"{type(e).__name__}: {e}") from e
    return from_info(info)


def from_info(info: Any) -> HubModel:
    """Build a :class:`HubModel` from a ``huggingface_hub`` ``ModelInfo`` (``files_metadata=True``).

    Raises:
        PayloadError: the payload lacks an id, ``_id`` or sha, names an unsafe file, or has fields of
            the wrong type.
    """
    try:
        return _from_info(info)
    except PayloadError:
        raise
    except PARSE_ERRORS as e:
        raise PayloadError(str(getattr(info, "id", None)), f"{type(e).__name__}: {e}") from e


def _from_info(info: Any) -> HubModel:
    raw = vars(info)
    repo_id = valid_repo_id(getattr(info, "id", None))
    key = _str(raw.get("_id"), 64)
    sha = _str(getattr(info, "sha", None), 64)
    if repo_id is None or key is None or sha is None:
        raise PayloadError(str(getattr(info, "id", None)), "no valid id, _id or sha")
    raw_card = getattr(info, "card_data", None)
    card: dict[str, Any] = raw_card if isinstance(raw_card, dict) else {}
    if raw_card is not None and hasattr(raw_card, "to_dict"):  # a ModelCardData
        card = raw_card.to_dict()
    declared = card.get("base_model") or card.get("finetuned_from")
    bases = [declared] if isinstance(declared, str) else list(declared) if isinstance(declared, list) else []
    bm = getattr(info, "base_models", None)
    relation = None
    keys: list[tuple[str, str]] = []
    if isinstance(bm, dict):
        relation = bm.get("relation")
        for m in bm.get("models") or []:
            if isinstance(m, dict) and valid_repo_id(m.get("id")) and _str(m.get("_id"), 64):
                keys.append((str(m["id"]), str(m["_id"])[:64]))
        if not bases:
            bases = [m.get("id") for m in bm.get("models") or [] if isinstance(m, dict)]
    raw_tags = getattr(info, "tags", None)
    tags = tuple(t[:300] for t in (raw_tags if isinstance(raw_tags, list) else [])[:MAX_TAGS] if isinstance(t, str))
    tag_relation, tag_bases = base_tags(tags)
    if not bases:
        bases = tag_bases
    rel = card.get("base_model_relation") or relation or tag_relation
    sizes: dict[str, int] = {}
    weights: list[WeightFile] = []
    for s in (getattr(info, "siblings", None) or [])[:MAX_FILES]:
        try:
            name = safe_relative_name(s.rfilename, repo_id)
        except UnsafePathError as e:
            raise PayloadError(repo_id, str(e)) from e
        size = s.lfs.size if s.lfs is not None else s.size
        if not isinstance(size, int) or size < 0:
            continue  # no size, no read: the reader refuses files it cannot bound
        sizes[name] = size
        if name.endswith(WEIGHT_SUFFIXES):
            sha256 = s.lfs.sha256 if s.lfs is not None and _SHA256.match(str(s.lfs.sha256)) else None
            weights.append(WeightFile(name, size, sha256))
    cfg = getattr(info, "config", None) or {}
    archs = cfg.get("architectures") if isinstance(cfg, dict) else None
    st = getattr(info, "safetensors", None)
    dtypes = set(st.parameters) if st is not None else set()
    names = set(sizes)
    return HubModel(
        key=key, id=repo_id, sha=sha, author=repo_id.split("/")[0],
        created_at=_date(getattr(info, "created_at", None)), last_modified=_date(getattr(info, "last_modified", None)),
        private=bool(getattr(info, "private", False)), gated=getattr(info, "gated", False) or False,
        license=_str(card.get("license"), 64), license_name=_str(card.get("license_name"), 128),
        license_link=_str(card.get("license_link")),
        base_models=tuple(b for b in (valid_base_id(x) for x in bases) if b), base_keys=tuple(keys),
        relation=cast(Relation, rel) if rel in RELATIONS else None,
        tags=tags,
        pipeline_tag=_str(getattr(info, "pipeline_tag", None), 64), library=_str(getattr(info, "library_name", None), 64),
        architecture=_str(archs[0], 128) if isinstance(archs, list) and archs else None,
        weights=tuple(weights), file_sizes=sizes,
        params=st.total if st is not None and isinstance(st.total, int) else None,
        adapter="adapter_config.json" in names or any(n.startswith("adapter_model") for n in names),
        gguf=any(n.endswith(".gguf") for n in names),
        quantized=bool(dtypes & {"I8", "U8", "I32", "I4", "F8_E4M3", "F8_E5M2"})
        or (isinstance(cfg, dict) and "quantization_config" in cfg),
    )


#: What processing one queued model gave. ``retry`` is transient (the item goes back to the queue);
#: every other status is final for that ``(_id, sha)``.
OutcomeStatus = Literal["fingerprinted", "duplicate", "gated", "adapter", "no-weights", "unsupported", "gone", "failed",
                        "retry"]


@dataclass(frozen=True)
class WorkItem:
    """One claimed queue entry: the Hub's ``(_id, sha)``, the repo id when queued, and the attempts so far
    (this one included)."""

    key: str
    sha: str
    repo_id: str
    attempts: int


@dataclass
class Outcome:
    """What processing one model gave: the record, a status and, when fingerprinted, the fingerprint.

    A worker (:func:`crawler.fetch.fingerprint_repo`) fills ``data`` with the fingerprint file's bytes;
    the crawler that receives it puts them in the fingerprint store and sets ``fingerprint_sha`` (their
    SHA-256: the store's key), ``fingerprint`` (the file, when the store is a local directory) and
    ``sketch`` (those bytes parsed, so every consumer sees exactly what is stored).
    """

    model: HubModel | None
    status: OutcomeStatus
    reason: str | None = None
    fingerprint: Path | None = None
    fingerprint_sha: str | None = None
    sketch: Sketch | None = None
    data: bytes | None = None
    duplicate_of: tuple[str, str] | None = None
    base_keys: dict[str, str] = field(default_factory=dict)
    bytes_read: int = 0
    requests: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The crawl facts stored in the crawl state (no placement: that lives in the graph only)."""
        m = self.model
        doc: dict[str, Any] = {"status": self.status, "reason": self.reason, "bytes_read": self.bytes_read,
                               "requests": self.requests, "seconds": self.seconds,
                               "fingerprint": str(self.fingerprint) if self.fingerprint else None,
                               "fingerprint_sha256": self.fingerprint_sha,
                               "duplicate_of": list(self.duplicate_of) if self.duplicate_of else None,
                               "base_keys": self.base_keys}
        if m is not None:
            d = asdict(m)
            d.pop("file_sizes")
            d["created_at"] = m.created_at.isoformat() if m.created_at else None
            d["last_modified"] = m.last_modified.isoformat() if m.last_modified else None
            d["weights"] = [asdict(w) for w in m.weights]
            d["checkpoint_bytes"] = m.weight_bytes
            d["weights_digest"] = ",".join(sorted(w.sha256 for w in m.weights if w.sha256)) or None
            doc["model"] = d
            doc["weights_digest"] = d["weights_digest"]
        return doc
