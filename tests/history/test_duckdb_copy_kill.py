"""The DuckDB copy killed -9 at exact points of a sync (issue 15.1): each change lands once.

The sync reads and decodes the log in two threads ahead of the DuckDB append, so at any kill
some chunks are read and decoded but not appended; each appended chunk commits with the LSN
it reaches (and the checkpoints up to it) in one DuckDB transaction. `viewstore history` is
killed (VIEWSTORE_CRASH_AT) inside a chunk's transaction, with its rows and checkpoints
inserted but not committed, and right after a commit; each time the copy must be exactly the
log up to its synced LSN, and the next sync must complete it, no change twice or missed.

The store is written directly with the changelog's own writer (no Postgres: what is tested
is the copy of a log, and the log is the oracle), transactions of one to five changes so
that chunk ends fall at transaction boundaries of every kind, with checkpoints.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import pack_fields, unpack_fields
from viewstore.history import checkpoint, duckdb_copy
from viewstore.history.changelog import changes, entries
from viewstore.ingest.lsn import Lsn
from viewstore.store import db as meta
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import ViewInfo, put_info
from viewstore.views.schema import ColumnInfo

VIEW = "totals"
VIEW_ID = 1
BUILT = (1 << 32) | 0x1000


def _write_log(data: Path, keys: int = 200, txns: int = 700) -> tuple[int, int]:
    """A view of `keys` rows built at BUILT, then `txns` transactions of one to five changes
    (updates, deletes, re-inserts), a checkpoint every 400 changes; (changes, applied LSN)."""
    rng = random.Random(15)
    okeys = [encode_key([k]) for k in range(keys)]
    rows: dict[int, bytes] = {}
    n = 0
    with Store.open(data) as store:
        cf = store.cf["history"]
        batch = store.new_batch()

        def put(lsn: int, seq: int, k: int, after: bytes | None, when: Any, xid: Any) -> None:
            nonlocal n
            for key, value in entries(VIEW_ID, lsn, seq, okeys[k], rows.get(k), after, when, xid):
                batch.put(key, value, cf)
            if after is None:
                rows.pop(k, None)
            else:
                rows[k] = after
            n += 1

        def row(k: int) -> bytes:
            cents = rng.randrange(10**9)
            return pack_fields([k, f"player {k}", Decimal(cents) / 100])

        for k in range(keys):
            put(BUILT, k + 1, k, row(k), None, None)
        lsn, since = BUILT, 0
        for xid in range(1000, 1000 + txns):
            lsn += rng.randint(0x40, 0x200)
            when = 1_800_000_000_000_000 + lsn
            for seq, k in enumerate(rng.sample(range(keys), rng.randint(1, 5))):
                gone = k in rows and rng.random() < 0.1
                put(lsn, seq, k, None if gone else row(k), when, xid)
                since += 1
            if since >= 400:
                checkpoint.put(
                    batch, cf, VIEW_ID, lsn, sorted((okeys[k], r) for k, r in rows.items())
                )
                since = 0
        info = ViewInfo(
            name=VIEW,
            view_id=VIEW_ID,
            sql="SELECT id, name, total FROM t",
            fingerprint="synthetic log (test_duckdb_copy_kill.py)",
            state="ready",
            columns=[
                ColumnInfo(name="id", type_oid=23),
                ColumnInfo(name="name", type_oid=25),
                ColumnInfo(name="total", type_oid=1700),
            ],
            key_columns=[0],
            sort_columns=[],
            aggregate=False,
            built_at=str(Lsn(BUILT)),
        )
        put_info(batch, store, info)
        meta.put_applied(batch, store, Lsn(lsn), when)
        store.write(batch, sync=True)
    return n, lsn


def _killed_sync(data: Path, point: str) -> subprocess.CompletedProcess[str]:
    """`viewstore history` killed -9 at `point`; the reading process it had (when the log is
    read by one) is gone soon after, and its files with it."""
    env = {**os.environ, "VIEWSTORE_CRASH_AT": point}
    before = set(_SHM.glob("viewstore-sync-*"))
    done = subprocess.run(
        [sys.executable, "-m", "viewstore.cli", "history", "--data", str(data), "--batch-rows", "100"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while (left := set(_SHM.glob("viewstore-sync-*")) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"the killed sync's reading process left {left}"
    return done


_SHM = Path("/dev/shm")


def _text(v: Any) -> Any:
    return format(v, "f") if isinstance(v, Decimal) else v


def _assert_copy_is_the_log(data: Path) -> tuple[int, int]:
    """The copy's table is the log up to its synced LSN, row for row, and its checkpoints are
    the store's; (synced LSN, rows)."""
    con = duckdb.connect(str(duckdb_copy.copy_path(data)), read_only=True)
    try:
        [(synced,)] = con.execute("SELECT synced_lsn FROM viewstore_sync").fetchall()
        copied = con.execute(
            f"SELECT lsn, seq, row_key, op, id, name, total_text, before_id, before_total_text "
            f"FROM {VIEW} ORDER BY lsn, seq"
        ).fetchall()
        held = con.execute(
            f"SELECT checkpoint_lsn, row_key, id, name, total_text "
            f"FROM viewstore_checkpoints.{VIEW} ORDER BY checkpoint_lsn, row_key"
        ).fetchall()
    finally:
        con.close()
    with Store.open(data, readonly=True) as store:
        log = [
            (
                int(c.lsn), c.seq, c.key, c.op,
                *(_text(v) for v in (c.after or (None, None, None))),
                *(_text(v) for i, v in enumerate(c.before or (None, None, None)) if i != 1),
            )
            for c in changes(store, VIEW_ID, until=synced)
        ]  # fmt: skip
        marks = sorted({r[0] for r in held})
        store_rows = []
        for lsn in marks:
            for okey, raw in sorted(checkpoint.rows(store, VIEW_ID, lsn).items()):
                k, name, total = unpack_fields(raw)
                store_rows.append((lsn, okey, k, name, _text(total)))
    assert [tuple(r) for r in copied] == log, "the copy is not the log up to its synced LSN"
    assert [tuple(r) for r in held] == store_rows
    assert all(m <= synced for m in marks)
    return synced, len(copied)


