"""Views over views (issue 16): a stack of views kept in one pass per transaction.

Postgres is the oracle as everywhere: the upstream views are created in Postgres as plain
(not materialized) views of the same names, so that each view's own SELECT, run by Postgres,
reads the current state of the views below it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import pg_exec
from runner import assert_history_chains, kill9, start_process, wait_caught_up
from viewdiff import Table, View, assert_mix, choice, ints, maybe_null, run_differential, seed
from workload import SCHEMA, SteadyLoad, run_transactions

from viewstore.errors import ConfigError
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views
from viewstore.views.sql import parse_views
from viewstore.views.stack import order_views

SEED_SELECT = """SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id"""

STACK = [
    View("player_total_scores", SEED_SELECT),
    # A filter and a projection over an aggregate view.
    View(
        "big_players",
        "SELECT player_id, name, total_score FROM player_total_scores WHERE total_score > 40",
    ),
    # A projection, an aggregate over it, and the two joined: levels 1, 2 and 3.
    View(
        "banded",
        "SELECT player_id, CASE WHEN total_score >= 100 THEN 'high' "
        "WHEN total_score >= 20 THEN 'mid' ELSE 'low' END AS band FROM player_total_scores",
    ),
    View(
        "score_bands",
        "SELECT band, COUNT(*) AS players FROM banded GROUP BY band",
    ),
    View(
        "versus",
        "SELECT b.player_id, b.band, s.players FROM banded b LEFT JOIN score_bands s "
        "ON s.band = b.band",
    ),
    View("band_names", "SELECT b.name, COUNT(*) AS n FROM big_players b GROUP BY b.name"),
    # A view joined back to a table, and to another view.
    View(
        "team_totals",
        "SELECT p.team, COUNT(*) AS players, SUM(t.total_score) AS total "
        "FROM players p JOIN player_total_scores t ON t.player_id = p.id GROUP BY p.team",
    ),
    View(
        "big_and_all",
        "SELECT b.player_id, b.total_score, t.name FROM big_players b "
        "JOIN player_total_scores t ON t.player_id = b.player_id",
    ),
    # A global aggregate over a view: one row, even over no rows.
    View("board_size", "SELECT COUNT(*) AS n, MAX(total_score) AS best FROM player_total_scores"),
]

SEED_SCHEMA = """
CREATE TABLE players (id integer PRIMARY KEY, name text NOT NULL, team text);
CREATE TABLE player_scores (id integer PRIMARY KEY, player_id integer, score numeric(10, 2));
"""

TABLES = [
    Table(
        "players",
        ids=20,
        columns={
            "name": choice("mario", "peach", "bowser", "luigi", "yoshi"),
            "team": maybe_null(choice("red", "blue", "green"), 0.2),
        },
        weight=0.6,
    ),
    Table(
        "player_scores",
        ids=80,
        columns={
            "player_id": maybe_null(ints(1, 23), 0.08),
            "score": maybe_null(lambda rng: rng.randint(-500, 3000) / 100),
        },
    ),
]


def _postgres_views(views: list[View]) -> str:
    """The upstream views as Postgres views, so that Postgres can evaluate the stack."""
    return "".join(f"CREATE VIEW {v.name} AS {v.select};\n" for v in views)


def test_stacked_views_equal_postgres(dsn: str, tmp_path: Path) -> None:
    # The views file lists them out of order on purpose: the store orders them by dependency.
    shuffled = STACK[:]
    random.Random(3).shuffle(shuffled)
    ups = [
        v
        for v in STACK
        if v.name in ("player_total_scores", "big_players", "banded", "score_bands")
    ]
    stats = run_differential(
        dsn,
        tmp_path,
        SEED_SCHEMA + _postgres_views(ups),
        TABLES,
        shuffled,
        seed_value=seed(16),
        transactions=300,
        disconnect_every=70,
        as_of=True,
    )
    assert_mix(stats, commits=200)


def test_cycles_and_unknown_names_are_refused() -> None:
    text = (
        "CREATE MATERIALIZED VIEW a AS SELECT x FROM b;\n"
        "CREATE MATERIALIZED VIEW b AS SELECT x FROM c;\n"
        "CREATE MATERIALIZED VIEW c AS SELECT x FROM a;\n"
    )
    with pytest.raises(ConfigError) as e:
        order_views(parse_views(text, "v.sql"))
    assert "v.sql:3:" in str(e.value) and "a cycle (a -> b -> c -> a)" in str(e.value), e.value
    selfish = "CREATE MATERIALIZED VIEW a AS SELECT x FROM a;\n"
    with pytest.raises(ConfigError, match=r"v.sql:1:\d+: view a reads view a"):
        order_views(parse_views(selfish, "v.sql"))


CRASH_STACK = """
CREATE MATERIALIZED VIEW by_label AS
SELECT label, count(*) AS n, sum(qty) AS qty FROM items GROUP BY label;

