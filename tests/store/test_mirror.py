"""The mirror equals Postgres: random workloads, the snapshot hand-off, exact numerics."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
from helpers import pg_exec
from runner import (
    PipelineThread,
    assert_mirror_equals,
    assert_row_count,
    assert_view_equals,
    wait_caught_up,
)
from workload import SCHEMA, run_transactions


def test_random_workload_mirror_equals_source(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    run_transactions(dsn, 50, seed=1)  # some rows exist before the first start: snapshot
    with PipelineThread(dsn, tmp_path / "data") as p:
        for batch in range(6):
            run_transactions(dsn, 50, seed=100 + batch)
            wait_caught_up(dsn, tmp_path / "data", alive=p.check)
            assert_mirror_equals(dsn, tmp_path / "data", "items")
            assert_mirror_equals(dsn, tmp_path / "data", "docs")


def test_rows_written_during_snapshot_are_neither_lost_nor_doubled(
    dsn: str, tmp_path: Path
) -> None:
    pg_exec(dsn, "CREATE TABLE big (id int PRIMARY KEY, v int, pad text)")
    pg_exec(dsn, "INSERT INTO big SELECT g, 0, repeat('x', 100) FROM generate_series(1, 300000) g")
    stop = threading.Event()

    def writer() -> None:
        # Inserts, updates and deletes racing the COPY: each lands in the snapshot or the
        # stream, never both, never neither.
        with psycopg.connect(dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                i += 1
                conn.execute("INSERT INTO big VALUES (%s, 1, 'new')", (300000 + i,))
                conn.execute("UPDATE big SET v = v + 1 WHERE id = %s", (i * 7 % 300000 + 1,))
                conn.execute("DELETE FROM big WHERE id = %s", (i * 13 % 300000 + 1,))

    # A row in both the snapshot and the stream would be one mirror row (the same key put
    # twice) but two in a count and a sum: the view and the stored row count show it.
    totals = "SELECT count(*) AS n, sum(v) AS s, count(DISTINCT pad) AS pads FROM big"
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {totals};\n")
    t = threading.Thread(target=writer)
    t.start()
    try:
        with PipelineThread(dsn, tmp_path / "data", views_file=views) as p:
            # Let the writer run through the whole snapshot and a while after it.
            wait_caught_up(dsn, tmp_path / "data", alive=p.check)
            stop.set()
            t.join()
            wait_caught_up(dsn, tmp_path / "data", alive=p.check)
            assert assert_mirror_equals(dsn, tmp_path / "data", "big") > 250000
            assert_row_count(dsn, tmp_path / "data", "big")
            assert_view_equals(dsn, tmp_path / "data", "totals", totals)
    finally:
        stop.set()
        t.join()


NUMERICS = [
    "1234567890123456789012345678901234567890",
    "-1234567890123456789012345678901234567890.0000000001",
    "0.000000000000000000000000000001",
    "1e-30",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0.5",
    "100000000000000000000000000000000000000000000000000",
    "12.3400",
]


def test_numeric_edge_cases_round_trip_exactly(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE nums (id int PRIMARY KEY, n numeric, s numeric(12, 4))")
    for i, v in enumerate(NUMERICS):  # through the snapshot ...
        pg_exec(dsn, "INSERT INTO nums VALUES (%s, %s::numeric, NULL)", i, v)
    with PipelineThread(dsn, tmp_path / "data") as p:
        for i, v in enumerate(NUMERICS):  # ... and through the stream
            pg_exec(dsn, "INSERT INTO nums VALUES (%s, %s::numeric, 1.23456)", 100 + i, v)
        pg_exec(
            dsn,
            "INSERT INTO nums VALUES (200, (SELECT sum(n) FROM nums WHERE "
            "n NOT IN ('NaN', 'Infinity', '-Infinity')), -99999999.9999)",
        )
        wait_caught_up(dsn, tmp_path / "data", alive=p.check)
        assert assert_mirror_equals(dsn, tmp_path / "data", "nums") == 2 * len(NUMERICS) + 1


def test_a_backlog_is_applied_in_groups(dsn: str, tmp_path: Path) -> None:
    # Group commit: transactions that arrive together share synced writes (bounded by
    # commit_interval), instead of paying one fsync each.
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        wait_caught_up(dsn, data, alive=p.check)
    with psycopg.connect(dsn, autocommit=True) as conn:  # a backlog while viewstore is down
        for i in range(500):
            conn.execute("INSERT INTO a VALUES (%s)", (i,))
    with PipelineThread(dsn, data, commit_interval=0.5) as p:
        wait_caught_up(dsn, data, alive=p.check)
        writes = p.pipeline.applier.group_writes
    assert assert_mirror_equals(dsn, data, "a") == 500
    assert writes < 50, f"{writes} synced writes for 500 transactions"
