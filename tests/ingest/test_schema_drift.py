"""Key and schema changes that the column names and type OIDs do not show (issue 18, items 4
and 5): a new primary key, another replica identity index, REPLICA IDENTITY NOTHING, a typmod
change, a column dropped and added again under its name, an `ALTER COLUMN ... TYPE ... USING`
rewrite. None of them is replicated as row changes, so each
leaves the mirror and the views silently wrong unless it stops the store; the hint, followed
literally, rebuilds a store equal to Postgres. A change between REPLICA IDENTITY DEFAULT and
FULL keeps the key and is followed."""

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

VIEW_SQL = "SELECT count(*) AS n, sum(v) AS s, sum(n) AS ns FROM t"
SCHEMA = (
    "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, n numeric(10,2), w int);"
    "INSERT INTO t SELECT g, g, g + 0.25, g FROM generate_series(1, 20) g"
)
CHANGES = {
    "new-primary-key": "ALTER TABLE t DROP CONSTRAINT t_pkey, ADD PRIMARY KEY (v);"
    "UPDATE t SET w = 0 WHERE id = 3",
    "identity-index": "CREATE UNIQUE INDEX t_v ON t (v); ALTER TABLE t REPLICA IDENTITY USING "
    "INDEX t_v; DELETE FROM t WHERE id = 4",
    "identity-nothing": "ALTER TABLE t REPLICA IDENTITY NOTHING; INSERT INTO t VALUES (99, 99)",
    "typmod": "ALTER TABLE t ALTER COLUMN n TYPE numeric(10,1); UPDATE t SET w = 0 WHERE id = 3",
    "drop-and-re-add": "ALTER TABLE t DROP COLUMN w; ALTER TABLE t ADD COLUMN w int;"
    "UPDATE t SET v = v WHERE id = 3",
    "type-using": "ALTER TABLE t ALTER COLUMN v TYPE int USING v * 2; UPDATE t SET w = 0 WHERE id = 3",
}


def _views(tmp_path: Path) -> dict[str, object]:
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW_SQL};\n")
    return {"views_file": views}


def _equal(dsn: str, data: Path) -> None:
    assert_mirror_equals(dsn, data, "t")
    assert_view_equals(dsn, data, "totals", VIEW_SQL)


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_change_while_running_stops(dsn: str, tmp_path: Path, change: str) -> None:
    pg_exec(dsn, SCHEMA)
    data, config = tmp_path / "data", _views(tmp_path)
    p = PipelineThread(dsn, data, catalog_check_interval=0.2, **config).start()  # type: ignore[arg-type]
    wait_caught_up(dsn, data, alive=p.check)
    pg_exec(dsn, change)
    p.thread.join(30)
    assert not p.thread.is_alive(), f"the pipeline kept running after: {change}"
    assert isinstance(p.error, ViewstoreError), p.error
    assert "public.t" in str(p.error), p.error
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data), **config)
    assert hints and "--resnapshot" in hints[-1], hints


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_change_while_down_is_refused(dsn: str, tmp_path: Path, change: str) -> None:
    pg_exec(dsn, SCHEMA)
    data, config = tmp_path / "data", _views(tmp_path)
    with PipelineThread(dsn, data, **config) as p:  # type: ignore[arg-type]
        wait_caught_up(dsn, data, alive=p.check)
    pg_exec(dsn, change)
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data), **config)
    assert hints and "--resnapshot" in hints[-1], hints


def test_replica_identity_full_and_back_is_followed(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    data, config = tmp_path / "data", _views(tmp_path)
    with PipelineThread(dsn, data, catalog_check_interval=0.2, **config) as p:  # type: ignore[arg-type]
        wait_caught_up(dsn, data, alive=p.check)
        pg_exec(dsn, "ALTER TABLE t REPLICA IDENTITY FULL; UPDATE t SET v = v + 1 WHERE id < 5")
        pg_exec(dsn, "DELETE FROM t WHERE id = 7")
        wait_caught_up(dsn, data, alive=p.check)
        pg_exec(dsn, "ALTER TABLE t REPLICA IDENTITY DEFAULT; DELETE FROM t WHERE id = 8")
        wait_caught_up(dsn, data, alive=p.check)
        _equal(dsn, data)
