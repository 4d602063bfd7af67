"""Tests of the test harness: the session server and the per-test databases it hands out.

Everything else trusts these fixtures to give each test a clean database and to leave no
replication slot behind, so those two promises are checked here on a real server.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from helpers import create_test_database, drop_test_database, pg_exec, pg_query, unique_name

_SLOTS = "SELECT slot_name, database FROM pg_replication_slots WHERE slot_name = ANY(%s)"
_DATABASE = "SELECT datname FROM pg_database WHERE datname = %s"


def test_server_has_logical_wal(pg_server):
    assert pg_query(pg_server.dsn, "SHOW wal_level") == [("logical",)]


_seen: list[str] = []


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_a_fresh_database(pg_server, dsn, turn):
    ((database,),) = pg_query(dsn, "SELECT current_database()")
    assert database.startswith("test_")
    assert (
        pg_query(dsn, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        == []
    )
    pg_exec(dsn, "CREATE TABLE left_behind (x int)")
    for earlier in _seen:  # empty when run alone, e.g. with -k second
        assert earlier != database
        assert pg_query(pg_server.dsn, _DATABASE, earlier) == [], "teardown left it behind"
    _seen.append(database)


def test_teardown_drops_the_databases_slots(pg_server):
    name, db_dsn = create_test_database(pg_server.dsn)
    slots = [unique_name(), unique_name()]
    try:
        pg_exec(db_dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", slots[0])
        pg_exec(db_dsn, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", slots[1])
        assert sorted(pg_query(pg_server.dsn, _SLOTS, slots)) == sorted((s, name) for s in slots)
    finally:
        drop_test_database(pg_server.dsn, name)
    assert pg_query(pg_server.dsn, _SLOTS, slots) == []
    assert pg_query(pg_server.dsn, _DATABASE, name) == []


def test_teardown_terminates_a_walsender_holding_a_slot(pg_server, names):
    recvlogical = pg_server.bindir / "pg_recvlogical"
    name, db_dsn = create_test_database(pg_server.dsn)
    try:
        pg_exec(
            db_dsn, "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", names.slot
        )
        reader = subprocess.Popen(
            [recvlogical, "-d", db_dsn, "-S", names.slot, "--start", "--no-loop", "-f", "-"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_until_active(pg_server.dsn, names.slot, reader)
            drop_test_database(pg_server.dsn, name)
            reader.wait(timeout=10)  # its walsender was terminated, so it has nothing to read
        finally:
            if reader.poll() is None:
                reader.kill()
            reader.communicate()
    finally:
        drop_test_database(pg_server.dsn, name)
    assert pg_query(pg_server.dsn, _SLOTS, [names.slot]) == []
    assert pg_query(pg_server.dsn, _DATABASE, name) == []


def _wait_until_active(admin_dsn: str, slot: str, reader: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 10
    query = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
    while pg_query(admin_dsn, query, slot) != [(True,)]:
        if reader.poll() is not None or time.monotonic() > deadline:
            reader.kill()
            pytest.fail(f"pg_recvlogical never held the slot: {reader.communicate()[1]}")
        time.sleep(0.05)


def test_names_are_unique(names):
    made = [names.slot, names.publication, names.new(), names.new()]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"vs_test_[0-9a-f]{12}", name) for name in made)


def test_restart_keeps_the_server_reachable(pg_server, dsn):
    pg_exec(dsn, "CREATE TABLE kept (x int)")
    pg_server.restart()
    assert pg_query(dsn, "SELECT count(*) FROM kept") == [(0,)]
