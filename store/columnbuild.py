"""The bulk build of a pushed-down view a column at a time: the fast path of `store.viewbuild`.

It covers the leaderboard shape: `base [LEFT] JOIN child ON child.fk = base.pk GROUP BY
base.pk` with integer keys, COUNT(*), COUNT(col) and SUM(col) over plain child columns of an
integer or numeric type, and output columns that are base columns (integer or text), those
aggregates, or COALESCE(aggregate, constant); no WHERE, HAVING, FILTER or DISTINCT. For such a
view, the child table's fk and aggregate columns are read into arrays, grouped with one sort,
summed exactly in int64 (a numeric as mantissa and scale), and every key and value is encoded
by `codecs.vector` for all rows at once. Python runs per chunk, not per row.

`covers(plan)` says whether a view has the shape; `build` returns False, having written
nothing, when the data falls outside what int64 holds exactly (a numeric with more than 18
digits, NaN or infinity, a sum that could overflow): the caller then builds the view row by
row. Before writing, the first groups and rows are also computed by the row path's own code
(the aggregate states of `views.aggregates`, the view's generated `pushed` and `pack`) and
compared byte for byte; a difference is logged as an error and the row path builds the view.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from viewstore.codecs import vector as V
from viewstore.codecs.key import encode_key
from viewstore.codecs.key import encode_value as key_value
from viewstore.codecs.rowcolumns import decode_arrays
from viewstore.codecs.value import FORMAT, pack_fields
from viewstore.progress import Progress
from viewstore.store.db import Store
from viewstore.store.engine import (
    ActiveView,
    count_key,
    null_extended,
    sort_prefix,
    view_prefix,
)
from viewstore.views.expr import compile_expr
from viewstore.views.plan import ViewPlan
from viewstore.views.tree import INT2, INT4, INT8, NUMERIC, TEXT, VARCHAR, Agg, Col, Const, Func

log = logging.getLogger(__name__)

_INTS = frozenset({INT2, INT4, INT8})
_CHUNK = 200_000  # rows decoded at a time, and output rows per WriteBatch
_CHECK = 64  # groups and rows recomputed by the row path before anything is written
_MAX_DIGITS = 18  # every integer of up to 18 digits fits int64


class _Outside(Exception):
    """The data is outside what this path computes exactly: build the view row by row."""


class _Disagrees(_Outside):
    """The column path computed something the row path does not: a bug, logged as one."""


@dataclass(frozen=True)
class _Output:
    """How one output column is made: a base column, or an aggregate through `fn`."""

    base_column: int | None  # column of the base table
    text: bool  # a base column of a text type (else an integer type)
    agg: int | None  # index of the aggregate
    fn: Any  # the output expression over the aggregate values (None: the aggregate itself)


def _outputs(plan: ViewPlan) -> list[_Output] | None:
    pd = plan.pushdown
    assert pd is not None
    base = plan.positions[pd.base_pos]
    nkeys = len(plan.group_exprs)
    outs = []
    for _, e in plan.output_exprs:
        if isinstance(e, Col) and e.index is not None:
            column = e.index - base.offset
            if not 0 <= column < base.width or e.type not in _INTS | {TEXT, VARCHAR}:
                return None
            outs.append(_Output(column, e.type in (TEXT, VARCHAR), None, None))
            continue
        agg = e if isinstance(e, Agg) else None
        if (
            isinstance(e, Func)
            and e.name == "coalesce"
            and len(e.args) == 2
            and isinstance(e.args[0], Agg)
            and isinstance(e.args[1], Const)
        ):
            agg = e.args[0]
        if agg is None or agg not in plan.slots:
            return None
        j = plan.slots[agg] - nkeys
        outs.append(_Output(None, False, j, None if agg is e else compile_expr(e, plan.slots)))
    return outs


def covers(plan: ViewPlan) -> bool:
    """Whether `plan` has the shape this path builds (see the module docstring)."""
    pd = plan.pushdown
    if pd is None or plan.where_expr is not None or plan.having_expr is not None:
        return False
    base, child = plan.positions[pd.base_pos], plan.positions[pd.child_pos]
    if base.table.columns[pd.base_pk].type_oid not in _INTS:
        return False
    if child.table.columns[pd.fk].type_oid not in _INTS:
        return False
    for agg in plan.aggs:
        if agg.distinct or agg.filter is not None or agg.name not in ("count", "sum"):
            return False
        arg = agg.arg_expr
        if arg is None:
            if agg.name != "count":
                return False
            continue
        if not isinstance(arg, Col) or arg.index is None:
            return False
        if not 0 <= arg.index - child.offset < child.width:
            return False
        if agg.name == "sum" and agg.arg_type not in _INTS | {NUMERIC}:
            return False
    outs = _outputs(plan)
    if outs is None:
        return False
    # A sort index on a text column needs the text key encoding; not done here.
    return all(outs[c].agg is not None or not outs[c].text for c in plan.sort_columns)


# --------------------------------------------------------------------------- reading


def mirror_chunks(
    store: Store, table: Any, columns: list[int], progress: Progress
) -> Iterator[dict[int, Any]]:
    """Columns of a table's mirrored rows, a chunk of rows at a time, as large_binary arrays
    (null for NULL); each chunk counts in `progress` once the caller has taken it."""
    rows = (data for _, data in store.rows(table))
    while True:
        chunk = list(itertools.islice(rows, _CHUNK))
        if not chunk:
            return
        yield decode_arrays(chunk, columns)
        progress.add(len(chunk))


def _ints(texts: Any) -> np.ndarray:
    """Integer texts as int64 (the caller has dropped or filled the nulls)."""
    return pc.cast(texts.cast(pa.large_string()), pa.int64()).to_numpy(zero_copy_only=False)


def _numerics(texts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Numeric texts (no nulls) as (int64 mantissa, scale): '-12.50' -> (-1250, 2)."""
    s = texts.cast(pa.large_string())
    if len(s) and not pc.all(pc.match_substring_regex(s, r"^-?[0-9]+(\.[0-9]+)?$")).as_py():
        raise _Outside("NaN or an infinity")
    point = pc.find_substring(s, ".").to_numpy(zero_copy_only=False).astype(np.int64)
    length = pc.utf8_length(s).to_numpy(zero_copy_only=False).astype(np.int64)
    scale = np.where(point < 0, 0, length - point - 1)
    digits = pc.replace_substring(s, ".", "")
    if len(s) and pc.max(pc.utf8_length(pc.utf8_ltrim(digits, "-"))).as_py() > _MAX_DIGITS:
        raise _Outside("a numeric of more than 18 digits")
    return pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False), scale


