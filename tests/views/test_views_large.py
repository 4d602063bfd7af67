"""Large transactions with views: the views are written in the same chunks as the mirror, with
their before-images in the undo log, so a kill -9 in the middle is never half visible in a view
either, and the history gets the transaction's changes once."""

from __future__ import annotations

import signal
from pathlib import Path

from helpers import pg_exec
from runner import (
    PipelineThread,
    assert_view_equals,
    start_process,
    view_rows,
    wait_caught_up,
)

from viewstore.history.changelog import changes, rows_as_of
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views

SMALL = {"large_txn_rows": 2000, "chunk_rows": 500}

# As in tests/store/test_large.py: inserts, TOAST-unchanged updates, key changes, deletes,
# a TRUNCATE, all in one transaction of over 10,000 rows.
LARGE_TXN = """
BEGIN;
INSERT INTO t SELECT g, 1, NULL FROM generate_series(3001, 8000) g;
UPDATE t SET v = v + 10 WHERE id <= 2000;
UPDATE t SET id = id + 100000 WHERE id BETWEEN 2001 AND 2100;
DELETE FROM t WHERE id BETWEEN 2101 AND 2600;
INSERT INTO t VALUES (2101, 99, 'back again');
TRUNCATE side;
INSERT INTO side SELECT g, -g FROM generate_series(1, 2500) g;
COMMIT;
"""


def _schema(dsn: str) -> None:
    big = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))"
    pg_exec(
        dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v int, doc text);"
        "CREATE TABLE side (id int PRIMARY KEY, v int);"
        f"INSERT INTO t SELECT g, 0, CASE WHEN g % 500 = 0 THEN {big} END "
        "FROM generate_series(1, 3000) g;"
        "INSERT INTO side SELECT g, g FROM generate_series(1, 3000) g",
    )


VIEWS = {
    "by_v": "SELECT v % 7 AS bucket, count(*) AS n, sum(v) AS total, max(id) AS top "
    "FROM t GROUP BY v % 7",
    "joined": "SELECT t.id, t.v, s.v AS side_v FROM t JOIN side s ON s.id = t.id WHERE t.v > 0",
    "side_totals": "SELECT count(*) AS n, sum(v) AS total, min(v) AS low FROM side",
}


def _views_file(tmp_path: Path) -> Path:
    path = tmp_path / "views.sql"
    path.write_text(
        "".join(f"CREATE MATERIALIZED VIEW {n} AS {sql};\n" for n, sql in VIEWS.items())
    )
    return path


def _assert_views(dsn: str, data: Path) -> None:
    for name, sql in VIEWS.items():
        assert_view_equals(dsn, data, name, sql)


def test_large_transaction_moves_views_once(dsn: str, tmp_path: Path) -> None:
    _schema(dsn)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=_views_file(tmp_path), **SMALL) as p:
        wait_caught_up(dsn, data, alive=p.check)
        _assert_views(dsn, data)
        before = {n: view_rows(data, n) for n in VIEWS}
        with Store.open(data, readonly=True) as store:
            start = store.applied_lsn()
        pg_exec(dsn, LARGE_TXN)
        wait_caught_up(dsn, data, alive=p.check)
        assert p.pipeline.large_txns, "the transaction was not treated as large"
        _assert_views(dsn, data)
    with Store.open(data, readonly=True) as store:
        assert list(store.undo.items()) == []
        for name in VIEWS:
            vid = stored_views(store)[name].view_id
            # As of the LSN before the transaction, the history gives back the old rows.
            old = sorted(rows_as_of(store, vid, start).values(), key=repr)
            assert len(old) == len(before[name])
            lsns = {c.lsn for c in changes(store, vid, start + 1)}  # committed after start
            assert len(lsns) == 1, f"{name}: the transaction has changes at {lsns}"


def test_kill9_in_a_large_transaction_with_views(dsn: str, tmp_path: Path) -> None:
    _schema(dsn)
    data = tmp_path / "data"
    views = _views_file(tmp_path)
    flags = ["--views", str(views), "--large-txn-rows", "2000", "--chunk-rows", "500"]
    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    before = {n: view_rows(data, n) for n in VIEWS}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    pg_exec(dsn, LARGE_TXN)
    proc = start_process(dsn, data, *flags, env={"VIEWSTORE_CRASH_AT": "large-chunk:6"})
    assert proc.wait(60) == -signal.SIGKILL
    with Store.open(data, readonly=True) as store:
        assert store.meta.get(b"large_txn") is not None  # chunks of it are on disk ...
    # ... yet every view reads exactly as before the transaction.
    for name in VIEWS:
        assert view_rows(data, name) == before[name], name

    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    _assert_views(dsn, data)
