"""Test helpers: one-shot SQL, and the lifecycle of the per-test databases.

`pg_exec` and `pg_query` open a connection, run one statement in autocommit and close it: tests
use them to arrange and inspect server state without sharing a session with the code under test.
`create_test_database` and `drop_test_database` are what the `dsn` fixture runs; they are here so
that tests of the harness itself can run them too.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.abc import Query
from psycopg.conninfo import make_conninfo

CONNECT_TIMEOUT = 10


def pg_exec(dsn: str, query: Query, *params: Any) -> None:
    """Run one statement in autocommit."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        conn.execute(query, params or None)


def pg_query(dsn: str, query: Query, *params: Any) -> list[tuple[Any, ...]]:
    """Run one query in autocommit and return all its rows."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        return conn.execute(query, params or None).fetchall()


def unique_name(prefix: str = "vs_test_") -> str:
    """A name no other test uses: tests run against shared servers, and slots outlive sessions."""
    return prefix + uuid.uuid4().hex[:12]


def create_test_database(admin_dsn: str) -> tuple[str, str]:
    """Create an empty database; return its name and a DSN for it (same server and user)."""
    name = unique_name("test_")
    pg_exec(admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_conninfo(admin_dsn, dbname=name)


def drop_slots(admin_dsn: str, where: sql.Composable, *params: Any, timeout: float = 10) -> None:
    """Drop the replication slots selected by `where` (on pg_replication_slots).

    A slot in use cannot be dropped, so its walsender is terminated first; the slot is released
    when that process exits, which takes a moment, hence the retries. Raises if slots remain
    after `timeout` seconds: a leaked slot holds WAL on the server for ever.
    """
    query = sql.SQL("SELECT slot_name, active_pid FROM pg_replication_slots WHERE {}").format(where)
    deadline = time.monotonic() + timeout
    while slots := pg_query(admin_dsn, query, *params):
        for slot, pid in slots:
            if pid is not None:
                pg_exec(admin_dsn, "SELECT pg_terminate_backend(%s)", pid)
                continue
            # Taken again, or dropped by its owner meanwhile: the next round looks again.
            with contextlib.suppress(errors.ObjectInUse, errors.UndefinedObject):
                pg_exec(admin_dsn, "SELECT pg_drop_replication_slot(%s)", slot)
        if time.monotonic() > deadline:
            raise AssertionError(f"replication slots still there after {timeout}s: {slots}")
        time.sleep(0.05)


def drop_test_database(admin_dsn: str, name: str, timeout: float = 10) -> None:
    """Drop every replication slot of database `name`, then the database.

    Slots belong to a database (pg_replication_slots.database) and Postgres refuses to drop a
    database that still has one, so once this returns no slot created in it can have leaked.
    """
    deadline = time.monotonic() + timeout
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    while True:
        drop_slots(admin_dsn, sql.SQL("database = %s"), name, timeout=timeout)
        try:
            pg_exec(admin_dsn, drop)
            return
        except errors.ObjectInUse:
            # A walsender still connected created a slot after we looked: go round again.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
