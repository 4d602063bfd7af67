"""Postgres behind the store: a server restored from a backup, recovered to an earlier point
(a new timeline) or promoted after it had everything. The first two have lost transactions the
store applied, and new transactions take their LSNs: a resume would skip those silently. The
store refuses, and its hint, followed literally, rebuilds a store equal to Postgres. The third
loses nothing: the store follows it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import pg_exec, pg_query
from runner import (
    PipelineThread,
    assert_mirror_equals,
    assert_view_equals,
    current_lsn,
    run_following_hints,
    wait_caught_up,
)

from viewstore.errors import SlotError
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.db import Store
from viewstore.store.pipeline import Pipeline, RunConfig

VIEW_SQL = "SELECT count(*) AS n, sum(v) AS s FROM a"


@pytest.fixture
def pg() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        pg_exec(server.dsn, "CREATE TABLE a (id int PRIMARY KEY, v int)")
        yield server


def _views(tmp_path: Path) -> dict[str, object]:
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW_SQL};\n")
    return {"views_file": views}


def _insert(dsn: str, first: int, n: int) -> None:
    for i in range(first, first + n):  # one transaction each: many commit LSNs
        pg_exec(dsn, "INSERT INTO a VALUES (%s, %s)", i, i)


def _run_until_caught_up(dsn: str, data: Path, config: dict[str, object]) -> None:
    with PipelineThread(dsn, data, **config) as p:  # type: ignore[arg-type]
        wait_caught_up(dsn, data, alive=p.check)


def _equal(dsn: str, data: Path) -> None:
    assert_mirror_equals(dsn, data, "a")
    assert_view_equals(dsn, data, "totals", VIEW_SQL)


def _backup(pg: ThrowawayPostgres) -> Path:
    """A cold copy of the data directory (ownership kept)."""
    pg.shutdown()
    copy = pg.base_dir / "backup"
    shutil.copytree(pg.data_dir, copy, symlinks=True)
    shutil.copystat(pg.data_dir, copy)
    for path in [copy, *copy.rglob("*")]:
        st = (pg.data_dir / path.relative_to(copy)).stat()
        shutil.chown(path, st.st_uid, st.st_gid)
    pg.boot()
    return copy


def _boot(pg: ThrowawayPostgres) -> None:
    pg.boot()
    deadline = time.monotonic() + 60
    while pg_query(pg.dsn, "SELECT pg_is_in_recovery()")[0][0]:  # read-only until promoted
        assert time.monotonic() < deadline, "recovery did not end"
        time.sleep(0.1)


def _restore(pg: ThrowawayPostgres, copy: Path, *, new_timeline: bool) -> None:
    pg.shutdown()
    shutil.rmtree(pg.data_dir)
    copy.rename(pg.data_dir)
    if new_timeline:
        _recover_to_new_timeline(pg)
    _boot(pg)


def _recover_to_new_timeline(pg: ThrowawayPostgres) -> None:
    # Archive recovery with nothing in the archive replays pg_wal to its end, then starts a
    # new timeline: what a point-in-time recovery or a promoted replica looks like.
    with open(pg.data_dir / "postgresql.conf", "a") as conf:
        conf.write("restore_command = 'false'\n")
    signal = pg.data_dir / "recovery.signal"
    signal.touch()
    st = (pg.data_dir / "postgresql.conf").stat()
    shutil.chown(signal, st.st_uid, st.st_gid)


@pytest.mark.parametrize("new_timeline", [False, True], ids=["restored", "recovered"])
def test_server_restored_behind_the_store_is_refused(
    pg: ThrowawayPostgres, tmp_path: Path, new_timeline: bool
) -> None:
    data, config = tmp_path / "data", _views(tmp_path)
    _insert(pg.dsn, 1, 5)
    _run_until_caught_up(pg.dsn, data, config)
    copy = _backup(pg)
    _insert(pg.dsn, 100, 20)  # applied by the store, lost by the restore
    _run_until_caught_up(pg.dsn, data, config)
    _restore(pg, copy, new_timeline=new_timeline)
    _insert(pg.dsn, 200, 3)  # new transactions, at LSNs the store has passed already
    with pytest.raises(SlotError) as err:
        Pipeline(RunConfig(dsn=pg.dsn, data_dir=data, **config)).run()  # type: ignore[arg-type]
    assert "Postgres is behind the store" in str(err.value), err.value
    hints = run_following_hints(pg.dsn, data, lambda: _equal(pg.dsn, data), **config)
    assert len(hints) == 1 and "viewstore run --resnapshot" in hints[0], hints


def test_restored_server_whose_wal_passed_the_store_is_refused(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    """Restored on the same timeline, then written to until its WAL is past the applied LSN:
    the start checks cannot tell, the stream can (the store's last transaction is not resent
    where it was, sourcecheck.ResumeCheck)."""
    data, config = tmp_path / "data", _views(tmp_path)
    _insert(pg.dsn, 1, 5)
    _run_until_caught_up(pg.dsn, data, config)
    copy = _backup(pg)
    _insert(pg.dsn, 100, 20)  # applied by the store, lost by the restore
    _run_until_caught_up(pg.dsn, data, config)
    with Store.open(data, readonly=True) as store:
        applied = store.applied_lsn()
    _restore(pg, copy, new_timeline=False)
    _insert(pg.dsn, 200, 60)  # new transactions, at LSNs the store passed, and beyond
    assert current_lsn(pg.dsn) > applied
    # The start check compares the WAL *flush* position, which lags the commits here
    # (synchronous_commit is off): wait until it too has passed the applied LSN.
    deadline = time.monotonic() + 30
    while Lsn.parse(pg_query(pg.dsn, "SELECT pg_current_wal_flush_lsn()::text")[0][0]) <= applied:
        assert time.monotonic() < deadline, "the server's WAL was not flushed past the store"
        time.sleep(0.05)
    p = PipelineThread(pg.dsn, data, **config).start()  # type: ignore[arg-type]
    p.thread.join(60)
    if p.thread.is_alive():
        p.stop()
        raise AssertionError("the store followed a server restored behind it")
    assert isinstance(p.error, SlotError), p.error
    assert "Postgres is behind the store" in str(p.error), p.error
    assert "was not resent" in str(p.error), p.error
    with Store.open(data, readonly=True) as store:
        assert store.applied_lsn() == applied, "the stream applied something before stopping"
    hints = run_following_hints(pg.dsn, data, lambda: _equal(pg.dsn, data), **config)
    assert len(hints) == 1 and "viewstore run --resnapshot" in hints[0], hints


def test_new_timeline_that_kept_everything_is_followed(
    pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    data, config = tmp_path / "data", _views(tmp_path)
    _insert(pg.dsn, 1, 5)
    _run_until_caught_up(pg.dsn, data, config)
    pg.shutdown()
    _recover_to_new_timeline(pg)  # everything the store applied is before the switch
    _boot(pg)
    with PipelineThread(pg.dsn, data, **config) as p:  # type: ignore[arg-type]
        _insert(pg.dsn, 100, 5)
        wait_caught_up(pg.dsn, data, alive=p.check)
        _equal(pg.dsn, data)
    with Store.open(data, readonly=True) as store:
        source = store.source()
    assert source is not None and source.timeline == 2
