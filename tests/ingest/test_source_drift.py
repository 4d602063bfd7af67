"""The source changing under the store: invalidated slots, another server, two writers, and
database settings that change how values print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import PipelineThread, start_process, wait_caught_up

import viewstore
from viewstore.errors import SlotError
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.pipeline import Pipeline, RunConfig


def test_invalidated_slot_is_refused(tmp_path: Path) -> None:
    with ThrowawayPostgres(
        settings={"max_slot_wal_keep_size": "1MB", "max_wal_size": "32MB", "min_wal_size": "32MB"}
    ) as pg:
        pg_exec(pg.dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
        data = tmp_path / "data"
        with PipelineThread(pg.dsn, data) as p:
            wait_caught_up(pg.dsn, data, alive=p.check)
        for _ in range(4):  # far more WAL than the slot may keep, then checkpoints remove it
            pg_exec(
                pg.dsn,
                "INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 50000) g;"
                "DELETE FROM a",
            )
            pg_exec(pg.dsn, "SELECT pg_switch_wal(); CHECKPOINT")
        status = pg_query(pg.dsn, "SELECT wal_status FROM pg_replication_slots")[0][0]
        assert status == "lost", status
        with pytest.raises(SlotError) as err:
            Pipeline(RunConfig(dsn=pg.dsn, data_dir=data)).run()
        assert "has been invalidated (wal_status 'lost')" in str(err.value)
        assert err.value.hint and "--resnapshot" in err.value.hint


def test_store_of_another_server_is_refused(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        wait_caught_up(dsn, data, alive=p.check)
    with ThrowawayPostgres() as other:
        pg_exec(other.dsn, "CREATE TABLE a (id int PRIMARY KEY)")
        with pytest.raises(SlotError) as err:
            Pipeline(RunConfig(dsn=other.dsn, data_dir=data)).run()
    assert "follows Postgres system" in str(err.value)
    assert "but the DSN points at system" in str(err.value)


def test_second_run_on_the_same_data_dir_is_refused(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    first = start_process(dsn, data)
    wait_caught_up(dsn, data)
    second = subprocess.run(
        [sys.executable, "-m", "viewstore.cli", "run", "--dsn", dsn, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"Error: the store in {data} is open in another process" in second.stderr
    assert first.poll() is None  # the first one is unharmed


def test_database_settings_do_not_change_mirrored_values(dsn: str, tmp_path: Path) -> None:
    # The text form of timestamps, dates, floats and bytea depends on session settings, which a
    # database can set for every new session, the walsender's included.
    db = pg_query(dsn, "SELECT current_database()")[0][0]
    for setting, value in [
        ("timezone", "Asia/Kathmandu"),
        ("datestyle", "SQL, DMY"),
        ("intervalstyle", "iso_8601"),
        ("extra_float_digits", "-3"),
        ("bytea_output", "escape"),
    ]:
        pg_exec(dsn, f"ALTER DATABASE \"{db}\" SET {setting} = '{value}'")
    pg_exec(
        dsn,
        "CREATE TABLE a (id int PRIMARY KEY, at timestamptz, day date, f float8, "
        "b bytea, i interval)",
    )
    row = "(%s, '2024-03-01 10:00:00.5+02', '2024-03-01', 0.1::float8 + 0.2::float8, '\\x00ff', '1 day 2 hours')"
    pg_exec(dsn, "INSERT INTO a VALUES " + row % 1)  # through the snapshot
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        pg_exec(dsn, "INSERT INTO a VALUES " + row % 2)  # through the stream
        wait_caught_up(dsn, data, alive=p.check)
        rows = sorted(viewstore.open(data).rows("a"), key=lambda r: r["id"])
    assert rows[0] | {"id": 2} == rows[1]  # snapshot and stream give identical values
    assert rows[0]["f"] == 0.30000000000000004  # every digit, whatever extra_float_digits says
    assert rows[0]["b"] == b"\x00\xff"
    assert rows[0]["i"] == "1 day 02:00:00"  # interval stays text, in the pinned style


def test_types_without_a_python_form_stay_exact_text(dsn: str, tmp_path: Path) -> None:
    pg_exec(
        dsn,
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN pos AS int CHECK (VALUE > 0);"
        "CREATE TABLE a (id int PRIMARY KEY, m mood, d pos, arr text[], ints int[][], "
        "r int4range, pt point, ip inet, money money, infinite timestamptz, bc date)",
    )
    values = (
        r"""(1, 'ok', 5, '{"a,b",NULL,"c\"d","tab\there"}', '{{1,2},{3,4}}', '[1,5)', '(1.5,2)', """
        "'10.0.0.1/8', 12.34, 'infinity', '0044-03-15 BC')"
    )
    pg_exec(dsn, f"INSERT INTO a VALUES {values}")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        pg_exec(dsn, f"INSERT INTO a VALUES {values.replace('(1,', '(2,', 1)}")
        wait_caught_up(dsn, data, alive=p.check)
        assert assert_mirror_equals_text(dsn, data) == 2


def assert_mirror_equals_text(dsn: str, data: Path) -> int:
    columns = ["m", "arr", "ints", "r", "pt", "ip", "infinite", "bc"]
    cols = ", ".join(f"{c}::text" for c in columns)
    with_settings = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(with_settings)
        expected = conn.execute(f"SELECT id, {cols} FROM a ORDER BY id").fetchall()
    got = [
        (r["id"], *(r[c] for c in columns))
        for r in sorted(viewstore.open(data).rows("a"), key=lambda r: r["id"])
    ]
    assert got == [tuple(e) for e in expected]
    return len(got)