@pytest.mark.parametrize("reader", ["thread", "process"])
def test_sync_killed_inside_and_after_a_chunk_appends_each_change_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """Either way the log is read (a thread; a child process, as a large sync does), with the
    child's files in /dev/shm removed once its parent is killed."""
    monkeypatch.setenv("VIEWSTORE_SYNC_PROCESS_MIN", "0" if reader == "process" else "1000000")
    data = tmp_path / "data"
    total, applied = _write_log(data)

    # Killed with a chunk's rows and checkpoints inserted, its transaction not committed: the
    # copy stands at the end of the chunk before.
    killed = _killed_sync(data, "history-copy-appended:12")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    synced, rows = _assert_copy_is_the_log(data)
    assert 0 < synced < applied and 0 < rows < total

    # Killed right after a commit, resuming from there: it stands at that commit.
    killed = _killed_sync(data, "history-copy-committed:9")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    synced2, rows2 = _assert_copy_is_the_log(data)
    assert synced < synced2 < applied and rows < rows2 < total

    # The next sync completes it: every change once, the checkpoints the store's.
    result = historycopy.sync(data, batch_rows=100)
    assert result.rows == total - rows2
    assert _assert_copy_is_the_log(data) == (applied, total)
    con = duckdb.connect(str(duckdb_copy.copy_path(data)), read_only=True)
    try:
        [(n,)] = con.execute(
            f"SELECT count(DISTINCT checkpoint_lsn) FROM viewstore_checkpoints.{VIEW}"
        ).fetchall()
    finally:
        con.close()
    assert n >= 2, "the kills should fall between checkpoints copied"
