"""Large transactions: applied in chunks with an undo log, in bounded memory, still atomic.

Thresholds are lowered so that a few thousand rows count as large; the mechanism is the same
as for the 5-million-row transaction measured by scripts/bench_ingest.py --big-txn.
"""

from __future__ import annotations

import signal
from pathlib import Path

from helpers import pg_exec
from runner import (
    PipelineThread,
    assert_mirror_equals,
    mirror_rows,
    source_rows,
    start_process,
    wait_caught_up,
)

from viewstore.store.db import Store

SMALL = {"large_txn_rows": 2000, "chunk_rows": 500}
BIG = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))"


def _schema(dsn: str) -> None:
    pg_exec(
        dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v int, doc text);"
        "CREATE TABLE side (id int PRIMARY KEY, v int);"
        f"INSERT INTO t SELECT g, 0, CASE WHEN g % 500 = 0 THEN {BIG} END "
        "FROM generate_series(1, 3000) g;"
        "INSERT INTO side SELECT g, g FROM generate_series(1, 3000) g",
    )


LARGE_TXN = """
BEGIN;
INSERT INTO t SELECT g, 1, NULL FROM generate_series(3001, 8000) g;
UPDATE t SET v = v + 10 WHERE id <= 2000;            -- TOASTed docs stay unchanged ('u')
UPDATE t SET id = id + 100000 WHERE id BETWEEN 2001 AND 2100;
DELETE FROM t WHERE id BETWEEN 2101 AND 2600;
INSERT INTO t VALUES (2101, 99, 'back again');       -- deleted, then inserted again
TRUNCATE side;
INSERT INTO side SELECT g, -g FROM generate_series(1, 2500) g;
COMMIT;
"""


def test_large_transactions_apply_in_chunks(dsn: str, tmp_path: Path) -> None:
    _schema(dsn)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, **SMALL) as p:
        wait_caught_up(dsn, data, alive=p.check)  # streaming, past the snapshot
        pg_exec(dsn, "INSERT INTO side VALUES (5000, 1)")  # a small one before ...
        pg_exec(dsn, LARGE_TXN)
        pg_exec(dsn, "UPDATE side SET v = 0 WHERE id = 1")  # ... and after
        wait_caught_up(dsn, data, alive=p.check)
        assert assert_mirror_equals(dsn, data, "t") == 7501
        assert assert_mirror_equals(dsn, data, "side") == 2500
        assert p.pipeline.large_txns, "the transaction was not treated as large"
    with Store.open(data, readonly=True) as store:
        assert store.meta.get(b"large_txn") is None
        assert list(store.undo.items()) == []
        counts = {name: store.row_count(info) for name, info in store.tables().items()}
    assert counts == {"public.t": 7501, "public.side": 2500}


def test_kill9_in_a_large_transaction_is_never_half_visible(dsn: str, tmp_path: Path) -> None:
    _schema(dsn)
    data = tmp_path / "data"
    flags = ["--large-txn-rows", "2000", "--chunk-rows", "500"]
    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    before_t = source_rows(dsn, "t", ["id", "v", "doc"])
    before_side = source_rows(dsn, "side", ["id", "v"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    pg_exec(dsn, LARGE_TXN)
    proc = start_process(dsn, data, *flags, env={"VIEWSTORE_CRASH_AT": "large-chunk:6"})
    assert proc.wait(60) == -signal.SIGKILL
    with Store.open(data, readonly=True) as store:
        assert store.meta.get(b"large_txn") is not None  # chunks of it are on disk ...
    # ... yet a reader sees the store exactly as before the transaction.
    assert mirror_rows(data, "t")[1] == before_t
    assert mirror_rows(data, "side")[1] == before_side

    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert assert_mirror_equals(dsn, data, "t") == 7501
    assert assert_mirror_equals(dsn, data, "side") == 2500
    log = data.with_suffix(".log").read_text()
    assert "rolled back a large transaction interrupted by a crash" in log
