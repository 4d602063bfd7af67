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
from dataclasses import dataclass
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


def _read(store: Store, table: Any, columns: list[int], progress: Progress) -> list[Any]:
    """Columns of a table's mirrored rows as whole large_binary arrays (nulls for NULL)."""
    parts: list[list[Any]] = [[] for _ in columns]
    rows = store.rows(table)
    while True:
        chunk = [data for _, data in itertools.islice(rows, _CHUNK)]
        if not chunk:
            break
        arrays = decode_arrays(chunk, columns)
        for i, c in enumerate(columns):
            parts[i].append(arrays[c])
        progress.add(len(chunk))
    return [pa.concat_arrays(p) if p else pa.array([], pa.large_binary()) for p in parts]


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


def _aggregate(agg: Any, arg: Any, starts: np.ndarray, sizes: np.ndarray) -> _Aggregated:
    """`agg` over the groups given by `starts`/`sizes` of the sorted child rows' `arg`."""
    g = len(starts)
    if arg is None:  # COUNT(*)
        n = sizes.astype(np.int64)
        return _Aggregated([_i(n)], None, np.ones(g, np.int64), _i(n), V.int_texts(n), n < 0)
    valid = arg.is_valid().to_numpy(zero_copy_only=False)
    n = np.add.reduceat(valid.astype(np.int64), starts) if len(valid) else np.zeros(0, np.int64)
    if agg.name == "count":
        return _Aggregated([_i(n)], None, np.ones(g, np.int64), _i(n), V.int_texts(n), n < 0)
    present = arg.filter(pa.array(valid))
    gid = np.repeat(np.arange(g, dtype=np.int64), sizes)[valid]
    if agg.arg_type in _INTS:
        values = _ints(present)
        wide = agg.arg_type == INT8
        if wide and len(values) and float(np.abs(values).max()) * float(sizes.max()) >= 2.0**62:
            raise _Outside("an int8 sum that could overflow int64")
        total = np.zeros(g, np.int64)
        np.add.at(total, gid, values)
        null = n == 0
        # SUM(int8) is numeric (a Decimal, tagged d); SUM(int2/int4) is bigint (an int).
        result = V.field_text(b"d", V.int_texts(total)) if wide else _i(total)
        result = pc.if_else(pa.array(null), pa.scalar(b"N", pa.large_binary()), result)
        text = pc.if_else(pa.array(null), pa.scalar(None, pa.large_binary()), V.int_texts(total))
        return _Aggregated([_i(n), _i(total)], None, np.full(g, 2, np.int64), result, text, null)
    # SUM(numeric): the exact sum at the largest scale of the group's inputs, and the multiset
    # of scales (views.aggregates.NumericSum's fields).
    mantissa, scale = _numerics(present)
    top = np.zeros(g, np.int64)
    np.maximum.at(top, gid, scale)
    shift = top[gid] - scale
    if len(shift) and (_ndigits(mantissa) + shift).max() > _MAX_DIGITS:
        raise _Outside("a numeric sum beyond 18 digits")
    adjusted = mantissa * (10**shift)
    bound = np.zeros(g)
    np.add.at(bound, gid, np.abs(adjusted).astype(np.float64))
    if len(bound) and bound.max() >= 2.0**62:
        raise _Outside("a numeric sum beyond int64")
    total = np.zeros(g, np.int64)
    np.add.at(total, gid, adjusted)
    if not V.plain_notation(total, top).all():
        raise _Outside("a sum Python prints in scientific notation")
    sum_text = V.numeric_texts(total, top)
    pairs, counts = np.unique(gid * 65536 + scale, return_counts=True)
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
    null = n == 0
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
    except _Outside as why:
        log.info("view %s: built row by row (%s)", view.plan.name, why)
        return False


def _build(store: Store, view: ActiveView, lsn: int, progress: Progress) -> bool:
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
    arrays = dict(zip(wanted, _read(store, child.table, wanted, progress), strict=True))
    fk_texts = arrays[pd.fk]
    has_fk = fk_texts.is_valid()
    fk = _ints(fk_texts.filter(has_fk))
    order = np.argsort(fk, kind="stable")
    fk = fk[order]
    take = pa.array(order)
    args = [None if c is None else arrays[c].filter(has_fk).take(take) for c in arg_columns]
    del arrays
    starts = np.flatnonzero(np.r_[True, fk[1:] != fk[:-1]]) if len(fk) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(fk)]).astype(np.int64)
    keys = fk[starts]
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

    # 3. Each base row's output row, sort entries and first history entry.
    out_columns = sorted({o.base_column for o in outs if o.base_column is not None} | {pd.base_pk})
    base_arrays = dict(
        zip(out_columns, _read(store, base.table, out_columns, progress), strict=True)
    )
    pk_texts = base_arrays[pd.base_pk]
    pk = _ints(pk_texts)
    at = np.searchsorted(keys, pk)
    found = np.zeros(len(pk), bool)
    inside = at < len(keys)
    found[inside] = keys[at[inside]] == pk[inside]
    if not pd.left:
        keep = pa.array(found)
        pk_texts, pk, at = pk_texts.filter(keep), pk[found], at[found]
        base_arrays = {c: a.filter(keep) for c, a in base_arrays.items()}
        found = found[found]
    at = np.where(found, at, 0)
    takes = pa.array(at)
    missing = pa.array(~found)
    extended = [s.result() for s in _null_extended(plan)]
    ff = pa.scalar(b"\xff", pa.large_binary())
    row_fields, sort_keys = [], {}
    for i, o in enumerate(outs):
        if o.base_column is not None:
            raw = base_arrays[o.base_column]
            row_fields.append(V.field_text(b"s" if o.text else b"i", raw))
            if i in plan.sort_columns:  # an integer column (covers() refuses text)
                sort_keys[i] = pc.if_else(raw.is_null(), ff, V.key_numbers(raw.fill_null(b"0")))
            continue
        a = aggs[o.agg]  # type: ignore[index]
        null = pa.array(a.null[at])
        field, text = a.result.take(takes), a.result_text.take(takes)
        key = pc.if_else(null, ff, V.key_numbers(text.fill_null(b"0")))
        if o.fn is not None:  # COALESCE(aggregate, constant): the constant where it is NULL
            default = _value_of(o, plan, None)
            field = pc.if_else(null, _field(default), field)
            key = pc.if_else(null, _key(default), key)
        ext = _value_of(o, plan, extended[o.agg])  # type: ignore[index]
        row_fields.append(pc.if_else(missing, _field(ext), field))
        if i in plan.sort_columns:
            sort_keys[i] = pc.if_else(missing, _key(ext), key)
    okeys = V.key_numbers(pk_texts)
    data = V.pack(row_fields)
    if not _agrees(
        plan,
        base,
        child,
        args,
        starts,
        sizes,
        states,
        base_arrays,
        found,
        at,
        data,
        okeys,
        sort_keys,
    ):
        return False
    _write(store, vid, lsn, gkeys, states, okeys, data, sort_keys)
    return True


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