CREATE MATERIALIZED VIEW busy_labels AS
SELECT label, n, qty FROM by_label WHERE n > 1;

CREATE MATERIALIZED VIEW label_summary AS
SELECT count(*) AS labels, sum(n) AS items, max(qty) AS top_qty FROM busy_labels;

CREATE MATERIALIZED VIEW docs_labels AS
SELECT d.k1, d.version, b.n FROM docs d JOIN by_label b ON b.n = d.k1;
"""


def test_kill9_with_a_stack_of_views(dsn: str, tmp_path: Path) -> None:
    """Kill -9 at random moments under load: every view of the stack equals Postgres (verify
    runs each view's SQL with the views it reads inlined), and each history is a chain."""
    pg_exec(dsn, SCHEMA)
    run_transactions(dsn, 30, seed=1)
    views = tmp_path / "views.sql"
    views.write_text(CRASH_STACK)
    data = tmp_path / "data"
    rng = random.Random(16)
    with SteadyLoad(dsn, seed=5):
        # The first kill once the views are built, so that every kill hits a running stack.
        proc = start_process(dsn, data, "--views", str(views))
        wait_caught_up(dsn, data, alive=partial(_alive, proc))
        kill9(proc)
        for _ in range(5):
            proc = start_process(dsn, data, "--views", str(views))
            time.sleep(rng.uniform(0.5, 2.0))
            kill9(proc)
    # Once with --views, then without: the stored definitions (subqueries' views left to their
    # parents), in dependency order.
    for args in (("--views", str(views)), ()):
        proc = start_process(dsn, data, *args)
        try:
            wait_caught_up(dsn, data, alive=partial(_alive, proc))
            result = _verify(dsn, data)
            assert result.returncode == 0, result.stdout + result.stderr
            for view in ("by_label", "busy_labels", "label_summary", "docs_labels"):
                assert f"{view}: OK" in result.stdout, result.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    assert assert_history_chains(data) > 50


def test_a_changed_view_rebuilds_the_views_over_it(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    run_transactions(dsn, 40, seed=2)
    views = tmp_path / "views.sql"
    views.write_text(CRASH_STACK)
    data = tmp_path / "data"
    for text in (CRASH_STACK, CRASH_STACK.replace("WHERE n > 1", "WHERE n > 2")):
        views.write_text(text)
        proc = start_process(dsn, data, "--views", str(views))
        try:
            run_transactions(dsn, 20, seed=len(text))
            wait_caught_up(dsn, data, alive=partial(_alive, proc))
            result = _verify(dsn, data)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    with Store.open(data, readonly=True) as store:
        names = set(stored_views(store))
    assert names == {"by_label", "busy_labels", "label_summary", "docs_labels"}, names


def _alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"viewstore run exited with {proc.returncode}")


def _verify(dsn: str, data: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "viewstore.cli", "verify", "--dsn", dsn, "--data", str(data)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
