"""The DuckDB copy's reading process (history.logprocess): it reads what the parent would, or
nothing.

The child opens the store for itself; a view rebuilt (or a history compacted) between the
parent's open and the child's would make it read another log than the parent's, so the child
refuses it, before any change is appended, and the next sync copies the log. The kill -9 of a
sync with a reading process is in test_duckdb_copy_kill.py.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import duckdb
import pytest
from test_duckdb_copy_kill import VIEW, _assert_copy_is_the_log, _write_log

from viewstore.errors import StoreError
from viewstore.history import duckdb_copy
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import put_info, stored_views


def test_a_view_rebuilt_between_the_opens_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIEWSTORE_SYNC_PROCESS_MIN", "0")
    data = tmp_path / "data"
    total, applied = _write_log(data, txns=200)
    # What the child will open: the same store, but its view rebuilt (another fingerprint).
    other = tmp_path / "other"
    shutil.copytree(data, other)
    with Store.open(other) as store:
        info = stored_views(store)[VIEW]
        batch = store.new_batch()
        put_info(batch, store, info.model_copy(update={"fingerprint": "rebuilt"}))
        store.write(batch, sync=True)

    with Store.open(data, readonly=True) as store:
        views = stored_views(store)
        with pytest.raises(StoreError, match=f"view {VIEW} changed while the history copy"):
            duckdb_copy.sync_store(
                store,
                views,
                data,
                open_store=functools.partial(historycopy.open_read_only, str(other)),
            )
    con = duckdb.connect(str(duckdb_copy.copy_path(data)), read_only=True)
    try:
        [(synced, rows)] = con.execute(
            f"SELECT (SELECT synced_lsn FROM viewstore_sync), count(*) FROM {VIEW}"
        ).fetchall()
    finally:
        con.close()
    assert (synced, rows) == (0, 0), "nothing of the refused read is in the copy"

    assert historycopy.sync(data).rows == total
    assert _assert_copy_is_the_log(data) == (applied, total)
