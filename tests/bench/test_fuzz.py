"""bench.fuzz in CI: a short run of every target, and hypothesis-driven mutations of the same seeds
(shrunk to a minimal input when one fails). Only the parsers' typed errors may escape."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import TARGETS, Report, fuzz, run_case


@pytest.fixture(scope="module", autouse=True)
def _traced() -> Iterator[None]:
    # Late in a full run the process holds many objects from earlier tests, which every full garbage
    # collection walks, and these tests allocate a lot: freezing what exists keeps the collector to what
    # this module allocates.
    gc.freeze()
    tracemalloc.start()
    yield
    tracemalloc.stop()
    gc.unfreeze()


pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN/overflow from mutated tensor bytes


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_short_fuzz_run_finds_no_crash(name: str) -> None:
    r = fuzz(TARGETS[name], 250, seed=1, save=False)
    assert (r.crashes, r.hangs, r.over_memory) == ([], 0, 0)
    assert r.rejected > 0 and r.accepted > 0  # the mutations reach both the errors and the valid paths


SEEDS = {name: t.seeds() for name, t in TARGETS.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(TARGETS)), data=st.data())
def test_hypothesis_mutations_raise_only_typed_errors(name: str, data: st.DataObject) -> None:
    seed = bytearray(data.draw(st.sampled_from(SEEDS[name])))
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=6)):
        seed[pos] = byte
    cut = data.draw(st.integers(0, len(seed)))
    r = Report(name)
    run_case(TARGETS[name], bytes(seed[:cut] if data.draw(st.booleans()) else seed), r, save=False)
    assert (r.crashes, r.hangs) == ([], 0)


@settings(max_examples=20, deadline=None)  # 2 s alone, but 61 s late in one full CI run (cause not found)
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                        max_leaves=20))
def test_any_json_as_a_hub_record_is_a_record_or_a_payload_error(doc: object) -> None:
    base = json.loads(SEEDS["hub-record"][0])
    for candidate in (doc, {**base, "siblings": doc}, {**base, "cardData": doc}, {**base, "tags": doc}):
        r = Report("hub-record")
        run_case(TARGETS["hub-record"], json.dumps(candidate).encode(), r, save=False)
        assert r.crashes == [], r.crashes
