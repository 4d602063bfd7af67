"""History copy: sync a data directory's DuckDB copy of the history, and connect to it.

The copy itself is `viewstore.history.duckdb_copy`; this opens the store read-only (so it can run
while `viewstore run` writes it) and hands it the store's ready views.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from viewstore.history import duckdb_copy
from viewstore.history.duckdb_copy import SyncResult
from viewstore.store.db import Store
from viewstore.store.viewcatalog import ViewInfo, stored_views

_LOCK_WAIT = 30.0  # seconds to wait for another process to close the copy


def sync(
    data_dir: str | Path,
    *,
    batch_rows: int = 200_000,
    wait: float = _LOCK_WAIT,
    crash: Callable[[str], None] | None = None,
) -> SyncResult:
    """Bring the DuckDB copy of the history up to the store's applied LSN (`crash`: the
    test hook of `duckdb_copy.sync_store`)."""
    store = Store.open(data_dir, readonly=True)
    try:
        views = {name: info for name, info in stored_views(store).items() if info.state == "ready"}
        hook = {} if crash is None else {"crash": crash}
        return duckdb_copy.sync_store(
            store,
            views,
            data_dir,
            batch_rows=batch_rows,
            wait=wait,
            open_store=functools.partial(open_read_only, str(data_dir)),
            **hook,
        )
    finally:
        store.close()


def connect(
    data_dir: str | Path,
    *,
    sync_first: bool = True,
    wait: float = _LOCK_WAIT,
    allow_files: bool = False,
) -> Any:
    """A read-only DuckDB connection to the history tables (synced first, unless told not to),
    sandboxed unless `allow_files` (duckdb_copy.connect)."""
    if sync_first:
        sync(data_dir, wait=wait)
    return duckdb_copy.connect(data_dir, wait=wait, allow_files=allow_files)


def open_read_only(data_dir: str) -> tuple[Store, dict[str, ViewInfo]]:
    """The store, opened read-only, and its views: how the process that reads a large sync's
    log (`history.logprocess`) opens it for itself."""
    store = Store.open(data_dir, readonly=True)
    return store, stored_views(store)
