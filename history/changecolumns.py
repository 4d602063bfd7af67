"""Change columns: a view's change log read in key order, a chunk at a time, as Arrow tables.

The DuckDB copy (`history.duckdb_copy`) appends these tables. A chunk is two range reads of the
`c` ordering (its keys, then its values: `HistoryStore.history_range`, no Python step per
entry) and a columnar decode (`codecs.valuecolumns`): the entries' fields, then the fields of
the row images inside them, each found for the whole chunk at once and gathered as Arrow
arrays (issue 15: 50k entries/s one `unpack_fields` at a time before). A chunk ends at a
transaction boundary, so that the copy commits whole transactions only.

Each view column travels in one of four wire forms, which its DuckDB column is cast from:

    text   utf8: integers and numerics as digits (a numeric in plain notation, never with an
           exponent; 'NaN', 'Infinity', '-Infinity'), dates and times in ISO form (±infinity
           as Postgres spells it), text as it is
    float  float64 (float4 and float8)
    bool   boolean
    blob   bytes (bytea)

A `Wire` names the form and the value tags (`codecs.value`) the columnar decode takes for the
column. A chunk in which a column holds another tag (JSON, a UUID, a value of another type
than the column's) is decoded entry by entry instead: slower, the same table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from viewstore.codecs.key import prefix_end
from viewstore.codecs.value import unpack_fields
from viewstore.codecs.valuecolumns import Field, ValueChunk
from viewstore.errors import StoreError
from viewstore.history.access import HistoryStore
from viewstore.history.keys import change_key, change_key_columns, change_lsn_prefix

TIME = pa.timestamp("us", tz="UTC")  # commit times: µs since the Unix epoch
OPS = ("initial", "insert", "update", "delete")  # changelog.change_op's words
HEAD = ["lsn", "seq", "commit_time", "xid", "op", "row_key"]
_HEAD_TYPES = [pa.uint64(), pa.uint32(), TIME, pa.int64(), pa.string(), pa.binary()]
_ARROW = {"text": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "blob": pa.binary()}


@dataclass(frozen=True)
class Wire:
    """How one view column travels to DuckDB: its wire form, and the value tags (bytes such
    as b"id") the columnar decode takes for it; NULL ('N') is always taken."""

    name: str
    form: str  # text | float | bool | blob
    tags: bytes

    @property
    def arrow(self) -> Any:
        return _ARROW[self.form]


def chunks(
    store: HistoryStore,
    view_id: int,
    wires: Sequence[Wire],
    after: int,
    until: int,
    batch_rows: int,
) -> Iterator[pa.Table]:
    """Arrow tables of the view's changes with after < commit LSN <= until, oldest first,
    each ending at a transaction boundary and holding about `batch_rows` changes (more when
    one transaction holds more). Columns: HEAD, then each wire's column after the change, then
    `before_<column>`."""
    for raw in raw_chunks(store, view_id, after, until, batch_rows):
        yield decode(raw, wires)


@dataclass(frozen=True)
class RawChunk:
    """A chunk of a view's log as read, before its decode: commit LSNs and sequence numbers
    (numpy arrays, from the keys) and the entries' values, in key order."""

    lsn: Any
    seq: Any
    values: list[bytes]


def raw_chunks(
    store: HistoryStore,
    view_id: int,
    after: int,
    until: int,
    batch_rows: int,
) -> Iterator[RawChunk]:
    """The chunks of `chunks` as read, before `decode`."""
    if after + 1 >= 1 << 64:
        return
    low = change_key(view_id, after + 1, 0)
    high = prefix_end(change_lsn_prefix(view_id, until))
    while low < high:
        keys = store.history_range(low, high, batch_rows + 1)
        if not keys:
            return
        if len(keys) > batch_rows:  # more to come: end at the last whole transaction
            lsns = change_key_columns(b"".join(keys))[0]
            cut = int(np.searchsorted(lsns, lsns[-1]))
            if cut:
                keys = keys[:cut]
            else:  # one transaction holds more than a chunk: take all of it
                end = prefix_end(change_lsn_prefix(view_id, int(lsns[-1])))
                keys = store.history_range(low, end)
        joined = b"".join(keys)
        lsn, seq = change_key_columns(joined)
        end = prefix_end(change_lsn_prefix(view_id, int(lsn[-1])))
        values = store.history_range(low, end, values=True)
        if len(values) != len(keys):
            raise StoreError(
                "history: the log changed while the DuckDB copy read it",
                hint="sync from a read-only open of the store (viewstore history does)",
            )
        yield RawChunk(lsn, seq, values)
        low = end


def decode(raw: RawChunk, wires: Sequence[Wire]) -> pa.Table:
    """The Arrow table of a raw chunk (see `chunks`): a column at a time when every value's
    tags are ones its wire takes, else entry by entry."""
    return _columnar(raw.lsn, raw.seq, raw.values, wires) or _per_entry(
        raw.lsn, raw.seq, raw.values, wires
    )