def _ndigits(a: np.ndarray) -> np.ndarray:
    a = np.abs(a)
    n = np.ones(len(a), np.int64)
    for k in range(1, 19):
        n += a >= 10**k
    return n


@dataclass
class _Input:
    """An aggregate's argument over the child rows: None-ness and parsed values."""

    valid: np.ndarray | None  # bool per row; None for COUNT(*)
    values: np.ndarray | None  # int64 (0 where NULL): the integer, or the numeric's mantissa
    scales: np.ndarray | None  # int16 digits after the point (numerics only)

    @staticmethod
    def concat(parts: list[_Input], order: np.ndarray) -> _Input:
        """The chunks' parts as one, rows in `order`."""

        def joined(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            if not arrays or arrays[0] is None:
                return None
            return np.concatenate(arrays)[order]

        return _Input(joined("valid"), joined("values"), joined("scales"))

    def value(self, i: int) -> Any:
        """Row `i` as the row path's Python value (None for NULL; True for COUNT(x)'s)."""
        if self.valid is None or not self.valid[i]:
            return None
        if self.values is None:
            return True
        if self.scales is None:
            return int(self.values[i])
        return Decimal(int(self.values[i])).scaleb(-int(self.scales[i]))


def _parse(agg: Any, arg: Any, convert: Any) -> _Input:
    """A chunk of an aggregate's argument texts as an `_Input`. The first `_CHECK` values
    are also converted by the row path's converter and compared."""
    if arg is None:
        return _Input(None, None, None)
    valid = arg.is_valid().to_numpy(zero_copy_only=False)
    if agg.name == "count":
        return _Input(valid, None, None)
    present = arg.filter(pa.array(valid))
    values = np.zeros(len(arg), np.int64)
    if agg.arg_type in _INTS:
        values[valid] = _ints(present)
        scales = None
    else:
        mantissa, scale = _numerics(present)
        values[valid] = mantissa
        scales = np.zeros(len(arg), np.int16)  # Postgres's numeric scale is at most 16383
        scales[valid] = scale
    parsed = _Input(valid, values, scales)
    for i, raw in enumerate(arg.slice(0, _CHECK).to_pylist()):
        if raw is not None and not _same(convert(raw), parsed.value(i)):
            raise _Disagrees(f"{raw!r} parses unlike the row path")
    return parsed


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and str(a) == str(b)


# --------------------------------------------------------------------------- aggregates


@dataclass
class _Aggregated:
    """One aggregate over every group: the group's own stored fields and its result."""

    own: list[Any]  # fields of pack_fields (encoded field arrays), in order
    tail: Any | None  # a per-group segment of already packed fields after `own` (or None)
    nown: np.ndarray  # len(own_fields()) per group
    result: Any  # the result's pack_fields field per group ("N" for NULL)
    result_text: Any  # the result as number text (nulls for NULL), for the sort key
    null: np.ndarray  # the result is NULL


def _i(values: np.ndarray) -> Any:
    return V.field_text(b"i", V.int_texts(values))


def _aggregate(agg: Any, arg: _Input, starts: np.ndarray, sizes: np.ndarray) -> _Aggregated:
    """`agg` over the groups given by `starts`/`sizes` of the sorted child rows' `arg`."""
    g = len(starts)
    if arg.valid is None:  # COUNT(*)
        n = sizes.astype(np.int64)
        return _Aggregated([_i(n)], None, np.ones(g, np.int64), _i(n), V.int_texts(n), n < 0)
    valid = arg.valid
    n = np.add.reduceat(valid.astype(np.int64), starts) if g else np.zeros(0, np.int64)
    if agg.name == "count":
        return _Aggregated([_i(n)], None, np.ones(g, np.int64), _i(n), V.int_texts(n), n < 0)
    null = n == 0
    values = arg.values  # 0 where NULL
    assert values is not None
    if arg.scales is None:  # SUM over an integer type
        wide = agg.arg_type == INT8
        if wide and g and float(np.abs(values).max()) * float(sizes.max()) >= 2.0**62:
            raise _Outside("an int8 sum that could overflow int64")
        total = np.add.reduceat(values, starts) if g else np.zeros(0, np.int64)
        # SUM(int8) is numeric (a Decimal, tagged d); SUM(int2/int4) is bigint (an int).
        result = V.field_text(b"d", V.int_texts(total)) if wide else _i(total)
        result = pc.if_else(pa.array(null), pa.scalar(b"N", pa.large_binary()), result)
        text = pc.if_else(pa.array(null), pa.scalar(None, pa.large_binary()), V.int_texts(total))
        return _Aggregated([_i(n), _i(total)], None, np.full(g, 2, np.int64), result, text, null)
    # SUM(numeric): the exact sum at the largest scale of the group's inputs, and the multiset
    # of scales (views.aggregates.NumericSum's fields).
    scale = arg.scales.astype(np.int64)  # 0 where NULL
    top = np.maximum.reduceat(scale, starts) if g else np.zeros(0, np.int64)
    shift = np.repeat(top, sizes) - scale
    if len(shift) and (_ndigits(values) + shift).max() > _MAX_DIGITS:
        raise _Outside("a numeric sum beyond 18 digits")
    adjusted = values * (10**shift)
    del shift
    if g and np.add.reduceat(np.abs(adjusted).astype(np.float64), starts).max() >= 2.0**62:
        raise _Outside("a numeric sum beyond int64")
    total = np.add.reduceat(adjusted, starts) if g else np.zeros(0, np.int64)
    del adjusted
    if not V.plain_notation(total, top).all():
        raise _Outside("a sum Python prints in scientific notation")
    sum_text = V.numeric_texts(total, top)
    gid = np.repeat(np.arange(g, dtype=np.int64), sizes)[valid]
    pairs, counts = np.unique(gid * 65536 + scale[valid], return_counts=True)
    del gid
    pair_gid, pair_scale = pairs // 65536, pairs % 65536
    pair_bytes = V.join(V.with_length(_i(pair_scale)), V.with_length(_i(counts)))
    offsets = np.zeros(g + 1, np.int64)
    np.cumsum(np.bincount(pair_gid, minlength=g), out=offsets[1:])
    tail = pc.binary_join(
        pa.LargeListArray.from_arrays(pa.array(offsets), pair_bytes),
        pa.scalar(b"", pa.large_binary()),
    )
    zero = _i(np.zeros(g, np.int64))
    own = [_i(n), zero, zero, zero, V.field_text(b"d", sum_text)]
    npairs = offsets[1:] - offsets[:-1]
    result = pc.if_else(
        pa.array(null), pa.scalar(b"N", pa.large_binary()), V.field_text(b"d", sum_text)
    )
    text = pc.if_else(pa.array(null), pa.scalar(None, pa.large_binary()), sum_text)
    return _Aggregated(own, tail, 5 + 2 * npairs, result, text, null)


# --------------------------------------------------------------------------- the build


def build(store: Store, view: ActiveView, lsn: int, progress: Progress) -> bool:
    """Write the whole state of new pushed-down `view` (which `covers`) and its history at
    `lsn`; False (nothing written) when its data needs the row path."""
    try:
        return _build(store, view, lsn, progress)
    except _Disagrees as why:
        log.error("view %s: the column build differs: %s; building row by row", view.plan.name, why)
        return False
    except _Outside as why:
        log.info("view %s: built row by row (%s)", view.plan.name, why)
        return False


def _build(store: Store, view: ActiveView, lsn: int, progress: Progress) -> bool:
    started = time.monotonic()
    plan = view.plan
    pd = plan.pushdown
    assert pd is not None
    vid = view.view_id
    outs = _outputs(plan)
    assert outs is not None
    child = plan.positions[pd.child_pos]
    base = plan.positions[pd.base_pos]

    # 1. The child rows' fk and aggregate arguments, sorted by fk.
    arg_columns = [
        None if a.arg_expr is None else a.arg_expr.index - child.offset for a in plan.aggs
    ]
    wanted = sorted({pd.fk, *(c for c in arg_columns if c is not None)})
    # Parsed a chunk at a time into numpy (no text kept): 10M child rows take ~25 bytes each.
    fks: list[np.ndarray] = []
    inputs: list[list[_Input]] = [[] for _ in plan.aggs]
    for arrays in mirror_chunks(store, child.table, wanted, progress):
        has_fk = arrays[pd.fk].is_valid()
        fks.append(_ints(arrays[pd.fk].filter(has_fk)))
        for agg, c, some in zip(plan.aggs, arg_columns, inputs, strict=True):
            arg = None if c is None else arrays[c].filter(has_fk)
            some.append(_parse(agg, arg, child.converters[c] if c is not None else None))
    fk = np.concatenate(fks) if fks else np.zeros(0, np.int64)
    del fks
    order = np.argsort(fk, kind="stable")
    fk = fk[order]
    args = [_Input.concat(some, order) for some in inputs]
    del inputs, order
    starts = np.flatnonzero(np.r_[True, fk[1:] != fk[:-1]]) if len(fk) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(fk)]).astype(np.int64)
    keys = fk[starts]
    del fk
    aggs = [_aggregate(a, arg, starts, sizes) for a, arg in zip(plan.aggs, args, strict=True)]

    # 2. The groups' states: count, then per aggregate len(own) and its own fields.
    gkeys = V.key_numbers(V.int_texts(keys))
    fields: list[Any] = [V.with_length(_i(sizes))]
    for a in aggs:
        fields.append(V.with_length(_i(a.nown)))
        fields += [V.with_length(f) for f in a.own]
        if a.tail is not None:
            fields.append(a.tail)
    states = V.join(FORMAT, *fields)
    del fields
    check = _Check(plan, args, starts, sizes)
    if not check.groups(states):
        return False

    # 3. Each base row's output row, sort entries and first history entry, a chunk at a time.
    columns = sorted({o.base_column for o in outs if o.base_column is not None} | {pd.base_pk})
    extended = [s.result() for s in _null_extended(plan)]
    seq = 0
    for arrays in mirror_chunks(store, base.table, columns, progress):
        okeys, data, sort_keys, at, found = _rows(plan, outs, aggs, keys, extended, arrays)
        if check is not None:
            if not check.rows(base, arrays, found, at, data, okeys, sort_keys):
                return False
            check = None
            args.clear()
            _write_groups(store, vid, gkeys, states)
            del gkeys, states
        _write_rows(store, vid, lsn, seq, okeys, data, sort_keys)
        seq += len(okeys)
    if check is not None:  # no base rows: write the groups all the same
        _write_groups(store, vid, gkeys, states)
    if seq:
        batch = store.new_batch()
        batch.put(count_key(vid), seq.to_bytes(8, "big"), store.cf["views"])
        store.write(batch, sync=False)
    log.info(
        "view %s: built by columns: %s groups, %s rows in %.1f s",
        plan.name,
        f"{len(keys):,}",
        f"{seq:,}",
        time.monotonic() - started,
    )
    return True


