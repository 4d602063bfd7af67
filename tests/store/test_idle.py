"""An idle publication must not pin WAL: the keepalive position is persisted and acknowledged."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import pg_exec, pg_query
from runner import PipelineThread

RETAINED = (
    "SELECT slot_name, pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots "
    "WHERE slot_name = ANY(%s)"
)


def test_writes_to_unpublished_tables_do_not_grow_retained_wal(
    dsn: str, tmp_path: Path, names
) -> None:  # type: ignore[no-untyped-def]
    pg_exec(dsn, "CREATE TABLE published (id int PRIMARY KEY); CREATE TABLE other (v text)")
    control = names.new()  # a slot nobody reads: it retains everything, for comparison
    with PipelineThread(
        dsn, tmp_path / "data", slot=names.slot, publication=names.publication, tables=["published"]
    ) as p:
        pg_exec(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", control)
        for _ in range(15):
            pg_exec(dsn, "INSERT INTO other SELECT repeat('x', 200) FROM generate_series(1, 20000)")
            # A checkpoint logs the running transactions, which lets restart_lsn move on.
            pg_exec(dsn, "CHECKPOINT")
            time.sleep(0.3)
            p.check()
        time.sleep(1.5)  # one more idle acknowledgement
        pg_exec(dsn, "CHECKPOINT")
        time.sleep(1.5)
        retained = dict(pg_query(dsn, RETAINED, [names.slot, control]))
    assert retained[control] > 50_000_000, retained  # the load wrote this much WAL
    assert retained[names.slot] < 16_000_000, retained  # bounded: not the whole load
