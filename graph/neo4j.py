"""Neo4j backend through the official driver (caller-provided driver; all Cypher in :mod:`graph.cypher`).

Writes are batched ``UNWIND $rows`` MERGEs inside managed transactions (``execute_write`` retries transient
errors, so each unit of work is idempotent and has no side effects outside the database).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from graph import cypher
from graph.errors import StoreAuthError, StoreUnavailableError
from graph.records import (
    DeclaredEdge,
    DerivedEdge,
    FamilyRecord,
    InFamily,
    Lineage,
    ModelRecord,
    SameWeights,
    SharedInit,
    TypedRelation,
)
from graph.store import BATCH, EdgeRow, Mode

log = logging.getLogger(__name__)


def connect(uri: str, user: str, password: str) -> Any:
    """Open a driver and check it can talk to the server, mapping failures to one clear error."""
    import neo4j
    from neo4j.exceptions import AuthError, ConfigurationError, ServiceUnavailable

    try:
        driver = neo4j.GraphDatabase.driver(uri, auth=(user, password), connection_timeout=10)
    except (ValueError, ConfigurationError) as e:
        raise StoreUnavailableError(f"invalid Neo4j URI {uri!r}: {e}") from e
    try:
        driver.verify_connectivity()
    except AuthError as e:
        driver.close()
        raise StoreAuthError(f"Neo4j at {uri} refused the credentials of user {user!r} "
                             "(set LINEAGE_NEO4J_USER / LINEAGE_NEO4J_PASSWORD)") from e
    except (ServiceUnavailable, OSError, ValueError) as e:  # ValueError: an address the driver cannot resolve
        driver.close()
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise StoreUnavailableError(f"cannot reach Neo4j at {uri}: {reason}") from e
    return driver


class Neo4jStore:
    """A :class:`graph.store.LineageStore` on a Neo4j (or Bolt-compatible) server."""

    backend = "neo4j"

    def __init__(self, driver: Any, database: str = "neo4j", *, owns_driver: bool = False) -> None:
        self.driver = driver
        self.database = database
        self.owns_driver = owns_driver

    def _run(self, query: str, params: dict[str, Any] | None = None, *, write: bool = False) -> list[dict[str, Any]]:
        from neo4j import RoutingControl
        from neo4j.exceptions import AuthError, ClientError, ServiceUnavailable

        try:
            records, _, _ = self.driver.execute_query(
                query, params or {}, database_=self.database,
                routing_=RoutingControl.WRITE if write else RoutingControl.READ)
        except AuthError as e:
            raise StoreAuthError(f"Neo4j refused the credentials: {e.message}") from e
        except ServiceUnavailable as e:
            raise StoreUnavailableError(f"Neo4j is unreachable: {e}") from e
        except ClientError as e:
            if e.code and e.code.endswith("DatabaseNotFound"):
                raise StoreUnavailableError(f"Neo4j has no database {self.database!r} "
                                            "(set LINEAGE_NEO4J_DATABASE)") from e
            raise
        return [r.data() for r in records]

    def _write_batches(self, query: str, rows: list[dict[str, Any]], now_ms: int) -> int:
        n = 0
        for i in range(0, len(rows), BATCH):
            # $touch: the change log's wall clock (the caller's now_ms may be any time: an import, a test)
            out = self._run(query, {"rows": rows[i : i + BATCH], "now": now_ms, "touch": int(time.time() * 1000)},
                            write=True)
            n += int(out[0]["n"]) if out else 0
        return n

    def ensure_schema(self) -> list[str]:
        from neo4j.exceptions import ClientError, DatabaseError

        notes = []
        for stmt in cypher.SCHEMA:
            try:
                self._run(stmt, write=True)
            except (ClientError, DatabaseError) as e:
                # Said once, here: the store still works without the index, only slower.
                notes.append(f"server rejected {stmt.split(' IF ')[0]!r}: {getattr(e, 'message', e)}")
                log.warning("lineage store: %s", notes[-1])
        return notes

    def _touch(self, keys: Sequence[str] | set[str]) -> None:
        """Stamp the models ``keys`` for :meth:`touched_since`, where no write statement reaches them."""
        ks = sorted({k for k in keys if k})
        if ks:
            self._write_batches(cypher.TOUCH, [{"key": k} for k in ks], 0)

    def upsert_models(self, rows: Sequence[ModelRecord], now_ms: int) -> int:
        props = [r.props() for r in rows]
        n = self._write_batches(cypher.UPSERT_MODELS, props, now_ms)
        self._write_batches(cypher.LINK_PUBLISHERS, [{"key": p["key"], "author": p["author"]}
                                                     for p in props if p["author"]], now_ms)
        self._write_batches(cypher.LINK_LICENSES, [{"key": p["key"], "license": p["license"]}
                                                   for p in props if p["license"]], now_ms)
        return n

    def upsert_families(self, rows: Sequence[FamilyRecord], now_ms: int) -> int:
        n = self._write_batches(cypher.UPSERT_FAMILIES, [r.props() for r in rows], now_ms)
        self._touch([r.root_key for r in rows if r.root_key])
        return n

    def set_families(self, rows: Sequence[InFamily], now_ms: int) -> int:
        return self._write_batches(cypher.SET_FAMILIES, [
            {"model_key": r.model_key, "family": r.family, "via": r.via} for r in rows], now_ms)

    def upsert_derived(self, rows: Sequence[DerivedEdge], now_ms: int, *, replace: bool = False) -> int:
        if replace:
            keep: dict[str, list[str]] = {}
            for r in rows:
                keep.setdefault(r.src, []).append(r.dst)
            self._write_batches(cypher.DROP_OTHER_PARENTS, [{"src": s, "dsts": d} for s, d in keep.items()], now_ms)
        # an untyped row carries no detail either, so coalesce keeps both stored fields (no CASE: portable)
        return self._write_batches(cypher.UPSERT_DERIVED, [r.props() | ({} if r.relation else {"relation_detail": None})
                                                           for r in rows], now_ms)

    def set_relations(self, rows: Sequence[TypedRelation], now_ms: int) -> int:
        return self._write_batches(cypher.SET_RELATIONS, [{"src": r.src, "dst": r.dst, "relation": r.relation,
                                                           "relation_detail": r.detail} for r in rows], now_ms)

    def untyped_derived(self, limit: int) -> list[tuple[str, str]]:
        return [(str(r["src"]), str(r["dst"])) for r in self._run(cypher.UNTYPED_DERIVED, {"limit": limit, "verdict": "derived"})]

    def drop_derived(self, srcs: Sequence[str], now_ms: int) -> int:
        return self._write_batches(cypher.DROP_PARENTS, [{"src": s} for s in sorted(set(srcs))], now_ms)

    def clear_placement(self, keys: Sequence[str], now_ms: int, *, copies: bool = False) -> int:
        rows = [{"key": k} for k in sorted(set(keys))]
        n = self._write_batches(cypher.LEAVE_FAMILIES, rows, now_ms)
        self.drop_derived(keys, now_ms)
        for q in (cypher.DROP_SHARED_INIT_OF, cypher.CLEAR_CANDIDATE_FLAG,
                  *((cypher.DROP_COPIES_FROM, cypher.DROP_COPIES_TO) if copies else ())):
            self._write_batches(q, rows, now_ms)
        return n

    def drop_families(self, names: Sequence[str], now_ms: int) -> int:
        return self._write_batches(cypher.DROP_EMPTY_FAMILIES, [{"name": n} for n in sorted(set(names))], now_ms)

    def upsert_declared(self, rows: Sequence[DeclaredEdge], now_ms: int) -> int:
        return self._write_batches(cypher.UPSERT_DECLARED, [r.props() for r in rows], now_ms)

    def upsert_same_weights(self, rows: Sequence[SameWeights], now_ms: int) -> int:
        return self._write_batches(cypher.UPSERT_SAME_WEIGHTS, [r.props() for r in rows], now_ms)

    def set_shared_init(self, src: str, rows: Sequence[SharedInit], now_ms: int) -> int:
        mine = [r for r in rows if r.src == src]
        self._write_batches(cypher.DROP_OTHER_SHARED_INIT, [{"src": src, "dsts": [r.dst for r in mine]}], now_ms)
        return self._write_batches(cypher.UPSERT_SHARED_INIT, [r.props() for r in mine], now_ms)

    def shared_init(self, key: str | None) -> list[EdgeRow]:
        rows = self._run(cypher.DUMP_SHARED_INIT) if key is None else sorted(
            self._run(cypher.SHARED_INIT_OF, {"key": key}), key=lambda r: (r["src"], r["dst"]))
        return [EdgeRow(r["src"], r["dst"], "SHARES_INIT", score=r["score"], z=r["z"]) for r in rows]

    def get_models(self, idents: Sequence[str]) -> list[ModelRecord]:
        found: dict[str, ModelRecord] = {}
        ids = list(idents)
        for i in range(0, len(ids), BATCH):
            for q in (cypher.GET_MODELS_BY_KEY, cypher.GET_MODELS_BY_ID):
                for r in self._run(q, {"idents": ids[i : i + BATCH]}):
                    found[r["key"]] = _model(r)
        return [found[k] for k in sorted(found)]

    def labels(self, keys: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        ks = list(dict.fromkeys(keys))
        for i in range(0, len(ks), BATCH):
            out.update((r["key"], (r["id"], r["license"])) for r in self._run(cypher.LABELS, {"keys": ks[i : i + BATCH]}))
        return out

    def descendants(self, key: str, *, depth: int, min_score: float) -> list[Lineage] | None:
        return None  # no closure kept here: traversals expand hop by hop on the server (reach)

    def reach(self, key: str, *, upward: bool, mode: Mode, depth: int, min_score: float) -> list[EdgeRow]:
        # Breadth-first, one statement per hop and frontier batch; the visited set ends cycles.
        seen, frontier = {key}, [key]
        out: dict[tuple[str, str, str], EdgeRow] = {}
        for _ in range(depth):
            nxt: list[str] = []
            for i in range(0, len(frontier), BATCH):
                for r in self._run(cypher.EXPAND[(mode, upward)], {"keys": frontier[i : i + BATCH], "min_score": min_score}):
                    e = EdgeRow(r["src"], r["dst"], r["kind"], r["score"], r["verdict"], r["relation"])
                    out[(e.src, e.dst, e.kind)] = e
                    other = e.dst if upward else e.src
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            if not nxt:
                break
            frontier = nxt
        return list(out.values())

    def family_of(self, key: str) -> FamilyRecord | None:
        rows = self._run(cypher.FAMILY_OF, {"key": key})
        return FamilyRecord(**rows[0]) if rows else None

    def family_members(self, name: str) -> list[str]:
        return [r["key"] for r in self._run(cypher.FAMILY_MEMBERS, {"name": name})]

    def detected_edges(self, family: str | None) -> list[EdgeRow]:
        rows = (self._run(cypher.DETECTED_ALL) if family is None
                else self._run(cypher.DETECTED_IN_FAMILY, {"family": family}))
        return [EdgeRow(r["src"], r["dst"], "DERIVED_FROM", r["score"], r["verdict"], r["relation"], r["z"]) for r in rows]

    def declared_edges(self, srcs: Sequence[str] | None) -> list[EdgeRow]:
        if srcs is None:
            return [EdgeRow(r["src"], r["dst"], "DECLARES_BASE", relation=r["relation"]) for r in self._run(cypher.DUMP_DECLARED)]
        out: list[EdgeRow] = []
        ks = list(srcs)
        for i in range(0, len(ks), BATCH):
            out += [EdgeRow(r["src"], r["dst"], "DECLARES_BASE", relation=r["relation"])
                    for r in self._run(cypher.DECLARED_FROM, {"srcs": ks[i : i + BATCH]})]
        return out

    def copies(self) -> list[EdgeRow]:
        return [EdgeRow(r["src"], r["dst"], "SAME_WEIGHTS") for r in self._run(cypher.DUMP_SAME)]

    def families(self) -> list[tuple[FamilyRecord, int]]:
        return [(FamilyRecord(r["name"], r["root_key"], r["display_name"], r["license"]), int(r["members"]))
                for r in self._run(cypher.FAMILIES)]

    def created_per_day(self) -> list[tuple[int, int]]:
        return [(int(r["day"]), int(r["n"])) for r in self._run(cypher.CREATED_PER_DAY)]

    def relation_counts(self) -> dict[str, int]:
        out = {f"declared:{r['k']}": int(r["n"]) for r in self._run(cypher.DECLARED_RELATIONS)}
        out.update({f"detected:{r['k']}": int(r["n"]) for r in self._run(cypher.DETECTED_VERDICTS)})
        return out

    def touched_since(self, ms: int) -> list[str]:
        return [str(r["key"]) for r in self._run(cypher.TOUCHED_SINCE, {"since": ms})]

    def _each(self, query: str, keys: Sequence[str]) -> list[dict[str, Any]]:
        ks = sorted(set(keys))
        return [r for i in range(0, len(ks), BATCH) for r in self._run(query, {"keys": ks[i : i + BATCH]})]

    def families_of(self, keys: Sequence[str]) -> dict[str, FamilyRecord]:
        return {r["key"]: FamilyRecord(r["name"], r["root_key"], r["display_name"], r["license"])
                for r in self._each(cypher.FAMILIES_OF, keys)}

    def detected_from(self, srcs: Sequence[str]) -> list[EdgeRow]:
        return [EdgeRow(r["src"], r["dst"], "DERIVED_FROM", r["score"], r["verdict"], r["relation"], r["z"])
                for r in self._each(cypher.DETECTED_FROM, srcs)]

    def declarers_of(self, dsts: Sequence[str]) -> list[str]:
        return sorted({str(r["key"]) for r in self._each(cypher.DECLARERS_OF, dsts)})

    def children_of(self, dsts: Sequence[str]) -> list[str]:
        return sorted({str(r["key"]) for r in self._each(cypher.CHILDREN_OF, dsts)})

    def copies_among(self, keys: Sequence[str]) -> list[EdgeRow]:
        pairs = {(r["src"], r["dst"]) for q in (cypher.COPIES_FROM, cypher.COPIES_TO) for r in self._each(q, keys)}
        return [EdgeRow(a, b, "SAME_WEIGHTS") for a, b in sorted(pairs)]

    def copies_of(self, key: str) -> list[str]:
        return [str(r["key"]) for r in self._run(cypher.COPIES_OF, {"key": key})]

    def family_named(self, name: str) -> FamilyRecord | None:
        rows = self._run(cypher.FAMILY_BY_NAME, {"name": name})
        return FamilyRecord(**rows[0]) if rows else None

    def search(self, prefix: str, limit: int) -> list[ModelRecord]:
        return [_model(r) for r in self._run(cypher.SEARCH_PREFIX, {"prefix": prefix.lower(), "limit": limit})]

    def recent_derived(self, limit: int) -> list[DerivedEdge]:
        return [_derived(r) for r in self._run(cypher.RECENT_DERIVED, {"limit": limit})]

    def parent_edges(self, key: str) -> list[DerivedEdge]:
        return [_derived(r) for r in self._run(cypher.PARENT_EDGES, {"key": key})]

    def counts(self) -> dict[str, int]:
        out = {k: int(self._run(q)[0]["n"]) for k, q in cypher.COUNT_LABEL.items()}
        out.update({k: int(self._run(q)[0]["n"]) for k, q in cypher.COUNT_TYPE.items()})
        return out

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        models = self._run(cypher.DUMP_MODELS)
        for m in models:
            m["gated"], m["candidate_family"] = bool(m["gated"]), bool(m["candidate_family"])
        return {
            "models": models,
            "families": self._run(cypher.DUMP_FAMILIES),
            "IN_FAMILY": self._run(cypher.DUMP_IN_FAMILY),
            "DERIVED_FROM": self._run(cypher.DUMP_DERIVED),
            "DECLARES_BASE": self._run(cypher.DUMP_DECLARED),
            "SAME_WEIGHTS": self._run(cypher.DUMP_SAME),
            "SHARES_INIT": self._run(cypher.DUMP_SHARED_INIT),
        }

    def close(self) -> None:
        if self.owns_driver:
            self.driver.close()


def _derived(row: dict[str, Any]) -> DerivedEdge:
    return DerivedEdge(**(row | {"relation_detail": row.get("relation_detail") or ""}))


def _model(row: dict[str, Any]) -> ModelRecord:
    row = dict(row)
    row["gated"], row["candidate_family"] = bool(row["gated"]), bool(row["candidate_family"])
    return ModelRecord(**row)