def _rows(
    plan: ViewPlan,
    outs: list[_Output],
    aggs: list[_Aggregated],
    keys: np.ndarray,
    extended: list[Any],
    arrays: dict[int, Any],
) -> tuple[Any, Any, dict[int, Any], np.ndarray, np.ndarray]:
    """A chunk of base rows' (output keys, output rows, sort keys by column, group index,
    whether the group exists); under an inner join, only the rows with a group."""
    pd = plan.pushdown
    assert pd is not None
    pk_texts = arrays[pd.base_pk]
    pk = _ints(pk_texts)
    at = np.searchsorted(keys, pk)
    found = np.zeros(len(pk), bool)
    inside = at < len(keys)
    found[inside] = keys[at[inside]] == pk[inside]
    if not pd.left:
        keep = pa.array(found)
        pk_texts, at = pk_texts.filter(keep), at[found]
        for c in list(arrays):
            arrays[c] = arrays[c].filter(keep)
        found = found[found]
    at = np.where(found, at, 0)
    takes = pa.array(at)
    missing = pa.array(~found)
    ff = pa.scalar(b"\xff", pa.large_binary())
    row_fields, sort_keys = [], {}
    for i, o in enumerate(outs):
        if o.base_column is not None:
            raw = arrays[o.base_column]
            row_fields.append(V.field_text(b"s" if o.text else b"i", raw))
            if i in plan.sort_columns:  # an integer column (covers() refuses text)
                sort_keys[i] = pc.if_else(raw.is_null(), ff, V.key_numbers(raw.fill_null(b"0")))
            continue
        a = aggs[o.agg]  # type: ignore[index]
        if len(a.null):
            null = pa.array(a.null[at])
            field, text = a.result.take(takes), a.result_text.take(takes)
        else:  # no child rows at all: every row is missing its group
            null = pa.array(np.ones(len(at), bool))
            field = text = pa.nulls(len(at), pa.large_binary())
        key = pc.if_else(null, ff, V.key_numbers(text.fill_null(b"0")))
        if o.fn is not None:  # COALESCE(aggregate, constant): the constant where it is NULL
            default = _value_of(o, plan, None)
            field = pc.if_else(null, _field(default), field)
            key = pc.if_else(null, _key(default), key)
        ext = _value_of(o, plan, extended[o.agg])  # type: ignore[index]
        row_fields.append(pc.if_else(missing, _field(ext), field))
        if i in plan.sort_columns:
            sort_keys[i] = pc.if_else(missing, _key(ext), key)
    return V.key_numbers(pk_texts), V.pack(row_fields), sort_keys, at, found


