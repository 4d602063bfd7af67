"""History retention (issue 4, acceptance 4): compacting the oldest history changes no as-of
answer for the LSNs still retained, refuses the ones before, and the DuckDB copy follows."""

from __future__ import annotations

import random
import time
from pathlib import Path

import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import (
    PipelineThread,
    assert_history_chains,
    normalise_rows,
    postgres_view_rows,
    view_rows,
    wait_caught_up,
)
from test_as_of import SCHEMA, VIEWS, _transaction

import viewstore
from viewstore.errors import ConfigError
from viewstore.history import checkpoint
from viewstore.history.changelog import changes, rows_as_of
from viewstore.history.keys import checkpoint_prefix
from viewstore.history.retention import Retention, apply_retention, compact
from viewstore.ingest.lsn import Lsn
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import CATALOG, stored_views
from viewstore.store.viewread import current_rows_as_of


def _history_store(dsn: str, tmp_path: Path, txns: int = 120) -> tuple[Path, list[Lsn]]:
    """A store of three views after `txns` sequential transactions; the LSN after each."""
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text("".join(f"CREATE VIEW {n} AS {q};\n" for n, q in VIEWS.items()))
    data = tmp_path / "data"
    rng = random.Random(11)
    lsns = []
    # Checkpoints every few changes (history.checkpoint), so that compaction has some to drop.
    with PipelineThread(dsn, data, views_file=views, history_checkpoint_interval=4) as p:
        wait_caught_up(dsn, data, alive=p.check)
        for name in VIEWS:
            view_rows(data, name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(txns):
                _transaction(conn, rng)
                if i % 6 == 0:  # groups end here and there, and checkpoints follow them
                    wait_caught_up(dsn, data, alive=p.check)
                lsns.append(
                    Lsn.parse(pg_query(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
                )
        wait_caught_up(dsn, data, alive=p.check)
    return data, lsns


def _answers(data: Path, lsns: list[Lsn]) -> dict[tuple[str, Lsn], list]:
    vs = viewstore.open(data)
    return {
        (name, lsn): normalise_rows(tuple(r.values()) for r in vs.query(name, as_of=lsn))
        for name in VIEWS
        for lsn in lsns
    }


def _entries(data: Path) -> int:
    with Store.open(data, readonly=True) as store:
        return sum(
            sum(1 for _ in changes(store, info.view_id)) for info in stored_views(store).values()
        )


def _duckdb_matches_log(data: Path) -> None:
    historycopy.sync(data)
    con = historycopy.connect(data, sync_first=False)
    try:
        with Store.open(data, readonly=True) as store:
            for info in stored_views(store).values():
                want = [(int(c.lsn), c.seq, c.key) for c in changes(store, info.view_id)]
                got = con.execute(
                    f'SELECT lsn, seq, row_key FROM "{info.name}" ORDER BY lsn, seq'
                ).fetchall()
                assert got == want, info.name
    finally:
        con.close()


def test_compaction_keeps_every_retained_answer(dsn: str, tmp_path: Path) -> None:
    data, lsns = _history_store(dsn, tmp_path)
    before = _answers(data, lsns)
    entries_before = _entries(data)
    _duckdb_matches_log(data)  # a copy that has to follow the compaction
    cutoff = lsns[len(lsns) // 2]

    with Store.open(data) as store:
        kept = {}
        for info in stored_views(store).values():
            marks = checkpoint.lsns(store, info.view_id)
            assert any(c < cutoff for c in marks) and any(c > cutoff for c in marks), marks
            kept[info.name] = [c for c in marks if c >= cutoff]
        # Several small passes, each one atomic, each cut at a transaction boundary.
        for info in stored_views(store).values():
            while info.history_start is None or info.history_start < cutoff:
                info = compact(store, info, int(cutoff), max_entries=7, catalog=CATALOG)
        assert all(i.history_start == cutoff for i in stored_views(store).values())
        # The checkpoints before the cutoff are gone, marker and rows; the others are kept.
        for info in stored_views(store).values():
            assert checkpoint.lsns(store, info.view_id) == kept[info.name]
            low = checkpoint_prefix(info.view_id, 0)
            rows = store.history_range(low, checkpoint_prefix(info.view_id, int(cutoff)))
            assert rows == []

    assert _entries(data) < entries_before
    retained = [lsn for lsn in lsns if lsn >= cutoff]
    after = _answers(data, retained)
    assert after == {k: v for k, v in before.items() if k[1] >= cutoff}
    with Store.open(data, readonly=True) as store:
        # The other way to a past state (current rows, later changes undone) agrees too.
        for info in stored_views(store).values():
            for lsn in retained[::10]:
                assert current_rows_as_of(store, info.view_id, lsn) == rows_as_of(
                    store, info.view_id, lsn
                )
    assert_history_chains(data)

    vs = viewstore.open(data)
    with pytest.raises(ConfigError, match="--history-retention compacted"):
        vs.query("teams", as_of=lsns[0])
    with pytest.raises(ConfigError, match="history starts at"):
        vs.query("player_total_scores", where={"player_id": 1}, as_of=lsns[0])

    # The DuckDB copy drops what the store dropped, and its as-of macros still agree.
    _duckdb_matches_log(data)
    con = historycopy.connect(data, sync_first=False)
    try:
        for lsn in retained[::15]:
            rows = con.execute(
                "SELECT * FROM player_total_scores_as_of(?) ORDER BY player_id", [int(lsn)]
            ).fetchall()
            want = vs.query("player_total_scores", order_by="player_id", as_of=lsn)
            assert [(r[0], r[1], r[2]) for r in rows] == [
                (r["player_id"], r["name"], float(r["total_score"])) for r in want
            ]
        with pytest.raises(Exception, match="starts at"):
            con.execute("SELECT * FROM teams_as_of(?)", [int(lsns[0])]).fetchall()
    finally:
        con.close()


def test_retention_by_age_in_the_running_pipeline(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE VIEW player_total_scores AS {VIEWS['player_total_scores']};\n")
    data = tmp_path / "data"
    rng = random.Random(3)
    config = {"history_retention": "16kB", "history_retention_interval": 0.2}
    with PipelineThread(dsn, data, views_file=views, **config) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "player_total_scores")
        first = viewstore.open(data).applied_lsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(150):
                _transaction(conn, rng)
        applied = wait_caught_up(dsn, data, alive=p.check)
        deadline = time.monotonic() + 30
        while True:
            with Store.open(data, readonly=True) as store:
                info = stored_views(store)["player_total_scores"]
            if info.history_from and Lsn.parse(info.history_from) >= applied - 16 * 1024 - 200:
                break
            assert time.monotonic() < deadline, f"no compaction: {info}"
            time.sleep(0.2)
            p.check()
        want = postgres_view_rows(dsn, VIEWS["player_total_scores"])
        got = viewstore.open(data).query("player_total_scores", as_of=applied)
        assert normalise_rows(tuple(r.values()) for r in got) == want
        with pytest.raises(ConfigError, match="--history-retention compacted"):
            viewstore.open(data).query("player_total_scores", as_of=first)
    assert_history_chains(data)


def test_retention_by_duration(dsn: str, tmp_path: Path) -> None:
    data, lsns = _history_store(dsn, tmp_path, txns=30)
    with Store.open(data) as store:
        # Nothing committed more than an hour ago: nothing to compact.
        assert apply_retention(store, Retention.parse("1h"), catalog=CATALOG)
        assert all(i.history_from is None for i in stored_views(store).values())
        # Everything is older than "now + 1 minute" minus one minute: compacted to the end.
        assert apply_retention(
            store, Retention.parse("60s"), catalog=CATALOG, now=time.time() + 120
        )
        for info in stored_views(store).values():
            # Compacted to its last change: what is left is one entry per row it has now.
            log = list(changes(store, info.view_id))
            assert info.history_from == str(max(c.lsn for c in log))
            assert len(log) == len(rows_as_of(store, info.view_id, int(lsns[-1])))
    assert_history_chains(data)


@pytest.mark.parametrize("text", ["", "7", "seven days", "7 fortnights", "-1d", "10 GiB"])
def test_bad_retention_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--history-retention"):
        Retention.parse(text)


def test_retention_parses_durations_and_sizes() -> None:
    assert Retention.parse("90s").seconds == 90
    assert Retention.parse("12h").seconds == 12 * 3600
    assert Retention.parse("2w").seconds == 14 * 86400
    assert Retention.parse("500MB").lsn_bytes == 500 << 20
    assert Retention.parse("1.5GB").lsn_bytes == 3 << 29
