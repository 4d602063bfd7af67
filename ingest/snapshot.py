"""Snapshot: every published table as it stood at the slot's consistent point.

The hand-off (seed 002): `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT` returns a consistent
point and a snapshot name. A second connection imports that snapshot in a REPEATABLE READ
transaction and COPYs each table; the stream then starts at the consistent point. Every
transaction is therefore seen exactly once: committed before the point, it is in the COPY;
after it, it is in the stream. Rows written while the COPY runs belong to the stream.

This module reads; it does not write the store. `SnapshotReader.rows` yields text tuples in the
same form pgoutput sends, and `Progress` reports rows and rows/s for long tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from viewstore.ingest.copytext import parse_copy_row
from viewstore.ingest.pgconn import connect, copy_out, qualified, query, quote_ident, quote_literal
from viewstore.ingest.setup import PublishedTable

log = logging.getLogger("viewstore.snapshot")


class SnapshotReader:
    """A connection that has imported an exported snapshot and COPYs tables inside it."""

    def __init__(self, dsn: str, snapshot_name: str) -> None:
        self.conn: Any = connect(dsn, application_name="viewstore snapshot")
        # Must run before the replication connection issues its next command: the exported
        # snapshot disappears then.
        query(self.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        query(self.conn, f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot_name)}")

    def estimated_rows(self, table: PublishedTable) -> int:
        rows = query(
            self.conn,
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            (qualified(table.schema, table.name),),
        )
        return max(int(rows[0][0]), 0) if rows else 0

    def rows(self, table: PublishedTable) -> Iterator[tuple[bytes | None, ...]]:
        """Every row of `table` in the snapshot, columns in the order pgoutput sends them."""
        columns = ", ".join(quote_ident(name) for name, _ in table.columns)
        sql = f"COPY {qualified(table.schema, table.name)} ({columns}) TO STDOUT"
        for data in copy_out(self.conn, sql):
            yield parse_copy_row(data)

    def close(self) -> None:
        query(self.conn, "COMMIT")
        self.conn.close()
