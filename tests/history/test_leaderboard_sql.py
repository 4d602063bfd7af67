"""The leaderboard's questions as SQL (issue 4, acceptance 3): scripts/leaderboard.sql's macros
over the DuckDB copy of the seed view's history answer what a Python model of the workload says.

The seed's schema, rows and view run under a pipeline; a seeded sequential workload of about
80 transactions (scores inserted, updated and deleted, players added, renamed and deleted,
several players in one transaction, players brought level with one of the top 3, some
transactions rolled back) is mirrored in a model of
players and scores kept here, which records every player's total after each committed
transaction. The expected answers (top 3 by LSN and by time, totals over time, every rank after
every transaction, leaders and lead changes, biggest climbers) are computed from that model.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import PipelineThread, view_rows, wait_caught_up

from viewstore.demo import SEED_SQL, VIEW, VIEW_SQL
from viewstore.store import historycopy

SQL_FILE = Path(__file__).resolve().parents[2] / "scripts" / "leaderboard.sql"
TRANSACTIONS = 80
# Scores are multiples of 0.25, so that totals tie often and the tie-break (lowest player_id
# first) decides ranks; new players start at 0, tied with each other.
SCORES = [Decimal(n) / 4 for n in range(1, 13)]

State = dict[int, tuple[str, Decimal]]  # player_id -> (name, total_score): the view's rows


@dataclass
class Model:
    """The source tables as this test wrote them."""

    players: dict[int, str]
    scores: dict[int, tuple[int, Decimal]]  # score id -> (player_id, score)

    def copy(self) -> Model:
        return Model(dict(self.players), dict(self.scores))

    def view(self) -> State:
        totals = {pid: Decimal(0) for pid in self.players}
        for pid, score in self.scores.values():
            totals[pid] += score
        return {pid: (name, totals[pid]) for pid, name in self.players.items()}


@dataclass
class Point:
    """The view after one transaction (or as built), at its commit LSN (or build LSN)."""

    lsn: int
    state: State


def _ops(conn: psycopg.Connection, model: Model, rng: random.Random) -> None:
    """One transaction's statements, applied to `model` as well. Every statement changes a
    different player's row of the view, so every committed transaction changes the view."""
    k = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    pids = rng.sample(sorted(model.players), min(k, len(model.players)))
    for pid in pids:
        own = sorted(sid for sid, (p, _) in model.scores.items() if p == pid)
        r = rng.random()
        if r < 0.08 and len(model.players) > 5:
            conn.execute("DELETE FROM player_scores WHERE player_id = %s", (pid,))
            conn.execute("DELETE FROM players WHERE id = %s", (pid,))
            for sid in own:
                del model.scores[sid]
            del model.players[pid]
        elif r < 0.18:
            name = f"{model.players[pid].split('#')[0]}#{rng.randint(0, 999)}"
            if name == model.players[pid]:
                name += "!"
            conn.execute("UPDATE players SET name = %s WHERE id = %s", (name, pid))
            model.players[pid] = name
        elif r < 0.32 and own:
            sid = rng.choice(own)
            old = model.scores[sid][1]
            new = rng.choice([s for s in SCORES if s != old])
            conn.execute("UPDATE player_scores SET score = %s WHERE id = %s", (new, sid))
            model.scores[sid] = (pid, new)
        elif r < 0.42 and own:
            sid = rng.choice(own)
            conn.execute("DELETE FROM player_scores WHERE id = %s", (sid,))
            del model.scores[sid]
        elif r < 0.55 and (targets := _above(model, pid)):
            # Level with a player of the top 3: ties at the top, decided by the lowest id.
            _insert_score(conn, model, pid, rng.choice(targets) - model.view()[pid][1])
        else:
            _insert_score(conn, model, pid, rng.choice(SCORES))
    if rng.random() < 0.25:  # a new player, with some scores in the same transaction
        name = f"New {rng.randint(0, 999)}"
        (pid,) = conn.execute(
            "INSERT INTO players (name) VALUES (%s) RETURNING id", (name,)
        ).fetchone()  # type: ignore[misc]
        model.players[pid] = name
        for _ in range(rng.randint(0, 2)):
            _insert_score(conn, model, pid, rng.choice(SCORES))


