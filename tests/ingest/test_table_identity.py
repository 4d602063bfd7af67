"""Relation identity: a published table dropped and recreated under the same name is another
table. Its predecessor's rows must never stay in the mirror or the views: the store stops with
a hint, and the hint, followed literally, rebuilds a store equal to Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import pg_exec
from runner import (
    PipelineThread,
    assert_mirror_equals,
    assert_view_equals,
    run_following_hints,
    wait_caught_up,
)

from viewstore.errors import ViewstoreError

VIEW_SQL = "SELECT count(*) AS n, sum(v) AS s FROM t"
VIEWS = f"CREATE MATERIALIZED VIEW totals AS {VIEW_SQL};\n"
OLD = "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 50) g"
NEW = "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1000, 7)"


def _config(tmp_path: Path, with_views: bool) -> dict[str, object]:
    if not with_views:
        return {}  # no tables named: the publication is FOR ALL TABLES
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    return {"views_file": views}  # the publication is FOR TABLE t


def _equal(dsn: str, data: Path, with_views: bool, rows: int) -> None:
    assert assert_mirror_equals(dsn, data, "t") == rows
    if with_views:
        assert_view_equals(dsn, data, "totals", VIEW_SQL)


@pytest.mark.parametrize("with_views", [False, True], ids=["all-tables", "for-table"])
def test_table_recreated_while_down(dsn: str, tmp_path: Path, with_views: bool) -> None:
    pg_exec(dsn, OLD)
    data, config = tmp_path / "data", _config(tmp_path, with_views)
    with PipelineThread(dsn, data, **config) as p:  # type: ignore[arg-type]
        wait_caught_up(dsn, data, alive=p.check)
    pg_exec(dsn, NEW)  # a FOR TABLE publication loses the dropped table; the new one is not in it
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data, with_views, 1), **config)
    assert hints and "--resnapshot" in hints[-1], hints
    with PipelineThread(dsn, data, **config) as p:  # type: ignore[arg-type]
        pg_exec(dsn, "INSERT INTO t VALUES (1001, 8)")  # and it follows the new table
        wait_caught_up(dsn, data, alive=p.check)
        _equal(dsn, data, with_views, 2)


@pytest.mark.parametrize("with_views", [False, True], ids=["all-tables", "for-table"])
def test_table_recreated_while_running(dsn: str, tmp_path: Path, with_views: bool) -> None:
    pg_exec(dsn, OLD)
    data, config = tmp_path / "data", _config(tmp_path, with_views)
    p = PipelineThread(dsn, data, catalog_check_interval=0.2, **config).start()  # type: ignore[arg-type]
    wait_caught_up(dsn, data, alive=p.check)
    pg_exec(dsn, NEW)
    p.thread.join(30)
    assert not p.thread.is_alive(), "the pipeline kept running over a recreated table"
    assert isinstance(p.error, ViewstoreError), p.error
    assert "public.t" in str(p.error), p.error
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data, with_views, 1), **config)
    assert hints and "--resnapshot" in hints[-1], hints