def _null_extended(plan: ViewPlan) -> list[Any]:
    """The aggregate states of a LEFT JOIN's group with no child rows (they read child columns
    only, so a base row of NULLs will do)."""
    return null_extended(plan, (None,) * sum(p.width for p in plan.positions))


def _value_of(o: _Output, plan: ViewPlan, value: Any) -> Any:
    """The output column's value when its aggregate's value is `value`."""
    if o.fn is None:
        return value
    values: list[Any] = [None] * (max(plan.slots.values()) + 1)
    values[len(plan.group_exprs) + o.agg] = value  # type: ignore[operator]
    return o.fn(values)


def _field(value: Any) -> Any:
    """`value` as a pack_fields field (its tag and bytes), a pyarrow scalar."""
    return pa.scalar(pack_fields([value])[5:], pa.large_binary())


def _key(value: Any) -> Any:
    return pa.scalar(key_value(value), pa.large_binary())


def _states(plan: ViewPlan, args: list[_Input], start: int, size: int) -> list[Any]:
    """One group's aggregate states, fed by the row path's own classes."""
    states = []
    for agg, arg in zip(plan.aggs, args, strict=True):
        state = agg.new_state()
        state.add_many([arg.value(i) for i in range(start, start + size)])
        states.append(state)
    return states


