"""Preflight and slot safety: every refusal names what it found and what fixes it.

Each case would otherwise lose or corrupt data silently: no logical WAL, no right to
replicate, rows that cannot be identified, a publication that misses a table or change kind,
a slot somebody else consumes, a slot that moved past the store, or a schema that changed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import pg_exec, pg_query, unique_name
from psycopg.conninfo import make_conninfo
from runner import PipelineThread, applied_lsn, assert_mirror_equals, wait_caught_up

from viewstore.errors import PreflightError, SlotError, UnsupportedError
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.pipeline import Pipeline, RunConfig


def _run(dsn: str, data: Path, **kw: object) -> None:
    """Run the pipeline in this thread; it must fail before streaming."""
    Pipeline(RunConfig(dsn=dsn, data_dir=data, **kw)).run()  # type: ignore[arg-type]


def _ran_once(dsn: str, data: Path, **kw: object) -> None:
    with PipelineThread(dsn, data, **kw) as p:
        wait_caught_up(dsn, data, alive=p.check)


def test_wal_level_not_logical() -> None:
    with (
        ThrowawayPostgres(settings={"wal_level": "replica"}) as pg,
        pytest.raises(PreflightError) as err,
    ):
        _run(pg.dsn, Path(pg.data_dir).parent / "vsdata")
    assert "wal_level is 'replica', logical replication requires 'logical'" in str(err.value)
    assert err.value.hint and "ALTER SYSTEM SET wal_level = logical" in err.value.hint


def test_role_without_replication(dsn: str, tmp_path: Path) -> None:
    role = unique_name("vs_role_")
    pg_exec(dsn, f'CREATE ROLE "{role}" LOGIN')
    try:
        with pytest.raises(PreflightError) as err:
            _run(make_conninfo(dsn, user=role), tmp_path / "data")
        assert f"role '{role}' has no REPLICATION attribute" in str(err.value)
        assert err.value.hint == f'ALTER ROLE "{role}" REPLICATION;'
    finally:
        pg_exec(dsn, f'DROP ROLE "{role}"')


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE t (a int)", "table public.t has no primary key or replica identity index"),
        (
            "CREATE TABLE t (a int PRIMARY KEY); ALTER TABLE t REPLICA IDENTITY NOTHING",
            "table public.t has REPLICA IDENTITY NOTHING",
        ),
        (
            "CREATE TABLE t (a int, b int UNIQUE); ALTER TABLE t REPLICA IDENTITY FULL",
            "table public.t has no primary key or replica identity index",
        ),
    ],
)
def test_table_without_usable_key(dsn: str, tmp_path: Path, ddl: str, message: str) -> None:
    pg_exec(dsn, ddl)
    with pytest.raises(PreflightError) as err:
        _run(dsn, tmp_path / "data")
    assert message in str(err.value)
    assert err.value.hint and "ALTER TABLE" in err.value.hint


def test_replica_identity_index_is_the_key(dsn: str, tmp_path: Path) -> None:
    pg_exec(
        dsn,
        "CREATE TABLE t (id int NOT NULL, code text NOT NULL UNIQUE, v int);"
        "CREATE UNIQUE INDEX t_code ON t (code); "
        "ALTER TABLE t REPLICA IDENTITY USING INDEX t_code;"
        "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)",
    )
    with PipelineThread(dsn, tmp_path / "data"):
        pg_exec(
            dsn,
            "UPDATE t SET code = 'c' WHERE id = 1; DELETE FROM t WHERE id = 2;"
            "INSERT INTO t VALUES (3, 'd', 3)",
        )
        wait_caught_up(dsn, tmp_path / "data")
        assert assert_mirror_equals(dsn, tmp_path / "data", "t") == 2


def test_publication_missing_a_table(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(
        dsn,
        f"CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);"
        f"CREATE PUBLICATION {names.publication} FOR TABLE a",
    )
    with pytest.raises(PreflightError) as err:
        _run(dsn, tmp_path / "data", publication=names.publication, tables=["a", "b"])
    assert f"publication '{names.publication}' does not include table public.b" in str(err.value)
    assert err.value.hint == f'ALTER PUBLICATION "{names.publication}" ADD TABLE "public"."b";'


def test_publication_not_publishing_updates(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(
        dsn,
        f"CREATE TABLE a (id int PRIMARY KEY);"
        f"CREATE PUBLICATION {names.publication} FOR TABLE a WITH (publish = 'insert')",
    )
    with pytest.raises(PreflightError) as err:
        _run(dsn, tmp_path / "data", publication=names.publication)
    assert "does not publish update, delete, truncate" in str(err.value)


def test_publication_created_for_named_tables(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    _ran_once(dsn, tmp_path / "data", publication=names.publication, tables=["a"])
    rows = pg_query(
        dsn, "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", names.publication
    )
    assert rows == [("a",)]


def test_slot_in_use_by_another_consumer(dsn: str, tmp_path: Path, names, pg_server) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    _ran_once(dsn, data, slot=names.slot, publication=names.publication)
    other = subprocess.Popen(
        [
            str(pg_server.bindir / "pg_recvlogical"),
            "-d",
            dsn,
            "-S",
            names.slot,
            "--start",
            "-o",
            "proto_version=1",
            "-o",
            f"publication_names={names.publication}",
            "-f",
            "-",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_active(dsn, names.slot)
        with pytest.raises(SlotError) as err:
            _run(dsn, data, slot=names.slot, publication=names.publication, slot_busy_wait=0.5)
        assert f"slot '{names.slot}' is in use by another consumer (walsender pid" in str(err.value)
        assert err.value.hint and "pg_terminate_backend" in err.value.hint
    finally:
        other.kill()
        other.wait()


def _wait_active(dsn: str, slot: str) -> None:
    for _ in range(100):
        if pg_query(dsn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot) == [
            (True,)
        ]:
            return
        time.sleep(0.05)
    raise AssertionError("pg_recvlogical never took the slot")


def _assert_slot_ahead(dsn: str, slot: str, data: Path) -> None:
    """The test's precondition: the slot now confirms more than the store has applied."""
    (confirmed,) = pg_query(
        dsn, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", slot
    )[0]
    assert Lsn.parse(confirmed) > applied_lsn(data), (confirmed, applied_lsn(data))


