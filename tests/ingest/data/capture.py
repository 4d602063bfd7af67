"""Capture: record the pgoutput, walproto and COPY bytes that the ingest tests decode.

Not a test. Run it against a throwaway Postgres 15 with `wal_level = logical` and
`track_commit_timestamp = on` in a fresh, empty database (README.md in this folder has the
recipe). It creates its tables, publication, slot and origin, records one file per case into
this folder, then drops the slot, publication and origin again. `pg_waldump` supplies the
expected commit and message LSNs independently of the decoder, in `manifest.json`.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from viewstore.ingest.lsn import Lsn
from viewstore.ingest.walproto import decode_copy_data, encode_standby_status

SLOT, PUB, ORIGIN = "vs_capture_slot_1", "vs_capture_pub_1", "vs_capture_origin_1"
OPTIONS = "-c TimeZone=UTC -c client_encoding=UTF8"

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE item (id int PRIMARY KEY, name text, price numeric, mood mood);
CREATE TABLE kv (region text, payload text, id int, PRIMARY KEY (region, id));
CREATE TABLE full_t (id int, v text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE doc (id int PRIMARY KEY, body text, n int);
ALTER TABLE doc ALTER body SET STORAGE EXTERNAL;
CREATE TABLE parent (id serial PRIMARY KEY);
CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE typed (
  id int PRIMARY KEY, i2 int2, i8 int8, o oid, num numeric, f4 float4, f8 float8, b bool,
  t text, vc varchar(20), bp char(5), nm name, ch "char", d date, ts timestamp,
  tstz timestamptz, u uuid, j json, jb jsonb, by bytea, arr int[], m mood, iv interval);
CREATE PUBLICATION vs_capture_pub_1 FOR ALL TABLES;
"""

TYPED_ROWS = r"""
INSERT INTO typed VALUES
 (1, -32768, 9223372036854775807, 4294967295, 1234567890123456789012345678901234567890,
  1.5, 0.1, true, 'plain', 'vc', 'ab', 'nm', 'x', '2024-01-02', '2024-01-02 03:04:05.123456',
  '2024-06-01 12:00:00.5+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2.5, null]}', '{"b": "c", "a": 1}', '\x000102ff', '{1,2,3}', 'happy',
  '1 day 02:03:04'),
 (2, 32767, -9223372036854775808, 0, 1e-30, 'NaN', 'NaN', false,
  E'tab\there', E'line\nbreak', E'a\\b', E'cr\rlf', E'\\', 'infinity', 'infinity',
  '-infinity', NULL, '"str"', '[]', '\x', '{}', 'sad', '-1 year'),
 (3, 0, 0, 1, 'Infinity', 'Infinity', '-Infinity', NULL,
  E'\\N', '', 'x', E'\u00e9\u2603', E'\t', '0044-03-15 BC', '4713-01-01 00:00:00 BC',
  '1999-12-31 23:59:59.999999+00', NULL, 'null', '{"k": "tab\tand\nnl"}', E'\\x5c09',
  NULL, NULL, NULL),
 (4, NULL, NULL, NULL, '-Infinity', 1.17549435e-38, -0.0, NULL,
  E'ctl\x01\x1c\b\f\x0b\x7f end', NULL, NULL, NULL, NULL, '10000-01-01',
  '10000-01-01 00:00:00', '0001-01-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (5, NULL, NULL, NULL, -12345.678900, 3.4028235e38, 1e308, NULL,
  E'\\\\N', NULL, NULL, NULL, NULL, '-infinity', '-infinity', 'infinity',
  NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (6, NULL, NULL, NULL, 1234567890.123456789012345678901234567890, NULL, 5e-324, NULL,
  E'\\.', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (7, NULL, NULL, NULL, -0.000000000000000000000000000001, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""

# Transactions, in order: name, SQL, {(tag, nth occurrence): file to save that message as}.
CASES: list[tuple[str, str, dict[tuple[str, int], str]]] = [
    (
        "insert_item",
        "INSERT INTO item VALUES (1, 'apple', 1.50, 'happy')",
        {
            ("B", 0): "begin.bin",
            ("Y", 0): "type_mood.bin",
            ("R", 0): "relation_item.bin",
            ("I", 0): "insert_item.bin",
            ("C", 0): "commit.bin",
        },
    ),
    (
        "update_plain",
        "UPDATE item SET name = 'pear', mood = NULL WHERE id = 1",
        {("U", 0): "update_plain.bin"},
    ),
    ("update_key_item", "UPDATE item SET id = 2 WHERE id = 1", {("U", 0): "update_key_item.bin"}),
    (
        "insert_kv",
        "INSERT INTO kv VALUES ('eu', 'hello', 7)",
        {("R", 0): "relation_kv.bin", ("I", 0): "insert_kv.bin"},
    ),
    (
        "update_key_kv",
        "UPDATE kv SET id = 8, payload = 'bye' WHERE region = 'eu' AND id = 7",
        {("U", 0): "update_key_kv.bin"},
    ),
    ("delete_key_kv", "DELETE FROM kv WHERE id = 8", {("D", 0): "delete_key_kv.bin"}),
    ("delete_key_item", "DELETE FROM item WHERE id = 2", {("D", 0): "delete_key_item.bin"}),
    (
        "insert_full",
        "INSERT INTO full_t VALUES (1, 'one'), (2, NULL)",
        {("R", 0): "relation_full_t.bin"},
    ),
    ("update_full", "UPDATE full_t SET v = 'uno' WHERE id = 1", {("U", 0): "update_full.bin"}),
    ("delete_full", "DELETE FROM full_t WHERE id = 2", {("D", 0): "delete_full.bin"}),
    (
        "insert_doc",
        "INSERT INTO doc SELECT 1, string_agg(md5(g::text), ''), 1 FROM generate_series(1, 400) g",
        {},
    ),
    ("update_toast", "UPDATE doc SET n = 2 WHERE id = 1", {("U", 0): "update_toast.bin"}),
    (
        "fill_parent",
        "INSERT INTO parent DEFAULT VALUES; INSERT INTO child (parent_id) VALUES (1)",
        {},
    ),
    (
        "truncate_cascade",
        "TRUNCATE parent RESTART IDENTITY CASCADE",
        {("T", 0): "truncate_cascade_restart.bin"},
    ),
    ("truncate_plain", "TRUNCATE item", {("T", 0): "truncate_plain.bin"}),
    (
        "message_transactional",
        "SELECT pg_logical_emit_message(true, 'viewstore', 'hello');"
        " INSERT INTO item VALUES (3, 'fig', NULL, 'ok')",
        {("M", 0): "message_transactional.bin"},
    ),
]


class Stream:
    """A pgoutput replication stream, read frame by frame."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(
            dsn, replication="database", autocommit=True, prepare_threshold=None, options=OPTIONS
        )
        self.conn.execute(
            f"START_REPLICATION SLOT {SLOT} LOGICAL 0/0"
            f" (proto_version '1', publication_names '{PUB}', messages 'true')"
        )
        self.pg = self.conn.pgconn

    def frame(self, timeout: float = 10.0) -> bytes | None:
        deadline = time.time() + timeout
        while True:
            n, data = self.pg.get_copy_data(1)
            if n > 0:
                return bytes(data)
            if n < 0:
                raise RuntimeError(f"copy ended: {self.pg.get_error_message()!r}")
            left = deadline - time.time()
            if left <= 0:
                return None
            select.select([self.pg.socket], [], [], left)
            self.pg.consume_input()

    def xlogdata(self) -> bytes:
        """The next 'w' frame, skipping keepalives."""
        while True:
            f = self.frame()
            if f is None:
                raise RuntimeError("no XLogData within 10 s")
            if f[:1] == b"w":
                return f

    def transaction(self) -> list[bytes]:
        frames = []
        while True:
            frames.append(self.xlogdata())
            if frames[-1][25:26] == b"C":
                return frames


