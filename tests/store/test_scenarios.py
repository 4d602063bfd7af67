"""Source transactions of every shape: savepoints, two-phase commit, COPY FROM, and a large
transaction under a short wal_sender_timeout. Each ends with the mirror equal to Postgres."""

from __future__ import annotations

from pathlib import Path

import psycopg
from helpers import pg_exec
from runner import PipelineThread, assert_mirror_equals, wait_caught_up

from viewstore.pgcluster import ThrowawayPostgres


def test_savepoints_keep_only_what_survives(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        wait_caught_up(dsn, data, alive=p.check)
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO a VALUES (1, 'kept')")
            conn.execute("SAVEPOINT s1")
            conn.execute("INSERT INTO a VALUES (2, 'rolled back')")
            conn.execute("UPDATE a SET v = 'rolled back too' WHERE id = 1")
            conn.execute("ROLLBACK TO SAVEPOINT s1")
            conn.execute("SAVEPOINT s2")
            conn.execute("INSERT INTO a VALUES (3, 'released')")
            conn.execute("RELEASE SAVEPOINT s2")
            conn.commit()
            conn.execute("INSERT INTO a VALUES (4, 'outer rollback')")
            conn.execute("SAVEPOINT s3")
            conn.execute("INSERT INTO a VALUES (5, 'inner of outer rollback')")
            conn.rollback()
        wait_caught_up(dsn, data, alive=p.check)
        assert assert_mirror_equals(dsn, data, "a") == 2


def test_copy_from_many_rows_in_one_transaction(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        wait_caught_up(dsn, data, alive=p.check)
        text = "".join(f"{i}\tline {i}\\twith tab\n" for i in range(20000))
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy("COPY a FROM STDIN") as copy:
                copy.write(text)
            cur.execute("INSERT INTO a SELECT g, NULL FROM generate_series(20000, 20999) g")
        wait_caught_up(dsn, data, alive=p.check)
        assert assert_mirror_equals(dsn, data, "a") == 21000


def test_two_phase_commit_appears_at_commit_prepared(tmp_path: Path) -> None:
    with ThrowawayPostgres(settings={"max_prepared_transactions": "10"}) as pg:
        dsn = pg.dsn
        pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
        data = tmp_path / "data"
        with PipelineThread(dsn, data) as p:
            wait_caught_up(dsn, data, alive=p.check)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("BEGIN; INSERT INTO a VALUES (1); PREPARE TRANSACTION 'one'")
                conn.execute("BEGIN; INSERT INTO a VALUES (2); PREPARE TRANSACTION 'two'")
                conn.execute("INSERT INTO a VALUES (3)")
                wait_caught_up(dsn, data, alive=p.check)
                assert assert_mirror_equals(dsn, data, "a") == 1  # only 3: nothing prepared
                conn.execute("COMMIT PREPARED 'one'")
                conn.execute("ROLLBACK PREPARED 'two'")
            wait_caught_up(dsn, data, alive=p.check)
            assert assert_mirror_equals(dsn, data, "a") == 2


def test_large_transaction_under_short_wal_sender_timeout(tmp_path: Path) -> None:
    # Status updates go out on a timer while a large transaction is applied, so the walsender
    # never times the connection out (which would replay the transaction for ever).
    with ThrowawayPostgres(settings={"wal_sender_timeout": "2s"}) as pg:
        dsn = pg.dsn
        pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
        data = tmp_path / "data"
        with PipelineThread(dsn, data, large_txn_rows=50_000, chunk_rows=20_000) as p:
            wait_caught_up(dsn, data, alive=p.check)
            pg_exec(dsn, "INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 400000) g")
            wait_caught_up(dsn, data, timeout=180, alive=p.check)
            assert assert_mirror_equals(dsn, data, "a") == 400000
            assert p.pipeline.reconnects == 0
