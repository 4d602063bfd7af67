"""As-of reads (issue 4, acceptance 1): after every commit of a sequential workload, Postgres's
own result of each view's SQL is recorded with an LSN at or after the commit; afterwards the
store's view as of each recorded LSN equals the recorded result."""

from __future__ import annotations

import bisect
import random
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import (
    PipelineThread,
    normalise_rows,
    postgres_view_rows,
    view_rows,
    wait_caught_up,
)

import viewstore
from viewstore.errors import ConfigError
from viewstore.history import checkpoint
from viewstore.history.changelog import _rows_by_seeks, changes, rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import current_rows_as_of

SCHEMA = """
CREATE TABLE players (id int PRIMARY KEY, name text NOT NULL, team text);
CREATE TABLE player_scores (id serial PRIMARY KEY, player_id int, score numeric(10, 2));
INSERT INTO players SELECT g, 'p' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 't' || g % 3 END
FROM generate_series(1, 8) g;
INSERT INTO player_scores (player_id, score) SELECT 1 + g % 8, g / 4.0 FROM generate_series(1, 20) g;
"""
VIEWS = {
    "player_total_scores": "SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS "
    "total_score FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id",
    "teams": "SELECT team, count(*) AS players, max(name) AS last_name FROM players GROUP BY team",
    "big_scores": "SELECT s.id, s.score, p.name FROM player_scores s JOIN players p "
    "ON p.id = s.player_id WHERE s.score >= 3",
}


def _transaction(conn: psycopg.Connection, rng: random.Random) -> None:
    r = rng.random()
    with conn.transaction():
        if r < 0.5:
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                (rng.randint(1, 10), rng.randint(0, 900) / 100),
            )
        elif r < 0.65:
            conn.execute(
                "UPDATE player_scores SET score = score + 1 WHERE id = "
                "(SELECT min(id) FROM player_scores WHERE player_id = %s)",
                (rng.randint(1, 10),),
            )
        elif r < 0.75:
            conn.execute("DELETE FROM player_scores WHERE id = (SELECT max(id) FROM player_scores)")
        elif r < 0.85:
            pid = rng.randint(1, 10)
            conn.execute(
                "INSERT INTO players VALUES (%s, %s, %s) ON CONFLICT (id) DO UPDATE "
                "SET name = excluded.name, team = excluded.team",
                (pid, f"n{rng.randint(0, 99)}", rng.choice(["t1", "t2", None])),
            )
        else:
            pid = rng.randint(1, 10)
            conn.execute("DELETE FROM player_scores WHERE player_id = %s", (pid,))
            conn.execute("DELETE FROM players WHERE id = %s", (pid,))