def _insert_score(conn: psycopg.Connection, model: Model, pid: int, score: Decimal) -> None:
    (sid,) = conn.execute(
        "INSERT INTO player_scores (player_id, score) VALUES (%s, %s) RETURNING id", (pid, score)
    ).fetchone()  # type: ignore[misc]
    model.scores[sid] = (pid, score)


def _above(model: Model, pid: int) -> list[Decimal]:
    """The totals of the top 3 that are above the player's."""
    view = model.view()
    top = sorted(view.items(), key=lambda kv: (-kv[1][1], kv[0]))[:3]
    return [total for p, (_, total) in top if p != pid and total > view[pid][1]]


def _workload(dsn: str, model: Model) -> tuple[list[tuple[int, State]], list[int], list[Any]]:
    """Run the transactions; returns (xid, the view after it) for each committed one, the
    xids of the rolled back ones, and (Postgres's clock after a commit, index into the
    committed list) pairs for the as-of-a-time questions (-1: before the first)."""
    rng = random.Random(20261121)
    committed: list[tuple[int, State]] = []
    rolled_back: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:

        def clock() -> datetime:
            return conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]

        times = [(clock(), -1)]
        for i in range(TRANSACTIONS):
            trial = model.copy()
            rollback = i % 13 == 7
            with conn.transaction() as tx:
                (txid,) = conn.execute("SELECT txid_current()").fetchone()  # type: ignore[misc]
                _ops(conn, trial, rng)
                if rollback:
                    rolled_back.append(txid)
                    raise psycopg.Rollback(tx)
            if not rollback:
                before = model.view()
                model.players, model.scores = trial.players, trial.scores
                assert model.view() != before, "every committed transaction changes the view"
                committed.append((txid, model.view()))
                # The commit's timestamp was taken before it returned, and the next commit's
                # will be taken after this reading: as of this time, the view is `committed[-1]`.
                times.append((clock(), len(committed) - 1))
    return committed, rolled_back, times


# ---- the expected answers, from the model ---------------------------------------------------


def _t(x: Any) -> float | None:
    """A total as compared: DuckDB holds numeric as DOUBLE; to the cent."""
    return None if x is None else round(float(x), 2)


