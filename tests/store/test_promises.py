"""Each durability promise, broken on purpose, fails one of these (issue 19.1 and 19.7).

kill -9 keeps the page cache and Postgres never resends to a client that acknowledged, so the
crash tests cannot see every broken promise. These inject the fault exactly, in-process, against
a real Postgres:

- a spy on the store's writes and the acknowledgements: every batch that carries an applied LSN
  is written with sync, and no flush LSN is sent past the last one synced;
- a replication stream that resends transactions (acknowledgements lost, then the connection
  dropped): the store skips them, counts and sums stay Postgres's;
- a crash point inside the store's write of a group: the group and its applied LSN are one
  write, so the restart skips the group instead of applying it twice;
- a write committed exactly between the slot's creation and the snapshot's COPY: the COPY reads
  the slot's snapshot, so the row arrives once (row counts and a SUM view), through psycopg and
  through psql.

`scripts/mutations` applies the one-line mutations these catch and runs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import pg_exec, pg_query
from runner import (
    PipelineThread,
    applied_lsn,
    assert_row_count,
    assert_view_equals,
    wait_caught_up,
)

from viewstore.errors import SourceError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import ReplicationConnection
from viewstore.ingest.psqlcopy import find_psql
from viewstore.store import db
from viewstore.store.apply import Applier

SCHEMA = "CREATE TABLE acct (id int PRIMARY KEY, g int NOT NULL, amount int NOT NULL)"
VIEWS = {
    "acct_totals": "SELECT g, count(*) AS n, sum(amount) AS total FROM acct GROUP BY g",
    "acct_sum": "SELECT count(*) AS n, sum(amount) AS total FROM acct",
}


def _setup(dsn: str, tmp_path: Path, rows: int = 100) -> tuple[Path, Path]:
    pg_exec(dsn, SCHEMA)
    pg_exec(dsn, f"INSERT INTO acct SELECT i, i % 7, i FROM generate_series(1, {rows}) i")
    views = tmp_path / "views.sql"
    views.write_text("".join(f"CREATE VIEW {n} AS {q};\n" for n, q in VIEWS.items()))
    return tmp_path / "data", views


def _transactions(dsn: str, n: int, start: int) -> None:
    """`n` transactions that move every aggregate: an insert, an update, a delete."""
    for i in range(start, start + n):
        pg_exec(
            dsn,
            f"INSERT INTO acct VALUES ({i}, {i % 7}, {i});"
            f"UPDATE acct SET amount = amount + 3 WHERE id = {i - start + 1};"
            f"DELETE FROM acct WHERE id = {i - start + 50}",
        )


def _assert_counted_once(dsn: str, data: Path) -> None:
    assert_row_count(dsn, data, "acct")
    for name, sql in VIEWS.items():
        assert_view_equals(dsn, data, name, sql)


def _wait(condition: Any, what: str, timeout: float = 60, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class WriteSpy:
    """Records which batches carry an applied LSN (`db.put_applied`), how each is written
    (`Store.write`), and each flush LSN sent to Postgres (`send_status`); the real functions
    run unchanged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.carrying: dict[int, tuple[Any, Lsn]] = {}
        self.durable = Lsn(0)  # the highest applied LSN written with sync
        self.synced_writes = 0
        self.acks = 0
        self.violations: list[str] = []
        self.lock = threading.Lock()
        real_put, real_write = db.put_applied, db.Store.write
        real_send = ReplicationConnection.send_status

        def put_applied(batch: Any, store: Any, lsn: Lsn, commit_time: int | None) -> None:
            with self.lock:
                self.carrying[id(batch)] = (batch, lsn)  # holds the batch: its id stays unique
            real_put(batch, store, lsn, commit_time)

        def write(store: Any, batch: Any, *, sync: bool) -> None:
            with self.lock:
                entry = self.carrying.pop(id(batch), None)
            real_write(store, batch, sync=sync)
            if entry is None:
                return
            with self.lock:
                if not sync:
                    self.violations.append(f"applied LSN {entry[1]} written without sync")
                else:
                    self.synced_writes += 1
                    self.durable = max(self.durable, entry[1])

        def send_status(conn: Any, write_lsn: Lsn, flush: Lsn, *, reply: bool = False) -> None:
            with self.lock:
                self.acks += 1
                if flush > self.durable:
                    self.violations.append(f"flush {flush} sent past the synced {self.durable}")
            real_send(conn, write_lsn, flush, reply=reply)

        monkeypatch.setattr(db, "put_applied", put_applied)
        monkeypatch.setattr(db.Store, "write", write)
        monkeypatch.setattr(ReplicationConnection, "send_status", send_status)


