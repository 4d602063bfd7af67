"""A new view's first state, built in bulk from the mirror (a first start, or a view added to
views.sql).

A view whose aggregate sits below its join (`views.plan.Pushdown`: `base [LEFT] JOIN child ON
child.fk = base.pk GROUP BY base.pk`) is built here in three passes, each over one table or the
groups once, with nothing read back from RocksDB:

1. the child table, a chunk of rows at a time: only the columns the view reads are decoded
   (`codecs.rowcolumns`, a column for the whole chunk) and converted; each row's aggregate
   inputs go to the group of its fk value, folded into that group's states once per chunk;
2. the groups, in group-key order: their states (`g`) and spilled multisets (`m`);
3. the base table: each row's output row (`r`), its sort-index entries (`s`) and its first
   history entry at the LSN the build read the mirror at; then the view's row count (`n`).

What it writes is exactly what the engine's incremental path writes for the same rows, key by
key (tests/store/test_group_identity.py builds both and compares): the states are the same
`views.aggregates` classes fed the same values, the output rows come from the view's generated
code (`views.codegen`), and the keys from `store.engine`'s layout. Other views are built by
feeding the engine their first FROM item's rows (`ViewEngine.backfill_rows`).

Memory: the groups' states (one per distinct fk value) and a chunk of rows.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from viewstore.codecs.key import encode_key
from viewstore.codecs.key import encode_value as encode_sort_value
from viewstore.codecs.value import pack_fields
from viewstore.history.changelog import entries
from viewstore.progress import Progress
from viewstore.store import columnbuild
from viewstore.store.db import Store
from viewstore.store.engine import (
    ActiveView,
    count_key,
    null_extended,
    row_key,
    sort_prefix,
    spill_prefix,
    view_prefix,
)
from viewstore.views.codegen import SKIP
from viewstore.views.plan import Position

_CHUNK = 100_000  # keys per WriteBatch
log = logging.getLogger(__name__)


class _Out:
    """Unsynced WriteBatches of the views and history column families, written every
    `_CHUNK` keys (the build's synced "ready" marker comes after them all)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.views_cf = store.cf["views"]
        self.history_cf = store.cf["history"]
        self.batch = store.new_batch()
        self.n = 0

    def view(self, key: bytes, value: bytes) -> None:
        self.batch.put(key, value, self.views_cf)
        self.n += 1
        if self.n >= _CHUNK:
            self.flush()

    def history(self, key: bytes, value: bytes) -> None:
        self.batch.put(key, value, self.history_cf)
        self.n += 1

    def flush(self) -> None:
        self.store.write(self.batch, sync=False)
        self.batch = self.store.new_batch()
        self.n = 0


def _typed_chunks(
    store: Store, position: Position, used: frozenset[int], progress: Progress
) -> Iterator[list[Any]]:
    """The rows of a FROM item's table, a chunk at a time, as the engine's typed rows: Python
    values in the columns the view reads, None in the others."""
    for decoded in columnbuild.mirror_chunks(store, position.table, sorted(used), progress):
        n = len(next(iter(decoded.values())))
        columns: list[Any] = []
        for c in range(len(position.table.columns)):
            if c in decoded:
                conv = position.converters[c]
                columns.append([None if v is None else conv(v) for v in decoded[c].to_pylist()])
            else:
                columns.append(itertools.repeat(None, n))
        yield list(zip(*columns, strict=False))


class _Group:
    __slots__ = ("count", "states")

    def __init__(self, count: int, states: list[Any]) -> None:
        self.count = count
        self.states = states


def build_pushed(store: Store, view: ActiveView, lsn: int, progress: Progress) -> None:
    """Write the whole state of a new pushed-down view, and its history at `lsn`."""
    plan = view.plan
    pd = plan.pushdown
    assert pd is not None
    if columnbuild.covers(plan) and columnbuild.build(store, view, lsn, progress):
        return
    vid = view.view_id
    out = _Out(store)
    started = time.monotonic()

    # 1. Child rows into their groups.
    child = plan.positions[pd.child_pos]
    groups: dict[Any, _Group] = {}
    feed: Callable[[Any], list[Any]] = plan.code["child"]
    fk_at = pd.fk
    nchild = 0
    for rows in _typed_chunks(store, child, plan.used[child.table.table_id], progress):
        nchild += len(rows)
        pending: dict[Any, list[Any]] = {}
        for row in rows:
            fk = row[fk_at]
            if fk is not None:
                values = feed(row)  # an EvalError fails the build, as Postgres's SELECT would
                some = pending.get(fk)
                if some is None:
                    pending[fk] = [values]
                else:
                    some.append(values)
        for fk, fed in pending.items():
            group = groups.get(fk)
            if group is None:
                group = groups[fk] = _Group(0, [agg.new_state() for agg in plan.aggs])
            group.count += len(fed)
            for i, state in enumerate(group.states):
                state.add_many([v[i] for v in fed if v[i] is not SKIP])

    grouped = time.monotonic()

    # 2. The groups' states, laid out as `ViewEngine.flush` writes them (a pushed-down group
    # keeps no key values or carried columns: its base row has them).
    gkeys = {fk: encode_key((fk,)) for fk in groups}
    prefix = view_prefix(vid) + b"g"
    spills = [i for i, agg in enumerate(plan.aggs) if agg.new_state().spills]
    for fk in sorted(groups, key=gkeys.__getitem__):
        group, gkey = groups[fk], gkeys[fk]
        fields: list[Any] = [group.count]
        for state in group.states:
            own = state.own_fields()
            fields += [len(own), *own]
        out.view(prefix + gkey, pack_fields(fields))
        for i in spills:
            spill = spill_prefix(vid, gkey, i)
            for exact, n in group.states[i].take_changes():
                out.view(spill + exact, n.to_bytes(8, "big"))

    stated = time.monotonic()

    # 3. Each base row's output row, sort-index entries and first history entry.
    base = plan.positions[pd.base_pos]
    pk_at = pd.base_pk
    nulls = plan.positions[pd.child_pos].nulls
    where = plan.where
    pushed = plan.code["pushed"]
    pack = plan.code["pack"]
    sort_columns = plan.sort_columns
    sorts = [sort_prefix(vid, c) for c in sort_columns]
    empty: list[Any] | None = None
    seq = 0
    for rows in _typed_chunks(store, base, plan.used[base.table.table_id], progress):
        for row in rows:
            if where is not None:
                joined = row + nulls if pd.base_pos == 0 else nulls + row
                if where(joined) is not True:
                    continue
            pk = row[pk_at]
            group = groups.get(pk)
            if group is not None:
                after = pushed(row, group.states)
            elif pd.left:
                if empty is None:  # the aggregates read child columns only: any row will do
                    empty = null_extended(plan, row + nulls if pd.base_pos == 0 else nulls + row)
                after = pushed(row, empty)
            else:
                continue
            if after is None:
                continue  # HAVING rejects the group
            okey = gkeys.get(pk) or encode_key((pk,))
            data = pack(after)
            out.view(row_key(vid, okey), data)
            for c, sprefix in zip(sort_columns, sorts, strict=True):
                out.view(sprefix + encode_sort_value(after[c]) + okey, b"")
            for hkey, hvalue in entries(vid, lsn, seq, okey, None, data, None, None):
                out.history(hkey, hvalue)
            seq += 1  # also the view's row count
    if seq:
        out.view(count_key(vid), seq.to_bytes(8, "big"))
    out.flush()
    log.info(
        "view %s: %s child rows into %s groups in %.1f s, their states in %.1f s, "
        "%s rows in %.1f s",
        plan.name,
        f"{nchild:,}",
        f"{len(groups):,}",
        grouped - started,
        stated - grouped,
        f"{seq:,}",
        time.monotonic() - stated,
    )
