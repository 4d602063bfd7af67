"""A replication connection whose network path dies silently, and a slot that waits on an open
transaction (issue 19.2).

A proxy between viewstore and Postgres stops forwarding without closing anything, so neither
side sees an error: only silence. viewstore must notice within a bounded time (no message for
`stream_silence`, then a ping unanswered for as long again), end the old walsender that still
holds the slot, reconnect and resume exactly: the mirror and a SUM/COUNT view equal Postgres,
with every write made during the silence applied once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg
import pytest
from helpers import pg_exec, pg_query
from netproxy import FreezingProxy
from runner import PipelineThread, assert_mirror_equals, assert_view_equals, wait_caught_up

from viewstore.errors import SlotError

VIEW = "SELECT g, SUM(v) AS total, COUNT(*) AS n FROM t GROUP BY g"
SILENCE = 1.0


def test_silently_dead_stream_is_detected_and_replaced(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 7, i FROM generate_series(1, 1000) i")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = tmp_path / "data"
    proxy = FreezingProxy(dsn)
    try:
        with PipelineThread(
            proxy.dsn, data, views_file=views, stream_silence=SILENCE, catalog_check_interval=60
        ) as p:
            wait_caught_up(dsn, data, alive=p.check)
            pg_exec(dsn, "UPDATE t SET v = v + 1 WHERE id <= 10")
            wait_caught_up(dsn, data, alive=p.check)
            assert proxy.freeze(replication_only=True) == 1
            frozen_at = time.monotonic()
            # Written while the path is dead: they reach the store only over a new connection.
            pg_exec(dsn, "INSERT INTO t SELECT i, i % 7, -i FROM generate_series(1001, 1500) i")
            pg_exec(dsn, "DELETE FROM t WHERE id % 5 = 0")
            pg_exec(dsn, "UPDATE t SET v = v * 2, g = g + 1 WHERE id % 3 = 0")
            wait_caught_up(dsn, data, alive=p.check, timeout=60)
            took = time.monotonic() - frozen_at
            assert p.pipeline.reconnects >= 1
            # Silence, an unanswered ping, the first back-off (1 s), the slot freed at once.
            assert took < 2 * SILENCE + 8, f"a dead connection took {took:.1f} s to replace"
            pg_exec(dsn, "INSERT INTO t VALUES (5000, 1, 1)")  # and the new stream flows
            wait_caught_up(dsn, data, alive=p.check)
        assert assert_mirror_equals(dsn, data, "t") == 1201
        assert_view_equals(dsn, data, "totals", VIEW)
    finally:
        proxy.close()


def test_slot_creation_waits_boundedly_and_names_the_open_transaction(
    dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A new slot waits for every transaction holding an xid to end. One left open must not hang
    # the first start: the log names it while waiting, the error names it after the bound, and
    # following the error's hint (end it) gives a store equal to Postgres.
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 7, i FROM generate_series(1, 100) i")
    data = tmp_path / "data"
    blocker = psycopg.connect(dsn, application_name="forgotten-session")
    try:
        blocker.execute("INSERT INTO t VALUES (1000, 1, 1)")  # holds an xid, never commits
        pid = blocker.info.backend_pid
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="viewstore"):
            p = PipelineThread(dsn, data, slot_create_wait=3.0, slot_wait_report=0.5).start()
            p.thread.join(60)
        assert not p.thread.is_alive()
        assert isinstance(p.error, SlotError), p.error
        assert time.monotonic() - started < 20
        message = str(p.error)
        assert f"pid {pid}" in message and "'forgotten-session'" in message
        assert "idle in transaction" in message
        assert f"pg_terminate_backend(pid) for pid {pid}" in (p.error.hint or "")
        waiting = [r.getMessage() for r in caplog.records if "has waited" in r.getMessage()]
        assert waiting and f"pid {pid}" in waiting[0], waiting
        # No slot was left by the cancelled creation.
        assert not pg_query(
            dsn, "SELECT 1 FROM pg_replication_slots WHERE database = current_database()"
        )
        pg_exec(dsn, "SELECT pg_terminate_backend(%s)", pid)  # the hint, followed
    finally:
        blocker.close()  # ended by the hint: no commit, no rollback to send
    with PipelineThread(dsn, data, slot_create_wait=3.0) as p:
        pg_exec(dsn, "UPDATE t SET v = 0 WHERE id = 1")
        wait_caught_up(dsn, data, alive=p.check)
    assert assert_mirror_equals(dsn, data, "t") == 100


def test_every_connection_bounds_its_waits(dsn: str) -> None:
    # libpq waits without limit by default; viewstore's connections do not (unless the DSN
    # says otherwise): connect_timeout, TCP keepalives, tcp_user_timeout.
    from viewstore.ingest.pgconn import ReplicationConnection, connect

    conn = connect(dsn)
    repl = ReplicationConnection(dsn)
    try:
        for params in (conn.info.get_parameters(), repl.conn.info.get_parameters()):
            assert params["connect_timeout"] == "10"
            assert params["tcp_user_timeout"] == "30000"
            assert params["keepalives_idle"] == "10"
    finally:
        conn.close()
        repl.close()
    own = connect(dsn + " connect_timeout=3")
    try:
        assert own.info.get_parameters()["connect_timeout"] == "3"
    finally:
        own.close()
