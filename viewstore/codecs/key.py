"""Key codec: tuples of Python values as bytes whose order is the values' SQL order.

View rows, group states, sort indexes and join indexes are RocksDB keys built from values, so
that a prefix scan finds every row with a given value and a range scan walks rows in the order
`ORDER BY` would. `encode_key(values)` concatenates one self-delimiting encoding per value:

    NULL            ff                      after every value: ASC is NULLS LAST, a reverse scan
                                            (DESC) NULLS FIRST, both as in Postgres
    numbers         00 -inf | 01 negative | 02 zero | 03 positive | 04 +inf | 05 NaN
                    int and Decimal share one encoding, so 1 = 1.0 = 1.00 as for Postgres's =:
                    4-byte exponent, then the significant digits, terminated (inverted if < 0)
    float           10 + 8 bytes, the IEEE trick (sign flipped, or all bits if negative), NaN last
    bool            20 false | 21 true
    text            30 + UTF-8 with 00 escaped as 00 ff, ended by 00 01 (code point order,
                    i.e. Postgres's "C" collation)
    date            40 + 8 bytes (ordinal);   timestamp 41 + 8 bytes (µs, UTC for aware ones)
    uuid            50 + 16 bytes;            bytea 60 + escaped like text

Every encoding is self-delimiting, so a tuple's encoding is a prefix of any longer tuple's that
starts with the same values, and the bytes after a value's encoding can be taken apart.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from viewstore.errors import UnsupportedError

NULL = b"\xff"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_EXP_BIAS = 1 << 31
_INVERT_DIGITS = bytes.maketrans(b"0123456789", b"9876543210")
_EPOCH = datetime(1970, 1, 1)


def _number(sign: int, digits: str, exponent: int) -> bytes:
    """A nonzero finite number 0.d1d2d3... × 10^exponent with `digits` free of trailing zeros."""
    if sign > 0:
        return b"\x03" + _U32.pack(exponent + _EXP_BIAS) + digits.encode() + b"\x00"
    return (
        b"\x01"
        + _U32.pack(_EXP_BIAS - exponent)
        + digits.encode().translate(_INVERT_DIGITS)
        + b"\xff"
    )


def _int(v: int) -> bytes:
    if v == 0:
        return b"\x02"
    digits = str(abs(v))
    stripped = digits.rstrip("0")
    return _number(1 if v > 0 else -1, stripped, len(digits))


def _decimal(v: Decimal) -> bytes:
    if v.is_nan():
        return b"\x05"
    if v.is_infinite():
        return b"\x00" if v < 0 else b"\x04"
    if not v:
        return b"\x02"
    sign, digit_tuple, exp = v.as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    return _number(-1 if sign else 1, stripped, len(digits) + exp)  # type: ignore[operator]


def _float(v: float) -> bytes:
    if math.isnan(v):
        return b"\x10\xff\xff\xff\xff\xff\xff\xff\xff"
    if v == 0:
        v = 0.0  # -0.0 = 0.0
    (bits,) = _U64.unpack(_F64.pack(v))
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return b"\x10" + _U64.pack(bits)


def _escaped(tag: bytes, data: bytes) -> bytes:
    return tag + data.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def _signed64(tag: bytes, n: int) -> bytes:
    return tag + _U64.pack(n + (1 << 63))


def encode_value(v: Any) -> bytes:
    """One value's order-preserving encoding (see the module docstring)."""
    if v is None:
        return NULL
    if v is True or v is False:
        return b"\x21" if v else b"\x20"
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, str):
        return _escaped(b"\x30", v.encode("utf-8", "surrogatepass"))
    if isinstance(v, Decimal):
        return _decimal(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, datetime):  # before date: a datetime is a date
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        delta = v - _EPOCH
        return _signed64(
            b"\x41", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        )
    if isinstance(v, date):
        return _signed64(b"\x40", v.toordinal())
    if isinstance(v, uuid.UUID):
        return b"\x50" + v.bytes
    if isinstance(v, bytes):
        return _escaped(b"\x60", v)
    raise UnsupportedError(
        f"cannot use a value of type {type(v).__name__} as a view key or sort column: {v!r}",
        "group, join and sort views by columns of number, text, bool, date, time or uuid type",
    )


def encode_key(values: Sequence[Any]) -> bytes:
    """The order-preserving encoding of a tuple of values."""
    return b"".join([encode_value(v) for v in values])


def value_length(data: bytes, pos: int = 0) -> int:
    """Length of the one encoded value that starts at `data[pos]`."""
    tag = data[pos]
    if tag in (0x00, 0x02, 0x04, 0x05, 0x20, 0x21, 0xFF):
        return 1
    if tag in (0x01, 0x03):
        end = data.index(b"\xff" if tag == 0x01 else b"\x00", pos + 5)
        return end + 1 - pos
    if tag in (0x10, 0x40, 0x41):
        return 9
    if tag == 0x50:
        return 17
    if tag in (0x30, 0x60):
        i = pos + 1
        while True:
            i = data.index(b"\x00", i)
            if data[i + 1] == 0x01:
                return i + 2 - pos
            i += 2
    raise ValueError(f"not an encoded key value: tag {tag:#x}")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with `prefix`."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else b"\xff" * (len(prefix) + 1)