def test_applied_lsn_is_synced_before_it_is_acknowledged(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: through a snapshot, small groups, a large transaction written in chunks and a
    clean stop, every batch with an applied LSN is synced, and every flush LSN sent is one the
    store had synced when it was sent. (Mutation: the group write with sync=False.)"""
    data, views = _setup(dsn, tmp_path)
    spy = WriteSpy(monkeypatch)
    with PipelineThread(dsn, data, views_file=views, large_txn_rows=300, chunk_rows=100) as p:
        wait_caught_up(dsn, data, alive=p.check)
        _transactions(dsn, 20, start=1000)
        pg_exec(dsn, "INSERT INTO acct SELECT i, i % 7, 1 FROM generate_series(5000, 5999) i")
        _transactions(dsn, 5, start=2000)
        wait_caught_up(dsn, data, alive=p.check)
        _wait(lambda: spy.acks > 0 and spy.durable >= applied_lsn(data), "an ack", alive=p.check)
    assert not spy.violations, spy.violations[:5]
    assert spy.synced_writes >= 3 and spy.acks >= 1  # the spy saw the writes it checks
    _assert_counted_once(dsn, data)


def test_resent_transactions_are_skipped(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: acknowledgements are lost, then the connection drops: Postgres resends every
    transaction since the last acknowledged one, all of them already in the store, and the
    store must skip them. (Mutation: the pipeline's skip on Begin removed.)"""
    data, views = _setup(dsn, tmp_path)
    lose_acks, drop = threading.Event(), threading.Event()
    real_send, real_messages = ReplicationConnection.send_status, ReplicationConnection.messages

    def send_status(conn: Any, write_lsn: Lsn, flush: Lsn, *, reply: bool = False) -> None:
        if not lose_acks.is_set():
            real_send(conn, write_lsn, flush, reply=reply)

    def messages(conn: Any) -> Iterator[memoryview]:
        if drop.is_set():
            drop.clear()
            raise SourceError("replication stream failed: dropped by the test", transient=True)
        yield from real_messages(conn)

    monkeypatch.setattr(ReplicationConnection, "send_status", send_status)
    monkeypatch.setattr(ReplicationConnection, "messages", messages)
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        lose_acks.set()
        _transactions(dsn, 10, start=1000)
        applied = wait_caught_up(dsn, data, alive=p.check)
        db_name = pg_query(dsn, "SELECT current_database()")[0][0]
        (confirmed,) = pg_query(
            dsn,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE database = %s",
            db_name,
        )[0]
        assert Lsn.parse(confirmed) < applied  # so the reconnect is sent them again
        drop.set()
        _wait(lambda: p.pipeline.reconnects >= 1, "the reconnect", alive=p.check)
        asm = lambda: p.pipeline.assembler  # noqa: E731 - a new one per connection
        _wait(lambda: asm() is not None and asm().skipped >= 10, "the resent ones", alive=p.check)
        lose_acks.clear()
        _transactions(dsn, 3, start=2000)  # and streaming goes on after them
        wait_caught_up(dsn, data, alive=p.check)
        _assert_counted_once(dsn, data)


class _Crash(BaseException):
    """Stands for the process dying: nothing after the crash point runs."""


def test_crash_inside_the_group_write(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 7: the process dies right after the first store write of a group commit returns.
    The group's rows and its applied LSN are that one write, so the restart (sent the group
    again: it was never acknowledged) skips it. (Mutation: the applied LSN in a second
    WriteBatch after the rows: the rows are durable, the LSN is not, the group is applied
    twice.)"""
    data, views = _setup(dsn, tmp_path)
    armed = threading.Event()
    in_group = threading.local()
    real_commit, real_write = Applier.commit_group, db.Store.write

    def commit_group(self: Applier) -> Lsn:
        in_group.on = True
        try:
            return real_commit(self)
        finally:
            in_group.on = False

    def write(store: Any, batch: Any, *, sync: bool) -> None:
        real_write(store, batch, sync=sync)
        if armed.is_set() and getattr(in_group, "on", False):
            armed.clear()
            raise _Crash("after the first write of a group")

    monkeypatch.setattr(Applier, "commit_group", commit_group)
    monkeypatch.setattr(db.Store, "write", write)
    p = PipelineThread(dsn, data, views_file=views).start()
    wait_caught_up(dsn, data, alive=p.check)
    armed.set()
    _transactions(dsn, 5, start=1000)
    p.thread.join(60)
    assert isinstance(p.error, _Crash), p.error
    monkeypatch.undo()
    with PipelineThread(dsn, data, views_file=views) as p:
        # The store may already be at the server's position: stream, then one more change.
        _wait(p.pipeline.streaming.is_set, "streaming", alive=p.check)
        _transactions(dsn, 1, start=2000)
        wait_caught_up(dsn, data, alive=p.check)
        _assert_counted_once(dsn, data)
        assert p.pipeline.assembler is not None and p.pipeline.assembler.skipped >= 1


@pytest.mark.parametrize("reader", ["psycopg", "psql"])
def test_write_between_slot_and_copy_is_counted_once(
    dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reader: str,
) -> None:
    """Item 7: an insert, an update and a delete commit after the slot exists and before the
    snapshot's COPY starts. The COPY reads the slot's exported snapshot, so they arrive by the
    stream only: row counts and sums equal Postgres's. (Mutation: SET TRANSACTION SNAPSHOT
    dropped, from the psycopg reader or from psql's script: the COPY sees them too.)"""
    if reader == "psycopg":
        monkeypatch.setenv("VIEWSTORE_PSQL", "")
    elif find_psql() is None:
        pytest.skip("no psql here")
    data, views = _setup(dsn, tmp_path)
    real_create = ReplicationConnection.create_slot
    wrote: list[Lsn] = []

    def create_slot(conn: Any, slot: str, *, temporary: bool = False) -> tuple[Lsn, str]:
        point, snapshot = real_create(conn, slot, temporary=temporary)
        if not temporary:  # the run's slot: its snapshot is exported, the COPY not begun
            pg_exec(
                dsn,
                "INSERT INTO acct VALUES (1000, 1, 500), (1001, 2, 700);"
                "UPDATE acct SET amount = amount + 1000 WHERE id = 5;"
                "DELETE FROM acct WHERE id = 6",
            )
            wrote.append(point)
        return point, snapshot

    monkeypatch.setattr(ReplicationConnection, "create_slot", create_slot)
    caplog.set_level(logging.INFO, logger="viewstore")
    with PipelineThread(dsn, data, views_file=views) as p:
        _wait(lambda: wrote, "the slot", alive=p.check)  # then the write is in the WAL
        wait_caught_up(dsn, data, alive=p.check)
        _assert_counted_once(dsn, data)
    used = [r.getMessage() for r in caplog.records if "reading with" in r.getMessage()]
    assert used and used[0].endswith("psycopg") == (reader == "psycopg"), used
