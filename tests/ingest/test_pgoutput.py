"""Tests for the pgoutput decoder, on messages recorded from Postgres 15 (see data/README.md)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from viewstore.errors import DecodeError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    Relation,
    Truncate,
    Type,
    Unchanged,
    Update,
    decode,
)

DATA = Path(__file__).parent / "data"
MANIFEST: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())
OIDS: dict[str, int] = MANIFEST["oids"]
TXNS: dict[str, dict[str, Any]] = MANIFEST["txns"]

INT4, TEXT, NUMERIC = 23, 25, 1700
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

PGOUTPUT_FILES = sorted(
    p.relative_to(DATA).as_posix()
    for p in DATA.rglob("*.bin")
    if not p.name.startswith(("xlogdata_", "keepalive_", "copy_"))
)


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def lsn(text: str) -> Lsn:
    return Lsn.parse(text)


# -- transactions ------------------------------------------------------------------------------


def test_begin() -> None:
    txn = TXNS["insert_item"]
    msg = decode(load("begin.bin"))
    assert msg == Begin(final_lsn=lsn(txn["commit_lsn"]), commit_time=txn["commit_time"], xid=725)
    assert msg.xid == txn["xid"]
    assert type(msg.final_lsn) is Lsn


def test_commit() -> None:
    txn = TXNS["insert_item"]
    msg = decode(load("commit.bin"))
    assert msg == Commit(
        flags=0,
        commit_lsn=lsn(txn["commit_lsn"]),
        end_lsn=lsn(txn["end_lsn"]),
        commit_time=txn["commit_time"],
    )
    assert type(msg.commit_lsn) is Lsn and type(msg.end_lsn) is Lsn


def test_begin_and_commit_agree() -> None:
    begin, commit = decode(load("begin.bin")), decode(load("commit.bin"))
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
    assert begin.commit_time == commit.commit_time


def test_origin() -> None:
    txn = TXNS["origin"]
    assert decode(load("origin.bin")) == Origin(
        commit_lsn=Lsn(0xDEADBEEF), name="vs_capture_origin_1"
    )
    # A replayed transaction's Begin and Commit carry the origin's commit time, not the local
    # one: the time given to pg_replication_origin_xact_setup.
    origin_time = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    expected_us = (origin_time - PG_EPOCH) // timedelta(microseconds=1)
    assert txn["commit_time"] == expected_us
    assert decode(load("origin_begin.bin")) == Begin(
        lsn(txn["commit_lsn"]), expected_us, txn["xid"]
    )
    assert decode(load("origin_commit.bin")) == Commit(
        0, lsn(txn["commit_lsn"]), lsn(txn["end_lsn"]), expected_us
    )
    assert txn["tags"] == "BOIC"


# -- schema ------------------------------------------------------------------------------------


def test_type() -> None:
    assert decode(load("type_mood.bin")) == Type(oid=OIDS["mood"], namespace="public", name="mood")


def test_relation_primary_key() -> None:
    assert decode(load("relation_item.bin")) == Relation(
        oid=OIDS["item"],
        namespace="public",
        name="item",
        replica_identity="d",
        columns=(
            Column(is_key=True, name="id", type_oid=INT4, typmod=-1),
            Column(is_key=False, name="name", type_oid=TEXT, typmod=-1),
            Column(is_key=False, name="price", type_oid=NUMERIC, typmod=-1),
            Column(is_key=False, name="mood", type_oid=OIDS["mood"], typmod=-1),
        ),
    )


def test_relation_composite_key() -> None:
    assert decode(load("relation_kv.bin")) == Relation(
        OIDS["kv"],
        "public",
        "kv",
        "d",
        (
            Column(True, "region", TEXT, -1),
            Column(False, "payload", TEXT, -1),
            Column(True, "id", INT4, -1),
        ),
    )


def test_relation_replica_identity_full_marks_every_column_as_key() -> None:
    assert decode(load("relation_full_t.bin")) == Relation(
        OIDS["full_t"],
        "public",
        "full_t",
        "f",
        (Column(True, "id", INT4, -1), Column(True, "v", TEXT, -1)),
    )


def test_relation_typmods_and_builtin_types() -> None:
    rel = decode(load("typed/relation.bin"))
    assert isinstance(rel, Relation)
    assert (rel.oid, rel.namespace, rel.name) == (OIDS["typed"], "public", "typed")
    got = [(c.name, c.type_oid, c.typmod) for c in rel.columns]
    assert got == [
        ("id", 23, -1),
        ("i2", 21, -1),
        ("i8", 20, -1),
        ("o", 26, -1),
        ("num", 1700, -1),
        ("f4", 700, -1),
        ("f8", 701, -1),
        ("b", 16, -1),
        ("t", 25, -1),
        ("vc", 1043, 24),  # varchar(20): typmod is the length + 4
        ("bp", 1042, 9),  # char(5)
        ("nm", 19, -1),
        ("ch", 18, -1),
        ("d", 1082, -1),
        ("ts", 1114, -1),
        ("tstz", 1184, -1),
        ("u", 2950, -1),
        ("j", 114, -1),
        ("jb", 3802, -1),
        ("by", 17, -1),
        ("arr", 1007, -1),
        ("m", OIDS["mood"], -1),
        ("iv", 1186, -1),
    ]
    assert [c.is_key for c in rel.columns] == [True] + [False] * 22


# -- changes -----------------------------------------------------------------------------------


def test_insert() -> None:
    msg = decode(load("insert_item.bin"))
    assert msg == Insert(relation_oid=OIDS["item"], new=(b"1", b"apple", b"1.50", b"happy"))
    assert all(type(v) is bytes for v in msg.new)


def test_insert_composite_key() -> None:
    assert decode(load("insert_kv.bin")) == Insert(OIDS["kv"], (b"eu", b"hello", b"7"))


def test_update_without_old_tuple() -> None:
    assert decode(load("update_plain.bin")) == Update(
        relation_oid=OIDS["item"], old_kind=None, old=None, new=(b"1", b"pear", b"1.50", None)
    )


def test_update_key_changed_sends_every_column_with_null_outside_the_key() -> None:
    assert decode(load("update_key_item.bin")) == Update(
        OIDS["item"], "K", (b"1", None, None, None), (b"2", b"pear", b"1.50", None)
    )
    assert decode(load("update_key_kv.bin")) == Update(
        OIDS["kv"], "K", (b"eu", None, b"7"), (b"eu", b"bye", b"8")
    )


def test_update_replica_identity_full() -> None:
    assert decode(load("update_full.bin")) == Update(
        OIDS["full_t"], "O", (b"1", b"one"), (b"1", b"uno")
    )


def test_update_unchanged_toast() -> None:
    msg = decode(load("update_toast.bin"))
    assert msg == Update(OIDS["doc"], None, None, (b"1", UNCHANGED, b"2"))
    assert isinstance(msg, Update)
    assert msg.new[1] is UNCHANGED


def test_delete_key() -> None:
    assert decode(load("delete_key_item.bin")) == Delete(
        relation_oid=OIDS["item"], old_kind="K", old=(b"2", None, None, None)
    )
    assert decode(load("delete_key_kv.bin")) == Delete(OIDS["kv"], "K", (b"eu", None, b"8"))


def test_delete_replica_identity_full() -> None:
    assert decode(load("delete_full.bin")) == Delete(OIDS["full_t"], "O", (b"2", None))


def test_truncate_cascade_restart_identity() -> None:
    assert decode(load("truncate_cascade_restart.bin")) == Truncate(
        cascade=True,
        restart_identity=True,
        relation_oids=(OIDS["parent"], OIDS["child"]),
    )


def test_truncate_plain() -> None:
    assert decode(load("truncate_plain.bin")) == Truncate(False, False, (OIDS["item"],))


def test_message_transactional() -> None:
    assert decode(load("message_transactional.bin")) == Message(
        transactional=True,
        lsn=lsn(TXNS["message_transactional"]["message_end_lsn"]),
        prefix="viewstore",
        content=b"hello",
    )


def test_message_non_transactional() -> None:
    # Its LSN is the end of its WAL record, the value pg_logical_emit_message returns.
    msg = decode(load("message_nontransactional.bin"))
    assert msg == Message(
        False, lsn(MANIFEST["message_nontransactional_sql_lsn"]), "viewstore.nt", b"\x00\xff\n"
    )
    assert isinstance(msg, Message) and type(msg.content) is bytes


def test_typed_inserts_keep_text_bytes() -> None:
    msg = decode(load("typed/insert_2.bin"))
    assert isinstance(msg, Insert)
    assert msg.new[8:13] == (b"tab\there", b"line\nbreak", b"a\\b  ", b"cr\rlf", b"\\")
    assert msg.new[16] is None


def test_transactions_recorded_in_order() -> None:
    # PG 15 sends a Type before the Relation using it, and again, with the Relation, after
    # TRUNCATE invalidated the table's cache entry.
    assert TXNS["insert_item"]["tags"] == "BYRIC"
    assert TXNS["truncate_cascade"]["tags"] == "BRRTC"
    assert TXNS["truncate_plain"]["tags"] == "BYRTC"
    assert TXNS["message_transactional"]["tags"] == "BMYRIC"


# -- input types and value types ---------------------------------------------------------------


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_accepts_any_buffer(wrap: Any) -> None:
    raw = load("insert_item.bin")
    msg = decode(wrap(raw))
    assert msg == decode(raw)
    assert isinstance(msg, Insert)
    assert all(type(v) is bytes for v in msg.new)


def test_memoryview_slice_of_xlogdata() -> None:
    frame = load("xlogdata_begin.bin")
    assert decode(memoryview(frame)[25:]) == decode(load("begin.bin"))


def test_messages_are_frozen_with_slots() -> None:
    msg = decode(load("insert_item.bin"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.relation_oid = 1  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")


def test_unchanged_is_a_singleton() -> None:
    assert Unchanged() is UNCHANGED
    assert repr(UNCHANGED) == "UNCHANGED"
    assert pickle.loads(pickle.dumps(UNCHANGED)) is UNCHANGED
    assert copy.deepcopy(UNCHANGED) is UNCHANGED
    assert UNCHANGED != b"" and UNCHANGED is not None


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PGOUTPUT_FILES)
def test_every_truncation_raises(name: str) -> None:
    raw = load(name)
    for size in range(len(raw)):
        with pytest.raises(DecodeError) as info:
            decode(raw[:size])
        message = str(info.value)
        assert message.startswith("cannot decode pgoutput")
        if size:
            assert f"({chr(raw[0])!r})" in message
            assert "offset" in message
        assert info.value.hint


@pytest.mark.parametrize("name", PGOUTPUT_FILES)
def test_trailing_bytes_raise(name: str) -> None:
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(load(name) + b"\0")


@pytest.mark.parametrize("tag", [b"S", b"E", b"c", b"A", b"P", b"K", b"\x00", b"w"])
def test_unknown_tag(tag: bytes) -> None:
    # Stream and two-phase messages (protocol 2 and 3) are unknown to a proto 1 decoder.
    with pytest.raises(DecodeError, match=r"unknown tag .* at byte offset 0"):
        decode(tag + b"\0" * 20)


def insert_with(tuple_data: bytes) -> bytes:
    return b"I" + struct.pack(">I", 16391) + b"N" + tuple_data


def test_binary_value_raises() -> None:
    with pytest.raises(DecodeError, match=r"Insert \('I'\).*binary.*offset 8"):
        decode(insert_with(b"\x00\x01b\x00\x00\x00\x04\x00\x00\x00\x01"))


def test_unknown_value_kind_raises() -> None:
    with pytest.raises(DecodeError, match=r"unknown tuple value kind 'x' at byte offset 9"):
        decode(insert_with(b"\x00\x02nx"))


def test_hand_built_tuple_kinds() -> None:
    msg = decode(insert_with(b"\x00\x04t\x00\x00\x00\x00nut\x00\x00\x00\x02\xc3\xa9"))
    assert msg == Insert(16391, (b"", None, UNCHANGED, b"\xc3\xa9"))


def test_missing_new_tuple_marker() -> None:
    with pytest.raises(DecodeError, match=r"expected 'N', found 'K' at byte offset 5"):
        decode(b"I" + struct.pack(">I", 1) + b"K\x00\x00")
    with pytest.raises(DecodeError, match=r"Update .*expected 'K', 'O' or 'N'"):
        decode(b"U" + struct.pack(">I", 1) + b"X\x00\x00")
    with pytest.raises(DecodeError, match=r"Delete .*expected 'K' or 'O', found 'N'"):
        decode(b"D" + struct.pack(">I", 1) + b"N\x00\x00")


def test_update_old_tuple_then_garbage() -> None:
    with pytest.raises(DecodeError, match=r"expected 'K', 'O' or 'N', found 'O' at byte offset 8"):
        decode(b"U" + struct.pack(">I", 1) + b"K\x00\x00O\x00\x00")


def test_string_not_utf8() -> None:
    raw = b"Y" + struct.pack(">I", 1) + b"public\0mo\xffod\0"
    with pytest.raises(DecodeError, match=r"Type \('Y'\).*not valid UTF-8 at byte offset 14"):
        decode(raw)


def test_empty_buffer() -> None:
    with pytest.raises(DecodeError, match="empty buffer"):
        decode(b"")
