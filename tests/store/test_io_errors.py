"""A disk that fails (EIO) under a running viewstore (issue 19.1): a clear error, nothing
acknowledged past what is durable, and a restart once the disk works converges to Postgres.

The fault is injected with libfiu (Debian's fiu-utils, installed by scripts/test): viewstore
runs under `fiu-run -x`, its POSIX preload library, and once it streams, `fiu-ctrl` makes every
`fdatasync` (what RocksDB calls to make a write durable) fail with EIO. Only syncs fail, so the
sockets to Postgres keep working and the error is the disk's alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import pg_exec
from runner import (
    assert_mirror_equals,
    assert_stopped_with,
    assert_view_equals,
    kill9,
    restart_until_caught_up,
    slot_confirmed_lsn,
    wait_caught_up,
)

from viewstore.store.db import Store

VIEW = "SELECT g, SUM(v) AS total, COUNT(*) AS n FROM t GROUP BY g"
EIO = 5


def test_eio_on_sync_while_streaming_stops_cleanly_and_resumes(dsn: str, tmp_path: Path) -> None:
    if shutil.which("fiu-run") is None:
        pytest.skip("fiu-run is not installed (Debian's fiu-utils; scripts/test installs it)")
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 20, i FROM generate_series(1, 1000) i")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = tmp_path / "data"
    log = tmp_path / "run.log"
    control = tmp_path / "fiu"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["fiu-run", "-x", "-f", str(control), sys.executable, "-m", "viewstore.cli", "run",
             "--dsn", dsn, "--data", str(data), "--views", str(views)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_caught_up(dsn, data, alive=lambda: proc.poll() is None or pytest.fail(log.read_text()))
        subprocess.run(
            ["fiu-ctrl", "-f", str(control), "-c",
             f"enable name=posix/io/sync/fdatasync,failinfo={EIO}", str(proc.pid)],
            check=True, timeout=30,
        )  # fmt: skip
        for i in range(20):  # each a transaction the store cannot make durable
            pg_exec(dsn, "UPDATE t SET v = v + 1 WHERE id %% 20 = %s", i)
            if proc.poll() is not None:
                break
        assert_stopped_with(
            proc,
            log,
            "Input/output error",
            f"Try: check the disk that holds {data} (the kernel's log: dmesg)",
        )
    finally:
        if proc.poll() is None:
            kill9(proc)
    with Store.open(data, readonly=True) as store:
        applied = store.applied_lsn()
    assert slot_confirmed_lsn(dsn) <= applied  # nothing acknowledged that the store lacks
    # The disk works again (a process without the fault): the restart converges.
    restart_until_caught_up(
        dsn, data, "--views", str(views), log=log, then="DELETE FROM t WHERE id % 7 = 0"
    )
    assert assert_mirror_equals(dsn, data, "t") == 858
    assert_view_equals(dsn, data, "totals", VIEW)
