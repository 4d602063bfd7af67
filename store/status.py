"""Status: what a store has applied, readable from any process while `run` writes it.

While `run` copies the snapshot or builds views it records how far it is (`viewstore.progress`,
meta key `progress`); the report carries that record, per table and per view, and says plainly
when the views are not live yet: the applied LSN is then the mirror's, not the views'.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from viewstore.ingest.walproto import unix_us_to_datetime
from viewstore.progress import RunProgress, TaskProgress
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import row_count


class TableStatus(BaseModel):
    name: str
    rows: int
    progress: TaskProgress | None = None  # while the snapshot copies it


class ViewStatus(BaseModel):
    name: str
    # "ready"; "building" while it is built from the mirror; "pending" while the snapshot (or
    # another view's build) runs before its own
    state: str
    rows: int
    progress: TaskProgress | None = None  # while it is built


def run_state(progress: RunProgress | None) -> tuple[str | None, bool]:
    """A line on what `run` is doing, and whether its views are live (all built)."""
    if progress is None:
        return None, True
    if not progress.alive():
        where = "" if progress.phase == "streaming" else f" (it stopped during: {progress.phase})"
        return f"not running{where}", progress.phase == "streaming"
    return progress.describe(), progress.phase == "streaming"


class StatusReport(BaseModel):
    data_dir: str
    # What `run` is doing: "streaming", "snapshot: ...", "building view v: ...", "not running"
    state: str | None = None
    views_live: bool = True  # False while the views are built: applied_lsn is the mirror's
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
    progress: RunProgress | None = None


def read_status(data_dir: Path, dsn: str | None = None) -> StatusReport:
    """Open the store read-only (it sees every synced write) and describe it."""
    with Store.open(data_dir, readonly=True) as store:
        applied = store.applied_lsn()
        t = store.applied_time()
        snap = store.snapshot_state()
        source = store.source()
        stats = store.stats()
        progress = store.progress()
        live = progress is not None and progress.alive() and progress.phase != "streaming"

        def task(kind: str, name: str) -> TaskProgress | None:
            found = progress.task(kind, name) if live and progress else None
            return found if found is not None and not found.done else None

        tables = [
            TableStatus(name=name, rows=store.row_count(info), progress=task("snapshot", name))
            for name, info in sorted(store.tables().items())
        ]
        stored = stored_views(store)
        views = [
            ViewStatus(
                name=name,
                state=info.state,
                rows=row_count(store, info.view_id),
                progress=task("view", name) if info.state != "ready" else None,
            )
            for name, info in sorted(stored.items())
        ]
        if live and progress is not None:
            views += [
                ViewStatus(name=name, state="pending", rows=0)
                for name in sorted(set(progress.views) - set(stored))
            ]
    state, views_live = run_state(progress)
    report = StatusReport(
        data_dir=str(data_dir),
        state=state,
        views_live=views_live and all(v.state == "ready" for v in views),
        progress=progress,
        applied_lsn=str(applied),
        applied_time=None if t is None else unix_us_to_datetime(t).isoformat(),
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
