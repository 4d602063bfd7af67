"""The DuckDB copy's reading process (history.logprocess): it reads what the parent would, or
nothing.

The child opens the store for itself; a view rebuilt (or a history compacted) between the
parent's open and the child's would make it read another log than the parent's, so the child
refuses it, before any change is appended, and the parent reads in a thread instead. A child
killed mid-sync fails the sync, which the next one completes. The kill -9 of the sync itself,
with a reading process, is in test_duckdb_copy_kill.py.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest
from test_duckdb_copy_kill import VIEW, _assert_copy_is_the_log, _write_log

from viewstore.errors import StoreError
from viewstore.history import duckdb_copy
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import put_info, stored_views


@pytest.mark.parametrize(
    ("other_store", "refused"),
    [
        ("rebuilt", f"view {VIEW} changed while the history copy read it"),
        ("behind", "the store the history copy reads is behind"),
    ],
)
def test_a_store_seen_otherwise_by_the_child_is_read_in_a_thread(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    other_store: str,
    refused: str,
) -> None:
    """The child refuses a store whose view differs from the parent's, or that has applied
    less (here another store with a shorter log: the view rebuilt, or the same view record);
    the sync then reads the log in a thread, from the parent's own snapshot, and the copy is
    the parent's log exactly."""
    monkeypatch.setenv("VIEWSTORE_SYNC_PROCESS_MIN", "0")
    data = tmp_path / "data"
    total, applied = _write_log(data)
    other = tmp_path / "other"
    _write_log(other, txns=300)  # a shorter log: read, it would make another copy
    if other_store == "rebuilt":
        with Store.open(other) as store:
            info = stored_views(store)[VIEW]
            batch = store.new_batch()
            put_info(batch, store, info.model_copy(update={"fingerprint": "rebuilt"}))
            store.write(batch, sync=True)

    with Store.open(data, readonly=True) as store:
        result = duckdb_copy.sync_store(
            store,
            stored_views(store),
            data,
            open_store=functools.partial(historycopy.open_read_only, str(other)),
        )
    assert refused in caplog.text
    assert "reading the log in a thread instead" in caplog.text
    assert result.rows == total
    assert _assert_copy_is_the_log(data) == (applied, total)


def _reading_children() -> list[int]:
    """This process's children running history.logprocess (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"viewstore.history.logprocess" in cmdline:
            found.append(int(proc.name))
    return found


def test_a_reading_process_killed_fails_the_sync_and_the_next_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child killed -9 mid-sync: the sync fails with a clear error, the copy stands at its
    last commit, the child's files are removed, and the next sync copies the rest once."""
    monkeypatch.setenv("VIEWSTORE_SYNC_PROCESS_MIN", "0")
    data = tmp_path / "data"
    total, applied = _write_log(data)
    killed: list[int] = []

    def kill_the_child(point: str) -> None:
        if point == "history-copy-committed" and not killed:
            killed.extend(_reading_children())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    before = set(Path("/dev/shm").glob("viewstore-sync-*"))
    with pytest.raises(StoreError, match="the process reading the log died") as failed:
        historycopy.sync(data, batch_rows=100, crash=kill_the_child)
    assert len(killed) == 1, killed
    assert "sync again" in (failed.value.hint or "")
    assert set(Path("/dev/shm").glob("viewstore-sync-*")) == before
    synced, rows = _assert_copy_is_the_log(data)
    assert 0 < synced < applied and 0 < rows < total

    assert historycopy.sync(data).rows == total - rows
    assert _assert_copy_is_the_log(data) == (applied, total)
