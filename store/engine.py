"""View engine: keeps every view current, row change by row change, in the mirror's WriteBatch.

The method is the delta join. A view's rows are the joined rows of its FROM items (left to
right, INNER or LEFT, on equalities), filtered, then grouped or projected. When one source row
`r` enters or leaves table T, the joined rows that change are exactly those through `r`:

- find every prefix (joined row of the FROM items before T's position) that matches `r` on the
  join condition, walking backwards through the join by primary key gets and join indexes;
- extend `prefix + r` forward through the later FROM items: those rows enter or leave;
- for a LEFT JOIN, if `r` was the prefix's only match (or becomes it), the null-extended row
  `prefix + NULLs` leaves (or comes back).

Changes are applied one at a time, each against the state right before it, so any mix of
changes in a transaction (to several tables, or to one table at two positions of a self-join)
gives exactly the view of the final state. An UPDATE is a removal of the old row, then an
addition of the new one. For a self-join, a removed row leaves the first position first while
the later ones still see it; an added row enters the first position first.

Each joined row that passes WHERE then updates its group (a row count, the aggregate states, the
columns read from the group's key table) or, in a view without GROUP BY, becomes an output row
keyed by the primary keys of its source rows. What a view does with one joined row is generated
Python (`views.codegen`, shown by `viewstore explain`).

The aggregate below the join (`views.plan.Pushdown`): for `base [LEFT] JOIN child ON child.fk =
base.pk GROUP BY base.pk` the child rows update the state of the group their fk names directly
(no join walk, no join index), and the base row is joined by primary key once per changed group
when the output row is computed (`pushed_output`).

Batches. At the end of each transaction the touched output rows are computed once, compared
with what they were, and their before/after pairs returned for the history: readers (and the
history) see each view move once per transaction. The group states, output rows, sort-index
entries and row counts are written once per batch (`flush`, at the commit group's write), each
in its state after the batch's last transaction, in key order.

Storage (column family `views`):

    x  table id (4)  column (2)  value  mirror key      join index: rows of a table by a column
    v  view id (2)   g  group key                       group state (count, key, aggregates)
    v  view id (2)   m  len (2)  group key  agg (1)  value    a spilled MIN/MAX or DISTINCT
                                                        multiset: count of one exact value
    v  view id (2)   n                                  the view's row count (absent: 0)
    v  view id (2)   r  output key                      output row (codecs.value fields)
    v  view id (2)   s  column (2)  value  output key   sort index of one output column
    v  view id (2)   o / k / b ...                      a window view's order index, row
                                                        locators and Top-K boundaries
                                                        (store.ranking)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rocksdict import Rdict

from viewstore.codecs.key import encode_key, encode_value, value_length
from viewstore.codecs.row import Row, decode_row, encode_row
from viewstore.codecs.value import CORRUPT_HINT, decode_value, pack_fields, unpack_fields
from viewstore.errors import StoreError
from viewstore.store.ranking import Ranking
from viewstore.views.codegen import SKIP, make_typer
from viewstore.views.expr import EvalError
from viewstore.views.plan import ALL_ROWS, IndexSpec, Lookup, Position, RangeLookup, ViewPlan
from viewstore.views.schema import TableInfo
from viewstore.views.stack import is_view_table, view_id_of

_U16 = struct.Struct(">H")
CACHE_LIMIT = 200_000  # cached rows, view keys and groups kept between batches
Typed = tuple[Any, ...]


# --------------------------------------------------------------------------- key layout


def index_prefix(spec: IndexSpec) -> bytes:
    return b"x" + spec.table_id.to_bytes(4, "big") + _U16.pack(spec.column)


def index_value_prefix(table: TableInfo, column: int, value: Any) -> bytes:
    """The join-index prefix of the rows of `table` whose `column` equals `value`."""
    return index_prefix(IndexSpec(table.table_id, column)) + encode_value(value)


def view_prefix(view_id: int) -> bytes:
    return b"v" + _U16.pack(view_id)


def row_key(view_id: int, okey: bytes) -> bytes:
    return view_prefix(view_id) + b"r" + okey


def spill_prefix(view_id: int, gkey: bytes, agg: int) -> bytes:
    """Where a group's spilled multiset of aggregate `agg` (MIN/MAX, DISTINCT) keeps one entry
    per distinct value: this prefix + the value's exact form -> its count (8 bytes)."""
    return view_prefix(view_id) + b"m" + _U16.pack(len(gkey)) + gkey + bytes((agg,))


def count_key(view_id: int) -> bytes:
    """Where the number of rows of a view is kept (8 bytes, big-endian: `row_count_of`)."""
    return view_prefix(view_id) + b"n"


def row_count_of(data: bytes | None) -> int:
    """The number of rows a view's `count_key` holds (0 when there is none yet)."""
    return 0 if data is None else int.from_bytes(data, "big")


def sort_prefix(view_id: int, column: int) -> bytes:
    return view_prefix(view_id) + b"s" + _U16.pack(column)


def sort_entry_key(sort_key: bytes, prefix_len: int) -> bytes:
    """The output key at the end of a sort-index key (after prefix and one encoded value)."""
    return sort_key[prefix_len + value_length(sort_key, prefix_len) :]


_SKIP = SKIP  # an aggregate's FILTER rejected the row (the generated code says so)


_EVERY = encode_value(True)  # the one value of the ALL_ROWS index: every row under it


def _compares(op: str, a: Any, b: Any) -> bool:
    """`a <op> b` in SQL order (both not NULL): by the key encoding, which is the order of
    the join indexes a range join scans (so a row found by a scan passes this test), and in
    which NaN sorts after every number as in Postgres, where Python's < says nothing."""
    x, y = encode_value(a), encode_value(b)
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    return x >= y