def _states(plan: ViewPlan, child: Any, args: list[Any], start: int, size: int) -> list[Any]:
    """One group's aggregate states, fed by the row path's own classes."""
    states = []
    for agg, arg in zip(plan.aggs, args, strict=True):
        state = agg.new_state()
        if arg is None:
            state.add_many([None] * size)
        else:
            conv = child.converters[agg.arg_expr.index - child.offset]
            raw = arg.slice(start, size).to_pylist()
            state.add_many([None if v is None else conv(v) for v in raw])
        states.append(state)
    return states


def _agrees(
    plan: ViewPlan,
    base: Any,
    child: Any,
    args: list[Any],
    starts: np.ndarray,
    sizes: np.ndarray,
    states: Any,
    base_arrays: dict[int, Any],
    found: np.ndarray,
    at: np.ndarray,
    data: Any,
    okeys: Any,
    sort_keys: dict[int, Any],
) -> bool:
    """Whether the first groups and rows equal what the row path computes for them."""
    for g in range(min(_CHECK, len(starts))):
        own = _states(plan, child, args, int(starts[g]), int(sizes[g]))
        fields: list[Any] = [int(sizes[g])]
        for state in own:
            f = state.own_fields()
            fields += [len(f), *f]
        if pack_fields(fields) != states[g].as_py():
            log.error("view %s: the column build's group state %d differs", plan.name, g)
            return False
    extended = _null_extended(plan)
    for i in range(min(_CHECK, len(found))):
        row = [None] * base.width
        for c, array in base_arrays.items():
            raw = array[i].as_py()
            row[c] = None if raw is None else base.converters[c](raw)
        g = int(at[i])
        own = _states(plan, child, args, int(starts[g]), int(sizes[g])) if found[i] else extended
        after = plan.code["pushed"](tuple(row), own)
        pd = plan.pushdown
        assert pd is not None
        want_key = encode_key((row[pd.base_pk],))
        if after is None or plan.code["pack"](after) != data[i].as_py():
            log.error("view %s: the column build's row %d differs", plan.name, i)
            return False
        if okeys[i].as_py() != want_key or any(
            sort_keys[c][i].as_py() != key_value(after[c]) for c in sort_keys
        ):
            log.error("view %s: the column build's keys of row %d differ", plan.name, i)
            return False
    return True


def _write(
    store: Store,
    vid: int,
    lsn: int,
    gkeys: Any,
    states: Any,
    okeys: Any,
    data: Any,
    sort_keys: dict[int, Any],
) -> None:
    """Put every key, a chunk of rows per unsynced WriteBatch (the caller syncs "ready")."""
    views_cf, history_cf = store.cf["views"], store.cf["history"]
    prefix = view_prefix(vid)
    n = len(okeys)
    columns = [
        (views_cf, V.join(prefix + b"g", gkeys), states),
        (views_cf, V.join(prefix + b"r", okeys), data),
    ]
    for c, keys in sort_keys.items():
        columns.append((views_cf, V.join(sort_prefix(vid, c), keys, okeys), None))
    head = np.zeros(n, np.dtype([("t", "u1"), ("v", ">u2"), ("l", ">u8"), ("s", ">u4")]))
    head["t"], head["v"], head["l"], head["s"] = ord("c"), vid, lsn, np.arange(n)
    null_field = (1).to_bytes(4, "big") + b"N"
    change = V.join(
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
    columns.append((history_cf, V.fixed(head.view(np.uint8), 15), change))
    k_prefix = b"k" + vid.to_bytes(2, "big")
    columns.append((history_cf, V.join(k_prefix, okeys, lsn.to_bytes(8, "big")), data))
    for cf, keys, values in columns:
        for start in range(0, len(keys), _CHUNK):
            batch = store.new_batch()
            put = batch.put
            ks = keys.slice(start, _CHUNK).to_pylist()
            if values is None:
                for k in ks:
                    put(k, b"", cf)
            else:
                for k, v in zip(ks, values.slice(start, _CHUNK).to_pylist(), strict=True):
                    put(k, v, cf)
            store.write(batch, sync=False)
    if n:
        batch = store.new_batch()
        batch.put(count_key(vid), n.to_bytes(8, "big"), views_cf)
        store.write(batch, sync=False)
