"""Settings from ``LINEAGE_*`` environment variables, read once, in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from lineage.errors import SettingsError

if TYPE_CHECKING:  # the index (numpy) is imported only when a command opens it
    from fingerprint.index import Index

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
_WORKERS = re.compile(r"^(inline|local|ray|ray://[A-Za-z0-9.\-\[\]:]{1,255}:\d{1,5})$")


@dataclass(frozen=True)
class Setting:
    """One documented setting: environment variable, default and help text."""

    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("LINEAGE_HOME", "~/.lineage", "Directory for the index, the embedded graph store, crawl state and caches."),
    Setting("LINEAGE_DEVICE", "auto", "Torch device for similarity math: auto (cuda if available), cpu, cuda, cuda:N."),
    Setting("LINEAGE_DISABLE_PROGRESS_BARS", "0", "Set to 1 to turn off progress bars on stderr."),
    Setting("LINEAGE_GRAPH", "embedded",
            "Lineage store: embedded (SQLite file $LINEAGE_HOME/graph.sqlite) or a Neo4j URI (neo4j://host:7687, bolt://...)."),
    Setting("LINEAGE_NEO4J_USER", "neo4j", "Neo4j user name (when LINEAGE_GRAPH is a URI)."),
    Setting("LINEAGE_NEO4J_PASSWORD", "", "Neo4j password (when LINEAGE_GRAPH is a URI)."),
    Setting("LINEAGE_NEO4J_DATABASE", "neo4j", "Neo4j database name (when LINEAGE_GRAPH is a URI)."),
    Setting("LINEAGE_HUB_ENDPOINT", "https://huggingface.co",
            "Hub the crawler reads (lineage crawl --endpoint overrides it); the token is HF_TOKEN."),
    Setting("LINEAGE_WORKERS", "local",
            "Where fingerprints are computed: local (a process pool), ray (a local Ray cluster, or the one "
            "RAY_ADDRESS names), ray://host:port (Ray Client), inline (this process)."),
    Setting("RAY_ADDRESS", "", "With LINEAGE_WORKERS=ray: the Ray cluster to join (host:port of its head, or auto); "
            "empty: start a local one."),
    Setting("LINEAGE_WORKER_COUNT", "0", "Fingerprint workers; 0: one per CPU core (per GPU on a Ray cluster with GPUs)."),
    Setting("LINEAGE_FINGERPRINT_STORE", "", "Where the index keeps fingerprint files: empty for $LINEAGE_HOME/index, or "
            "an fsspec URL (s3://bucket/prefix, gs://..., file:///mnt/fp; the backend package must be installed)."),
    Setting("LINEAGE_CRAWL_PIPELINE_TAGS", "text-generation,feature-extraction,sentence-similarity,fill-mask,text2text-generation",
            "The service crawls only models with one of these pipeline tags (comma-separated; * for every "
            "model): the LLMs, encoders and embedding models whose weights the fingerprint reads. lineage crawl "
            "takes --pipeline-tag."),
    Setting("LINEAGE_PASS_MINUTES", "10", "A service crawl, sweep or cards pass stops claiming models after "
            "this many minutes and leaves the rest queued for the next pass (no pass holds the writer lock "
            "for hours); 0: no limit."),
    Setting("LINEAGE_WRITER_WAIT", "600", "Seconds a writing command (or service job) waits for another process "
            "that is writing the same home before it gives up with one line naming it; 0: do not wait."),
    Setting("LINEAGE_WEB_TOKEN", "", "Token that lets lineage web acknowledge and mute alerts; empty: the web UI is "
            "read-only."),
    Setting("HF_TOKEN", "", "Hugging Face token for the crawler and lineage index bootstrap (gated bases need one "
            "whose account accepted their terms); empty: anonymous."),
)


def _number(env: str, value: str, top: float, what: str) -> float:
    """``value`` as a number from 0 to ``top``.

    Raises:
        SettingsError: anything else (``what`` says what is expected).
    """
    try:
        n = float(value.strip())
    except ValueError:
        n = -1.0
    if not 0 <= n <= top:  # a NaN fails this too
        raise SettingsError(env, value.strip(), f"use {what}")
    return n


def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Resolved settings (see :data:`SETTINGS` for the variables and their help)."""

    home: Path
    device: str
    disable_progress_bars: bool
    graph: str
    neo4j_user: str
    neo4j_password: str
    neo4j_database: str
    hub_endpoint: str
    workers: str
    ray_address: str | None
    worker_count: int | None
    fingerprint_store: str | None
    web_token: str | None
    hub_token: str | None
    writer_wait: float = 600.0
    crawl_pipeline_tags: tuple[str, ...] = ("text-generation", "feature-extraction", "sentence-similarity", "fill-mask",
                                            "text2text-generation")
    pass_minutes: float | None = 10.0

    def existing_home(self) -> Path:
        """The home, for commands that only read it: a missing one is an error (a typo in
        ``LINEAGE_HOME`` must not read as an empty index or graph).

        Raises:
            SettingsError: the home does not exist.
        """
        if not self.home.is_dir():
            raise SettingsError("LINEAGE_HOME", str(self.home), "does not exist (a typo? lineage demo, lineage crawl "
                                "or lineage index add creates it)")
        return self.home

    def index(self) -> Index:
        """The base-family index of this home, its fingerprint files where ``LINEAGE_FINGERPRINT_STORE`` says."""
        from fingerprint.index import Index

        return Index(self.home / "index", self.fingerprint_store)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read every setting once; values are checked here, so a bad one fails at start-up.

        Raises:
            SettingsError: a malformed ``LINEAGE_DEVICE``, ``LINEAGE_WORKERS``, ``LINEAGE_WORKER_COUNT`` or
                ``LINEAGE_GRAPH`` URI, or a ``LINEAGE_HOME`` that exists and is not a directory.
        """
        e = dict(os.environ if env is None else env)

        def get(name: str) -> str:
            default = next(s.default for s in SETTINGS if s.env == name)
            return e.get(name, default)

        home = Path(get("LINEAGE_HOME")).expanduser()
        if home.exists() and not home.is_dir():
            raise SettingsError("LINEAGE_HOME", str(home), "exists and is not a directory")
        device = get("LINEAGE_DEVICE").strip().lower()
        if not _DEVICE.match(device):
            raise SettingsError("LINEAGE_DEVICE", device, "use auto, cpu, cuda or cuda:N")
        workers = get("LINEAGE_WORKERS").strip()
        if not _WORKERS.match(workers):
            raise SettingsError("LINEAGE_WORKERS", workers, "use local, ray, ray://host:port or inline")
        count = get("LINEAGE_WORKER_COUNT").strip()
        if not count.isdigit() or int(count) > 1024:
            raise SettingsError("LINEAGE_WORKER_COUNT", count, "use a number from 0 (one per core) to 1024")
        store = get("LINEAGE_FINGERPRINT_STORE").strip()
        if store and not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", store):
            raise SettingsError("LINEAGE_FINGERPRINT_STORE", store, "use an fsspec URL such as s3://bucket/prefix or "
                                "file:///path, or leave it empty")
        writer_wait = _number("LINEAGE_WRITER_WAIT", get("LINEAGE_WRITER_WAIT"), 86_400, "seconds from 0 to 86400")
        tags = tuple(t.strip() for t in get("LINEAGE_CRAWL_PIPELINE_TAGS").split(",") if t.strip())
        if not all(t == "*" or re.fullmatch(r"[a-z0-9-]{1,64}", t) for t in tags):
            raise SettingsError("LINEAGE_CRAWL_PIPELINE_TAGS", ",".join(tags), "use pipeline tags such as "
                                "text-generation, comma-separated, or *")
        pass_minutes = _number("LINEAGE_PASS_MINUTES", get("LINEAGE_PASS_MINUTES"), 10_080,
                               "minutes from 0 (no limit) to 10080")
        graph = get("LINEAGE_GRAPH").strip()
        if "://" in graph:  # a server URI: checked by its shape only (no lookup of the host here)
            from urllib.parse import urlsplit

            try:
                parts = urlsplit(graph)
                port_ok = parts.port is None or 0 < parts.port < 65536
            except ValueError:
                port_ok = False
            if not parts.hostname or not port_ok:
                shown = graph.replace(f":{parts.password}@", ":***@") if parts.password else graph  # never echo a password
                raise SettingsError("LINEAGE_GRAPH", shown, "use embedded or a URI such as bolt://host:7687 "
                                    "(a host, and a port from 1 to 65535)")
        return cls(
            home=home,
            device=device,
            disable_progress_bars=_truthy(get("LINEAGE_DISABLE_PROGRESS_BARS")),
            graph=graph,
            neo4j_user=get("LINEAGE_NEO4J_USER"),
            neo4j_password=get("LINEAGE_NEO4J_PASSWORD"),
            neo4j_database=get("LINEAGE_NEO4J_DATABASE"),
            hub_endpoint=get("LINEAGE_HUB_ENDPOINT"),
            workers=workers,
            ray_address=get("RAY_ADDRESS").strip() or None,
            worker_count=int(count) or None,
            fingerprint_store=store or None,
            web_token=get("LINEAGE_WEB_TOKEN").strip() or None,
            hub_token=get("HF_TOKEN").strip() or None,
            writer_wait=writer_wait,
            crawl_pipeline_tags=() if "*" in tags else tags,
            pass_minutes=pass_minutes or None,
        )


assert len(fields(Settings)) == len(SETTINGS)
