"""The disk fills while viewstore streams (issue 19.1): a clear error, nothing acknowledged past
what is durable, and after space is freed a restart converges to Postgres.

The fault is real: the data directory lives on a small tmpfs mounted for the test (root only;
the test is skipped, saying so, where mounting is not allowed), filled with a ballast file until
a few hundred kB remain, then Postgres is written to faster than that can hold.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import pg_exec, pg_query
from runner import (
    assert_mirror_equals,
    assert_stopped_with,
    assert_view_equals,
    kill9,
    restart_until_caught_up,
    slot_confirmed_lsn,
    start_process,
    view_rows,
    wait_caught_up,
)

from viewstore.store.db import Store

VIEW = "SELECT g, SUM(v) AS total, COUNT(*) AS n FROM t GROUP BY g"
FREE_SPACE = "Try: free space on the disk that holds {data}, then start viewstore again"
SIZE_MB = 96


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}M", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free on the filesystem of `mount`."""
    ballast = mount / "ballast"
    st = os.statvfs(mount)
    free = st.f_bavail * st.f_frsize
    with open(ballast, "wb") as f:
        block = b"\0" * (1 << 20)
        remaining = free - leave
        while remaining > 0:
            remaining -= f.write(block[: min(len(block), remaining)])
    return ballast


def test_disk_full_while_streaming_stops_cleanly_and_resumes(
    dsn: str, tmp_path: Path, small_disk: Path
) -> None:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int, pad text)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 50, i, '' FROM generate_series(1, 1000) i")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = small_disk / "data"
    log = tmp_path / "run.log"
    proc = start_process(dsn, data, "--views", str(views), "-v", log=log)
    try:
        wait_caught_up(dsn, data, alive=lambda: proc.poll() is None or pytest.fail(log.read_text()))
        ballast = _fill(small_disk, leave=256 << 10)
        for first in range(1001, 200_001, 20_000):  # ~40 MB of rows: more than is left
            pg_exec(
                dsn,
                "INSERT INTO t SELECT i, i %% 50, i, repeat('x', 150) "
                "FROM generate_series(%s::int, %s::int) i",
                first,
                first + 19_999,
            )
            if proc.poll() is not None:
                break
        assert_stopped_with(proc, log, "No space left on device", FREE_SPACE.format(data=data))
    finally:
        if proc.poll() is None:
            kill9(proc)
    ballast.unlink()
    with Store.open(data, readonly=True) as store:
        applied = store.applied_lsn()
    assert slot_confirmed_lsn(dsn) <= applied  # nothing acknowledged that the store lacks
    # Space freed: a restart converges, the view included.
    restart_until_caught_up(
        dsn, data, "--views", str(views), log=log, then="UPDATE t SET v = -v WHERE id % 97 = 0"
    )
    rows = pg_query(dsn, "SELECT count(*) FROM t")[0][0]
    assert rows > 100_000  # the disk did fill mid-load
    assert assert_mirror_equals(dsn, data, "t") == rows
    assert_view_equals(dsn, data, "totals", VIEW)


def test_disk_full_during_the_snapshot_stops_cleanly_and_starts_again(
    dsn: str, tmp_path: Path, small_disk: Path
) -> None:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int, pad text)")
    pg_exec(
        dsn, "INSERT INTO t SELECT i, i % 50, i, repeat('y', 150) FROM generate_series(1, 150000) i"
    )
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = small_disk / "data"
    log = tmp_path / "run.log"
    ballast = _fill(small_disk, leave=4 << 20)  # the table's table files take ~25 MB
    proc = start_process(dsn, data, "--views", str(views), "--snapshot-workers", "2", log=log)
    try:
        assert_stopped_with(proc, log, "No space left on device", FREE_SPACE.format(data=data))
    finally:
        if proc.poll() is None:
            kill9(proc)
    ballast.unlink()
    restart_until_caught_up(
        dsn, data, "--views", str(views), log=log, then="UPDATE t SET v = -v WHERE id % 97 = 0"
    )
    assert assert_mirror_equals(dsn, data, "t") == 150_000
    assert_view_equals(dsn, data, "totals", VIEW)
    # The first start's slot was replaced, not left behind.
    assert (
        len(pg_query(dsn, "SELECT 1 FROM pg_replication_slots WHERE database = current_database()"))
        == 1
    )


def test_disk_full_during_a_history_sync_says_so_and_the_next_sync_is_exact(
    dsn: str, tmp_path: Path, small_disk: Path
) -> None:
    # The DuckDB copy of the history lives in the data directory: a sync that meets a full disk
    # stops with the reason, and once space is freed the next sync gives every change once.
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int, pad text)")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = small_disk / "data"
    log = tmp_path / "run.log"
    proc = start_process(dsn, data, "--views", str(views), log=log)
    try:
        wait_caught_up(dsn, data, alive=lambda: proc.poll() is None or pytest.fail(log.read_text()))
        assert view_rows(data, "totals") == []  # built (empty): the inserts below are history
        for first in range(1, 60_001, 2_000):  # 30 transactions of 2,000 rows: 50 groups each
            pg_exec(
                dsn,
                "INSERT INTO t SELECT i, i %% 50, i, '' FROM generate_series(%s::int, %s::int) i",
                first,
                first + 1_999,
            )
        wait_caught_up(dsn, data, alive=lambda: proc.poll() is None or pytest.fail(log.read_text()))
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            kill9(proc)
    ballast = _fill(small_disk, leave=64 << 10)
    query = "SELECT count(*) AS n, count(DISTINCT lsn) AS txns FROM totals"
    full = _history(data, query)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "No space left on device" in full.stderr, full.stderr
    assert f"Try: free space on the disk that holds {data}" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr
    ballast.unlink()
    synced = _history(data, query)
    assert synced.returncode == 0, synced.stderr
    # Every transaction changed the 50 groups: each change once.
    assert "1500 | 30" in synced.stdout, synced.stdout


def _history(data: Path, sql: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", "history", "--data", str(data), sql],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_disk_full_during_a_view_build_stops_cleanly_and_builds_again(
    dsn: str, tmp_path: Path, small_disk: Path
) -> None:
    # The mirror fits; the view (each row twice as wide, and its history) does not.
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int, pad text)")
    pg_exec(
        dsn,
        "INSERT INTO t SELECT i, i % 50, i, repeat(md5(i::text), 16) FROM generate_series(1, 20000) i",
    )
    wide = "SELECT id, pad || '|' || pad AS wide FROM t"
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW wide AS {wide};\n")
    data = small_disk / "data"
    log = tmp_path / "run.log"
    ballast = _fill(small_disk, leave=28 << 20)
    proc = start_process(dsn, data, "--views", str(views), log=log)
    try:
        assert_stopped_with(
            proc,
            log,
            "snapshot complete",
            "view wide: building",
            "No space left on device",
            FREE_SPACE.format(data=data),
        )
    finally:
        if proc.poll() is None:
            kill9(proc)
    ballast.unlink()
    restart_until_caught_up(
        dsn,
        data,
        "--views",
        str(views),
        log=log,
        then="UPDATE t SET pad = 'short' WHERE id % 97 = 0",
    )
    assert assert_view_equals(dsn, data, "wide", wide) == 20_000
