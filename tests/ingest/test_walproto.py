"""Tests for the replication CopyData framing, on frames recorded from Postgres 15."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from viewstore.errors import DecodeError
from viewstore.ingest import walproto
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import decode
from viewstore.ingest.walproto import (
    PG_EPOCH_US,
    Keepalive,
    XLogData,
    decode_copy_data,
    encode_standby_status,
    pg_time_to_unix_us,
    unix_us_to_datetime,
)

DATA = Path(__file__).parent / "data"
MANIFEST: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())
FRAMES = ["xlogdata_begin.bin", "xlogdata_message.bin", "keepalive_reply_requested.bin"]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_pg_epoch() -> None:
    epoch = datetime(2000, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch // timedelta(microseconds=1) == PG_EPOCH_US
    assert pg_time_to_unix_us(0) == PG_EPOCH_US
    # The origin commit time recorded in the manifest: 2024-01-02 03:04:05.123456 UTC.
    unix_us = pg_time_to_unix_us(MANIFEST["txns"]["origin"]["commit_time"])
    got = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=unix_us)
    assert got == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert unix_us_to_datetime(unix_us) == got


def test_unix_us_to_datetime_is_exact() -> None:
    """No float on the way: the last microsecond Python can hold stays itself (through
    `fromtimestamp(us / 1e6)` it rounds up past year 9999 and fails)."""
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    us = (last - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert unix_us_to_datetime(us) == last
    assert unix_us_to_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_xlogdata_begin() -> None:
    frame = load("xlogdata_begin.bin")
    msg = decode_copy_data(frame)
    assert isinstance(msg, XLogData)
    assert bytes(msg.payload) == load("begin.bin")
    assert type(msg.data_start) is Lsn and type(msg.wal_end) is Lsn
    # Sent just after the commit it carries: within a second of the commit time.
    commit_time = MANIFEST["txns"]["insert_item"]["commit_time"]
    assert 0 <= msg.send_time - commit_time < 1_000_000
    assert msg.data_start <= Lsn.parse(MANIFEST["txns"]["insert_item"]["commit_lsn"])


def test_xlogdata_message_position() -> None:
    msg = decode_copy_data(load("xlogdata_message.bin"))
    assert isinstance(msg, XLogData)
    sql_lsn = Lsn.parse(MANIFEST["message_nontransactional_sql_lsn"])
    assert msg.data_start == msg.wal_end == sql_lsn
    assert bytes(msg.payload) == load("message_nontransactional.bin")
    assert decode(msg.payload) == decode(load("message_nontransactional.bin"))


def test_xlogdata_payload_is_a_view() -> None:
    frame = bytearray(load("xlogdata_begin.bin"))
    msg = decode_copy_data(frame)
    assert isinstance(msg, XLogData) and isinstance(msg.payload, memoryview)
    frame[25] = ord("X")
    assert msg.payload[0] == ord("X")


def test_keepalive_reply_requested() -> None:
    msg = decode_copy_data(load("keepalive_reply_requested.bin"))
    # Idle after the last transaction: the server's WAL end is that transaction's end LSN.
    end_lsn = Lsn.parse(MANIFEST["txns"]["insert_typed"]["end_lsn"])
    assert isinstance(msg, Keepalive)
    assert msg == Keepalive(wal_end=end_lsn, send_time=msg.send_time, reply_requested=True)
    assert msg.send_time > MANIFEST["txns"]["insert_typed"]["commit_time"]


def test_keepalive_answer_to_status_update() -> None:
    # Recorded after sending encode_standby_status(wal_end, wal_end, wal_end, reply=True): the
    # server answered at once, without asking for a reply, and confirmed our flush position.
    first = decode_copy_data(load("keepalive_reply_requested.bin"))
    answer = decode_copy_data(load("keepalive_answer.bin"))
    assert isinstance(first, Keepalive) and isinstance(answer, Keepalive)
    assert answer.reply_requested is False
    assert answer.wal_end == first.wal_end
    assert 0 <= answer.send_time - first.send_time < 1_000_000
    status = MANIFEST["status_update"]
    assert status["confirmed_flush_lsn"] == status["flush_sent"] == str(first.wal_end)


def test_accepts_memoryview() -> None:
    frame = load("keepalive_answer.bin")
    assert decode_copy_data(memoryview(frame)) == decode_copy_data(frame)


@pytest.mark.parametrize("name", FRAMES)
def test_short_frames_raise(name: str) -> None:
    frame = load(name)
    header = 25 if frame[:1] == b"w" else 18
    for size in range(header):
        with pytest.raises(DecodeError, match="cannot decode replication message"):
            decode_copy_data(frame[:size])


def test_empty_xlogdata_payload_is_not_an_error() -> None:
    # The framing only checks the header; an empty payload is the decoder's to refuse.
    msg = decode_copy_data(load("xlogdata_begin.bin")[:25])
    assert isinstance(msg, XLogData) and len(msg.payload) == 0


@pytest.mark.parametrize("tag", [b"r", b"d", b"W", b"\x00"])
def test_unknown_tag(tag: bytes) -> None:
    with pytest.raises(DecodeError, match=r"unknown tag .* at offset 0") as info:
        decode_copy_data(tag + b"\0" * 30)
    assert info.value.hint


def test_encode_standby_status_layout() -> None:
    now = 946_684_800 + 1.5  # 1.5 s after the Postgres epoch
    raw = encode_standby_status(0x1_0000_0010, 0x20, 0x30, reply=True, now=now)
    assert raw == (
        b"r"
        + (0x1_0000_0010).to_bytes(8, "big")
        + (0x20).to_bytes(8, "big")
        + (0x30).to_bytes(8, "big")
        + (1_500_000).to_bytes(8, "big")
        + b"\x01"
    )
    assert len(raw) == 34


def test_encode_standby_status_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walproto.time, "time", lambda: 1_700_000_000.25)
    raw = encode_standby_status(Lsn(1), Lsn(2), Lsn(3))
    tag, write, flush, apply, client_time, reply = struct.unpack(">cQQQqB", raw)
    assert (tag, write, flush, apply, reply) == (b"r", 1, 2, 3, 0)
    assert client_time == 1_700_000_000_250_000 - PG_EPOCH_US


def test_encode_standby_status_microsecond_rounding() -> None:
    raw = encode_standby_status(0, 0, 0, now=946_684_800.000001)
    assert struct.unpack_from(">q", raw, 25)[0] == 1
