"""Views added to, changed in and removed from views.sql of an existing data directory.

A view new to the store is built from the mirror at the store's applied LSN, then streaming
brings it up to date (here with transactions committed while viewstore was down); a view whose
SQL changed is rebuilt; a view no longer listed is dropped; a restart without a views file keeps
the stored views. Postgres evaluating each view's SELECT is the oracle throughout.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
import pytest
from runner import PipelineThread, assert_view_equals, wait_caught_up
from viewdiff import (
    Table,
    View,
    Workload,
    choice,
    ints,
    maybe_null,
    views_file,
    wait_views_ready,
)

import viewstore
from viewstore.errors import ConfigError

SCHEMA = """
CREATE TABLE players (id integer PRIMARY KEY, name text NOT NULL, team text);
CREATE TABLE player_scores (id integer PRIMARY KEY, player_id integer, points integer, tag text);
"""
TABLES = [
    Table(
        "players",
        ids=20,
        columns={
            "name": choice("mario", "peach", "luigi", "yoshi"),
            "team": maybe_null(choice("red", "blue")),
        },
        weight=0.5,
    ),
    Table(
        "player_scores",
        ids=60,
        columns={
            "player_id": maybe_null(ints(1, 22), 0.05),
            "points": maybe_null(ints(-50, 100)),
            "tag": maybe_null(choice("a", "b", "c")),
        },
    ),
]

TOTALS = View(
    "totals",
    """SELECT p.id, p.name, COALESCE(SUM(s.points), 0) AS total, COUNT(s.id) AS n
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id
GROUP BY p.id""",
)
# Added later, with a join index no earlier view had: players by team, for the self-join.
TEAM_TAGS = View(
    "team_tags",
    """SELECT s.id, s.tag, p.team, q.id AS teammate
FROM player_scores s
JOIN players p ON p.id = s.player_id
LEFT JOIN players q ON q.team = p.team AND q.name = p.name""",
)
BY_TAG = View(
    "by_tag",
    "SELECT s.tag, COUNT(*) AS n, MAX(s.points) AS best FROM player_scores s GROUP BY s.tag",
)
# Same name, other SQL: the store must rebuild it, not keep the old state.
BY_TAG_CHANGED = View(
    "by_tag",
    """SELECT s.tag, COUNT(*) AS n, MIN(s.points) AS worst FROM player_scores s
WHERE s.points > 0 GROUP BY s.tag""",
)
OVERALL = View("overall", "SELECT COUNT(*) AS n, SUM(points) AS points FROM player_scores")


def _run(conn: psycopg.Connection, work: Workload, start: int, n: int) -> int:
    for i in range(start, start + n):
        work.transaction(conn, i)
    return start + n


def _check(dsn: str, data: Path, views: Sequence[View], alive: Callable[[], None]) -> None:
    wait_views_ready(data, [v.name for v in views], alive)
    wait_caught_up(dsn, data, alive=alive)
    for v in views:
        # Every view has rows here: an empty one would compare nothing.
        assert assert_view_equals(dsn, data, v.name, v.select) > 0, v.name


def test_views_added_changed_removed_in_an_existing_data_dir(dsn: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = tmp_path / "views.sql"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        work = Workload(dsn, TABLES, random.Random(5))
        work.fill(conn, {"players": 12, "player_scores": 40})
        i = 1

        views_file(path, [TOTALS])
        with PipelineThread(dsn, data, views_file=path) as p:
            i = _run(conn, work, i, 60)
            _check(dsn, data, [TOTALS], p.check)
        assert viewstore.open(data).views() == ["totals"]

        # Committed while viewstore is down: the new views are built from the mirror as of
        # before these, then streaming applies them to old and new views alike.
        i = _run(conn, work, i, 40)
        views_file(path, [TOTALS, TEAM_TAGS, BY_TAG, OVERALL])
        with PipelineThread(dsn, data, views_file=path) as p:
            _check(dsn, data, [TOTALS, TEAM_TAGS, BY_TAG, OVERALL], p.check)
            i = _run(conn, work, i, 60)
            _check(dsn, data, [TOTALS, TEAM_TAGS, BY_TAG, OVERALL], p.check)
        assert viewstore.open(data).views() == ["by_tag", "overall", "team_tags", "totals"]

        # Without a views file the stored views stay, and stay current.
        i = _run(conn, work, i, 20)
        with PipelineThread(dsn, data) as p:
            i = _run(conn, work, i, 20)
            _check(dsn, data, [TOTALS, TEAM_TAGS, BY_TAG, OVERALL], p.check)

        # totals removed, by_tag changed: one dropped, one rebuilt.
        i = _run(conn, work, i, 20)
        views_file(path, [TEAM_TAGS, BY_TAG_CHANGED, OVERALL])
        with PipelineThread(dsn, data, views_file=path) as p:
            _check(dsn, data, [TEAM_TAGS, BY_TAG_CHANGED, OVERALL], p.check)
            i = _run(conn, work, i, 60)
            _check(dsn, data, [TEAM_TAGS, BY_TAG_CHANGED, OVERALL], p.check)
        reader = viewstore.open(data)
        assert reader.views() == ["by_tag", "overall", "team_tags"]
        assert reader.view_columns("by_tag") == ["tag", "n", "worst"]
        with pytest.raises(ConfigError, match="unknown view: 'totals'"):
            reader.query("totals")
    assert sum(n for k, n in work.stats.items() if k.startswith("truncate")) >= 1, work.stats
