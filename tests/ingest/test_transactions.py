"""Tests for the transaction assembler, on pgoutput messages recorded from Postgres (data/).

The recorded messages are single XLogData payloads; a stream is made of them by putting each in
the 25-byte XLogData header the server sends it in, with the recorded keepalive frames between.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import Begin, Commit, Insert, Relation, decode
from viewstore.ingest.transactions import Assembler, TooLarge, Transaction, assemble
from viewstore.ingest.walproto import decode_copy_data

DATA = Path(__file__).parent / "data"
TXNS: dict[str, dict[str, Any]] = json.loads((DATA / "manifest.json").read_text())["txns"]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def xlogdata(payload: bytes, wal: int = 0) -> bytes:
    return b"w" + struct.pack(">QQQ", wal, wal, 0) + payload


# Two recorded transactions: insert_item (Begin, Type, Relation, Insert, Commit) and origin
# (Begin, Origin, Insert, Commit; its relation is sent before it in the item transaction).
ITEM = [load(n) for n in ("begin.bin", "type_mood.bin", "relation_item.bin", "insert_item.bin")]
ITEM_COMMIT = load("commit.bin")
ORIGIN = [load(n) for n in ("origin_begin.bin", "origin.bin", "insert_item.bin")]
ORIGIN_COMMIT = load("origin_commit.bin")
ITEM_END = Lsn.parse(TXNS["insert_item"]["end_lsn"])
ORIGIN_END = Lsn.parse(TXNS["origin"]["end_lsn"])
KEEPALIVE = load("keepalive_reply_requested.bin")
KEEPALIVE_ANSWER = load("keepalive_answer.bin")


def stream(*parts: bytes | list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for part in parts:
        for payload in part if isinstance(part, list) else [part]:
            frames.append(payload if payload[:1] == b"k" else xlogdata(payload))
    return frames


def test_transactions_in_commit_order() -> None:
    txns = list(assemble(stream(ITEM, ITEM_COMMIT, ORIGIN, ORIGIN_COMMIT), Lsn(0)))
    assert [t.commit_lsn for t in txns] == [ITEM_END, ORIGIN_END]
    assert [t.begin.xid for t in txns] == [TXNS["insert_item"]["xid"], TXNS["origin"]["xid"]]
    assert [type(m).__name__ for m in txns[0].messages] == ["Type", "Relation", "Insert"]
    assert [type(m).__name__ for m in txns[1].messages] == ["Origin", "Insert"]
    assert all(isinstance(t, Transaction) for t in txns)


@pytest.mark.parametrize(
    ("applied", "expected"),
    [
        (Lsn(0), [ITEM_END, ORIGIN_END]),
        # Applied up to where its commit record starts (its Begin's final_lsn): not applied yet.
        (Lsn.parse(TXNS["insert_item"]["commit_lsn"]), [ITEM_END, ORIGIN_END]),
        (ITEM_END, [ORIGIN_END]),  # applied up to the end of its commit record: resent, skipped
        (ORIGIN_END, []),  # both resent after a reconnect from a later synced LSN
    ],
)
def test_resent_transactions_are_skipped(applied: Lsn, expected: list[Lsn]) -> None:
    frames = stream(ITEM, ITEM_COMMIT, ORIGIN, ORIGIN_COMMIT)
    assert [t.commit_lsn for t in assemble(frames, applied)] == expected


def test_skip_rule_on_begin() -> None:
    asm = Assembler(Lsn(0))
    begin = decode(ITEM[0])
    assert isinstance(begin, Begin)
    # Skipped: its commit record starts before the applied LSN, so it ends at or before it.
    asm.begin(begin, applied_lsn=ITEM_END)
    assert asm.skip and asm.in_txn
    commit = decode(ITEM_COMMIT)
    assert isinstance(commit, Commit)
    assert asm.commit(commit) is False
    assert not asm.skip and not asm.in_txn
    assert asm.received == ITEM_END  # a skipped transaction still moves what was received
    asm.begin(begin, applied_lsn=begin.final_lsn)
    assert not asm.skip


def test_interleaved_keepalives() -> None:
    wal_end = decode_copy_data(KEEPALIVE).wal_end
    answer_end = decode_copy_data(KEEPALIVE_ANSWER).wal_end
    asm = Assembler(Lsn(0))
    frames = stream(
        KEEPALIVE,
        ITEM[:2],
        KEEPALIVE_ANSWER,  # inside a transaction: received moves, idle position does not
        ITEM[2:],
        ITEM_COMMIT,
        KEEPALIVE,
        ORIGIN,
        ORIGIN_COMMIT,
    )
    txns = list(assemble(frames, Lsn(0), asm))
    assert [t.commit_lsn for t in txns] == [ITEM_END, ORIGIN_END]
    assert [type(m).__name__ for m in txns[0].messages] == ["Type", "Relation", "Insert"]
    assert asm.received == max(wal_end, answer_end, ORIGIN_END)
    assert asm.idle_pos is None  # the last Begin cleared it; no keepalive came after

    asm = Assembler(Lsn(0))
    assert asm.keepalive(KEEPALIVE) is True  # the server asks for a status update now
    assert asm.idle_pos == wal_end  # between transactions: progress may be recorded there
    asm.begin(decode(ITEM[0]), Lsn(0))  # type: ignore[arg-type]
    assert asm.idle_pos is None
    assert asm.keepalive(KEEPALIVE_ANSWER) is False
    assert asm.idle_pos is None  # not inside a transaction
    assert asm.received == max(wal_end, answer_end)


def test_keepalive_frame_must_be_a_keepalive() -> None:
    from viewstore.errors import DecodeError

    empty = b"w" + struct.pack(">QQQ", 1, 2, 0)  # XLogData with no payload
    with pytest.raises(DecodeError, match="empty XLogData message"):
        Assembler(Lsn(0)).keepalive(empty)


def test_large_transaction_read_ahead() -> None:
    large: dict[Lsn, Lsn] = {}
    frames = stream(ITEM, ITEM_COMMIT, ORIGIN, ORIGIN_COMMIT)
    asm = Assembler(Lsn(0), large)
    # More rows than a group holds: its rows are read on (not collected) to its Commit, which
    # records where it ends and raises, so that the caller replays it in chunks.
    with pytest.raises(TooLarge):
        list(assemble(frames, Lsn(0), asm, max_rows=0))
    begin = decode(ITEM[0])
    assert isinstance(begin, Begin)
    assert large == {begin.final_lsn: ITEM_END}

    # The replay (a new stream from the synced LSN) knows it: Begin says apply it in chunks.
    replay = Assembler(Lsn(0), large)
    assert replay.begin(begin, Lsn(0)) == ITEM_END
    # ... unless it has been applied meanwhile (resent once more after a later sync).
    assert Assembler(Lsn(0), large).begin(begin, ITEM_END) is None


def test_read_ahead_skips_the_rest_of_the_transaction() -> None:
    asm = Assembler(Lsn(0))
    begin, relation, insert = (decode(p) for p in (ITEM[0], ITEM[2], ITEM[3]))
    assert isinstance(begin, Begin) and isinstance(relation, Relation)
    assert isinstance(insert, Insert)
    asm.begin(begin, Lsn(0))
    assert not asm.skip
    too_large = TooLarge(1)
    asm.read_ahead(too_large)
    assert asm.skip and asm.in_txn
    commit = decode(ITEM_COMMIT)
    assert isinstance(commit, Commit)
    with pytest.raises(TooLarge) as raised:
        asm.commit(commit)
    assert raised.value is too_large
    assert asm.large == {begin.final_lsn: commit.end_lsn}
