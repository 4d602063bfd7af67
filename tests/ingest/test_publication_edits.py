"""Publication edits (issue 18, item 6): a publication that stops sending a kind of change, a
table, or filters rows or columns loses changes the mirror needs. A row filter or column list
is refused before the snapshot (which would copy everything); a change of `publish` or a table
dropped from the publication while running stops the store. Each hint, followed literally,
rebuilds a store equal to Postgres."""

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
SCHEMA = (
    "CREATE TABLE t (id int PRIMARY KEY, v int, secret text);"
    "INSERT INTO t SELECT g, g, 'x' FROM generate_series(1, 20) g"
)


def _config(tmp_path: Path, publication: str) -> dict[str, object]:
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW_SQL};\n")
    return {"views_file": views, "publication": publication}


def _equal(dsn: str, data: Path) -> None:
    assert_mirror_equals(dsn, data, "t")
    assert_view_equals(dsn, data, "totals", VIEW_SQL)


@pytest.mark.parametrize(
    ("target", "what"),
    [("t WHERE (v > 10)", "a row filter"), ("t (id, v)", "a column list")],
    ids=["row-filter", "column-list"],
)
def test_filtered_publication_is_refused(
    dsn: str,
    tmp_path: Path,
    names,
    target: str,
    what: str,  # type: ignore[no-untyped-def]
) -> None:
    pg_exec(dsn, SCHEMA)
    pg_exec(dsn, f"CREATE PUBLICATION {names.publication} FOR TABLE {target}")
    data, config = tmp_path / "data", _config(tmp_path, names.publication)
    p = PipelineThread(dsn, data, slot=names.slot, **config).start()  # type: ignore[arg-type]
    p.thread.join(30)
    assert not p.thread.is_alive(), "a filtered publication was accepted"
    assert isinstance(p.error, ViewstoreError), p.error
    assert f"public.t ({what})" in str(p.error), p.error
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data), slot=names.slot, **config)
    assert hints[0].startswith(f'ALTER PUBLICATION "{names.publication}" SET TABLE'), hints


@pytest.mark.parametrize(
    "edit",
    ["SET (publish = 'insert, update')", "DROP TABLE t"],
    ids=["publish-option", "drop-table"],
)
def test_publication_edited_while_running_stops(
    dsn: str,
    tmp_path: Path,
    names,
    edit: str,  # type: ignore[no-untyped-def]
) -> None:
    pg_exec(dsn, SCHEMA)
    data, config = tmp_path / "data", _config(tmp_path, names.publication)
    p = PipelineThread(dsn, data, slot=names.slot, catalog_check_interval=0.2, **config).start()  # type: ignore[arg-type]
    wait_caught_up(dsn, data, alive=p.check)
    pg_exec(dsn, f"ALTER PUBLICATION {names.publication} {edit}")
    pg_exec(dsn, "DELETE FROM t WHERE id < 5")  # not sent any more
    p.thread.join(30)
    assert not p.thread.is_alive(), f"the pipeline kept running after ALTER PUBLICATION {edit}"
    assert isinstance(p.error, ViewstoreError), p.error
    hints = run_following_hints(dsn, data, lambda: _equal(dsn, data), slot=names.slot, **config)
    assert hints and "--resnapshot" in hints[-1], hints