def _bounds(lk: RangeLookup, src: Typed) -> tuple[bytes | None, bool, bytes | None, bool] | None:
    """The encoded (lower, inclusive, upper, inclusive) bounds `lk` takes from the row `src`
    (None: unbounded), the tightest of each; None when nothing can lie within them (a bound
    is NULL, which compares true with nothing, or they cross)."""
    lo = hi = None
    lo_incl = hi_incl = True
    for i, incl in lk.lower:
        if src[i] is None:
            return None
        e = encode_value(src[i])
        if lo is None or e > lo or (e == lo and not incl):
            lo, lo_incl = e, incl
    for i, incl in lk.upper:
        if src[i] is None:
            return None
        e = encode_value(src[i])
        if hi is None or e < hi or (e == hi and not incl):
            hi, hi_incl = e, incl
    if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_incl and hi_incl))):
        return None
    return lo, lo_incl, hi, hi_incl


def matches(pos: Position, prefix: Typed, row: Typed) -> bool:
    """Whether `row` (a row of the FROM item at `pos`) meets the join condition with the
    joined row `prefix` of the items before it."""
    for a, b in pos.on:
        if prefix[a] is None or not _joins(prefix[a], row[b]):
            return False
    for a, op, b in pos.ranges:
        x, y = prefix[a], row[b]
        if x is None or y is None or not _compares(op, x, y):
            return False
    return True


def _joins(a: Any, b: Any) -> bool:
    """Postgres's = between two join values (`a` not NULL): NaN equals NaN there, for numeric
    and float alike, as in the join indexes' key encoding, where Python's == says it does not
    (a row joined through the index would then never be found again to leave)."""
    return a == b or (a != a and b != b)


def null_extended(plan: ViewPlan, joined: Typed) -> list[Any]:
    """A LEFT JOIN's group with no child rows: its base row alone, null-extended (`joined`),
    and what the aggregates make of that one row of NULLs (COUNT(*) is 1, SUM is NULL)."""
    states = [agg.new_state() for agg in plan.aggs]
    for agg, state in zip(plan.aggs, states, strict=True):
        if agg.filter is None or agg.filter(joined) is True:
            state.add(None if agg.arg is None else agg.arg(joined))
    return states


def decode_output(data: bytes) -> tuple[Any, ...]:
    return tuple(unpack_fields(data))


@dataclass(frozen=True)
class ActiveView:
    """A compiled view and the id its state is stored under."""

    plan: ViewPlan
    view_id: int


class Writer(Protocol):
    """Where the engine reads mirror rows and writes view state (the Applier, or a backfill)."""

    def get_row(self, key: bytes) -> bytes | None: ...

    def view_write(self, key: bytes, value: bytes | None) -> None: ...


class _Group:
    __slots__ = ("carried", "count", "key", "states")

    def __init__(self, key: Typed, count: int, states: list[Any], carried: Typed) -> None:
        self.key, self.count, self.states, self.carried = key, count, states, carried


class _Change:
    """The source row being added or removed, and at which FROM positions lookups see it."""

    __slots__ = ("key", "row", "table_id", "visible")

    def __init__(self, table_id: int, key: bytes, row: Typed, visible: Iterable[int]) -> None:
        self.table_id, self.key, self.row = table_id, key, row
        self.visible = frozenset(visible)


