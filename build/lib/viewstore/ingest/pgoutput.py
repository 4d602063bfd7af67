"""Pgoutput: decode the messages of Postgres's logical replication protocol, version 1.

Each XLogData payload of a pgoutput slot is one message; `decode` turns it into a frozen
dataclass. These are all the messages Postgres 15 sends with `proto_version '1'` (and
`messages 'true'`): Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate and
Message. Streaming and two-phase messages need protocol versions 2 and 3, which viewstore does
not request, so their tags are unknown here and raise DecodeError like any other.

The decoder is bytes in, dataclasses out: no I/O, no state, no psycopg. What it leaves to the
transaction assembler: caching Relation messages by OID (Postgres sends one before the first
change to a table in each walsender session, and again after any change to the table, including
TRUNCATE), pairing Begin with Commit, and handling non-transactional Messages, which arrive
outside any Begin/Commit. Tuple values stay the text bytes Postgres sent, in the connection's
client encoding; `viewstore.ingest.values` turns them into Python values.

Every malformed or truncated message raises DecodeError naming the tag and the byte offset:
a replication stream that cannot be read must stop the process, never end quietly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias, final

from viewstore.errors import DecodeError
from viewstore.ingest.lsn import Lsn

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgoutputMessage",
    "Relation",
    "Truncate",
    "Type",
    "Unchanged",
    "Update",
    "Value",
    "decode",
]


@final
class Unchanged:
    """The value of a TOASTed column that an Update left alone, so Postgres did not send it.

    There is one instance, `UNCHANGED`; compare with `is`. The consumer must keep the value it
    already has for that column.
    """

    __slots__ = ()
    _instance: ClassVar[Unchanged | None] = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()

# One column of a tuple: the text bytes, None for SQL NULL, or UNCHANGED (TOAST not sent).
Value: TypeAlias = bytes | Unchanged | None


@dataclass(frozen=True, slots=True)
class Begin:
    """'B': a transaction starts. `final_lsn` is the LSN of its commit record."""

    final_lsn: Lsn
    commit_time: int  # µs since 2000-01-01, as sent
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """'C': a transaction ends. Resume streaming from `end_lsn` to skip it."""

    flags: int  # unused by Postgres, always 0
    commit_lsn: Lsn
    end_lsn: Lsn
    commit_time: int  # µs since 2000-01-01, as sent


@dataclass(frozen=True, slots=True)
class Origin:
    """'O': the transaction was replayed from another node, here its origin's name and LSN."""

    commit_lsn: Lsn
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a Relation, in table order (dropped and generated columns left out)."""

    is_key: bool  # part of the replica identity
    name: str
    type_oid: int
    typmod: int  # -1 when the type has none


@dataclass(frozen=True, slots=True)
class Relation:
    """'R': the shape of a table; the tuples of later changes follow `columns`.

    `namespace` is the schema, the empty string for pg_catalog. `replica_identity` is
    pg_class.relreplident: 'd' default (primary key), 'n' nothing, 'f' full, 'i' index.
    """

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    """'Y': a non-built-in type (enum, domain, composite...) used by the next Relation."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    """'I': a new row."""

    relation_oid: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """'U': a changed row.

    `old_kind` says what `old` holds: None when Postgres sent no old tuple (the replica
    identity key did not change; find the row by the key columns of `new`); 'K' when the key
    changed: the old key values, with None for every column that is not part of the key; 'O'
    when the table is REPLICA IDENTITY FULL: the whole old row. Values in `new` may be
    UNCHANGED.
    """

    relation_oid: int
    old_kind: str | None
    old: tuple[Value, ...] | None
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    """'D': a deleted row; `old_kind` 'K' (key columns, None elsewhere) or 'O' (whole row)."""

    relation_oid: int
    old_kind: str
    old: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    """'T': one TRUNCATE statement, all the tables it emptied (CASCADE adds the referencing)."""

    cascade: bool
    restart_identity: bool
    relation_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """'M': a `pg_logical_emit_message`; non-transactional ones come outside any transaction."""

    transactional: bool
    lsn: Lsn
    prefix: str
    content: bytes


PgoutputMessage: TypeAlias = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message
)

_NAMES = {
    0x42: "Begin",
    0x43: "Commit",
    0x4F: "Origin",
    0x52: "Relation",
    0x59: "Type",
    0x49: "Insert",
    0x55: "Update",
    0x44: "Delete",
    0x54: "Truncate",
    0x4D: "Message",
}

_HINT = (
    "viewstore reads pgoutput with proto_version '1' in text format; if the slot was started "
    "that way, this is a bug: please report it with the message bytes"
)

# Fixed parts, after the tag byte. LSNs and OIDs are unsigned, timestamps and typmods signed.
_BEGIN = struct.Struct(">QqI")  # final_lsn, commit_time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit_lsn, end_lsn, commit_time
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_RELATION_TAIL = struct.Struct(">BH")  # replica identity, number of columns
_COLUMN_TAIL = struct.Struct(">Ii")  # type oid, typmod
_TRUNCATE = struct.Struct(">IB")  # number of relations, option bits
_MESSAGE = struct.Struct(">BQ")  # flags, lsn

_TRUNCATE_CASCADE = 1
_TRUNCATE_RESTART_IDENTITY = 2


def _describe(tag: int) -> str:
    return f"{_NAMES.get(tag, 'unknown')} ({chr(tag)!r})"


def _truncated(buf: bytes, pos: int, need: int) -> DecodeError:
    return DecodeError(
        f"cannot decode pgoutput {_describe(buf[0])} message: truncated at byte offset {pos}, "
        f"needs {need} more bytes, {max(len(buf) - pos, 0)} left",
        _HINT,
    )


def _malformed(buf: bytes, pos: int, detail: str) -> DecodeError:
    return DecodeError(
        f"cannot decode pgoutput {_describe(buf[0])} message: {detail} at byte offset {pos}",
        _HINT,
    )


def _unpack(st: struct.Struct, buf: bytes, pos: int) -> tuple[int, ...]:
    if pos + st.size > len(buf):
        raise _truncated(buf, pos, st.size)
    return st.unpack_from(buf, pos)


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    """Read a NUL-terminated UTF-8 string; return it and the offset after the NUL."""
    nul = buf.find(b"\0", pos)
    if nul < 0:
        raise _malformed(buf, pos, "string without its NUL terminator")
    try:
        return buf[pos:nul].decode(), nul + 1
    except UnicodeDecodeError as exc:
        raise _malformed(buf, pos + exc.start, "string is not valid UTF-8") from None


def _end(buf: bytes, pos: int) -> None:
    if pos != len(buf):
        raise _malformed(buf, pos, f"{len(buf) - pos} unexpected trailing bytes")


def _tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """Read TupleData at `pos`; return the values and the offset after them.

    The hot loop of the whole ingest path: one branch per value and no calls but the slice
    and, for text values, one unpack of the length. Bounds are not checked value by value: a
    truncated buffer makes an index or unpack fail, or leaves `pos` past the end, and only then
    does `_tuple_error` walk the tuple again, checking, to say where it broke.
    """
    first = pos
    try:
        ncols = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        values: list[Value] = [None] * ncols
        unpack_len = _U32.unpack_from
        for i in range(ncols):
            kind = buf[pos]
            if kind == 0x74:  # 't'
                start = pos + 5
                pos = start + unpack_len(buf, pos + 1)[0]
                values[i] = buf[start:pos]
            elif kind == 0x6E:  # 'n'
                pos += 1
            elif kind == 0x75:  # 'u'
                values[i] = UNCHANGED
                pos += 1
            else:
                raise _bad_kind(buf, pos)
    except (IndexError, struct.error):
        raise _tuple_error(buf, first) from None
    if pos > len(buf):
        raise _tuple_error(buf, first)
    return tuple(values), pos


def _bad_kind(buf: bytes, pos: int) -> DecodeError:
    if buf[pos] == 0x62:  # 'b'
        return _malformed(buf, pos, "binary tuple value, but viewstore requests text")
    return _malformed(buf, pos, f"unknown tuple value kind {chr(buf[pos])!r}")


def _tuple_error(buf: bytes, pos: int) -> DecodeError:
    """Walk a TupleData that `_tuple` could not read, checking, to say where it is cut short."""
    end = len(buf)
    if pos + 2 > end:
        return _truncated(buf, pos, 2)
    ncols = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    for _ in range(ncols):
        if pos >= end:
            return _truncated(buf, pos, 1)
        if buf[pos] == 0x74:  # 't'
            if pos + 5 > end:
                return _truncated(buf, pos + 1, 4)
            size = _U32.unpack_from(buf, pos + 1)[0]
            if pos + 5 + size > end:
                return _truncated(buf, pos + 5, size)
            pos += 5 + size
        elif buf[pos] in b"nu":
            pos += 1
        else:
            return _bad_kind(buf, pos)
    raise AssertionError(f"_tuple failed on a tuple that is whole: {buf!r}")


def _insert(buf: bytes) -> Insert:
    if len(buf) < 6:
        raise _truncated(buf, 1, 5)
    relid = _U32.unpack_from(buf, 1)[0]
    if buf[5] != 0x4E:  # 'N'
        raise _malformed(buf, 5, f"expected 'N', found {chr(buf[5])!r}")
    new, pos = _tuple(buf, 6)
    _end(buf, pos)
    return Insert(relid, new)


def _update(buf: bytes) -> Update:
    if len(buf) < 6:
        raise _truncated(buf, 1, 5)
    relid = _U32.unpack_from(buf, 1)[0]
    kind = buf[5]
    old_kind: str | None = None
    old: tuple[Value, ...] | None = None
    pos = 5
    if kind == 0x4B or kind == 0x4F:  # 'K', 'O'
        old_kind = chr(kind)
        old, pos = _tuple(buf, 6)
        if pos >= len(buf):
            raise _truncated(buf, pos, 1)
        kind = buf[pos]
    if kind != 0x4E:  # 'N'
        raise _malformed(buf, pos, f"expected 'K', 'O' or 'N', found {chr(kind)!r}")
    new, pos = _tuple(buf, pos + 1)
    _end(buf, pos)
    return Update(relid, old_kind, old, new)


def _delete(buf: bytes) -> Delete:
    if len(buf) < 6:
        raise _truncated(buf, 1, 5)
    relid = _U32.unpack_from(buf, 1)[0]
    kind = buf[5]
    if kind != 0x4B and kind != 0x4F:  # 'K', 'O'
        raise _malformed(buf, 5, f"expected 'K' or 'O', found {chr(kind)!r}")
    old, pos = _tuple(buf, 6)
    _end(buf, pos)
    return Delete(relid, chr(kind), old)


def _begin(buf: bytes) -> Begin:
    final_lsn, commit_time, xid = _unpack(_BEGIN, buf, 1)
    _end(buf, 1 + _BEGIN.size)
    return Begin(Lsn(final_lsn), commit_time, xid)


def _commit(buf: bytes) -> Commit:
    flags, commit_lsn, end_lsn, commit_time = _unpack(_COMMIT, buf, 1)
    _end(buf, 1 + _COMMIT.size)
    return Commit(flags, Lsn(commit_lsn), Lsn(end_lsn), commit_time)


def _origin(buf: bytes) -> Origin:
    (lsn,) = _unpack(_U64, buf, 1)
    name, pos = _string(buf, 9)
    _end(buf, pos)
    return Origin(Lsn(lsn), name)


def _relation(buf: bytes) -> Relation:
    (oid,) = _unpack(_U32, buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    replident, ncols = _unpack(_RELATION_TAIL, buf, pos)
    pos += _RELATION_TAIL.size
    columns = []
    for _ in range(ncols):
        if pos >= len(buf):
            raise _truncated(buf, pos, 1)
        flags = buf[pos]
        colname, pos = _string(buf, pos + 1)
        type_oid, typmod = _unpack(_COLUMN_TAIL, buf, pos)
        pos += _COLUMN_TAIL.size
        columns.append(Column(bool(flags & 1), colname, type_oid, typmod))
    _end(buf, pos)
    return Relation(oid, namespace, name, chr(replident), tuple(columns))


def _type(buf: bytes) -> Type:
    (oid,) = _unpack(_U32, buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    _end(buf, pos)
    return Type(oid, namespace, name)


def _truncate(buf: bytes) -> Truncate:
    nrels, options = _unpack(_TRUNCATE, buf, 1)
    pos = 1 + _TRUNCATE.size
    if pos + 4 * nrels > len(buf):
        raise _truncated(buf, pos, 4 * nrels)
    oids = struct.unpack_from(f">{nrels}I", buf, pos)
    _end(buf, pos + 4 * nrels)
    return Truncate(
        bool(options & _TRUNCATE_CASCADE), bool(options & _TRUNCATE_RESTART_IDENTITY), oids
    )


def _message(buf: bytes) -> Message:
    flags, lsn = _unpack(_MESSAGE, buf, 1)
    prefix, pos = _string(buf, 1 + _MESSAGE.size)
    (size,) = _unpack(_U32, buf, pos)
    pos += 4
    if pos + size > len(buf):
        raise _truncated(buf, pos, size)
    content = buf[pos : pos + size]
    _end(buf, pos + size)
    return Message(bool(flags & 1), Lsn(lsn), prefix, content)


_DECODERS = {
    0x42: _begin,
    0x43: _commit,
    0x4F: _origin,
    0x52: _relation,
    0x59: _type,
    0x55: _update,
    0x44: _delete,
    0x54: _truncate,
    0x4D: _message,
}


def decode(buf: bytes | memoryview) -> PgoutputMessage:
    """Decode one pgoutput message (the payload of one XLogData).

    Raise DecodeError, naming the message tag and byte offset, for an empty buffer, an unknown
    tag, truncated data, trailing bytes, a binary tuple value or a string that is not UTF-8.
    """
    if type(buf) is not bytes:
        # One copy, so that each value below is a bytes slice rather than a memoryview.
        buf = bytes(buf)
    if not buf:
        raise DecodeError("cannot decode pgoutput message: empty buffer", _HINT)
    tag = buf[0]
    if tag == 0x49:  # 'I', the most frequent by far
        return _insert(buf)
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise DecodeError(
            f"cannot decode pgoutput message: unknown tag {chr(tag)!r} at byte offset 0", _HINT
        )
    return decoder(buf)
