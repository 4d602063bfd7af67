"""Codec: rows and keys as bytes for RocksDB.

A mirrored row is the tuple of Postgres text values exactly as pgoutput and COPY print them
(`bytes`, or `None` for NULL). Keeping the text form makes the mirror exact for every type,
numeric and timestamps included, and costs no conversion on the ingest hot path; readers convert
with `viewstore.ingest.values` when they need Python values.

Encoding: per value, a 4-byte big-endian length then the bytes; NULL is the length 0xFFFFFFFF.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

Row = tuple[bytes | None, ...]

_LEN = struct.Struct(">I")
_NULL_LEN = 0xFFFFFFFF
_NULL = _LEN.pack(_NULL_LEN)
_pack_len = _LEN.pack
_unpack_len = _LEN.unpack_from


def encode_row(values: Sequence[bytes | None]) -> bytes:
    """Encode a tuple of text values (None for NULL)."""
    parts = []
    append = parts.append
    for v in values:
        if v is None:
            append(_NULL)
        else:
            append(_pack_len(len(v)))
            append(v)
    return b"".join(parts)


def decode_row(data: bytes) -> Row:
    """Decode what `encode_row` produced."""
    out: list[bytes | None] = []
    append = out.append
    pos, end = 0, len(data)
    while pos < end:
        (n,) = _unpack_len(data, pos)
        pos += 4
        if n == _NULL_LEN:
            append(None)
        else:
            append(data[pos : pos + n])
            pos += n
    return tuple(out)