def _columnar(lsn: Any, seq: Any, values: list[bytes], wires: Sequence[Wire]) -> pa.Table | None:
    """The chunk's table, decoded a column at a time; None if a value's tag is not one its
    wire takes (the caller decodes that chunk entry by entry)."""
    chunk = ValueChunk(values)
    okey, before, after, when, xid = chunk.top_fields(5)
    if not (okey.tags() <= {ord("y")} and when.tags() | xid.tags() <= {ord("i")}):
        return None
    width = len(wires)
    images = (chunk.nested(after, width), chunk.nested(before, width))
    for fields in images:
        for wire, f in zip(wires, fields, strict=True):
            if not f.tags() <= set(wire.tags):
                return None
    has_before = before.tag == ord("y")
    has_after = after.tag == ord("y")
    op = np.where(~xid.valid, 0, np.where(~has_before, 1, np.where(~has_after, 3, 2)))
    columns = [
        pa.array(lsn, pa.uint64()),
        pa.array(seq, pa.uint32()),
        chunk.binary(when, pa.string()).cast(pa.int64()).cast(TIME),
        chunk.binary(xid, pa.string()).cast(pa.int64()),
        pa.DictionaryArray.from_arrays(pa.array(op.astype(np.int8)), pa.array(OPS)),
        chunk.binary(okey),
    ]
    for fields in images:
        for wire, f in zip(wires, fields, strict=True):
            columns.append(_column(chunk, wire, f))
    return pa.table(columns, names=_names(wires))


def row_columns(rows: Any, wires: Sequence[Wire]) -> list[Any]:
    """Arrow arrays, one per wire, of view rows (`codecs.value` field lists) given as an Arrow
    binary array without nulls: a checkpoint's rows (`history.checkpoint`) for the copy."""
    chunk = ValueChunk.from_arrow(rows)
    if chunk.n:
        fields = chunk.top_fields(len(wires))
        if all(f.tags() <= set(w.tags) for w, f in zip(wires, fields, strict=True)):
            return [_column(chunk, w, f) for w, f in zip(wires, fields, strict=True)]
    convert = [_CONVERT[w.form] for w in wires]
    cols: list[list[Any]] = [[] for _ in wires]
    for row in rows.to_pylist():
        for i, v in enumerate(unpack_fields(row)):
            cols[i].append(None if v is None else convert[i](v))
    return [pa.array(v, w.arrow) for v, w in zip(cols, wires, strict=True)]


def _column(chunk: ValueChunk, wire: Wire, f: Field) -> Any:
    if wire.form == "float":
        return chunk.float64(f)
    if wire.form == "bool":
        return chunk.booleans(f)
    if wire.form == "blob":
        return chunk.binary(f)
    text = chunk.binary(f, pa.string())
    if ord("d") in f.tags():
        # str(Decimal) may use an exponent ('1E-8', '0E-7'); the wire form is plain notation.
        exponent = pc.match_substring(text, "E")
        if pc.any(exponent).as_py():
            plain = text.to_pylist()
            for i in np.flatnonzero(exponent.to_numpy(zero_copy_only=False)):
                plain[i] = _numeric_text(Decimal(plain[i]))
            text = pa.array(plain, pa.string())
    return text


def _names(wires: Sequence[Wire]) -> list[str]:
    return HEAD + [w.name for w in wires] + ["before_" + w.name for w in wires]


def _per_entry(lsn: Any, seq: Any, values: list[bytes], wires: Sequence[Wire]) -> pa.Table:
    """The chunk's table, decoded one entry at a time (`unpack_fields`)."""
    from viewstore.history.changelog import change_op

    width = len(wires)
    convert = [_CONVERT[w.form] for w in wires]
    head: tuple[list[Any], ...] = ([], [], [], [])
    times, xids, ops, keys = head
    cols: list[list[Any]] = [[] for _ in range(2 * width)]
    for value in values:
        okey, before, after, commit_time, xid = unpack_fields(value)
        times.append(commit_time)
        xids.append(xid)
        keys.append(okey)
        ops.append(change_op(before is None, after is None, xid))
        for offset, image in ((0, after), (width, before)):
            if image is None:
                for i in range(width):
                    cols[offset + i].append(None)
            else:
                for i, v in enumerate(unpack_fields(image)):
                    cols[offset + i].append(None if v is None else convert[i](v))
    arrow = [w.arrow for w in wires] * 2
    columns = [
        pa.array(lsn, pa.uint64()),
        pa.array(seq, pa.uint32()),
        *(pa.array(v, t) for v, t in zip(head, _HEAD_TYPES[2:], strict=True)),
        *(pa.array(v, t) for v, t in zip(cols, arrow, strict=True)),
    ]
    return pa.table(columns, names=_names(wires))


def _numeric_text(v: Decimal) -> str:
    return format(v, "f")  # plain notation; 'NaN', 'Infinity' and '-Infinity' as they are


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Decimal):
        return _numeric_text(v)
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


_CONVERT = {"text": _text, "float": float, "bool": bool, "blob": bytes}
