"""Lsn: a position in the Postgres write-ahead log.

Postgres prints an LSN as two hex halves, `16/B374D848`; on the wire and in RocksDB keys it is a
64-bit unsigned integer. `Lsn` is an `int`, so comparisons and arithmetic stay plain integer
operations in hot loops; only `str()` and `Lsn.parse` know about the text form.
"""

from __future__ import annotations

import struct

from viewstore.errors import ConfigError

_U64 = struct.Struct(">Q")


class Lsn(int):
    """A WAL position. Orders like an integer, prints as Postgres does (`0/1532260`)."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse Postgres's `X/Y` hex form; raise ConfigError naming the bad text."""
        hi, sep, lo = text.strip().partition("/")
        try:
            if not sep or not hi or not lo:
                raise ValueError
            high, low = int(hi, 16), int(lo, 16)
        except ValueError:
            raise ConfigError(
                f"invalid LSN: {text!r}", hint="write an LSN as Postgres prints it, e.g. 0/1532260"
            ) from None
        if not (0 <= high <= 0xFFFFFFFF and 0 <= low <= 0xFFFFFFFF):
            raise ConfigError(
                f"invalid LSN: {text!r} is out of range",
                hint="each half of an LSN is at most 8 hex digits (FFFFFFFF/FFFFFFFF)",
            )
        return cls((high << 32) | low)

    @classmethod
    def from_bytes8(cls, data: bytes) -> Lsn:
        """Decode the 8-byte big-endian form used in keys and on the wire."""
        return cls(_U64.unpack(data)[0])

    def to_bytes8(self) -> bytes:
        """Encode as 8 big-endian bytes, so that byte order equals LSN order."""
        return _U64.pack(self)

    def __str__(self) -> str:
        return f"{self >> 32:X}/{self & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"


ZERO = Lsn(0)