class ViewEngine:
    """Maintains `views` through a `Writer`; one engine per applier."""

    def __init__(self, views: Sequence[ActiveView], views_cf: Rdict, writer: Writer) -> None:
        self.views = list(views)
        self.by_id = {v.view_id: v for v in self.views}
        self.views_cf = views_cf
        self.writer = writer
        self.converters: dict[int, tuple[Callable[[bytes], Any], ...]] = {}
        # table id -> [(view, positions of the table in the view)]
        self.by_table: dict[int, list[tuple[ActiveView, list[int]]]] = {}
        self.indexes: dict[int, list[IndexSpec]] = {}
        # Pushed-down views (viewplan.Pushdown), by child table and by base table.
        self.push_child: dict[int, list[ActiveView]] = {}
        self.push_base: dict[int, list[ActiveView]] = {}
        used: dict[int, set[int]] = {}
        for v in self.views:
            for p in v.plan.positions:
                self.converters[p.table.table_id] = p.converters
            for tid, cols in v.plan.used.items():
                used.setdefault(tid, set()).update(cols)
            pd = v.plan.pushdown
            if pd is not None:
                self.push_child.setdefault(pd.child, []).append(v)
                self.push_base.setdefault(pd.base, []).append(v)
                continue
            for tid in sorted(v.plan.tables):
                spots = [p.index for p in v.plan.positions if p.table.table_id == tid]
                self.by_table.setdefault(tid, []).append((v, spots))
            for spec in v.plan.indexes:
                if spec not in self.indexes.setdefault(spec.table_id, []):
                    self.indexes[spec.table_id].append(spec)
        # One function per table that converts only the columns some view reads.
        tables = {p.table.table_id: p.table for v in self.views for p in v.plan.positions}
        self.typers = {
            tid: make_typer(tables[tid], self.converters[tid], cols)
            for tid, cols in sorted(used.items())
        }
        self.tables = (
            frozenset(self.by_table) | frozenset(self.push_child) | frozenset(self.push_base)
        )
        # Views over views (views.stack): the view table each view read by another one feeds,
        # and each view's level (0: reads tables only; else one above the views it reads).
        # A transaction's end computes the views a level at a time.
        self.feeds: dict[int, TableInfo] = {
            view_id_of(tid): tables[tid] for tid in tables if is_view_table(tid)
        }
        self.level: dict[int, int] = {}
        for v in self.views:  # in dependency order (store.viewcatalog)
            ups = [view_id_of(t) for t in v.plan.tables if is_view_table(t)]
            self.level[v.view_id] = 1 + max((self.level.get(u, -1) for u in ups), default=-1)
        self.stacked = any(self.level.values())
        self.ranking = Ranking(self)  # window views' order indexes (store.ranking)
        self.reset()

    def reset(self) -> None:
        """Forget every cache and overlay (the group was discarded: RocksDB is the truth)."""
        self.rows: dict[bytes, Typed | None] = {}  # mirror key -> typed row (read cache)
        self.vover: dict[bytes, bytes | None] = {}  # views CF: written by us, or read before
        self.iover: dict[bytes, dict[bytes, bool]] = {}  # index prefix -> {mirror key: present}
        self.icols: dict[bytes, set[bytes]] = {}  # index column prefix -> its prefixes in iover
        self.groups: dict[tuple[int, bytes], _Group] = {}
        self.dirty: set[tuple[int, bytes]] = set()  # groups whose state is not in the batch
        self.pending: dict[tuple[int, bytes], Typed | None] = {}  # non-grouped output rows
        self.touched: dict[tuple[int, bytes], bytes | None] = {}  # -> output before the txn
        # Output rows changed since the last flush -> (encoded, decoded) as last written: the
        # rows and their sort-index entries are written once per batch, at `flush`.
        # (row before the batch encoded, and decoded when sort-indexed, row now)
        self.changed: dict[tuple[int, bytes], tuple[bytes | None, Typed | None]] = {}
        # Caches kept between batches (bounded with the others, see `written`): a pushed-down
        # group's base row key, a group key by value, the encoded sort-index values of the
        # output rows as last written.
        self.pushed: dict[tuple[int, bytes], bytes] = {}
        self.gkeys: dict[tuple[int, Any], bytes] = {}
        self.sortvals: dict[tuple[int, bytes], tuple[bytes, ...]] = {}
        self.added: dict[int, int] = {}  # view id -> rows added (or removed) since the flush
        # Values of MIN/MAX/COUNT(DISTINCT) multisets read into cached groups: each costs ~600
        # bytes of Python objects, so they count towards CACHE_LIMIT like cached rows do (a
        # soak with 200 players and 240k scores under MIN and MAX grew to 420 MiB without).
        self.spilled_values = 0
        self._iter: Any = None  # a views CF iterator, as of the last batch written
        # (view id, repr of a joined row) -> (net sign, error): rows whose expressions failed
        # in this transaction, held back until its end (see `emit`).
        self.failed: dict[tuple[int, str], tuple[int, EvalError]] = {}
        self.ranking.reset()

    def written(self) -> None:
        """The batch is in RocksDB. The caches stay true (every write went through them), and
        they save the gets of the next transactions on hot rows, so keep them unless large."""
        cached = len(self.rows) + len(self.vover) + len(self.groups) + len(self.sortvals)
        if cached + len(self.pushed) + len(self.gkeys) + self.spilled_values > CACHE_LIMIT:
            self.reset()
        else:
            self.iover.clear()  # index scans read RocksDB again: nothing to merge
            self.icols.clear()
            self._iter = None
            self.ranking.reset()

    def flush(self) -> None:
        """Put the state of every group and output row changed since the last flush into the
        batch (called before the batch is written: each is written once per batch, not once per
        transaction; the history has every transaction's own before and after)."""
        write = self.writer.view_write
        for (vid, okey), (old_data, new) in sorted(self.changed.items()):
            rkey = row_key(vid, okey)
            data = self.vover[rkey]
            if data == old_data:
                continue  # changed and changed back within the batch
            write(rkey, data)
            columns = self.by_id[vid].plan.sort_columns
            if not columns:
                continue
            old_values = self.sortvals.pop((vid, okey), None)
            if old_values is None and old_data is not None:
                old = decode_output(old_data)
                old_values = tuple(encode_value(old[c]) for c in columns)
            new_values = None if new is None else tuple(encode_value(new[c]) for c in columns)
            for i, c in enumerate(columns):
                both = old_values is not None and new_values is not None
                if both and old_values[i] == new_values[i]:  # type: ignore[index]
                    continue
                prefix = sort_prefix(vid, c)
                if old_values is not None:
                    write(prefix + old_values[i] + okey, None)
                if new_values is not None:
                    write(prefix + new_values[i] + okey, b"")
            if new_values is not None:
                self.sortvals[(vid, okey)] = new_values
        self.changed.clear()
        for vid, delta in sorted(self.added.items()):
            if delta:
                key = count_key(vid)
                old = self.vget(key)
                n = delta + (0 if old is None else int.from_bytes(old, "big"))
                self.vput(key, n.to_bytes(8, "big") if n else None)  # one form for 0
        self.added.clear()
        for vid, gkey in sorted(self.dirty):
            group = self.groups[(vid, gkey)]
            key = view_prefix(vid) + b"g" + gkey
            for i, state in enumerate(group.states):
                if state.spills:
                    prefix = spill_prefix(vid, gkey, i)
                    for exact, n in state.take_changes():
                        self.vput(prefix + exact, n.to_bytes(8, "big") if n else None)
            if group.count == 0:
                self.vput(key, None)
                del self.groups[(vid, gkey)]
            else:
                # count, key values, carried values, then per aggregate: n, its n fields
                fields = [group.count, *group.key, *group.carried]
                for state in group.states:
                    own = state.own_fields()
                    fields += [len(own), *own]
                self.vput(key, pack_fields(fields))
        self.dirty.clear()

    # ---- reading state -------------------------------------------------------------------

    def typed(self, table_id: int, raw: Row) -> Typed:
        return self.typers[table_id](raw)

    def fetch(self, table: TableInfo, key: bytes) -> Typed | None:
        try:
            return self.rows[key]
        except KeyError:
            pass
        if is_view_table(table.table_id):
            data = self.vget(row_key(view_id_of(table.table_id), key[4:]))
        else:
            data = self.writer.get_row(key)
        row = None if data is None else self.stored(table, key, data)
        self.rows[key] = row
        return row

    def stored(self, table: TableInfo, key: bytes, data: bytes) -> Typed:
        """A row as a store keeps it: a mirror row (text values), or a view table's row (its
        view's output row, at `v <view id> r <key[4:]>`), typed."""
        if is_view_table(table.table_id):
            return (*decode_output(data), key[4:])
        return self.typed(table.table_id, decode_row(data))

    def vget(self, key: bytes) -> bytes | None:
        try:
            return self.vover[key]
        except KeyError:
            value = self.vover[key] = self.views_cf.get(key)
            return value

    def vput(self, key: bytes, value: bytes | None) -> None:
        self.vover[key] = value
        self.writer.view_write(key, value)

    def _iterator(self) -> Any:
        # One iterator per batch (it sees RocksDB as of its creation, and `iover` holds every
        # index write since): seeking a live iterator costs about half of making a new one.
        if self._iter is None:
            self._iter = self.views_cf.iter()
        return self._iter

    def index_scan(self, prefix: bytes) -> list[bytes]:
        """Mirror keys in the join index under `prefix` (one table, column and value)."""
        n = len(prefix)
        it = self._iterator()
        found = []
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            found.append(key[n:])
            it.next()
        over = self.iover.get(prefix)
        if over:
            have = set(found)
            found = [k for k in found if over.get(k, True)]
            found += [k for k, present in over.items() if present and k not in have]
            # In key order, as if the batch were in RocksDB: the join visits rows in this
            # order, which numbers the history entries, and a replay after a crash may cut the
            # commit groups elsewhere (promise 4: byte-identical history).
            found.sort()
        return found

    def index_any(self, prefix: bytes, exclude: bytes | None) -> bool:
        """Whether the join index has a key under `prefix` other than `exclude`."""
        over = self.iover.get(prefix, {})
        if any(present and k != exclude for k, present in over.items()):
            return True
        it = self._iterator()
        n = len(prefix)
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return False
            suffix = key[n:]
            if suffix != exclude and over.get(suffix, True):
                return True
            it.next()
        return False

    def lookup(self, pos: Position, lk: Lookup, value: Any, change: _Change | None) -> list[Typed]:
        """Rows of the FROM item at `pos` whose column `lk.column` equals `value`, as the
        change being processed lets that position see them."""
        if value is None:
            return []
        table = pos.table
        keys: list[bytes]
        if lk.by_key is not None:
            keys = [table.prefix + encode_row((lk.by_key(value),))]
        else:
            prefix = index_value_prefix(table, lk.column, value)
            keys = [table.prefix + k for k in self.index_scan(prefix)]
        mine = change is not None and change.table_id == table.table_id
        out = []
        for key in keys:
            if mine and key == change.key:  # type: ignore[union-attr]
                continue
            row = self.fetch(table, key)
            if row is None:
                if lk.by_key is not None:
                    continue
                raise StoreError(
                    f"join index of {table.qualified} names a row the mirror lacks", CORRUPT_HINT
                )
            out.append(row)
        if mine and pos.index in change.visible and _joins(change.row[lk.column], value):  # type: ignore[union-attr]
            out.append(change.row)  # type: ignore[union-attr]
        return out

    def candidates(
        self, pos: Position, lk: Lookup | RangeLookup, src: Typed, change: _Change | None
    ) -> list[Typed]:
        """Rows of the FROM item at `pos` that `lk` finds from the row `src`: those equal on
        its column, or within the bounds a range join takes from `src` (every row for a cross
        join). The callers test the rest of the join condition (`matches`)."""
        if isinstance(lk, RangeLookup):
            return self.range_lookup(pos, lk, src, change)
        return self.lookup(pos, lk, src[lk.source], change)

    def range_lookup(
        self, pos: Position, lk: RangeLookup, src: Typed, change: _Change | None
    ) -> list[Typed]:
        """Rows of the FROM item at `pos` whose column `lk.column` lies within the bounds
        `src` gives (a range scan of its join index, which is in SQL order), as the change
        being processed lets that position see them."""
        bounds = _bounds(lk, src)
        if bounds is None:
            return []
        lo, lo_incl, hi, hi_incl = bounds
        table = pos.table
        prefix = index_prefix(IndexSpec(table.table_id, lk.column))
        mine = change is not None and change.table_id == table.table_id
        out = []
        for suffix in self.index_range(prefix, lo, lo_incl, hi, hi_incl):
            key = table.prefix + suffix
            if mine and key == change.key:  # type: ignore[union-attr]
                continue
            row = self.fetch(table, key)
            if row is None:
                raise StoreError(
                    f"join index of {table.qualified} names a row the mirror lacks", CORRUPT_HINT
                )
            out.append(row)
        if mine and pos.index in change.visible:  # type: ignore[union-attr]
            row = change.row  # type: ignore[union-attr]
            if lk.everything:
                out.append(row)
            elif row[lk.column] is not None:
                e = encode_value(row[lk.column])
                above = lo is None or e > lo or (e == lo and lo_incl)
                below = hi is None or e < hi or (e == hi and hi_incl)
                if above and below:
                    out.append(row)
        return out

    def range_any(self, pos: Position, lk: RangeLookup, src: Typed, change: _Change | None) -> bool:
        """Whether `range_lookup` would find a row (other than the changed one, unless the
        change lets `pos` see it), without reading rows: the first index entry decides."""
        bounds = _bounds(lk, src)
        if bounds is None:
            return False
        table = pos.table
        mine = change is not None and change.table_id == table.table_id
        exclude = change.key[4:] if mine else None  # type: ignore[union-attr]
        prefix = index_prefix(IndexSpec(table.table_id, lk.column))
        if any(s != exclude for s in self.index_range(prefix, *bounds, limit=2)):
            return True
        return bool(
            mine and pos.index in change.visible and self.range_lookup(pos, lk, src, change)
        )  # type: ignore[union-attr]

    def index_range(
        self,
        prefix: bytes,
        lo: bytes | None,
        lo_incl: bool,
        hi: bytes | None,
        hi_incl: bool,
        limit: int | None = None,
    ) -> list[bytes]:
        """Mirror keys (without the table prefix) in the join index under `prefix` (one table
        and column) whose value's encoding lies between `lo` and `hi` (None: unbounded), in
        index order, with this batch's index writes merged in; with `limit`, up to `limit`
        of them once that many are found (then not necessarily the first ones)."""
        n = len(prefix)

        def inside(v: bytes) -> bool:
            if lo is not None and (v < lo or (v == lo and not lo_incl)):
                return False
            return hi is None or v < hi or (v == hi and hi_incl)

        iover = self.iover
        it = self._iterator()
        found = []  # (value encoding, mirror key suffix), in index order
        it.seek(prefix if lo is None else prefix + lo)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            end = n + value_length(key, n)
            v = key[n:end]
            if hi is not None and (v > hi or (v == hi and not hi_incl)):
                break
            if inside(v):
                suffix = key[end:]
                # This batch's writes to the index win over RocksDB's (one dict get: asking
                # this of every row of a range costs no scan of the batch).
                written = iover.get(key[:end]) if iover else None
                if written is None or written.get(suffix, True):
                    found.append((v, suffix))
                    if limit is not None and len(found) >= limit:
                        return [x for _, x in found]
            it.next()
        added = False
        for vprefix in self.icols.get(prefix, ()):
            v = vprefix[n:]
            if inside(v):
                for suffix, present in iover[vprefix].items():
                    if present:
                        found.append((v, suffix))
                        added = True
        if added:  # index order, as if the batch were in RocksDB (see index_scan)
            found = sorted(set(found))
        return [x for _, x in found]

    # ---- the delta join ------------------------------------------------------------------

    def extend(
        self, plan: ViewPlan, rows: list[Typed], start: int, change: _Change | None
    ) -> list[Typed]:
        """Join partial rows (the FROM items before `start`) with the items from `start` on."""
        for pos in plan.positions[start:]:
            lk = pos.forward
            assert lk is not None
            if isinstance(lk, RangeLookup):
                others = list(pos.on)
            else:
                others = [(a, b) for a, b in pos.on if (a, b) != (lk.source, lk.column)]
            grown: list[Typed] = []
            for row in rows:
                found = self.candidates(pos, lk, row, change)
                if pos.ranges:
                    found = [m for m in found if matches(pos, row, m)]
                elif others:
                    found = [
                        m
                        for m in found
                        if all(row[a] is not None and _joins(row[a], m[b]) for a, b in others)
                    ]
                if found:
                    grown += [row + m for m in found]
                elif pos.outer:
                    grown.append(row + pos.nulls)
            rows = grown
            if not rows:
                break
        return rows

    def prefixes(self, plan: ViewPlan, p: int, r: Typed, change: _Change | None) -> list[Typed]:
        """Joined rows of the items before position `p` that `r` (a row at `p`) joins to."""
        pos = plan.positions[p]
        assert pos.backward is not None
        j, lk = pos.backward
        out = []
        for y in self.candidates(plan.positions[j], lk, r, change):
            for prefix in self.through(plan, j, y, p, change):
                if matches(pos, prefix, r):
                    out.append(prefix)
        return out

    def through(
        self, plan: ViewPlan, j: int, y: Typed, stop: int, change: _Change | None
    ) -> list[Typed]:
        """Joined rows of the items before `stop` that contain `y` at position `j`."""
        base = [y] if j == 0 else [m + y for m in self.prefixes(plan, j, y, change)]
        if not base or j + 1 >= stop:
            return base
        return self.extend(_Upto(plan, stop - 1), base, j + 1, change)  # type: ignore[arg-type]

    def view_delta(self, view: ActiveView, p: int, r: Typed, sign: int, change: _Change) -> None:
        """Apply the joined rows that `r` adds (sign 1) or removes (-1) at position `p`."""
        plan = view.plan
        if p == 0:
            self.emit(view, sign, self.extend(plan, [r], 1, change))
            if len(plan.positions) == 2 and plan.positions[1].kind == "full":
                self.full_left(view, r, sign, change)
            return
        pos = plan.positions[p]
        found = self.prefixes(plan, p, r, change)
        for m in found:
            self.emit(view, sign, self.extend(plan, [m + r], p + 1, change))
            if pos.outer and not self.has_other(pos, m, change):
                self.emit(view, -sign, self.extend(plan, [m + pos.nulls], p + 1, change))
        if pos.kind == "full" and not found:
            # A FULL JOIN is a view's only join (views.sql): `r` with no left row shows alone.
            self.emit(view, sign, [plan.positions[0].nulls + r])

    def full_left(self, view: ActiveView, r: Typed, sign: int, change: _Change) -> None:
        """`r` enters (leaves) the left side of `a FULL JOIN b`: each right row it matches
        that had no other left match stops (starts) showing null-extended."""
        plan = view.plan
        pos = plan.positions[1]
        lk = pos.forward
        assert lk is not None
        for m in self.candidates(pos, lk, r, change):
            if matches(pos, r, m) and not self.prefixes(plan, 1, m, change):
                self.emit(view, -sign, [plan.positions[0].nulls + m])

    def has_other(self, pos: Position, m: Typed, change: _Change) -> bool:
        """Whether the prefix `m` has a match at `pos` other than the changed row."""
        lk = pos.forward
        assert lk is not None
        if isinstance(lk, RangeLookup):
            if lk.everything:  # a cross join: any other row of the table
                table = pos.table
                mine = change.table_id == table.table_id
                prefix = index_prefix(IndexSpec(table.table_id, ALL_ROWS)) + _EVERY
                return self.index_any(prefix, change.key[4:] if mine else None)
            if not pos.on and len(pos.ranges) == len(lk.lower) + len(lk.upper):
                # The scan's bounds are the whole condition: stop at its first other row, as
                # the equality path does (a row of b leaving `a LEFT JOIN b ON a.i > b.i` asks
                # this of every a row above it).
                return self.range_any(pos, lk, m, change)
            return any(matches(pos, m, row) for row in self.candidates(pos, lk, m, change))
        value = m[lk.source]
        if value is None:
            return False
        if lk.by_key is None and len(pos.on) == 1 and not pos.ranges:
            # The index entry alone says the row matches: stop at the first one, without
            # reading rows (a player with thousands of scores costs one seek, not thousands).
            table = pos.table
            prefix = index_value_prefix(table, lk.column, value)
            mine = change.table_id == table.table_id
            return self.index_any(prefix, change.key[4:] if mine else None)
        return any(matches(pos, m, row) for row in self.lookup(pos, lk, value, change))

    # ---- source row changes (called by the applier) --------------------------------------

    def insert(self, table: TableInfo, key: bytes, raw: Row) -> None:
        """`raw` (text values) entered `table` at mirror `key`; the mirror already has it."""
        self.add_row(table, key, self.typed(table.table_id, raw))

    def delete(self, table: TableInfo, key: bytes, raw: Row) -> None:
        """`raw` leaves `table`; call before the mirror forgets it."""
        self.remove_row(table, key, self.typed(table.table_id, raw))

    def add_row(self, table: TableInfo, key: bytes, row: Typed) -> None:
        """The typed `row` entered `table` (a source table, or a view table) at `key`."""
        self.rows[key] = row
        self._index(table, key, row, True)
        tid = table.table_id
        for view, spots in self.by_table.get(tid, ()):
            for p in spots:  # a self-join: earlier positions already have it
                change = _Change(tid, key, row, (q for q in spots if q < p))
                self.view_delta(view, p, row, 1, change)
        for view in self.push_child.get(tid, ()):
            self.child_row(view, row, 1)
        for view in self.push_base.get(tid, ()):
            self.base_row(view, row)

    def remove_row(self, table: TableInfo, key: bytes, row: Typed) -> None:
        """The typed `row` leaves `table` at `key`; call while `fetch` still finds it."""
        self._index(table, key, row, False)
        tid = table.table_id
        for view, spots in self.by_table.get(tid, ()):
            for p in spots:  # a self-join: later positions still have it
                change = _Change(tid, key, row, (q for q in spots if q > p))
                self.view_delta(view, p, row, -1, change)
        for view in self.push_child.get(tid, ()):
            self.child_row(view, row, -1)
        for view in self.push_base.get(tid, ()):
            self.base_row(view, row)
        self.rows[key] = None

    # ---- aggregates pushed below the join (viewplan.Pushdown) -----------------------------

    def child_row(self, view: ActiveView, row: Typed, sign: int) -> None:
        """A child row enters (1) or leaves (-1) the group its fk names, whether or not that
        base row exists (the base row decides, at output, whether the group shows)."""
        fk = row[view.plan.pushdown.fk]  # type: ignore[union-attr]
        if fk is None:
            return  # joins no base row
        values = self.agg_values(view, sign, row)
        if values is None:
            return
        vid = view.view_id
        gkey = self._gkey(vid, fk)
        k = (vid, gkey)
        group = self.groups.get(k) or self.group(view, gkey, ())
        if k not in self.touched:
            self._touch(view, gkey)
            if k not in self.pushed:
                self.pushed[k] = self.base_key(view, fk)
        self.dirty.add(k)
        group.count += sign
        if sign > 0:
            for value, state in zip(values, group.states, strict=True):
                if value is not _SKIP:
                    state.add(value)
        else:
            for value, state in zip(values, group.states, strict=True):
                if value is not _SKIP:
                    state.remove(value)
            if group.count < 0:
                raise StoreError(
                    f"view {view.plan.name}: a group's row count fell below zero", CORRUPT_HINT
                )

    def base_row(self, view: ActiveView, row: Typed) -> None:
        """A base row changed: its group's output row is computed again at the end."""
        plan = view.plan
        value = row[plan.pushdown.base_pk]  # type: ignore[union-attr]
        gkey = self._gkey(view.view_id, value)
        self.group(view, gkey, ())
        self._touch(view, gkey)
        if (view.view_id, gkey) not in self.pushed:
            self.pushed[(view.view_id, gkey)] = self.base_key(view, value)

    def _gkey(self, vid: int, value: Any) -> bytes:
        """A pushed-down group's key: the encoded fk (or base key) value, cached."""
        gkey = self.gkeys.get((vid, value))
        if gkey is None:
            gkey = self.gkeys[(vid, value)] = encode_key((value,))
        return gkey

    def base_key(self, view: ActiveView, value: Any) -> bytes:
        """The mirror key of the base row whose primary key is `value`."""
        pd = view.plan.pushdown
        base = view.plan.positions[pd.base_pos].table  # type: ignore[union-attr]
        return base.prefix + encode_row((pd.base_key(value),))  # type: ignore[union-attr]

    def agg_values(self, view: ActiveView, sign: int, row: Typed) -> list[Any] | None:
        """What child `row` feeds each aggregate (_SKIP where its FILTER rejects it); None
        when an expression failed (held back, see `emit`)."""
        vid = view.view_id
        if sign < 0 and self.failed:
            key = (vid, repr(row))
            held = self.failed.pop(key, None)
            if held is not None:
                if held[0] + sign:
                    self.failed[key] = (held[0] + sign, held[1])
                return None
        try:
            return view.plan.code["child"](row)  # type: ignore[no-any-return]
        except EvalError as exc:
            key = (vid, repr(row))
            net = self.failed.pop(key, (0, exc))[0] + sign
            if net:
                self.failed[key] = (net, exc)
            return None

    def pushed_output(self, view: ActiveView, gkey: bytes) -> Typed | None:
        """The output row of a pushed-down group: its base row joined with the aggregates."""
        base = view.plan.positions[view.plan.pushdown.base_pos].table  # type: ignore[union-attr]
        row = self.fetch(base, self.pushed[(view.view_id, gkey)])
        if row is None:
            return None
        return self.joined_output(view, row, self.groups[(view.view_id, gkey)])

    def joined_output(self, view: ActiveView, row: Typed, group: _Group) -> Typed | None:
        """A pushed-down group's output row, given its base row."""
        plan = view.plan
        pd = plan.pushdown
        nulls = plan.positions[pd.child_pos].nulls  # type: ignore[union-attr]
        joined = row + nulls if pd.base_pos == 0 else nulls + row  # type: ignore[union-attr]
        if plan.where is not None and plan.where(joined) is not True:
            return None
        states = group.states
        if group.count == 0:
            if not pd.left:  # type: ignore[union-attr]
                return None
            states = null_extended(plan, joined)
        return plan.code["pushed"](row, states)  # type: ignore[no-any-return]

    def _index(self, table: TableInfo, key: bytes, row: Typed, present: bool) -> None:
        suffix = key[4:]
        for spec in self.indexes.get(table.table_id, ()):
            value = True if spec.column == ALL_ROWS else row[spec.column]
            if value is None:
                continue  # NULL joins nothing
            prefix = index_value_prefix(table, spec.column, value)
            self.iover.setdefault(prefix, {})[suffix] = present
            self.icols.setdefault(prefix[:7], set()).add(prefix)
            self.writer.view_write(prefix + suffix, b"" if present else None)

    # ---- grouping and output -------------------------------------------------------------

    def emit(self, view: ActiveView, sign: int, rows: list[Typed]) -> None:
        plan = view.plan
        code = plan.code  # the view's generated functions (views.codegen)
        feed = None if not plan.aggregate else code["feed"]
        project = code["project"] if not plan.aggregate else None
        vid = view.view_id
        for row in rows:
            # Every expression first, then the state changes: a row whose expressions fail
            # changes nothing. Postgres evaluates the view over committed rows only, and this
            # may be a state the transaction passes through (inserted with qty 0, then updated
            # before the commit, under `price / qty`): the error stands only if the row is
            # still there when the transaction ends (`end_transaction`).
            if sign < 0 and self.failed:
                key = (vid, repr(row))  # repr: exact, where == takes 1.0 for 1.00
                held = self.failed.pop(key, None)
                if held is not None:  # it failed on the way in, so it was never applied
                    if held[0] + sign:
                        self.failed[key] = (held[0] + sign, held[1])
                    continue
            try:
                if project is not None:
                    out = project(row)  # None: WHERE rejects it
                    if out is None:
                        continue
                else:
                    fed = feed(row, sign)  # type: ignore[misc]
                    if fed is None:
                        continue
                    gk, values, carried = fed
            except EvalError as exc:
                key = (vid, repr(row))
                net = self.failed.pop(key, (0, exc))[0] + sign
                if net:
                    self.failed[key] = (net, exc)
                continue
            if not plan.aggregate:
                okey = encode_key(
                    [row[p.offset + k] for p in plan.positions for k in p.table.key_positions]
                )
                if plan.window is not None:  # a ranking: numbered at the transaction's end
                    self.ranking.change(vid, okey, out if sign > 0 else None)
                    continue
                self._touch(view, okey)
                self.pending[(vid, okey)] = out if sign > 0 else None
                continue
            gkey = encode_key(gk)
            group = self.group(view, gkey, gk)
            self._touch(view, gkey)
            group.count += sign
            for value, state in zip(values, group.states, strict=True):
                if value is _SKIP:
                    continue
                if sign > 0:
                    state.add(value)
                else:
                    state.remove(value)
            if carried:
                group.carried = carried
            if group.count < 0:
                raise StoreError(
                    f"view {plan.name}: a group's row count fell below zero", CORRUPT_HINT
                )

    def group(self, view: ActiveView, gkey: bytes, gk: Typed) -> _Group:
        try:
            return self.groups[(view.view_id, gkey)]
        except KeyError:
            pass
        plan = view.plan
        data = self.vget(view_prefix(view.view_id) + b"g" + gkey)
        # A pushed-down group keeps neither key values nor carried columns (the base row has them)
        ncar = len(plan.carried_exprs) if plan.pushdown is None else 0
        if data is None:
            group = _Group(gk, 0, [a.new_state() for a in plan.aggs], (None,) * ncar)
        else:
            fields = unpack_fields(data)  # laid out as `flush` writes them
            nkey = len(plan.group_exprs) if plan.pushdown is None else 0
            states = []
            pos = 1 + nkey + ncar
            for i, agg in enumerate(plan.aggs):
                n = fields[pos]
                state = agg.new_state()
                state.load(fields[pos + 1 : pos + 1 + n])
                if state.spills:
                    state.load(self.spilled(spill_prefix(view.view_id, gkey, i)))
                states.append(state)
                pos += 1 + n
            group = _Group(
                tuple(fields[1 : 1 + nkey]),
                fields[0],
                states,
                tuple(fields[1 + nkey : 1 + nkey + ncar]),
            )
        self.groups[(view.view_id, gkey)] = group
        return group

    def spilled(self, prefix: bytes) -> list[Any]:
        """A spilled multiset as `load` takes it: value, count, value, count... (RocksDB holds
        all of it: a group is read only when it is not cached, and it stays cached from its
        first read until its batch is written)."""
        fields: list[Any] = []
        n = len(prefix)
        it = self._iterator()
        it.seek(prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            fields += [decode_value(key[n:]), int.from_bytes(it.value(), "big")]
            it.next()
        self.spilled_values += len(fields) // 2
        return fields

    def _touch(self, view: ActiveView, okey: bytes) -> None:
        k = (view.view_id, okey)
        if k not in self.touched:
            self.touched[k] = self.vget(row_key(view.view_id, okey))

    def touch_global(self, view: ActiveView) -> None:
        """Make sure an aggregate view without GROUP BY has its one row (even over no rows)."""
        self.group(view, b"", ())
        self._touch(view, b"")

    def output(self, view: ActiveView, group: _Group) -> Typed | None:
        plan = view.plan
        if group.count == 0 and not plan.global_aggregate:
            return None
        values = (*group.key, *(s.result() for s in group.states), *group.carried)
        return plan.code["output"](values)  # type: ignore[no-any-return]

    def end_transaction(self) -> list[tuple[int, bytes, bytes | None, bytes | None]]:
        """Write the output rows the transaction touched; returns (view id, output key,
        encoded row before, encoded row after) for each row that changed. Views over views
        are computed a level at a time: a view's rows change, then the views that read it see
        those changes as rows of its view table, and so on up the stack."""
        # A row whose expressions failed is still there as the transaction ends: the view's
        # SELECT fails on the committed state too.
        self._raise_failed()
        changes: list[tuple[int, bytes, bytes | None, bytes | None]] = []
        while self.touched or self.ranking.changes:
            if self.ranking.changes:  # window views' rows, numbered now (store.ranking)
                self.ranking.end_transaction()
                if not self.touched:
                    break
            now = self.touched
            if self.stacked:
                level = min(self.level[vid] for vid, _ in now)
                self.touched = {k: b for k, b in now.items() if self.level[k[0]] != level}
                now = {k: b for k, b in now.items() if self.level[k[0]] == level}
            else:
                self.touched = {}
            self._end_views(now, changes)
            self._raise_failed()
        return changes

    def _end_views(
        self,
        touched: dict[tuple[int, bytes], bytes | None],
        changes: list[tuple[int, bytes, bytes | None, bytes | None]],
    ) -> None:
        for (vid, okey), before_data in touched.items():
            view = self.by_id[vid]
            if view.plan.pushdown is not None:
                after = self.pushed_output(view, okey)  # its state: dirty if a child row moved
            elif view.plan.aggregate:
                group = self.groups[(vid, okey)]
                after = self.output(view, group)
                self.dirty.add((vid, okey))
            else:
                after = self.pending.pop((vid, okey))
            after_data = None if after is None else view.plan.code["pack"](after)
            if before_data == after_data:
                continue
            first = self.changed.get((vid, okey))
            self.changed[(vid, okey)] = (before_data if first is None else first[0], after)
            feed = self.feeds.get(vid)
            if feed is not None and before_data is not None:
                self.remove_row(feed, feed.prefix + okey, (*decode_output(before_data), okey))
            self.vover[row_key(vid, okey)] = after_data  # written at `flush`
            if feed is not None and after_data is not None:
                self.add_row(feed, feed.prefix + okey, (*decode_output(after_data), okey))
            if before_data is None or after_data is None:
                self.added[vid] = self.added.get(vid, 0) + (1 if before_data is None else -1)
            changes.append((vid, okey, before_data, after_data))

    # ---- backfill ------------------------------------------------------------------------

    def _raise_failed(self) -> None:
        if self.failed:
            _, exc = next(iter(self.failed.values()))
            self.failed.clear()
            raise exc

    def backfill_rows(
        self, view: ActiveView, base_rows: Iterator[tuple[bytes, bytes]]
    ) -> Iterator[int]:
        """Add the joined rows of every row of the view's first FROM item; yields the number
        of base rows done every few thousand, after ending a "transaction" (so the caller can
        write the batch and `reset`)."""
        plan = view.plan
        if plan.global_aggregate:
            self.touch_global(view)
        # A ranking files its rows first and numbers them all at the end (`backfill_window`).
        self.ranking.loading = plan.window is not None
        table = plan.positions[0].table

        def add(key: bytes, raw: bytes) -> None:
            self.emit(view, 1, self.extend(plan, [self.stored(table, key, raw)], 1, None))

        return self._in_batches(base_rows, add)

    def backfill_unmatched(
        self, view: ActiveView, rows: Iterator[tuple[bytes, bytes]]
    ) -> Iterator[int]:
        """`a FULL JOIN b`: after `backfill_rows` over a, add every row of b that no row of a
        matches, null-extended; yields like `backfill_rows`."""
        plan = view.plan
        pos = plan.positions[1]
        nulls = plan.positions[0].nulls

        def add(key: bytes, raw: bytes) -> None:
            row = self.stored(pos.table, key, raw)
            if not self.prefixes(plan, 1, row, None):
                self.emit(view, 1, [nulls + row])

        return self._in_batches(rows, add)

    def backfill_window(self, view: ActiveView) -> Iterator[int]:
        """After `backfill_rows` (and `backfill_unmatched`) of a window view: number its rows
        (store.ranking); yields like `backfill_rows`."""
        return self.ranking.backfill(view)

    def _in_batches(
        self, rows: Iterator[tuple[bytes, bytes]], add: Callable[[bytes, bytes], None]
    ) -> Iterator[int]:
        """`add` each row (key, encoded value); every 2,000 rows end a "transaction" and flush it
        into the batch, then yield the rows done (the caller writes the batch)."""
        n = 0
        for key, raw in rows:
            add(key, raw)
            n += 1
            if n % 2000 == 0:
                self.end_transaction()
                self.flush()
                yield n
        self.end_transaction()
        self.flush()
        yield n
        self.end_transaction()
        self.flush()
        yield n


class _Upto:
    """A plan whose FROM list stops at `stop` (for `through`: extend only up to a position)."""

    def __init__(self, plan: ViewPlan, stop: int) -> None:
        self.positions = plan.positions[: stop + 1]
