"""Ranking operator: ROW_NUMBER, RANK and DENSE_RANK kept current per change, and Top-K.

A window view's projected rows (its *base* rows, `views.window`) come here instead of going
straight to the output. The operator keeps them in SQL order per partition, in the view's
state (column family `views`, under the view's prefix):

    v  view id (2)  o  partition key  order key  output key  -> lengths (2+2), base row
    v  view id (2)  k  output key                              -> lengths (2+2), its `o` suffix
    v  view id (2)  b  partition key                           -> Top-K: the `o` suffix of the
                                                                  partition's first row left out

The partition key is `codecs.key`'s encoding of the PARTITION BY values (NULLs are one
partition, as in Postgres). The order key holds one item per ORDER BY value: 00 (a NULL placed
first), 01 + the value's key encoding (its bytes inverted under DESC, which reverses the order
of a prefix-free encoding) or 02 (a NULL placed last); so ascending byte order is the SQL order,
and equal order keys are peers. The output key (the source rows' keys, as any view without
GROUP BY has) ends the key: ties are broken by it, which gives ROW_NUMBER among peers a fixed
order (Postgres leaves that order unspecified).

Per transaction, the changed rows are moved in the order index first (the old entry deleted,
the new one put), then each partition with a change is walked once:

- A full ranking (every row output with its numbers) starts at the first changed position. The
  entry before it keeps its numbers (they count only the rows before it), so they are read from
  its stored output row; with RANK but no ROW_NUMBER, its row number is its rank plus the peers
  before it. The walk numbers each entry, writes the output rows whose numbers changed, and
  stops at the first entry past every changed position (and, for RANK/DENSE_RANK, past the
  changed rows' peer groups) whose numbers are unchanged: from there on every entry's numbers
  differ from the stored ones by the same amount (zero), as the changes before it are all
  counted. So a change costs the rows between its old and new positions, plus every row after
  them while the shift is not zero: an insert or a delete renumbers the rest of its partition,
  as REFRESH would.
- Top-K (WHERE rn <= K, or ORDER BY ... LIMIT K) walks from the partition's start to its first
  row over K, then removes the rows still shown after it (pushed out by the change) up to the
  first one that is not: O(K) per changed partition. A change entirely after the partition's
  first left-out row (the `b` entry) does not touch the top, and costs only its own entries.

Everything is written through the engine's Writer, in the same batch as the mirror rows.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from viewstore.codecs.key import encode_value
from viewstore.codecs.value import CORRUPT_HINT, pack_fields, unpack_fields
from viewstore.errors import StoreError
from viewstore.views.window import WindowPlan

if TYPE_CHECKING:
    from viewstore.store.engine import ActiveView, ViewEngine

_LENS = struct.Struct(">HH")
_INVERT = bytes(255 - b for b in range(256))
_NULL_FIRST, _VALUE, _NULL_LAST = b"\x00", b"\x01", b"\x02"
Typed = tuple[Any, ...]


def _view_prefix(view_id: int) -> bytes:
    return b"v" + view_id.to_bytes(2, "big")


def _row_key(view_id: int, okey: bytes) -> bytes:
    return _view_prefix(view_id) + b"r" + okey  # store.engine.row_key


def order_prefix(view_id: int) -> bytes:
    """Where a window view's order index starts."""
    return _view_prefix(view_id) + b"o"


def locator_key(view_id: int, okey: bytes) -> bytes:
    return _view_prefix(view_id) + b"k" + okey


def boundary_key(view_id: int, pkey: bytes) -> bytes:
    return _view_prefix(view_id) + b"b" + pkey


def partition_key(wp: WindowPlan, base: Typed) -> bytes:
    """The encoded PARTITION BY values of a base row."""
    return b"".join(encode_value(base[i]) for i in wp.partition)


def order_key(wp: WindowPlan, base: Typed) -> bytes:
    """The ORDER BY values of a base row, encoded so that byte order is SQL order."""
    parts = []
    for i, desc, nulls_first in zip(wp.order, wp.desc, wp.nulls_first, strict=True):
        v = base[i]
        if v is None:
            parts.append(_NULL_FIRST if nulls_first else _NULL_LAST)
            continue
        e = encode_value(v)  # -0.0 and 0.0 encode alike, as Postgres's peers
        parts.append(_VALUE + (e.translate(_INVERT) if desc else e))
    return b"".join(parts)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    p = prefix.rstrip(b"\xff")
    return None if not p else p[:-1] + bytes((p[-1] + 1,))


