"""Timeline: where a view's changes lie in LSN and commit time, and one row's values over time.

What a time scrubber over a view's history asks (issue 15: the leaderboard page goes back in
time), answered from the log's two orderings (`changelog`) with seeks, never by reading the
view's whole history:

- the view's last change at or before an LSN, or its first one after (the `c` ordering: one
  seek each), with its commit time: "as of LSN X the view stood as its transaction at Y left it",
  and the previous or next step to move to;
- the LSN a commit time stands for: the view's last change committed at or before it, by a
  binary search over LSNs (commit times follow commit order in Postgres; a clock stepped back
  while it ran can make the search land on either side of the step);
- one row's changes up to an LSN (the `k` ordering: one prefix scan of that row), to chart it.

Entries of a large transaction still being written are not history yet and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from viewstore.codecs.key import prefix_end
from viewstore.codecs.value import unpack_fields
from viewstore.history.access import HistoryStore
from viewstore.history.keys import (
    DELETED,
    change_key,
    change_key_lsn,
    change_lsn_prefix,
    change_prefix,
    is_row_key_of,
    row_key_lsn,
    row_key_prefix,
)

__all__ = ["Step", "change_after", "change_at_or_before", "last_change_by_time", "row_changes"]


@dataclass(frozen=True)
class Step:
    """One transaction's changes to a view: its commit LSN and commit time (µs since the Unix
    epoch; None for the rows the view was built with, which no transaction made)."""

    lsn: int
    commit_time: int | None


def _step(key: bytes, value: bytes) -> Step:
    return Step(change_key_lsn(key), unpack_fields(value)[3])


def change_at_or_before(store: HistoryStore, view_id: int, lsn: int, low: int = 0) -> Step | None:
    """The view's last change with low <= commit LSN <= lsn (None: it has none there)."""
    first = change_key(view_id, low, 0)
    it = store.history.iter()
    it.seek_for_prev(prefix_end(change_lsn_prefix(view_id, lsn)))
    while it.valid():
        key = it.key()
        if key < first:
            return None
        if not store.pending_history(key):
            return _step(key, it.value())
        it.prev()
    return None


def change_after(store: HistoryStore, view_id: int, lsn: int, high: int) -> Step | None:
    """The view's first change with lsn < commit LSN <= high (None: it has none there)."""
    end = min(prefix_end(change_lsn_prefix(view_id, high)), prefix_end(change_prefix(view_id)))
    it = store.history.iter()
    it.seek(prefix_end(change_lsn_prefix(view_id, lsn)))
    while it.valid():
        key = it.key()
        if key >= end:
            return None
        if not store.pending_history(key):
            return _step(key, it.value())
        it.next()
    return None


def last_change_by_time(
    store: HistoryStore, view_id: int, at: int, low: int, high: int
) -> Step | None:
    """The view's last change with low < commit LSN <= high committed at or before `at` (µs
    since the Unix epoch); None when its first change in that range committed after `at`.
    A binary search over LSNs: about 40 seeks whatever the history's length."""
    first = change_after(store, view_id, low, high)
    if first is None or first.commit_time is None or first.commit_time > at:
        return None
    found, lo, hi = first, first.lsn, high  # invariant: the last change at or before lo is found
    while lo < hi:
        mid = (lo + hi + 1) // 2
        step = change_at_or_before(store, view_id, mid, lo)
        if step is None or step.lsn <= found.lsn:
            lo = mid  # no change in (found, mid]: nothing to decide there
            continue
        if step.commit_time is not None and step.commit_time <= at:
            found, lo = step, mid
        else:
            hi = step.lsn - 1
    return found


def row_changes(
    store: HistoryStore, view_id: int, okey: bytes, until: int
) -> list[tuple[int, bytes | None]]:
    """(commit LSN, the row after: `codecs.value` field list, None: deleted) of each change of
    the view's row `okey` committed at or before `until`, oldest first."""
    prefix = row_key_prefix(view_id, okey)
    out: list[tuple[int, bytes | None]] = []
    it = store.history.iter()
    it.seek(prefix)
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            break
        if is_row_key_of(key, prefix):  # not a longer output key that shares the prefix
            lsn = row_key_lsn(key)
            if lsn > until:
                break
            if not store.pending_history(key):
                value = it.value()
                out.append((lsn, None if value == DELETED else value))
        it.next()
    return out