def test_as_of_every_commit_equals_postgres(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text("".join(f"CREATE VIEW {n} AS {q};\n" for n, q in VIEWS.items()))
    data = tmp_path / "data"
    rng = random.Random(5)
    recorded: list[tuple[Lsn, dict[str, list]]] = []
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        for name in VIEWS:
            view_rows(data, name)  # built
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(80):
                _transaction(conn, rng)
                lsn = Lsn.parse(pg_query(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
                recorded.append((lsn, {n: postgres_view_rows(dsn, q) for n, q in VIEWS.items()}))
        wait_caught_up(dsn, data, alive=p.check)
    vs = viewstore.open(data)
    for lsn, want in recorded:
        for name in VIEWS:
            got = normalise_rows(tuple(r.values()) for r in vs.query(name, as_of=lsn))
            assert got == want[name], f"{name} as of {lsn}"
        # A point lookup by the view's key (one seek) agrees with the whole-view read.
        for row in want["player_total_scores"][:3]:
            found = vs.query("player_total_scores", where={"player_id": row[0]}, as_of=str(lsn))
            assert normalise_rows(tuple(r.values()) for r in found) == [row]
        # The first rows in an order (only the candidates for them decoded) are those of the
        # whole view sorted, ties by the view's key.
        totals = vs.query("player_total_scores", as_of=lsn)
        top = sorted(totals, key=lambda r: (-r["total_score"], r["player_id"]))[:3]
        got_top = vs.query(
            "player_total_scores", order_by="total_score", desc=True, limit=3, as_of=lsn
        )
        assert got_top == top, f"top 3 as of {lsn}"
        scores = vs.query("big_scores", as_of=lsn)
        low = sorted(scores, key=lambda r: (r["score"], r["id"]))[:4]
        assert vs.query("big_scores", order_by="score", limit=4, as_of=lsn) == low


def test_as_of_outside_the_history_is_an_error(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE VIEW teams AS {VIEWS['teams']};\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "teams")
    vs = viewstore.open(data)
    applied = vs.applied_lsn()
    with pytest.raises(ConfigError, match="the store has applied only up to"):
        vs.query("teams", as_of=Lsn(applied + 1000))
    with pytest.raises(ConfigError, match="history starts at"):
        vs.query("teams", as_of="0/10")
    with pytest.raises(ConfigError, match="invalid LSN"):
        vs.query("teams", as_of="yesterday")
    with pytest.raises(ConfigError, match="out of range") as out_of_range:
        vs.query("teams", as_of="1/100000000")
    assert "FFFFFFFF/FFFFFFFF" in (out_of_range.value.hint or "")


def _oracle(recorded: list[tuple[Lsn, dict[str, list]]], ends: list[int], at: int) -> dict:
    """Postgres's answers as of `at`, from answers recorded at LSNs after each commit and the
    commit LSNs (the end of each commit record) of the transactions: the last recorded LSN at
    or before `at`, unless the next transaction's commit ends after it but by `at`."""
    i = bisect.bisect_right([lsn for lsn, _ in recorded], at) - 1
    assert i >= 0, f"{Lsn(at)} is before the first recorded answer"
    if any(int(recorded[i][0]) < e <= at for e in ends):
        i += 1
    return recorded[i][1]


def test_as_of_before_at_and_after_checkpoints_equals_postgres(dsn: str, tmp_path: Path) -> None:
    """Checkpoints every few changes (history.checkpoint): reads as of every recorded LSN and
    as of each checkpoint's LSN, one before and one after it, equal Postgres's answers; the
    three ways to a past state (checkpoint and the changes after it, one seek per row key,
    the current rows with later changes undone) agree at each of them, and so does the DuckDB
    copy's <view>_as_of."""
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text("".join(f"CREATE VIEW {n} AS {q};\n" for n, q in VIEWS.items()))
    data = tmp_path / "data"
    rng = random.Random(8)
    recorded: list[tuple[Lsn, dict[str, list]]] = []

    def record() -> None:
        lsn = Lsn.parse(pg_query(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
        recorded.append((lsn, {n: postgres_view_rows(dsn, q) for n, q in VIEWS.items()}))

    with PipelineThread(dsn, data, views_file=views, history_checkpoint_interval=3) as p:
        wait_caught_up(dsn, data, alive=p.check)
        for name in VIEWS:
            view_rows(data, name)  # built
        record()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(90):
                _transaction(conn, rng)
                record()
                if i % 7 == 0:  # let groups end here and there, so that checkpoints follow
                    wait_caught_up(dsn, data, alive=p.check)
        wait_caught_up(dsn, data, alive=p.check)

    with Store.open(data, readonly=True) as store:
        infos = stored_views(store)
        ends = sorted({int(c.lsn) for i in infos.values() for c in changes(store, i.view_id)})
        marks = {name: checkpoint.lsns(store, i.view_id) for name, i in infos.items()}
    for name, lsns in marks.items():
        assert len(lsns) >= 3, f"{name}: checkpoints {lsns}"
    first = int(recorded[0][0])
    points = {int(lsn) for lsn, _ in recorded}
    points |= {c + d for lsns in marks.values() for c in lsns for d in (-1, 0, 1) if c + d >= first}
    points = {p for p in points if p <= int(recorded[-1][0])}
    # Reads that land at a checkpoint, just before one and just after one all occur.
    assert any(p in lsns for lsns in marks.values() for p in points)

    vs = viewstore.open(data)
    for at in sorted(points):
        want = _oracle(recorded, ends, at)
        for name in VIEWS:
            got = normalise_rows(tuple(r.values()) for r in vs.query(name, as_of=Lsn(at)))
            assert got == want[name], f"{name} as of {Lsn(at)}"
    with Store.open(data, readonly=True) as store:
        for info in stored_views(store).values():
            for at in sorted(points):
                got = rows_as_of(store, info.view_id, at)
                assert got == _rows_by_seeks(store, info.view_id, at), (info.name, Lsn(at))
                assert got == current_rows_as_of(store, info.view_id, at), (info.name, Lsn(at))

    # The DuckDB copy holds the checkpoints too, and its as-of macros, which start from the
    # newest one at or before the LSN, agree with the store at the same LSNs.
    historycopy.sync(data)
    con = historycopy.connect(data, sync_first=False)
    try:
        for name in VIEWS:
            copied = con.execute(
                f"SELECT DISTINCT checkpoint_lsn FROM viewstore_checkpoints.{name} ORDER BY 1"
            ).fetchall()
            # Some of them: one each time the copy has 4 times its rows in changes since.
            assert {c for (c,) in copied} <= set(marks[name]), (copied, marks[name])
            assert copied or name != "player_total_scores"  # the busiest view: some
            for at in sorted(points):
                result = con.execute(f"SELECT * FROM {name}_as_of(?)", [at])
                names = [d[0] for d in result.description]
                exact = [i for i, n in enumerate(names) if n + "_text" not in names]
                got = sorted(
                    (tuple(_plain(r[i]) for i in exact) for r in result.fetchall()), key=repr
                )
                want = sorted(
                    (tuple(_plain(v) for v in r.values()) for r in vs.query(name, as_of=Lsn(at))),
                    key=repr,
                )
                assert got == want, f"{name} as of {Lsn(at)} in DuckDB"
    finally:
        con.close()


def _plain(v: object) -> object:
    """A value as both sides can compare it: numerics in plain notation."""
    return format(v, "f") if isinstance(v, Decimal) else v
