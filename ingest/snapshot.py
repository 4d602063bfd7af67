"""Snapshot: every published table as it stood at the slot's consistent point.

The hand-off (seed 002): `CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT` returns a consistent
point and a snapshot name. Other connections import that snapshot in REPEATABLE READ
transactions and COPY the tables; the stream then starts at the consistent point. Every
transaction is therefore seen exactly once: committed before the point, it is in the COPY;
after it, it is in the stream. Rows written while the COPY runs belong to the stream.

Parallel copy (issue 14): any number of `SnapshotReader`s may import the same snapshot, each on
its own connection, and all of them see exactly the same rows. `plan_parts` cuts the tables
into `CopyPart`s that the readers copy at once: whole small tables, and large ones in ranges of
heap pages (`ctid`, a TID range scan from Postgres 14 on); the last range of a table is open at
its end, so a table that grew since its size was read is still copied whole. Every row of the
snapshot is in exactly one part.

This module reads; it does not write the store. `SnapshotReader.chunks` yields COPY text in
chunks of whole rows (`copychunks` parses them column by column); `rows` yields text tuples in
the same form pgoutput sends, row by row (the reference the columnar path is tested against).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from viewstore.ingest.copytext import parse_copy_row
from viewstore.ingest.pgconn import (
    connect,
    copy_chunks,
    copy_out,
    qualified,
    query,
    quote_ident,
    quote_literal,
    read_raw_text,
)
from viewstore.ingest.psqlcopy import PsqlCopy
from viewstore.ingest.setup import PublishedTable

log = logging.getLogger("viewstore.snapshot")

TID_RANGE_SCAN = 140000  # server_version_num from which a ctid range is a TID range scan
PART_PAGES = 1024  # a table is cut into ranges of at least this many 8 kB pages (8 MB) ...
PARTS_PER_WORKER = 4  # ... and at most this many per worker, for balance at the end
APPLICATION_NAME = "viewstore snapshot"  # of every connection that copies


@dataclass(frozen=True)
class CopyPart:
    """A table, or the range [first_page, end_page) of its heap pages (end None: to its end)."""

    table: PublishedTable
    first_page: int | None = None
    end_page: int | None = None

    @property
    def whole(self) -> bool:
        return self.first_page is None and self.end_page is None

    def sql(self) -> str:
        t = self.table
        columns = ", ".join(quote_ident(name) for name, _ in t.columns)
        if self.whole:
            return f"COPY {qualified(t.schema, t.name)} ({columns}) TO STDOUT"
        # Same columns, same output functions: the text is byte for byte the whole-table COPY's.
        # ONLY: COPY of a table reads no inheritance children, a SELECT would.
        where = [f"ctid >= '({self.first_page or 0},0)'::tid"]
        if self.end_page is not None:
            where.append(f"ctid < '({self.end_page},0)'::tid")
        return (
            f"COPY (SELECT {columns} FROM ONLY {qualified(t.schema, t.name)} "
            f"WHERE {' AND '.join(where)}) TO STDOUT"
        )


def plan_parts(
    tables: list[PublishedTable], pages: dict[str, int], workers: int, *, tid_ranges: bool
) -> list[CopyPart]:
    """The parts to copy, largest first (so that the last ones to finish are small).

    A table of `pages[qualified name]` pages is cut into ranges when `tid_ranges` (the server
    scans TID ranges) and it has at least two `PART_PAGES`; otherwise it is one part.
    """
    parts: list[tuple[int, CopyPart]] = []
    for t in tables:
        n = pages.get(t.qualified, 0)
        count = min(n // PART_PAGES, workers * PARTS_PER_WORKER) if tid_ranges else 1
        if count < 2:
            parts.append((n, CopyPart(t)))
            continue
        bounds = [n * i // count for i in range(count)]
        for i, first in enumerate(bounds):
            end = bounds[i + 1] if i + 1 < count else None
            parts.append(((end or n) - first, CopyPart(t, first, end)))
    parts.sort(key=lambda p: -p[0])
    return [p for _, p in parts]


class SnapshotReader:
    """A connection that has imported an exported snapshot and COPYs tables inside it."""

    def __init__(
        self,
        dsn: str,
        snapshot_name: str,
        psql: PsqlCopy | None = None,
        *,
        raw_text: bool = False,
    ) -> None:
        """`raw_text`: COPY text as stored, for a SQL_ASCII database (ingest.sourcetext)."""
        self.snapshot_name = snapshot_name
        self.psql = psql  # reads the COPYs through psql when set (ingest.psqlcopy)
        self.raw_text = raw_text
        self.conn: Any = connect(dsn, application_name=APPLICATION_NAME)
        # Must run before the replication connection issues its next command: the exported
        # snapshot disappears then.
        query(self.conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        query(self.conn, f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot_name)}")
        if raw_text:
            read_raw_text(self.conn)

    @property
    def server_version(self) -> int:
        return int(self.conn.info.server_version)

    def estimated_rows(self, table: PublishedTable) -> int:
        """Postgres's estimate of the table's rows, for progress: `pg_class.reltuples`, or
        the statistics' live rows when the table was never vacuumed or analyzed (-1)."""
        rows = query(
            self.conn,
            "SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint "
            "ELSE coalesce(s.n_live_tup, 0) END "
            "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = %s::regclass",
            (qualified(table.schema, table.name),),
        )
        return max(int(rows[0][0]), 0) if rows else 0

    def pages(self, table: PublishedTable) -> int:
        """The table's heap pages now (not as of the snapshot: plan_parts leaves the end open)."""
        rows = query(
            self.conn,
            "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
            (qualified(table.schema, table.name),),
        )
        return int(rows[0][0]) if rows else 0

    def rows(self, table: PublishedTable) -> Iterator[tuple[bytes | None, ...]]:
        """Every row of `table` in the snapshot, columns in the order pgoutput sends them."""
        for data in copy_out(self.conn, CopyPart(table).sql()):
            yield parse_copy_row(data)

    def chunks(self, part: CopyPart, chunk_bytes: int) -> Iterator[bytearray]:
        """The part's rows as COPY text, in chunks of whole rows of `chunk_bytes` or more.
        Stopping before the end leaves the connection unusable: `abort` it."""
        if self.psql is not None:
            yield from self.psql.chunks(
                self.snapshot_name, part.sql(), chunk_bytes, raw_text=self.raw_text
            )
        else:
            yield from copy_chunks(self.conn, part.sql(), chunk_bytes)

    def close(self) -> None:
        query(self.conn, "COMMIT")
        self.conn.close()

    def abort(self) -> None:
        """Close the connection whatever it is doing (the server ends the transaction)."""
        self.conn.close()
