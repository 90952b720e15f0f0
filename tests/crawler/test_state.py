"""crawler.state: claims, releases and the recovery of claims left open by a process that died."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from crawler.state import CrawlState

T = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _queue(path: Path, n: int) -> CrawlState:
    st = CrawlState(path, "http://127.0.0.1:1")
    with st.tx() as con:
        for i in range(n):
            st.enqueue(con, f"k{i}", "sha", f"org/m{i}", T, T, i + 1)
    return st


def test_claim_counts_an_attempt_and_a_dead_claim_is_queued_again(tmp_path: Path) -> None:
    st = _queue(tmp_path / "crawl.sqlite", 3)
    first = st.claim(2)
    assert [(w.key, w.attempts) for w in first] == [("k0", 1), ("k1", 1)]
    assert [w.key for w in st.claim()] == ["k2"]  # claimed items are not handed out twice
    assert st.claim() == [] and st.pending_count() == 3
    st.finish("k0", "sha", "org/m0", "fingerprinted", None, {"weights_digest": None})
    st.release("k2", "sha")  # a transient failure goes back to the queue
    st.close()
    # the process died with k1 claimed: the next one queues it again, its attempt still counted
    st = CrawlState(tmp_path / "crawl.sqlite", "http://127.0.0.1:1")
    again = st.claim()
    assert [(w.key, w.attempts) for w in again] == [("k1", 2), ("k2", 2)]
    assert st.counts() == {"done": 1, "claimed": 2} and st.pending_count() == 2
    st.close()