class _Check:
    """The first groups and rows recomputed by the row path's own code (the aggregate
    states of `views.aggregates`, the view's generated `pushed` and `pack`), to compare with
    the column build's bytes before anything is written."""

    def __init__(
        self, plan: ViewPlan, args: list[Any], starts: np.ndarray, sizes: np.ndarray
    ) -> None:
        self.plan, self.args = plan, args
        self.starts, self.sizes = starts, sizes

    def states(self, g: int) -> list[Any]:
        return _states(self.plan, self.args, int(self.starts[g]), int(self.sizes[g]))

    def groups(self, states: Any) -> bool:
        for g in range(min(_CHECK, len(self.starts))):
            fields: list[Any] = [int(self.sizes[g])]
            for state in self.states(g):
                own = state.own_fields()
                fields += [len(own), *own]
            if pack_fields(fields) != states[g].as_py():
                log.error("view %s: the column build's group state %d differs", self.plan.name, g)
                return False
        return True

    def rows(
        self,
        base: Any,
        arrays: dict[int, Any],
        found: np.ndarray,
        at: np.ndarray,
        data: Any,
        okeys: Any,
        sort_keys: dict[int, Any],
    ) -> bool:
        plan = self.plan
        pd = plan.pushdown
        assert pd is not None
        extended = _null_extended(plan)
        for i in range(min(_CHECK, len(found))):
            row: list[Any] = [None] * base.width
            for c, array in arrays.items():
                raw = array[i].as_py()
                row[c] = None if raw is None else base.converters[c](raw)
            own = self.states(int(at[i])) if found[i] else extended
            after = plan.code["pushed"](tuple(row), own)
            if after is None or plan.code["pack"](after) != data[i].as_py():
                log.error("view %s: the column build's row %d differs", plan.name, i)
                return False
            if okeys[i].as_py() != encode_key((row[pd.base_pk],)) or any(
                sort_keys[c][i].as_py() != key_value(after[c]) for c in sort_keys
            ):
                log.error("view %s: the column build's keys of row %d differ", plan.name, i)
                return False
        return True


