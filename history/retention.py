"""History retention: drop the changes no retained as-of read can need.

`viewstore run --history-retention 7d` (a duration: s, m, h, d, w) or `--history-retention 10GB`
(an LSN age: bytes of WAL behind the applied LSN; kB, MB, GB, TB as in Postgres) keeps the
history from a cutoff LSN on. An as-of read at or after the cutoff needs, for each row key, only
its last change at or before the cutoff (`changelog.row_as_of` seeks exactly that) and the
changes after it. So compacting a view to a cutoff deletes, in one WriteBatch:

- every change of a row that a later change at or before the cutoff supersedes;
- a row's last change at or before the cutoff too, when that change deleted it;

from both orderings of the log (`k` per row, `c` in commit order), and the view's checkpoints
before the cutoff (`history.checkpoint`: they would be read with the changes after them), and
records the cutoff as the view's `history_from`. What remains at or before the cutoff is one
entry per row the view had then: the view as of the cutoff, whose answers (and every later one)
are unchanged. As-of reads before `history_from` are refused.

Each pass handles at most `max_entries` changes (cutting at a transaction boundary) so that the
pipeline, which runs retention between groups, never stalls for long; passes repeat until the
cutoff is reached. A pass is one atomic write: a kill -9 leaves either all of it or none.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from viewstore.codecs.key import prefix_end
from viewstore.codecs.value import unpack_fields
from viewstore.errors import ConfigError
from viewstore.history import checkpoint
from viewstore.history.access import HistoryStore, ViewCatalog, ViewRecord
from viewstore.history.keys import (
    DELETED,
    change_key,
    change_key_lsn,
    is_row_key_of,
    row_key_lsn,
    row_key_prefix,
)
from viewstore.ingest.lsn import Lsn

log = logging.getLogger("viewstore")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


@dataclass(frozen=True)
class Retention:
    """How much history to keep: a duration of commit time, or an LSN distance."""

    text: str
    seconds: float | None = None
    lsn_bytes: int | None = None

    @classmethod
    def parse(cls, text: str) -> Retention:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*", text)
        if m:
            number, unit = float(m.group(1)), m.group(2)
            if unit in _DURATION_UNITS:
                return cls(text, seconds=number * _DURATION_UNITS[unit])
            if unit in _SIZE_UNITS:
                return cls(text, lsn_bytes=int(number * _SIZE_UNITS[unit]))
        raise ConfigError(
            f"--history-retention {text!r}: not a duration or an LSN age",
            hint="give a duration (90s, 30m, 12h, 7d, 2w) or bytes of WAL (500MB, 10GB)",
        )

    def cutoff(self, store: HistoryStore, info: ViewRecord, applied: Lsn, now: float) -> int:
        """The LSN the view's history may be compacted to (0: nothing yet)."""
        if self.lsn_bytes is not None:
            return max(0, int(applied) - self.lsn_bytes)
        assert self.seconds is not None
        oldest_kept = int((now - self.seconds) * 1_000_000)  # µs, as commit times are stored
        # The last transaction committed before `oldest_kept`: walk the log from its start.
        cutoff = 0
        prefix = change_key(info.view_id, 0, 0)[:3]
        it = store.history.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            lsn = change_key_lsn(it.key())
            commit_time = unpack_fields(it.value())[3]
            if commit_time is not None and commit_time > oldest_kept:
                break
            cutoff = lsn
            it.seek(change_key(info.view_id, lsn + 1, 0))  # the next transaction
        return min(cutoff, int(applied))


def apply_retention(
    store: HistoryStore,
    retention: Retention,
    *,
    catalog: ViewCatalog,
    now: float | None = None,
    max_entries: int = 100_000,
    time_budget: float = 2.0,
) -> bool:
    """Compact every ready view's history towards its cutoff; True when all are there (False:
    the time budget ran out first, call again soon). `catalog` is the store's
    (`store.viewcatalog.CATALOG`): the views, and how a changed record is written."""
    if store.large_txn_pending:
        return False  # its entries are in the log but not history yet: wait for its end
    now = time.time() if now is None else now
    applied = store.applied_lsn()
    deadline = time.monotonic() + time_budget
    for info in catalog.views(store).values():
        if info.state != "ready":
            continue
        target = retention.cutoff(store, info, applied, now)
        while True:
            start = info.history_start
            if start is None or target <= int(start):
                break
            if time.monotonic() >= deadline:
                return False
            info = compact(store, info, target, max_entries, catalog=catalog)
    return True


def compact(
    store: HistoryStore,
    info: Any,
    target: int,
    max_entries: int = 100_000,
    *,
    catalog: ViewCatalog,
) -> Any:
    """One pass: compact the view's history up to `target`, or to an earlier transaction
    boundary so that at most about `max_entries` changes are visited. Returns the new record
    (a `ViewRecord`), written by `catalog` in the same batch as the compaction."""
    vid = info.view_id
    start = info.history_start
    assert start is not None
    cutoff = _pass_cutoff(store, vid, int(start), target, max_entries)
    cf = store.cf["history"]
    batch = store.new_batch()
    removed = 0

    # Per row: keep its last change at or before the cutoff, unless that change deleted it.
    last: dict[bytes, int] = {}  # row key -> LSN of its last kept change <= cutoff
    base = row_key_prefix(vid)
    end = prefix_end(base)
    it = store.history.iter()
    it.seek(base)
    while it.valid() and it.key() < end:
        key = it.key()
        okey = key[len(base) : -8]
        prefix = base + okey
        previous: bytes | None = None
        while it.valid() and is_row_key_of(it.key(), prefix):
            key = it.key()
            lsn = row_key_lsn(key)
            if lsn > cutoff:
                break
            if previous is not None:
                batch.delete(previous, cf)
                removed += 1
            previous = key
            if it.value() == DELETED:
                batch.delete(key, cf)
                removed += 1
                previous = None
                last.pop(okey, None)
            else:
                last[okey] = lsn
            it.next()
        it.seek(prefix_end(prefix))

    # The same entries in commit order: keep exactly each row's last change found above.
    low, high = change_key(vid, 0, 0), change_key(vid, cutoff + 1, 0)
    it.seek(low)
    while it.valid() and it.key() < high:
        okey = unpack_fields(it.value())[0]
        if last.get(okey) != change_key_lsn(it.key()):
            batch.delete(it.key(), cf)
        it.next()
    del it
    # A checkpoint before the cutoff would be read with the changes after it, which are gone.
    checkpoint.drop_before(batch, cf, vid, cutoff)

    info = info.model_copy(update={"history_from": str(Lsn(cutoff))})
    catalog.put(batch, store, info)
    store.write(batch, sync=True)
    log.info(
        "history retention: %s now starts at %s (%d changes dropped, %d rows kept)",
        info.name,
        Lsn(cutoff),
        removed,
        len(last),
    )
    return info


def _pass_cutoff(store: HistoryStore, vid: int, start: int, target: int, max_entries: int) -> int:
    """`target`, or the last transaction boundary after `start` within `max_entries` changes."""
    it = store.history.iter()
    it.seek(change_key(vid, start + 1, 0))
    high = change_key(vid, target + 1, 0)
    n, previous = 0, None
    while it.valid() and it.key() < high:
        lsn = change_key_lsn(it.key())
        if n >= max_entries and previous is not None and lsn != previous:
            return previous  # every change of that transaction, and none after, is counted
        previous = lsn
        n += 1
        it.next()
    return target