def waldump_records(waldir: str, start: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["pg_waldump", "-p", waldir, "-s", start],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    records = []
    for line in out.splitlines():
        m = re.search(r"rmgr: (\w+) .*tx: +(\d+), lsn: ([0-9A-F/]+), .*desc: (\S+)", line)
        if m:
            hi, lo = m.group(3).split("/")
            lsn = (int(hi, 16) << 32) | int(lo, 16)
            records.append(
                {
                    "rmgr": m.group(1),
                    "xid": int(m.group(2)),
                    "lsn": str(Lsn(lsn)),
                    "desc": m.group(4),
                }
            )
    return records


def save(out: Path, name: str, data: bytes) -> None:
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)


def main(dsn: str, waldir: str, out: Path) -> None:
    conn = psycopg.connect(dsn, autocommit=True, options=OPTIONS)
    q = conn.execute
    start = q("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
    q(SCHEMA)
    q("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
    manifest: dict[str, Any] = {"oids": {}, "txns": {}}
    for rel in ["item", "kv", "full_t", "doc", "parent", "child", "typed"]:
        manifest["oids"][rel] = q("SELECT %s::regclass::oid", (rel,)).fetchone()[0]
    manifest["oids"]["mood"] = q("SELECT 'mood'::regtype::oid").fetchone()[0]
    stream = Stream(dsn)
    first_frame: bytes | None = None

    def record(name: str, frames: list[bytes], files: dict[tuple[str, int], str]) -> None:
        seen: dict[str, int] = {}
        for f in frames:
            tag = f[25:26].decode()
            nth = seen.get(tag, 0)
            seen[tag] = nth + 1
            if (tag, nth) in files:
                save(out, files[tag, nth], f[25:])
        manifest["txns"][name]["tags"] = "".join(f[25:26].decode() for f in frames)

    for name, sql, files in CASES:
        with conn.transaction():
            q(sql)
            xid = q("SELECT txid_current()").fetchone()[0]
        manifest["txns"][name] = {"xid": xid}
        frames = stream.transaction()
        first_frame = first_frame or frames[0]
        record(name, frames, files)

    # A non-transactional message arrives on its own, outside any Begin/Commit.
    lsn = q("SELECT pg_logical_emit_message(false, 'viewstore.nt', '\\x00ff0a'::bytea)::text")
    manifest["message_nontransactional_sql_lsn"] = lsn.fetchone()[0]
    frame = stream.xlogdata()
    save(out, "message_nontransactional.bin", frame[25:])
    save(out, "xlogdata_message.bin", frame)

    # A transaction replayed "from elsewhere": it carries a replication origin.
    q("SELECT pg_replication_origin_create(%s)", (ORIGIN,))
    with psycopg.connect(dsn, autocommit=True, options=OPTIONS) as oconn:
        oconn.execute("SELECT pg_replication_origin_session_setup(%s)", (ORIGIN,))
        with oconn.transaction():
            oconn.execute(
                "SELECT pg_replication_origin_xact_setup("
                "'0/DEADBEEF', '2024-01-02 03:04:05.123456+00')"
            )
            oconn.execute("INSERT INTO item VALUES (4, 'kiwi', 2, 'sad')")
            xid = oconn.execute("SELECT txid_current()").fetchone()[0]
        oconn.execute("SELECT pg_replication_origin_session_reset()")
    manifest["txns"]["origin"] = {"xid": xid}
    record(
        "origin",
        stream.transaction(),
        {("B", 0): "origin_begin.bin", ("O", 0): "origin.bin", ("C", 0): "origin_commit.bin"},
    )
    q("SELECT pg_replication_origin_drop(%s)", (ORIGIN,))

    # Rows of every converted type, once as pgoutput sends them and once as COPY does.
    with conn.transaction():
        q(TYPED_ROWS)
        xid = q("SELECT txid_current()").fetchone()[0]
    manifest["txns"]["insert_typed"] = {"xid": xid}
    frames = stream.transaction()
    record("insert_typed", frames, {("R", 0): "typed/relation.bin"})
    inserts = [f[25:] for f in frames if f[25:26] == b"I"]
    for i, payload in enumerate(inserts, 1):
        save(out, f"typed/insert_{i}.bin", payload)
    with conn.cursor() as cur, cur.copy("COPY (SELECT * FROM typed ORDER BY id) TO STDOUT") as cp:
        for i, data in enumerate(cp, 1):
            save(out, f"typed/copy_{i}.bin", bytes(data))

    # Keepalives: wait for one asking for a reply, answer it with our own status update
    # (reply=True), and record the keepalive the server answers with.
    q("ALTER SYSTEM SET wal_sender_timeout = '2s'")
    q("SELECT pg_reload_conf()")
    deadline = time.time() + 20
    while time.time() < deadline:
        f = stream.frame()
        if f and f[:1] == b"k" and f[17] == 1:
            break
    else:
        raise RuntimeError("no keepalive with reply requested")
    save(out, "keepalive_reply_requested.bin", f)
    wal_end = decode_copy_data(f).wal_end
    stream.pg.put_copy_data(encode_standby_status(wal_end, wal_end, wal_end, reply=True))
    stream.pg.flush()
    answer = stream.frame()
    assert answer and answer[:1] == b"k", answer
    save(out, "keepalive_answer.bin", answer)
    q("ALTER SYSTEM RESET wal_sender_timeout")
    q("SELECT pg_reload_conf()")
    assert first_frame is not None
    save(out, "xlogdata_begin.bin", first_frame)
    stream.conn.close()
    time.sleep(0.5)
    flushed = q(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
    ).fetchone()[0]
    manifest["status_update"] = {"flush_sent": str(wal_end), "confirmed_flush_lsn": flushed}
    q("SELECT pg_drop_replication_slot(%s)", (SLOT,))
    q(f"DROP PUBLICATION {PUB}")

    # Expected values from outside the decoder: commit times from commit_ts, commit LSNs and
    # end LSNs (the start of the next record) from pg_waldump.
    records = waldump_records(waldir, start)
    for txn in manifest["txns"].values():
        txn["commit_time"] = q(
            "SELECT (extract(epoch FROM pg_xact_commit_timestamp(%s::text::xid)) * 1000000)"
            "::bigint - 946684800000000",
            (txn["xid"],),
        ).fetchone()[0]
        for i, r in enumerate(records):
            if r["xid"] == txn["xid"] and r["rmgr"] == "Transaction" and r["desc"] == "COMMIT":
                txn["commit_lsn"], txn["end_lsn"] = r["lsn"], records[i + 1]["lsn"]
            if r["xid"] == txn["xid"] and r["rmgr"] == "LogicalMessage":
                txn["message_end_lsn"] = records[i + 1]["lsn"]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
