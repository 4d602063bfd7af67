"""Postgres itself crashes (`pg_ctl stop -m immediate`: no shutdown checkpoint, crash recovery on
the next start) under a steady load, three times, on a cluster that keeps its promises
(fsync, synchronous_commit and full_page_writes on, unlike the suite's shared cluster). After
each restart `viewstore run`, which never stopped, must reconnect by itself, and once caught up
its mirror, its stored row counts and the seed's leaderboard view must equal Postgres. The slot's
confirmed position is only saved at checkpoints, so after a crash Postgres resends transactions
the store has applied: applying one twice would move the SUM and the row counts."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import (
    assert_history_chains,
    assert_mirror_equals,
    assert_row_count,
    assert_view_equals,
    start_process,
    wait_caught_up,
)

from viewstore.pgcluster import ThrowawayPostgres

SEED = """
CREATE TABLE players (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE player_scores (id SERIAL PRIMARY KEY, score DECIMAL(10, 2) NOT NULL,
                            player_id INTEGER REFERENCES players(id) ON DELETE CASCADE);
INSERT INTO players (name) SELECT 'Player ' || g FROM generate_series(1, 50) g;
INSERT INTO player_scores (player_id, score) SELECT 1 + g % 50, g / 100.0
FROM generate_series(1, 500) g;
"""
VIEW_SQL = (
    "SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score "
    "FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id"
)
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
CRASHES = 3


class Scores:
    """The seed's workload, committed back to back in a thread; it rides out the crashes by
    reconnecting, and `pause()` holds it so that the store and Postgres can be compared."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.committed = 0
        self.lost_connections = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(18)
        try:
            while not self.stop.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                        while not self.stop.is_set():
                            if not self.running.is_set():
                                self.idle.set()
                                self.running.wait(0.1)
                                continue
                            self.idle.clear()
                            self._transaction(conn, rng)
                            self.committed += 1
                except psycopg.OperationalError:
                    self.lost_connections += 1  # the server crashed, or is still recovering
                    time.sleep(0.2)
        except BaseException as exc:
            self.error = exc

    @staticmethod
    def _transaction(conn: psycopg.Connection, rng: random.Random) -> None:  # type: ignore[type-arg]
        with conn.transaction():
            for _ in range(rng.randint(1, 5)):
                roll = rng.random()
                if roll < 0.7:
                    conn.execute(
                        "INSERT INTO player_scores (player_id, score) "
                        "SELECT id, %s FROM players ORDER BY random() LIMIT 1",
                        (rng.randint(-500, 2000) / 100,),
                    )
                elif roll < 0.85:
                    conn.execute(
                        "UPDATE player_scores SET score = score + 1 WHERE id = "
                        "(SELECT id FROM player_scores ORDER BY random() LIMIT 1)"
                    )
                elif roll < 0.95:
                    conn.execute(
                        "DELETE FROM player_scores WHERE id = "
                        "(SELECT id FROM player_scores ORDER BY random() LIMIT 1)"
                    )
                elif roll < 0.98:
                    conn.execute("INSERT INTO players (name) VALUES (%s)", (f"new {rng.random()}",))
                else:  # a player and, by cascade, their scores
                    conn.execute(
                        "DELETE FROM players WHERE id = "
                        "(SELECT id FROM players ORDER BY random() LIMIT 1)"
                    )

    def pause(self) -> None:
        self.running.clear()
        self.idle.clear()
        assert self.idle.wait(60), "the load did not pause"

    def resume(self) -> None:
        self.running.set()

    def __enter__(self) -> Scores:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.running.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error


@pytest.fixture
def durable_pg() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres(DURABLE) as server:
        yield server


def test_postgres_crashes_under_load(durable_pg: ThrowawayPostgres, tmp_path: Path) -> None:
    pg = durable_pg
    assert pg_query(pg.dsn, "SHOW fsync")[0][0] == "on"
    pg_exec(pg.dsn, SEED)
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW player_total_scores AS {VIEW_SQL};\n")
    data = tmp_path / "data"
    proc = start_process(pg.dsn, data, "--views", str(views))

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"viewstore run exited with {proc.returncode}")

    def compare() -> None:
        wait_caught_up(pg.dsn, data, timeout=90, alive=alive)
        assert_mirror_equals(pg.dsn, data, "players")
        assert_mirror_equals(pg.dsn, data, "player_scores")
        assert_row_count(pg.dsn, data, "players")
        assert_row_count(pg.dsn, data, "player_scores")
        assert_view_equals(pg.dsn, data, "player_total_scores", VIEW_SQL)

    rng = random.Random(9)
    with Scores(pg.dsn) as load:
        wait_caught_up(pg.dsn, data, timeout=90, alive=alive)
        for _ in range(CRASHES):
            before = load.committed
            time.sleep(rng.uniform(1.0, 2.0))
            assert load.committed > before, "no load ran before the crash"
            pg.shutdown("immediate")
            time.sleep(rng.uniform(0.2, 1.0))
            pg.boot()
            time.sleep(1.0)  # load again, while the store reconnects
            load.pause()
            compare()
            load.resume()
        assert load.lost_connections >= CRASHES
    compare()
    assert assert_history_chains(data) > 100
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