def test_slot_advanced_while_down_is_refused(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    _ran_once(dsn, data, slot=names.slot, publication=names.publication)
    # A synchronous commit: the slot can only be advanced up to WAL that is flushed.
    pg_exec(dsn, "SET synchronous_commit = on; INSERT INTO a SELECT generate_series(1, 100)")
    pg_exec(dsn, "SELECT pg_replication_slot_advance(%s, pg_current_wal_flush_lsn())", names.slot)
    _assert_slot_ahead(dsn, names.slot, data)
    with pytest.raises(SlotError) as err:
        _run(dsn, data, slot=names.slot, publication=names.publication)
    assert f"slot '{names.slot}' is ahead of the store: it confirmed" in str(err.value)
    assert "the changes in between are gone" in str(err.value)
    assert err.value.hint and "--resnapshot" in err.value.hint
    # The way out the hint names works, and gives the right answer.
    _ran_once(dsn, data, slot=names.slot, publication=names.publication, resnapshot=True)
    assert assert_mirror_equals(dsn, data, "a") == 100


def test_slot_dropped_while_down_is_refused(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    _ran_once(dsn, data, slot=names.slot, publication=names.publication)
    pg_exec(dsn, "SELECT pg_drop_replication_slot(%s)", names.slot)
    with pytest.raises(SlotError) as err:
        _run(dsn, data, slot=names.slot, publication=names.publication)
    assert f"slot '{names.slot}' does not exist: it was dropped" in str(err.value)


def test_slot_recreated_while_down_is_refused(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    _ran_once(dsn, data, slot=names.slot, publication=names.publication)
    pg_exec(dsn, "SELECT pg_drop_replication_slot(%s)", names.slot)
    pg_exec(dsn, "INSERT INTO a VALUES (1)")  # lost to the store: the new slot starts later
    pg_exec(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", names.slot)
    _assert_slot_ahead(dsn, names.slot, data)
    with pytest.raises(SlotError) as err:
        _run(dsn, data, slot=names.slot, publication=names.publication)
    assert "is ahead of the store" in str(err.value)


def test_existing_slot_without_snapshot_is_refused(dsn: str, tmp_path: Path, names) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    pg_exec(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", names.slot)
    with pytest.raises(SlotError) as err:
        _run(dsn, tmp_path / "data", slot=names.slot)
    assert f"slot '{names.slot}' already exists, but the store" in str(err.value)


def test_schema_change_stops_without_acknowledging(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY, v int)")
    data = tmp_path / "data"
    p = PipelineThread(dsn, data).start()
    pg_exec(dsn, "INSERT INTO a VALUES (1, 1)")
    good = wait_caught_up(dsn, data)
    pg_exec(dsn, "ALTER TABLE a ADD COLUMN w text; INSERT INTO a VALUES (2, 2, 'x')")
    p.thread.join(30)
    assert isinstance(p.error, UnsupportedError)
    assert "table public.a changed schema" in str(p.error)
    slot = pg_query(
        dsn,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE database = current_database()",
    )[0][0]
    from viewstore.ingest.lsn import Lsn

    assert Lsn.parse(slot) <= good  # nothing acknowledged past the last good transaction


def test_publication_dropped_while_running_stops_with_error(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    p = PipelineThread(dsn, data).start()
    wait_caught_up(dsn, data, alive=p.check)
    name = p.pipeline.config.publication_name
    pg_exec(dsn, f'DROP PUBLICATION "{name}"')
    pg_exec(dsn, "INSERT INTO a VALUES (1)")
    p.thread.join(30)
    assert isinstance(p.error, PreflightError), p.error
    assert f"publication '{name}' no longer exists" in str(p.error)
