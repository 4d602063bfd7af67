"""Walproto: the CopyData framing of Postgres's streaming replication protocol.

After START_REPLICATION the server and viewstore exchange CopyData messages. The server sends
XLogData ('w', a header then one pgoutput message) and primary keepalives ('k'); viewstore
answers with standby status updates ('r'), whose flush position is what moves the slot's
`confirmed_flush_lsn` forward. This module only turns those frames into values and back: it does
no I/O and knows nothing of pgoutput, whose messages it hands on untouched as `XLogData.payload`.

Times on the wire are microseconds since the Postgres epoch, 2000-01-01 00:00:00 UTC; they are
kept that way and `pg_time_to_unix_us` converts when someone needs a Unix time.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from viewstore.errors import DecodeError
from viewstore.ingest.lsn import Lsn

__all__ = [
    "PG_EPOCH_US",
    "Keepalive",
    "XLogData",
    "decode_copy_data",
    "encode_standby_status",
    "pg_time_to_unix_us",
]

# Unix time of 2000-01-01 00:00:00 UTC, in microseconds.
PG_EPOCH_US: int = 946_684_800 * 1_000_000

# Header layouts after the tag byte. LSNs are unsigned, timestamps signed (TimestampTz).
_XLOGDATA = struct.Struct(">QQq")  # dataStart, walEnd, sendTime
_KEEPALIVE = struct.Struct(">QqB")  # walEnd, sendTime, replyRequested
_STATUS = struct.Struct(">cQQQqB")  # 'r', write, flush, apply, clientTime, replyRequested

_XLOGDATA_SIZE = 1 + _XLOGDATA.size
_KEEPALIVE_SIZE = 1 + _KEEPALIVE.size

_HINT = "the replication stream is not in the expected format; this is a bug, please report it"


@dataclass(frozen=True, slots=True)
class XLogData:
    """A 'w' message: WAL data, here one pgoutput message in `payload`.

    `payload` is a view into the buffer given to `decode_copy_data`: no copy is made, so the
    buffer must not be reused while the payload is alive.
    """

    data_start: Lsn
    wal_end: Lsn
    send_time: int  # µs since 2000-01-01, as sent
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A 'k' message: the server's WAL end, and whether it wants a status update now."""

    wal_end: Lsn
    send_time: int  # µs since 2000-01-01, as sent
    reply_requested: bool


def decode_copy_data(buf: bytes | memoryview) -> XLogData | Keepalive:
    """Decode one CopyData message sent by the server during START_REPLICATION.

    Raise DecodeError on an empty or short buffer or an unknown tag. Bytes after a keepalive's
    fixed fields are ignored.
    """
    mv = buf if isinstance(buf, memoryview) else memoryview(buf)
    size = len(mv)
    if not size:
        raise DecodeError("cannot decode replication message: empty CopyData", _HINT)
    tag = mv[0]
    if tag == 0x77:  # 'w'
        if size < _XLOGDATA_SIZE:
            raise DecodeError(
                f"cannot decode replication message 'w': {size} bytes, header needs "
                f"{_XLOGDATA_SIZE}",
                _HINT,
            )
        data_start, wal_end, send_time = _XLOGDATA.unpack_from(mv, 1)
        return XLogData(Lsn(data_start), Lsn(wal_end), send_time, mv[_XLOGDATA_SIZE:])
    if tag == 0x6B:  # 'k'
        if size < _KEEPALIVE_SIZE:
            raise DecodeError(
                f"cannot decode replication message 'k': {size} bytes, needs {_KEEPALIVE_SIZE}",
                _HINT,
            )
        wal_end, send_time, reply = _KEEPALIVE.unpack_from(mv, 1)
        return Keepalive(Lsn(wal_end), send_time, reply == 1)
    raise DecodeError(
        f"cannot decode replication message: unknown tag {bytes([tag])!r} at offset 0", _HINT
    )


def encode_standby_status(
    write: int, flush: int, apply: int, *, reply: bool = False, now: float | None = None
) -> bytes:
    """Encode an 'r' standby status update, ready for `put_copy_data`.

    Each position is "the last WAL byte + 1" the client has written, flushed and applied. For a
    logical slot the server moves `confirmed_flush_lsn` to `flush` (never backwards), so pass
    only what is durable in the store. `now` is Unix seconds (default `time.time()`); `reply`
    asks the server to answer at once with a keepalive.
    """
    if now is None:
        now = time.time()
    client_time = round(now * 1_000_000) - PG_EPOCH_US
    return _STATUS.pack(b"r", write, flush, apply, client_time, 1 if reply else 0)


def pg_time_to_unix_us(t: int) -> int:
    """Convert µs since 2000-01-01 (Postgres epoch) to µs since 1970-01-01 (Unix epoch)."""
    return t + PG_EPOCH_US


def unix_us_to_datetime(us: int) -> datetime:
    """A commit time kept as µs since the Unix epoch, as an aware UTC datetime: exact (no
    float on the way, as `datetime.fromtimestamp(us / 1e6)` would take)."""
    return _UNIX_EPOCH + timedelta(microseconds=us)


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
