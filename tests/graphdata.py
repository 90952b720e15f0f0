"""A small hand-made lineage graph with known answers, shared by the graph tests."""

from __future__ import annotations

from graph.records import DeclaredEdge, DerivedEdge, FamilyRecord, InFamily, ModelRecord, SameWeights

DAY = 86_400_000
T0 = 1_700_000_000_000  # 2023-11-14


def model(key: str, id: str, *, author: str = "org", license: str | None = "apache-2.0", day: int = 0) -> ModelRecord:
    return ModelRecord(key=key, id=id, author=author, license=license, created_at_ms=T0 + day * DAY,
                       architecture="llama", hidden_size=64, num_layers=2, sha="0" * 40)


# base ─┬─ sft ── sft2 ── sft3
#       ├─ rl (declares "other" wrongly)
#       └─ quant (same weights as quant-copy)
# other (independent base) ── other-sft
MODELS = [
    model("k-base", "meta/base", license="llama2", day=0),
    model("k-sft", "alice/sft", day=30),
    model("k-sft2", "bob/sft2", day=31),
    model("k-sft3", "bob/sft3", license="mit", day=62),
    model("k-rl", "carol/rl", day=62),
    model("k-quant", "dave/quant", day=63),
    model("k-quant-copy", "eve/quant-copy", day=64),
    model("k-other", "other/base", license="mit", day=5),
    model("k-other-sft", "other/sft", license="mit", day=40),
]
DERIVED = [
    DerivedEdge("k-sft", "k-base", 0.91, z=40.0, evidence="layers 2/2"),
    DerivedEdge("k-sft2", "k-sft", 0.88, z=35.0),
    DerivedEdge("k-sft3", "k-sft2", 0.42, z=12.0),
    DerivedEdge("k-rl", "k-base", 0.95, z=50.0),
    DerivedEdge("k-quant", "k-base", 0.99, z=60.0),
    DerivedEdge("k-other-sft", "k-other", 0.9, z=30.0),
]
DECLARED = [
    DeclaredEdge("k-sft", "k-base", "finetune"),
    DeclaredEdge("k-sft2", "k-base", "finetune"),   # names the grandparent: consistent
    DeclaredEdge("k-rl", "k-other", "finetune"),    # names an unrelated base: declared differently
    DeclaredEdge("k-quant", "k-base", "quantized"),
    DeclaredEdge("k-other-sft", "k-other", "finetune"),
]
FAMILIES = [FamilyRecord("llama-x", "k-base", "Llama X", "llama2"), FamilyRecord("other", "k-other", "Other", "mit")]
IN_FAMILY = [InFamily("k-base", "llama-x", "root"), *(InFamily(k, "llama-x") for k in
             ("k-sft", "k-sft2", "k-sft3", "k-rl", "k-quant", "k-quant-copy")),
             InFamily("k-other", "other", "root"), InFamily("k-other-sft", "other")]
SAME = [SameWeights("k-quant-copy", "k-quant", "ab" * 32)]


def load(store, now: int = T0 + 100 * DAY) -> None:  # type: ignore[no-untyped-def]
    store.upsert_models(MODELS, now)
    store.upsert_families(FAMILIES, now)
    store.set_families(IN_FAMILY, now)
    store.upsert_derived(DERIVED, now)
    store.upsert_declared(DECLARED, now)
    store.upsert_same_weights(SAME, now)
