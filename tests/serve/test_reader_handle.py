"""`viewstore.open(dir)` as a long-lived handle (issue 15, item 3): one RocksDB secondary, the
follower `viewstore serve` reads, kept open across reads; it sees what `viewstore run` commits
within a second, also after the writer was killed and restarted; it closes with a context
manager, and a handle dropped without closing still releases its secondary."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from runner import kill9, normalise_rows, postgres_view_rows, wait_caught_up
from serve_support import SELECT_SQL, VIEW, seed, start_run, wait_view_ready, write_views

import viewstore
from viewstore.errors import StoreError
from viewstore.ingest.lsn import Lsn


def _commit_score(conn: psycopg.Connection[Any], player: int, score: str) -> tuple[float, str]:
    """Insert a score; when it committed, and the player's new total as Postgres has it."""
    conn.execute("INSERT INTO player_scores (player_id, score) VALUES (%s, %s)", (player, score))
    committed = time.monotonic()
    row = conn.execute(
        "SELECT COALESCE(SUM(score), 0)::text FROM player_scores WHERE player_id = %s", (player,)
    ).fetchone()
    assert row is not None
    return committed, row[0]


def _seen(vs: viewstore.Reader, player: int, total: str, since: float, limit: float) -> float:
    """Seconds until the handle shows `total` for `player`; fails after `limit`."""
    while True:
        rows = vs.query(VIEW, where={"player_id": player})
        if rows and str(rows[0]["total_score"]) == total:
            return time.monotonic() - since
        assert time.monotonic() - since < limit, f"the handle did not show {total} in {limit} s"
        time.sleep(0.01)


def test_handle_follows_run_and_keeps_one_store_open(dsn: str, tmp_path: Path) -> None:
    seed(dsn, extra_players=20)
    views = write_views(tmp_path)
    data = tmp_path / "data"
    writer = start_run(dsn, data, views)
    wait_caught_up(dsn, data)
    wait_view_ready(data)
    delays = []
    with viewstore.open(data) as vs, psycopg.connect(dsn, autocommit=True) as conn:
        assert normalise_rows(r.values() for r in vs.query(VIEW)) == postgres_view_rows(
            dsn, SELECT_SQL
        )
        source = vs._source
        assert source is not None, "the first read opens the store"
        for i in range(5):
            committed, total = _commit_score(conn, 3, f"1.0{i}")
            delays.append(_seen(vs, 3, total, committed, limit=1.0))
        # The writer killed and restarted: the handle follows its new logs.
        kill9(writer)
        writer = start_run(dsn, data, views)
        committed, total = _commit_score(conn, 4, "2.50")
        _seen(vs, 4, total, committed, limit=30)  # the writer must reconnect first
        target = wait_caught_up(dsn, data)
        committed, total = _commit_score(conn, 5, "3.50")
        delays.append(_seen(vs, 5, total, committed, limit=1.0))
        wait_caught_up(dsn, data)
        assert vs.applied_lsn() >= target
        assert normalise_rows(r.values() for r in vs.query(VIEW)) == postgres_view_rows(
            dsn, SELECT_SQL
        )
        assert vs._source is source, "every read went through the one open store"
        scratch = Path(source._scratch)
        assert scratch.exists()
    assert not scratch.exists(), "closing removes the secondary's scratch directory"
    with pytest.raises(StoreError, match="is closed") as exc:
        vs.query(VIEW)
    assert exc.value.hint == f"open it again: viewstore.open({str(data)!r})"
    print("the handle saw commits after (s):", [round(d, 3) for d in delays])


def test_handle_dropped_without_close_releases_its_store(dsn: str, tmp_path: Path) -> None:
    seed(dsn, extra_players=0)
    views = write_views(tmp_path)
    data = tmp_path / "data"
    start_run(dsn, data, views)
    wait_caught_up(dsn, data)
    wait_view_ready(data)
    vs = viewstore.open(data)
    assert vs.applied_lsn() > Lsn(0)
    assert vs._source is not None
    scratch = Path(vs._source._scratch)
    del vs
    gc.collect()
    assert not scratch.exists()
    viewstore.open(data).close()  # never read: nothing was opened, nothing to close
    with pytest.raises(StoreError, match="no viewstore data in"):
        viewstore.open(tmp_path / "missing").query(VIEW)
