"""Status: what a store has applied, readable from any process while `run` writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import row_count


class TableStatus(BaseModel):
    name: str
    rows: int


class ViewStatus(BaseModel):
    name: str
    state: str  # "ready", or "building" while it is built from the mirror
    rows: int


class StatusReport(BaseModel):
    data_dir: str
    applied_lsn: str
    applied_time: str | None
    snapshot: str
    slot: str | None
    publication: str | None
    transactions: int
    rows: int
    tables: list[TableStatus]
    views: list[ViewStatus] = []
    server_lsn: str | None = None
    lag_bytes: int | None = None


def read_status(data_dir: Path, dsn: str | None = None) -> StatusReport:
    """Open the store read-only (it sees every synced write) and describe it."""
    with Store.open(data_dir, readonly=True) as store:
        applied = store.applied_lsn()
        t = store.applied_time()
        snap = store.snapshot_state()
        source = store.source()
        stats = store.stats()
        tables = [
            TableStatus(name=name, rows=store.row_count(info))
            for name, info in sorted(store.tables().items())
        ]
        views = [
            ViewStatus(name=name, state=info.state, rows=row_count(store, info.view_id))
            for name, info in sorted(stored_views(store).items())
        ]
    report = StatusReport(
        data_dir=str(data_dir),
        applied_lsn=str(applied),
        applied_time=None if t is None else datetime.fromtimestamp(t / 1e6, UTC).isoformat(),
        snapshot="none" if snap is None else snap.state,
        slot=source.slot if source else None,
        publication=source.publication if source else None,
        transactions=stats.get("transactions", 0),
        rows=stats.get("rows", 0),
        tables=tables,
        views=views,
    )
    if dsn:
        from viewstore.ingest.lsn import Lsn
        from viewstore.ingest.pgconn import connect, query

        conn = connect(dsn, application_name="viewstore status")
        try:
            (server,) = query(conn, "SELECT pg_current_wal_lsn()::text")[0]
        finally:
            conn.close()
        report.server_lsn = server
        report.lag_bytes = max(Lsn.parse(server) - applied, 0)
    return report