def ranking(state: State) -> list[tuple[int, int, str, float | None]]:
    """(rank, player_id, name, total) by total_score DESC, player_id ASC."""
    order = sorted(state.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return [(i + 1, pid, name, _t(total)) for i, (pid, (name, total)) in enumerate(order)]


def state_as_of(points: list[Point], lsn: int) -> State:
    return [p for p in points if p.lsn <= lsn][-1].state


def expected_totals_over_time(points: list[Point]) -> list[tuple[Any, ...]]:
    rows = []
    previous: State = {}
    for i, p in enumerate(points):
        for pid in sorted(set(previous) | set(p.state)):
            old, new = previous.get(pid), p.state.get(pid)
            if old == new:
                continue
            op = (
                "initial"
                if i == 0
                else "insert"
                if old is None
                else "delete"
                if new is None
                else "update"
            )
            name, total = new if new is not None else (old[0], None)  # type: ignore[index]
            rows.append((pid, name, p.lsn, _t(total), op))
        previous = p.state
    return sorted(rows, key=lambda r: (r[0], r[2]))


def expected_ranks(points: list[Point], lo: int, hi: int) -> list[tuple[Any, ...]]:
    return [(p.lsn, *r) for p in points if lo <= p.lsn <= hi for r in ranking(p.state)]


def expected_leaders(points: list[Point], lo: int, hi: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for p in points:
        if lo <= p.lsn <= hi:
            _, pid, name, total = ranking(p.state)[0]
            rows.append((p.lsn, pid, name, total, bool(rows) and rows[-1][1] != pid))
    return rows


def expected_climbers(points: list[Point], a: int, b: int) -> list[tuple[Any, ...]]:
    ra = {pid: (rank, total) for rank, pid, _, total in ranking(state_as_of(points, a))}
    rb = {pid: (rank, name, total) for rank, pid, name, total in ranking(state_as_of(points, b))}
    moves = [
        (pid, rb[pid][1], ra[pid][0], rb[pid][0], ra[pid][0] - rb[pid][0], ra[pid][1], rb[pid][2])
        for pid in sorted(set(ra) & set(rb))
    ]
    best = max((m[4] for m in moves), default=0)
    return [m for m in moves if best > 0 and m[4] == best]


# ---- the test -------------------------------------------------------------------------------


def _rows(con: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return con.execute(sql, list(params)).fetchall()


def test_leaderboard_macros_answer_what_the_model_says(dsn: str, tmp_path: Path) -> None:
    for statement in SEED_SQL:
        pg_exec(dsn, statement)
    # The model starts from the seed's rows, read from Postgres (the source, not the store).
    model = Model(
        {pid: name for pid, name in pg_query(dsn, "SELECT id, name FROM players")},
        {
            sid: (pid, s)
            for sid, pid, s in pg_query(dsn, "SELECT id, player_id, score FROM player_scores")
        },
    )
    initial = model.view()
    views = tmp_path / "views.sql"
    views.write_text(VIEW_SQL)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, VIEW)  # built: the workload commits after the view's build LSN
        committed, rolled_back, times = _workload(dsn, model)
        wait_caught_up(dsn, data, alive=p.check)

    con = historycopy.connect(data)  # synced to the store's applied LSN first
    try:
        con.execute(SQL_FILE.read_text())
        # The only things read from the system under test: positions. Each committed
        # transaction's commit LSN, found by its xid (txid_current() inside it; the history's
        # xid is the 32-bit xid, txid_current() adds the epoch above it), and the view's build
        # LSN, where its 'initial' rows stand. Every value compared below comes from the model.
        lsn_of = dict(_rows(con, f"SELECT DISTINCT xid, lsn FROM {VIEW} WHERE xid IS NOT NULL"))
        ((build_lsn,),) = _rows(con, f"SELECT DISTINCT lsn FROM {VIEW} WHERE op = 'initial'")
        assert set(lsn_of) == {txid % 2**32 for txid, _ in committed}
        assert not {txid % 2**32 for txid in rolled_back} & set(lsn_of)
        points = [Point(build_lsn, initial)] + [
            Point(lsn_of[txid % 2**32], state) for txid, state in committed
        ]
        assert [p.lsn for p in points] == sorted({p.lsn for p in points}), "commit order"
        first, last = points[0].lsn, points[-1].lsn
        ((synced,),) = _rows(con, "SELECT leaderboard_last_lsn()")
        assert _rows(con, "SELECT leaderboard_first_lsn()") == [(first,)] and synced >= last

        _check_top(con, points, times, synced)
        got = _rows(
            con,
            "SELECT player_id, name, lsn, round(total_score, 2), op FROM totals_over_time()",
        )
        assert got == expected_totals_over_time(points)
        some = sorted({pid for p in points[::10] for pid in p.state})[:4]
        got = _rows(
            con,
            "SELECT player_id, lsn, round(total_score, 2) FROM totals_over_time() "
            "WHERE player_id IN (SELECT unnest(?::INTEGER[])) ORDER BY player_id, lsn",
            some,
        )
        assert got == [
            (r[0], r[2], r[3]) for r in expected_totals_over_time(points) if r[0] in some
        ]

        _check_ranges(con, points)
        _check_errors(con, first, synced)
    finally:
        con.close()

    # The same file through the CLI (the copy is closed: the CLI syncs it first).
    out = subprocess.run(
        [
            sys.executable, "-m", "viewstore.cli", "history", "--data", str(data),
            "-f", str(SQL_FILE), "--format", "json",
            "SELECT * FROM lead_changes(NULL, NULL)",
        ],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    leaders = expected_leaders(points, first, synced)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {
            "lead_changes": sum(r[4] for r in leaders),
            "transactions": len(points),
            "first_leader": leaders[0][1],
            "last_leader": leaders[-1][1],
        }
    ]


def _check_top(con: Any, points: list[Point], times: list[Any], synced: int) -> None:
    for i, p in enumerate(points):
        got = _rows(con, "SELECT rank, player_id, name, total_score FROM top_n_as_of(?, 3)", p.lsn)
        assert [(*r[:3], _t(r[3])) for r in got] == ranking(p.state)[:3], f"top 3 after {i}"
        if i % 7 == 0:  # the whole board, and between this commit and the next
            after = min(p.lsn + 1, synced)
            for at in (p.lsn, after):
                got = _rows(con, "SELECT * FROM top_n_as_of(?, 1000)", at)
                assert [(*r[:3], _t(r[3])) for r in got] == ranking(p.state), f"board after {i}"
    got = _rows(con, "SELECT * FROM top_n_as_of(leaderboard_last_lsn(), 5)")
    assert [(*r[:3], _t(r[3])) for r in got] == ranking(points[-1].state)[:5]
    for at_time, index in times:
        want = ranking(points[index + 1].state)[:3]
        got = _rows(con, "SELECT * FROM top3_at(?::TIMESTAMPTZ)", at_time)
        assert [(*r[:3], _t(r[3])) for r in got] == want, f"top 3 at {at_time}"


def _check_ranges(con: Any, points: list[Point]) -> None:
    first, last = points[0].lsn, points[-1].lsn
    ranges = [
        (None, None, first, last),
        (points[20].lsn, points[50].lsn, points[20].lsn, points[50].lsn),
        # Between two commits: the range holds only the transactions inside it.
        (points[9].lsn + 1, points[40].lsn - 1, points[10].lsn, points[39].lsn),
        (points[33].lsn, points[33].lsn, points[33].lsn, points[33].lsn),
    ]
    total_changes = 0
    for a, b, lo, hi in ranges:
        got = _rows(
            con,
            "SELECT lsn, rank, player_id, name, round(total_score, 2) FROM ranks(?, ?)",
            a,
            b,
        )
        assert got == expected_ranks(points, lo, hi), f"ranks({a}, {b})"
        leaders = expected_leaders(points, lo, hi)
        got = _rows(
            con,
            "SELECT lsn, player_id, name, round(total_score, 2), changed FROM leaders(?, ?)",
            a,
            b,
        )
        assert got == leaders, f"leaders({a}, {b})"
        got = _rows(con, "SELECT * FROM lead_changes(?, ?)", a, b)
        changes = sum(r[4] for r in leaders)
        assert got == [(changes, len(leaders), leaders[0][1], leaders[-1][1])]
        total_changes = max(total_changes, changes)
    assert total_changes >= 3, "the workload should change the leader a few times"

    rng = random.Random(7)
    pairs = [(first, last), (points[10].lsn, points[60].lsn), (points[30].lsn + 1, last)]
    pairs += [tuple(sorted(rng.sample([p.lsn for p in points], 2))) for _ in range(10)]
    found = 0
    for a, b in pairs:
        got = _rows(
            con,
            "SELECT player_id, name, from_rank, to_rank, gained, round(from_total, 2), "
            "round(to_total, 2) FROM biggest_climber(?, ?)",
            a,
            b,
        )
        want = expected_climbers(points, a, b)
        assert got == want, f"biggest_climber({a}, {b})"
        found += bool(want)
    assert found >= 5
    assert _rows(con, "SELECT count(*) FROM biggest_climber(NULL, NULL)") == [
        (len(expected_climbers(points, first, last)),)
    ]


def _check_errors(con: Any, first: int, synced: int) -> None:
    for sql, params, message in [
        ("SELECT * FROM ranks(?, NULL)", [first - 1], "starts at"),
        ("SELECT * FROM leaders(NULL, ?)", [synced + 1], "reaches only"),
        ("SELECT * FROM ranks(?, ?)", [synced, first], "is after"),
        ("SELECT * FROM top_n_as_of(?, 3)", [first - 1], "starts at"),
        ("SELECT * FROM biggest_climber(0, NULL)", [], "starts at"),
    ]:
        with pytest.raises(duckdb.Error, match=message):
            con.execute(sql, params).fetchall()
