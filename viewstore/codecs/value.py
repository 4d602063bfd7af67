"""Value codec: Python values as tagged bytes, for view state kept in RocksDB.

Deterministic by construction (promise 4 of DESIGN.md: a replay writes byte-identical state):
equal values of the same type and printed form always give the same bytes. No pickle.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from viewstore.errors import StoreError, UnsupportedError

_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_NAN_BITS = _F64.pack(math.nan)  # one NaN: payloads and signs vary, Postgres has one NaN


def encode_value(v: Any) -> bytes:
    """A value as tagged bytes; equal inputs (same type and printed form) give equal bytes."""
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"T" if v else b"F"
    if isinstance(v, int):
        return b"i" + str(v).encode()
    if isinstance(v, Decimal):
        # str() keeps the exponent, so the scale survives; NaN has no sign in Postgres.
        return b"dNaN" if v.is_nan() else b"d" + str(v).encode()
    if isinstance(v, float):
        return b"f" + (_NAN_BITS if math.isnan(v) else _F64.pack(v))
    if isinstance(v, str):
        return b"s" + v.encode("utf-8", "surrogatepass")
    if isinstance(v, bytes):
        return b"y" + v
    if isinstance(v, datetime):  # before date: datetime is a date
        return b"t" + v.isoformat().encode()  # aware ones carry their offset
    if isinstance(v, date):
        return b"D" + v.isoformat().encode()
    if isinstance(v, uuid.UUID):
        return b"u" + v.bytes
    if isinstance(v, (dict, list)):  # json and jsonb (ingest.values parses them)
        return b"j" + json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()
    raise UnsupportedError(
        f"aggregate state: cannot store a value of type {type(v).__name__}: {v!r}",
        "aggregate over a column of a supported type, or cast it",
    )


def decode_value(data: bytes) -> Any:
    """The value `encode_value` encoded."""
    tag, body = data[:1], data[1:]
    if tag == b"N":
        return None
    if tag in (b"T", b"F"):
        return tag == b"T"
    if tag == b"i":
        return int(body)
    if tag == b"d":
        return Decimal(body.decode())
    if tag == b"f":
        return _F64.unpack(body)[0]
    if tag == b"s":
        return body.decode("utf-8", "surrogatepass")
    if tag == b"y":
        return bytes(body)
    if tag == b"t":
        return datetime.fromisoformat(body.decode())
    if tag == b"D":
        return date.fromisoformat(body.decode())
    if tag == b"u":
        return uuid.UUID(bytes=bytes(body))
    if tag == b"j":
        return json.loads(body)
    raise StoreError(f"aggregate state: unknown value tag {tag!r}", CORRUPT_HINT)


CORRUPT_HINT = "the view state is damaged or from another version; rebuild the view from the mirror"
_VERSION = b"\x01"


# The common types by tag, for unpack in the view engine's hot loop; anything else takes the
# general path above.
_FAST_DECODE = {
    ord("N"): lambda body: None,
    ord("T"): lambda body: True,
    ord("F"): lambda body: False,
    ord("i"): int,
    ord("s"): lambda body: body.decode("utf-8", "surrogatepass"),
    ord("d"): lambda body: Decimal(body.decode()),
}


_NSMALL = 1024
# The whole field (length and tagged text) of each small non-negative int.
_SMALL_INTS = [_U32.pack(len(b)) + b for b in (b"i" + str(i).encode() for i in range(_NSMALL))]


def pack_fields(fields: list[Any]) -> bytes:
    """Fields as one value: each tagged (`encode_value`) and length-prefixed. The common types
    are tested by exact type inline: this runs for every output row, group state and history
    entry, and a dict of encoders cost twice as much."""
    parts = [_VERSION]
    pack = _U32.pack
    small = _SMALL_INTS
    for f in fields:
        t = type(f)
        if t is int:
            if 0 <= f < _NSMALL:  # counts, scales, zeros: most of a group state's fields
                parts.append(small[f])
                continue
            b = b"i" + str(f).encode()
        elif t is bytes:
            b = b"y" + f
        elif t is str:
            b = b"s" + f.encode("utf-8", "surrogatepass")
        elif f is None:
            b = b"N"
        elif t is Decimal and f.is_finite():
            b = b"d" + str(f).encode()
        else:
            b = encode_value(f)
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


_NULL_FIELD = _U32.pack(1) + b"N"
# For code that writes pack_fields out for a known list of fields (views.codegen's `pack`):
# the format's first byte, and a field's length prefix.
FORMAT = _VERSION
field_length = _U32.pack


def pack_change(
    okey: bytes, before: bytes | None, after: bytes | None, time: int | None, xid: int | None
) -> bytes:
    """`pack_fields([okey, before, after, time, xid])`, written out: the history packs one of
    these for every changed row of every transaction, and the general loop cost twice as much."""
    pack = _U32.pack
    t = _NULL_FIELD if time is None else b"i" + str(time).encode()
    x = _NULL_FIELD if xid is None else b"i" + str(xid).encode()
    return b"".join(
        (
            _VERSION,
            pack(len(okey) + 1),
            b"y",
            okey,
            _NULL_FIELD if before is None else pack(len(before) + 1) + b"y" + before,
            _NULL_FIELD if after is None else pack(len(after) + 1) + b"y" + after,
            t if time is None else pack(len(t)) + t,
            x if xid is None else pack(len(x)) + x,
        )
    )


def unpack_fields(data: bytes) -> list[Any]:
    if data[:1] != _VERSION:
        raise StoreError(f"aggregate state: unknown format {data[:1]!r}", CORRUPT_HINT)
    out, pos, end = [], 1, len(data)
    fast = _FAST_DECODE
    unpack = _U32.unpack_from
    try:
        while pos < end:
            (n,) = unpack(data, pos)
            start = pos + 4
            pos = start + n
            dec = fast.get(data[start])
            out.append(dec(data[start + 1 : pos]) if dec else decode_value(data[start:pos]))
    except (struct.error, ValueError, ArithmeticError, IndexError) as exc:
        raise StoreError(f"aggregate state: cannot decode: {exc}", CORRUPT_HINT) from None
    return out