def _put(store: Store, cf: Any, keys: Any, values: Any | None) -> None:
    """Put `keys` (with `values`, or empty values) into `cf`, a WriteBatch per `_CHUNK`."""
    for start in range(0, len(keys), _CHUNK):
        batch = store.new_batch()
        put = batch.put
        some = keys.slice(start, _CHUNK).to_pylist()
        if values is None:
            for k in some:
                put(k, b"", cf)
        else:
            for k, v in zip(some, values.slice(start, _CHUNK).to_pylist(), strict=True):
                put(k, v, cf)
        store.write(batch, sync=False)


def _write_groups(store: Store, vid: int, gkeys: Any, states: Any) -> None:
    _put(store, store.cf["views"], V.join(view_prefix(vid) + b"g", gkeys), states)


def _write_rows(
    store: Store, vid: int, lsn: int, seq: int, okeys: Any, data: Any, sort_keys: dict[int, Any]
) -> None:
    """A chunk of output rows, their sort entries and history (the caller syncs "ready")."""
    views_cf, history_cf = store.cf["views"], store.cf["history"]
    n = len(okeys)
    _put(store, views_cf, V.join(view_prefix(vid) + b"r", okeys), data)
    for c, keys in sort_keys.items():
        _put(store, views_cf, V.join(sort_prefix(vid, c), keys, okeys), None)
    # history.keys' layout: c, view id (2), commit LSN (8), sequence (4).
    head = np.zeros(n, np.dtype([("t", "u1"), ("v", ">u2"), ("l", ">u8"), ("s", ">u4")]))
    head["t"], head["v"], head["l"], head["s"] = ord("c"), vid, lsn, np.arange(seq, seq + n)
    null_field = (1).to_bytes(4, "big") + b"N"
    change = V.join(  # codecs.value.pack_change(okey, None, data, None, None)
        FORMAT,
        V.be(V.lengths(okeys) + 1, ">u4"),
        b"y",
        okeys,
        null_field,
        V.be(V.lengths(data) + 1, ">u4"),
        b"y",
        data,
        null_field + null_field,
    )
    _put(store, history_cf, V.fixed(head.view(np.uint8), 15), change)
    k_prefix = b"k" + vid.to_bytes(2, "big")
    _put(store, history_cf, V.join(k_prefix, okeys, lsn.to_bytes(8, "big")), data)
