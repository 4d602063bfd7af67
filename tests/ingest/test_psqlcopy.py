"""The snapshot's COPY read through psql (`ingest.psqlcopy`): the same bytes as psycopg's path,
in chunks of whole rows; errors with Postgres's message; no password on a command line; an
early stop ends psql and its connection.

The mirror bytes of a whole snapshot read both ways: tests/store/test_snapshot_columnar.py.
"""

from __future__ import annotations

import time

import pytest
from helpers import pg_exec, pg_query

from viewstore.errors import SourceError
from viewstore.ingest.pgconn import connect, copy_chunks, query
from viewstore.ingest.psqlcopy import PsqlCopy, find_psql

COPY = "COPY public.chunky (id, t) TO STDOUT"


@pytest.fixture
def psql() -> str:
    found = find_psql()
    assert found is not None, "the suite runs where Postgres's psql is installed"
    return found


def _exported(conn) -> str:  # type: ignore[no-untyped-def]
    query(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ")
    return str(query(conn, "SELECT pg_export_snapshot()")[0][0])


def test_psql_chunks_equal_psycopgs(dsn: str, psql: str) -> None:
    pg_exec(dsn, "CREATE TABLE chunky (id int PRIMARY KEY, t text)")
    pg_exec(
        dsn,
        "INSERT INTO chunky SELECT g, CASE WHEN g % 7 = 0 THEN NULL "
        "ELSE repeat(E'a\\tb\\\\c\\nd é', g % 50) END FROM generate_series(1, 30000) g",
    )
    with connect(dsn) as holder, connect(dsn) as reader:
        snapshot = _exported(holder)
        pg_exec(dsn, "DELETE FROM chunky WHERE id <= 100")  # after the snapshot: in neither
        query(reader, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        query(reader, f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        expected = b"".join(copy_chunks(reader, COPY, 1 << 20))
        chunks = list(PsqlCopy(psql, dsn, application_name="t").chunks(snapshot, COPY, 64 << 10))
    assert len(chunks) > 5
    assert all(c.endswith(b"\n") and len(c) > (64 << 10) - (1 << 20) for c in chunks)
    assert b"".join(chunks) == expected
    assert expected.count(b"\n") == 30000


def test_psql_errors_carry_postgres_message(dsn: str, psql: str) -> None:
    copy = PsqlCopy(psql, dsn + " password=sekret-pw", application_name="t")
    with pytest.raises(SourceError, match="invalid snapshot identifier"):
        list(copy.chunks("00000003-0000001B-1", "COPY (SELECT 1) TO STDOUT", 1 << 20))
    assert not any("sekret-pw" in arg for arg in copy._argv)  # ps shows argv; not the env
    assert copy._env["PGPASSWORD"] == "sekret-pw"
    broken = PsqlCopy(psql, "host=127.0.0.1 port=1 connect_timeout=2", application_name="t")
    assert "failed" in (broken.probe() or "")
    missing = PsqlCopy("/nonexistent/psql", dsn, application_name="t")
    assert "did not run" in (missing.probe() or "")


def test_stopping_early_ends_psql_and_its_connection(dsn: str, psql: str) -> None:
    pg_exec(dsn, "CREATE TABLE chunky (id int PRIMARY KEY, t text)")
    pg_exec(dsn, "INSERT INTO chunky SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g")
    with connect(dsn) as holder:
        snapshot = _exported(holder)
        chunks = PsqlCopy(psql, dsn, application_name="psqlcopy-early").chunks(
            snapshot, COPY, 64 << 10
        )
        assert next(chunks).endswith(b"\n")
        assert pg_query(
            dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'psqlcopy-early'"
        )
        chunks.close()
        deadline = time.monotonic() + 10
        while pg_query(
            dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'psqlcopy-early'"
        ):
            assert time.monotonic() < deadline, "psql's connection outlived the stop"
            time.sleep(0.05)