def _note(spans: dict[bytes, list[bytes]], pkey: bytes, suffix: bytes, order: bytes) -> None:
    """Widen a partition's changed span: [lowest suffix, highest suffix, highest order key]."""
    span = spans.get(pkey)
    if span is None:
        spans[pkey] = [suffix, suffix, order]
    else:
        span[0] = min(span[0], suffix)
        span[1] = max(span[1], suffix)
        span[2] = max(span[2], order)


class Ranking:
    """The ranking state of every window view of one engine (`store.engine.ViewEngine`)."""

    def __init__(self, engine: ViewEngine) -> None:
        # A weak reference: the engine owns this, and a cycle would keep the engine (and its
        # RocksDB handles, so the store's lock) alive after the applier drops it, until the
        # garbage collector runs: a store stopped with an error could not be opened again.
        self.engine: ViewEngine = weakref.proxy(engine)
        # A backfill's first pass only files the rows in the order index; `backfill` then
        # numbers them all in one walk (a walk per batch of rows would be quadratic).
        self.loading = False
        self.reset()

    def reset(self) -> None:
        """Forget what the batch wrote (discarded, or in RocksDB now)."""
        # view id -> output key -> base row (None: the row left), this transaction's changes
        self.changes: dict[int, dict[bytes, Typed | None]] = {}
        self.moved: set[bytes] = set()  # output keys of the rows being moved, one view at a time
        # (view id, partition key) -> {`o` suffix: value, None for deleted}: the order-index
        # writes of this batch, which the engine's RocksDB iterator does not see.
        self.over: dict[tuple[int, bytes], dict[bytes, bytes | None]] = {}

    def change(self, view_id: int, okey: bytes, base: Typed | None) -> None:
        """A base row enters (or with None leaves) the view; the last call of a transaction
        for an output key is its state at the end."""
        self.changes.setdefault(view_id, {})[okey] = base

    # ---- the order index, as of this batch

    def _put(self, vid: int, pkey: bytes, suffix: bytes, value: bytes | None) -> None:
        self.over.setdefault((vid, pkey), {})[suffix] = value
        self.engine.writer.view_write(order_prefix(vid) + suffix, value)

    def _forward(self, vid: int, pkey: bytes, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(suffix, value) of the partition's entries from `start` (a suffix) on, in order."""
        base = order_prefix(vid)
        n, part = len(base), base + pkey
        over = self.over.get((vid, pkey), {})
        mine = sorted(k for k in over if k >= start)
        it = self.engine._iterator()
        it.seek(base + start)
        i = 0
        while True:
            rk = None
            if it.valid():
                key = it.key()
                if key.startswith(part):
                    rk = key[n:]
            ok = mine[i] if i < len(mine) else None
            if rk is None and ok is None:
                return
            if ok is not None and (rk is None or ok <= rk):
                if rk == ok:
                    it.next()
                i += 1
                v = over[ok]
                if v is not None:
                    yield ok, v
            else:
                value = it.value()
                it.next()
                yield rk, value  # type: ignore[misc]

    def _backward(self, vid: int, pkey: bytes, start: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(suffix, value) of the partition's entries before `start`, last first."""
        base = order_prefix(vid)
        n, part = len(base), base + pkey
        over = self.over.get((vid, pkey), {})
        mine = sorted((k for k in over if k < start), reverse=True)
        it = self.engine._iterator()
        it.seek_for_prev(base + start)
        i = 0
        while True:
            rk = None
            while it.valid():
                key = it.key()
                if not key.startswith(part):
                    break
                k = key[n:]
                if k >= start or k in over:  # the batch's own write decides for k
                    it.prev()
                    continue
                rk = k
                break
            ok = mine[i] if i < len(mine) else None
            if rk is None and ok is None:
                return
            if ok is not None and (rk is None or ok > rk):
                i += 1
                v = over[ok]
                if v is not None:
                    yield ok, v
            else:
                value = it.value()
                it.prev()
                yield rk, value  # type: ignore[misc]

    # ---- per transaction

    def end_transaction(self) -> None:
        """Move this transaction's changed rows in the order index and renumber the partitions
        they touch: the output rows that change are touched in the engine (with their new
        row in `pending`), as a view without GROUP BY's are."""
        engine = self.engine
        for vid, changed in self.changes.items():
            view = engine.by_id[vid]
            wp = view.plan.window
            assert wp is not None
            # partition key -> [lowest, highest changed suffix, highest changed order key]
            spans: dict[bytes, list[bytes]] = {}
            self.moved = set(changed)

            for okey, base in changed.items():
                lkey = locator_key(vid, okey)
                # A backfill files each row once, into an empty index: no entry to move.
                old = None if self.loading else engine.vget(lkey)
                if old is not None:
                    pl, ol = _LENS.unpack_from(old)
                    suffix = old[4:]
                    self._put(vid, suffix[:pl], suffix, None)
                    _note(spans, suffix[:pl], suffix, suffix[pl : pl + ol])
                if base is not None:
                    pkey, okey_order = partition_key(wp, base), order_key(wp, base)
                    lens = _LENS.pack(len(pkey), len(okey_order))
                    suffix = pkey + okey_order + okey
                    self._put(vid, pkey, suffix, lens + pack_fields(list(base)))
                    _note(spans, pkey, suffix, okey_order)
                    engine.vput(lkey, lens + suffix)
                elif old is not None:
                    engine.vput(lkey, None)
                if not self.loading:
                    # Gone unless the walk finds it in the output (Top-K: it may be out of it).
                    engine._touch(view, okey)
                    engine.pending[(vid, okey)] = None
            if self.loading:
                continue
            for pkey, (lo, hi, hi_order) in spans.items():
                if wp.top is None:
                    self._renumber(view, wp, pkey, lo, hi, hi_order)
                else:
                    self._top(view, wp, pkey, lo)
        self.changes.clear()

    def _current(self, view: ActiveView, okey: bytes) -> Any:
        """The row's output as this transaction has it so far, packed (None: not shown). A
        view over views may number one partition twice in a transaction (its rows change at
        two levels of the stack): the second walk compares with what the first one made."""
        k = (view.view_id, okey)
        if k in self.engine.touched:
            out = self.engine.pending[k]
            return None if out is None else view.plan.code["pack"](out)
        return self.engine.vget(_row_key(view.view_id, okey))

    def _numbers(self, view: ActiveView, wp: WindowPlan, pkey: bytes, lo: bytes) -> list[Any]:
        """[row number, rank, dense rank, order key] of the entry before `lo` (zeros and None
        at the partition's start), from its stored output row."""
        prev = next(self._backward(view.view_id, pkey, lo), None)
        if prev is None:
            return [0, 0, 0, None]
        suffix, value = prev
        pl, ol = _LENS.unpack_from(value)
        order, okey = suffix[pl : pl + ol], suffix[pl + ol :]
        stored = self._current(view, okey)
        if stored is None:
            raise StoreError(
                f"view {view.plan.name}: its order index names a row the view lacks", CORRUPT_HINT
            )
        row = unpack_fields(stored)
        got = dict(zip(wp.funcs, (row[i] for i in wp.window_outputs), strict=True))
        rn, rank = got.get("row_number", 0), got.get("rank", 0)
        if "row_number" not in got and "rank" in got:
            # Its row number is its rank plus the peers before it.
            rn = rank
            for s, v in self._backward(view.view_id, pkey, suffix):
                p, o = _LENS.unpack_from(v)
                if s[p : p + o] != order:
                    break
                rn += 1
        return [rn, rank, got.get("dense_rank", 0), order]

    def _renumber(
        self, view: ActiveView, wp: WindowPlan, pkey: bytes, lo: bytes, hi: bytes, hi_order: bytes
    ) -> None:
        """A full ranking: renumber the partition from its first changed position `lo` until
        the numbers no longer change (see the module docstring)."""
        engine, vid = self.engine, view.view_id
        pack = view.plan.code["pack"]
        rn, rank, dense, prev_order = self._numbers(view, wp, pkey, lo)
        peers_matter = any(f != "row_number" for f in wp.funcs)
        assemble = wp.assemble
        moved, pending = self.moved, engine.pending
        for suffix, value in self._forward(vid, pkey, lo):
            pl, ol = _LENS.unpack_from(value)
            order, okey = suffix[pl : pl + ol], suffix[pl + ol :]
            rn += 1
            if order != prev_order:
                rank, dense, prev_order = rn, dense + 1, order
            base = unpack_fields(value[4:])
            base += (rn, rank, dense)
            out = assemble(base)
            k = (vid, okey)
            if okey in moved:
                pending[k] = out
                continue
            if pack(out) != self._current(view, okey):
                engine._touch(view, okey)
                pending[k] = out
            elif suffix > hi and (not peers_matter or order != hi_order):
                break  # past every change and its peers, numbers as stored: so are the rest

    def _top(self, view: ActiveView, wp: WindowPlan, pkey: bytes, lo: bytes) -> None:
        """Top-K: number the partition from its start to its first row over K, then remove
        the rows shown after it (see the module docstring)."""
        engine, vid = self.engine, view.view_id
        bkey = boundary_key(vid, pkey)
        boundary = engine.vget(bkey)
        if boundary is not None and lo > boundary:
            return  # every change is after the first row left out: the top is as it was
        pack = view.plan.code["pack"]
        j, k_max = wp.top_slot  # type: ignore[misc]
        assemble = wp.assemble
        moved, pending = self.moved, engine.pending
        rn = rank = dense = 0
        prev_order = None
        excluded = None
        for suffix, value in self._forward(vid, pkey, pkey):
            pl, ol = _LENS.unpack_from(value)
            order, okey = suffix[pl : pl + ol], suffix[pl + ol :]
            k = (vid, okey)
            if excluded is None:
                rn += 1
                if order != prev_order:
                    rank, dense, prev_order = rn, dense + 1, order
                nums = (rn, rank, dense)
                if nums[j] <= k_max:
                    row = unpack_fields(value[4:])
                    row += nums
                    out = assemble(row)
                    if okey in moved:
                        pending[k] = out
                    elif pack(out) != self._current(view, okey):
                        engine._touch(view, okey)
                        pending[k] = out
                    continue
                excluded = suffix
            # Past the top: the unchanged rows still shown are a prefix of these (their old
            # order is kept), so the first one not shown ends the walk.
            if okey in moved:
                continue  # a changed row: gone unless numbered above
            if self._current(view, okey) is None:
                break
            engine._touch(view, okey)
            pending[k] = None
        engine.vput(bkey, excluded)

    # ---- backfill

    def backfill(self, view: ActiveView) -> Iterator[int]:
        """Number every row filed by the backfill's first pass, partition by partition, as
        output rows of the engine's "transactions" of 2,000 rows; yields the rows done after
        each (the caller writes the batch)."""
        engine, vid = self.engine, view.view_id
        wp = view.plan.window
        assert wp is not None
        self.loading = False
        top, assemble = wp.top_slot, wp.assemble
        base = order_prefix(vid)
        n = len(base)
        it = engine.views_cf.iter()
        it.seek(base)
        pkey: bytes | None = None
        rn = rank = dense = done = 0
        prev_order = None
        excluded_in: bytes | None = None
        while it.valid():
            key = it.key()
            if not key.startswith(base):
                break
            suffix, value = key[n:], it.value()
            pl, ol = _LENS.unpack_from(value)
            if suffix[:pl] != pkey:
                if pkey is not None and wp.top is not None:
                    engine.vput(boundary_key(vid, pkey), excluded_in)
                pkey, excluded_in = suffix[:pl], None
                rn = rank = dense = 0
                prev_order = None
            order, okey = suffix[pl : pl + ol], suffix[pl + ol :]
            rn += 1
            if order != prev_order:
                rank, dense, prev_order = rn, dense + 1, order
            nums = (rn, rank, dense)
            if top is not None and nums[top[0]] > top[1]:
                # The rest of the partition is left out: on to the next one.
                engine.vput(boundary_key(vid, pkey), suffix)
                after = _successor(base + pkey)
                pkey = None
                if after is None or not after.startswith(base):
                    break
                it.seek(after)
                continue
            engine.touched[(vid, okey)] = None  # a new view: no row stored before
            row = unpack_fields(value[4:])
            row += nums
            engine.pending[(vid, okey)] = assemble(row)
            it.next()
            done += 1
            if done % 2000 == 0:
                engine.end_transaction()
                engine.flush()
                yield done
        if pkey is not None and wp.top is not None:
            engine.vput(boundary_key(vid, pkey), excluded_in)
        engine.end_transaction()
        engine.flush()
        yield done
