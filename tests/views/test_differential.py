"""Differential tests of the view engine: random transactions, Postgres as the oracle.

Each test runs one pipeline with several views over a few tables, commits a few hundred random
transactions (see `viewdiff.Workload`: inserts, updates of any columns including the primary key,
deletes, multi-table transactions, rollbacks, NULLs, an occasional TRUNCATE) and, every few dozen
transactions, compares each view with Postgres evaluating the view's own SELECT.

Values are chosen so that the comparison is exact: numeric and integer aggregates only (float
SUM/AVG depend on Postgres's scan order in the last bits), and text compared by MIN/MAX is ASCII
lowercase (viewstore orders text by code point, the test cluster may use another collation).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
from decimal import Decimal
from pathlib import Path

from viewdiff import Table, View, assert_mix, choice, ints, maybe_null, run_differential, seed

# --------------------------------------------------------------------------- aggregates

SCORES_SCHEMA = """
CREATE TABLE players (
    id integer PRIMARY KEY,
    name text NOT NULL,
    team text,
    active boolean
);
CREATE TABLE player_scores (
    id integer PRIMARY KEY,
    player_id integer,
    score numeric(10, 2),
    points integer,
    bonus bigint,
    small smallint,
    amount numeric,
    weight double precision,
    w4 real,
    ok boolean,
    tag text,
    day date,
    at timestamptz
);
"""


def _amount(rng: random.Random) -> Decimal:
    # Unconstrained numeric: scales 0 to 3 (12 for the rare huge ones), so a sum's scale moves
    # as values come and go; rarely NaN or an infinity, which SUM/AVG count apart so that
    # removing them works.
    r = rng.random()
    if r < 0.02:
        return Decimal(rng.choice(("NaN", "Infinity", "-Infinity")))
    if r < 0.05:  # beyond Python's default 28 digits: sums and averages must stay exact
        return Decimal(rng.randint(-(10**40), 10**40)).scaleb(-rng.randint(0, 12))
    return Decimal(rng.randint(-99999, 99999)).scaleb(-rng.randint(0, 3))


def _weight(rng: random.Random) -> float:
    # Multiples of 1/4 in a small range: every float sum is exact, whatever order Postgres
    # adds in, so float SUM/AVG compare exactly. Rarely an infinity or NaN.
    if rng.random() < 0.02:
        return rng.choice((math.inf, -math.inf, math.nan))
    return rng.randint(-400, 400) / 4


def _score(rng: random.Random) -> Decimal:
    # Some whole values, so that sums mix scales 0 and 2 the way numeric(10,2) stores them
    # (always scale 2 here: the column's typmod) and MIN/MAX see ties.
    if rng.random() < 0.2:
        return Decimal(rng.randint(-5, 20))
    return Decimal(rng.randint(-5000, 10000)).scaleb(-2)


PLAYERS = Table(
    "players",
    ids=24,
    columns={
        "name": choice("mario", "peach", "bowser", "luigi", "yoshi", "toad", "daisy", "wario"),
        "team": maybe_null(choice("red", "blue", "green"), 0.2),
        "active": maybe_null(choice(True, False)),
    },
    weight=0.6,
)
PLAYER_SCORES = Table(
    "player_scores",
    ids=90,
    columns={
        # Ids past the players' range: scores of no player (LEFT/INNER JOIN differ).
        "player_id": maybe_null(ints(1, 28), 0.08),
        "score": maybe_null(_score),
        "points": maybe_null(ints(-100, 100)),
        "bonus": maybe_null(
            lambda rng: rng.choice((rng.randint(-(10**15), 10**15), 2**62, -(2**62)))
        ),
        "small": maybe_null(ints(-1000, 1000)),
        "amount": maybe_null(_amount),
        "weight": maybe_null(_weight),
        "w4": maybe_null(_weight),
        "ok": maybe_null(choice(True, False), 0.15),
        "tag": maybe_null(choice("a", "b", "c", "ab", "ba", "abc", "z"), 0.15),
        "day": maybe_null(lambda rng: dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 400))),
        "at": maybe_null(
            lambda rng: (
                dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randint(0, 10**7))
            )
        ),
    },
)

SEED_SELECT = """SELECT
    p.id AS player_id,
    p.name,
    COALESCE(SUM(s.score), 0) AS total_score
FROM
    players p
LEFT JOIN
    player_scores s ON p.id = s.player_id
GROUP BY
    p.id"""

AGGREGATE_VIEWS = [
    # The seed's leaderboard, verbatim: players without scores are LEFT JOIN rows of NULLs.
    View("player_total_scores", SEED_SELECT),
    # MIN/MAX: deleting or updating the current extreme must find the next one.
    View(
        "score_extremes",
        """SELECT s.player_id,
       MIN(s.score) AS min_score, MAX(s.score) AS max_score,
       MIN(s.points) AS min_points, MAX(s.points) AS max_points,
       MIN(s.bonus) AS min_bonus, MAX(s.bonus) AS max_bonus,
       MIN(s.tag) AS min_tag, MAX(s.tag) AS max_tag,
       MIN(s.day) AS first_day, MAX(s.day) AS last_day,
       MIN(s.at) AS first_at, MAX(s.at) AS last_at, MAX(s.w4) AS max_w4
FROM player_scores s
GROUP BY s.player_id""",
    ),
    # SUM(int2/int4) -> int8, SUM(int8) and SUM(numeric) -> numeric, AVG -> numeric, exact.
    View(
        "score_sums",
        """SELECT s.player_id,
       SUM(s.points) AS sum_points, SUM(s.bonus) AS sum_bonus, SUM(s.score) AS sum_score,
       SUM(s.small) AS sum_small, SUM(s.amount) AS sum_amount, SUM(s.weight) AS sum_weight,
       SUM(s.w4) AS sum_w4,
       AVG(s.points) AS avg_points, AVG(s.bonus) AS avg_bonus, AVG(s.score) AS avg_score,
       AVG(s.small) AS avg_small, AVG(s.amount) AS avg_amount, AVG(s.weight) AS avg_weight,
       AVG(s.w4) AS avg_w4
FROM player_scores s
GROUP BY s.player_id""",
    ),
    # COUNT(*), COUNT(x), COUNT(DISTINCT x), grouped by a nullable column: the NULL group,
    # and groups that empty and come back.
    View(
        "score_counts",
        """SELECT s.tag, COUNT(*) AS n, COUNT(s.score) AS n_score,
       COUNT(DISTINCT s.points) AS distinct_points,
       COUNT(DISTINCT s.player_id) AS distinct_players,
       COUNT(DISTINCT s.score) AS distinct_scores, COUNT(DISTINCT s.amount) AS distinct_amounts,
       COUNT(DISTINCT s.day) AS distinct_days,
       COUNT(DISTINCT s.points) FILTER (WHERE s.ok) AS distinct_ok_points
FROM player_scores s
GROUP BY s.tag""",
    ),
    # BOOL_AND/BOOL_OR, FILTER, HAVING (groups appear and disappear as HAVING flips).
    View(
        "score_flags",
        """SELECT s.player_id, BOOL_AND(s.ok) AS all_ok, BOOL_OR(s.ok) AS any_ok,
       SUM(s.points) FILTER (WHERE s.ok) AS ok_points,
       COUNT(*) FILTER (WHERE s.score > 10) AS big_scores,
       MAX(s.score) FILTER (WHERE s.tag IN ('a', 'b')) AS max_ab,
       BOOL_OR(s.points > 50) FILTER (WHERE s.day >= '2024-06-01') AS late_high
FROM player_scores s
GROUP BY s.player_id
HAVING COUNT(*) >= 2 AND (SUM(s.points) IS NULL OR SUM(s.points) > -80)""",
    ),
    # A join grouped by columns of both sides, NULL keys from the LEFT JOIN's missing rows.
    View(
        "team_tags",
        """SELECT p.team, s.tag, COUNT(s.id) AS n, COUNT(*) AS joined,
       SUM(s.points) AS points, MIN(p.name) AS first_name, MAX(s.score) AS best
FROM players p
LEFT JOIN player_scores s ON s.player_id = p.id
GROUP BY p.team, s.tag""",
    ),
    # Aggregates without GROUP BY: always one row, even over no rows (after a TRUNCATE).
    View(
        "score_totals",
        """SELECT COUNT(*) AS n, SUM(points) AS points, MAX(score) AS best,
       AVG(score) AS avg_score, BOOL_OR(ok) AS any_ok, COUNT(DISTINCT tag) AS tags
FROM player_scores""",
    ),
    View(
        "active_totals",
        """SELECT COUNT(*) AS n, SUM(s.score) AS total, MIN(s.day) AS first_day
FROM players p
JOIN player_scores s ON s.player_id = p.id
WHERE p.active""",
    ),
    # GROUP BY expressions, grouped columns carried by the players' primary key.
    View(
        "point_buckets",
        """SELECT s.points % 3 AS bucket, upper(s.tag) AS tag, COUNT(*) AS n,
       SUM(s.score) AS total
FROM player_scores s
WHERE s.points IS NOT NULL
GROUP BY s.points % 3, upper(s.tag)""",
    ),
    # Aggregates of expressions, expressions of aggregates and group keys, an aggregate used
    # twice, GROUP BY a bool and a date, GROUP BY position.
    View(
        "score_expressions",
        """SELECT s.ok, s.day, SUM(s.points * 2 + 1) AS odd_sum,
       SUM(CASE WHEN s.tag = 'a' THEN 1 ELSE 0 END) AS a_count,
       AVG(s.score * s.points) AS avg_product, MAX(s.points + s.small) AS max_mix,
       COUNT(DISTINCT lower(s.tag)) AS tags,
       SUM(s.points) AS points, SUM(s.points) + 1 AS points_plus,
       MAX(s.points) - MIN(s.points) AS spread,
       COALESCE(SUM(s.score), 0) / NULLIF(COUNT(*), 0) AS mean_score,
       CASE WHEN s.ok THEN COUNT(*) END AS ok_rows, s.day - DATE '2024-01-01' + COUNT(*) AS mix
FROM player_scores s
WHERE s.day < '2024-03-01'
GROUP BY 1, 2""",
    ),
    # Grouped by the key of the joined (second) table: its columns are carried; HAVING on one.
    View(
        "scores_by_player",
        """SELECT p.id, p.name, upper(p.name) || ':' || COUNT(*) AS label, SUM(s.points) AS points
FROM player_scores s
JOIN players p ON p.id = s.player_id
GROUP BY p.id
HAVING p.team IS NULL OR p.team <> 'red'""",
    ),
    # GROUP BY on the LEFT JOIN's nullable side, and a grouped column not in the output.
    View(
        "scores_by_maybe_player",
        """SELECT p.id, p.team, COUNT(*) AS n, BOOL_AND(s.ok) AS all_ok
FROM player_scores s
LEFT JOIN players p ON p.id = s.player_id
GROUP BY p.id""",
    ),
    # The aggregate below the join with WHERE on the base table: players without scores
    # (COUNT(*) is 1 for the LEFT JOIN's row of NULLs, COUNT(s.id) 0, SUM NULL), inactive and
    # NULL-active players filtered out, scores of players that do not exist ignored.
    View(
        "active_player_totals",
        """SELECT p.id, p.name, COUNT(*) AS joined, COUNT(s.id) AS scores,
       SUM(s.points) AS points, MAX(s.score) AS best, COUNT(DISTINCT s.tag) AS tags
FROM players p
LEFT JOIN player_scores s ON s.player_id = p.id
WHERE p.active
GROUP BY p.id""",
    ),
    View(
        "tag_sizes",
        "SELECT COUNT(*) AS n, MAX(s.points) AS best FROM player_scores s GROUP BY s.tag",
    ),
    View(
        "player_summary",
        """SELECT p.id, p.name, p.team, p.active, COUNT(s.id) AS scores,
       AVG(s.points) AS avg_points, MAX(s.day) AS last_day,
       COALESCE(SUM(s.score) FILTER (WHERE s.ok), 0) AS ok_total
FROM players p
JOIN player_scores s ON s.player_id = p.id
GROUP BY p.id
HAVING COUNT(s.id) > 1""",
    ),
]


def test_aggregates_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SCORES_SCHEMA,
        [PLAYERS, PLAYER_SCORES],
        AGGREGATE_VIEWS,
        seed_value=seed(1),
        transactions=400,
    )
    assert_mix(stats)


# --------------------------------------------------------------------------- joins

JOINS_SCHEMA = """
CREATE TABLE regions (id integer PRIMARY KEY, name text NOT NULL, zone text);
CREATE TABLE teams (id integer PRIMARY KEY, name text, region_id integer);
CREATE TABLE members (
    id integer PRIMARY KEY,
    team_id integer,
    manager_id integer,
    name text,
    salary numeric(10, 2),
    level integer
);
CREATE TABLE tasks (id integer PRIMARY KEY, member_id bigint, hours integer, done boolean);
"""

JOIN_TABLES = [
    Table(
        "regions",
        ids=6,
        columns={
            "name": choice("north", "south", "east", "west"),
            "zone": maybe_null(choice("x", "y")),
        },
        weight=0.3,
    ),
    Table(
        "teams",
        ids=12,
        columns={
            "name": maybe_null(choice("ants", "bees", "cats", "dogs")),
            "region_id": maybe_null(ints(1, 7), 0.05),
        },
        weight=0.5,
    ),
    Table(
        "members",
        ids=40,
        columns={
            "team_id": maybe_null(ints(1, 13), 0.05),
            # Sometimes a member's own id: a row that joins itself in the self-joins.
            "manager_id": maybe_null(ints(1, 42), 0.1),
            "name": maybe_null(choice("ann", "bob", "cid", "dee", "eve")),
            "salary": maybe_null(lambda rng: Decimal(rng.randint(1000, 900000)).scaleb(-2)),
            "level": maybe_null(ints(1, 3)),
        },
    ),
    Table(
        "tasks",
        ids=80,
        columns={
            "member_id": maybe_null(ints(1, 44), 0.05),
            "hours": maybe_null(ints(1, 4)),
            "done": maybe_null(choice(True, False)),
        },
    ),
]

JOIN_VIEWS = [
    # Three tables, INNER then LEFT, no GROUP BY: rows keyed by the three source keys.
    View(
        "team_member_tasks",
        """SELECT t.id AS team_id, t.name AS team, m.id AS member_id, m.name AS member,
       k.id AS task_id, k.hours
FROM teams t
JOIN members m ON m.team_id = t.id
LEFT JOIN tasks k ON k.member_id = m.id""",
    ),
    # LEFT then INNER on a column of the LEFT JOIN's table: unmatched members drop out again.
    View(
        "member_regions",
        """SELECT m.id AS member_id, m.name, t.name AS team, r.name AS region
FROM members m
LEFT JOIN teams t ON t.id = m.team_id
JOIN regions r ON r.id = t.region_id""",
    ),
    # An INNER JOIN after a LEFT JOIN, on a column of the first table: a change of the middle
    # table's rows moves the NULL-extended rows of every member.
    View(
        "teams_members_regions",
        """SELECT t.id AS team_id, r.name AS region, m.id AS member_id, m.level
FROM teams t
LEFT JOIN regions r ON r.id = t.region_id
JOIN members m ON m.team_id = t.id""",
    ),
    # Four tables, all LEFT, aggregated per region.
    View(
        "region_rollup",
        """SELECT r.id, r.name, COUNT(DISTINCT t.id) AS teams, COUNT(DISTINCT m.id) AS members,
       COUNT(k.id) AS tasks, SUM(k.hours) AS hours, SUM(m.salary) AS salary_rows,
       MAX(m.level) AS top_level, BOOL_AND(k.done) AS all_done
FROM regions r
LEFT JOIN teams t ON t.region_id = r.id
LEFT JOIN members m ON m.team_id = t.id
LEFT JOIN tasks k ON k.member_id = m.id
GROUP BY r.id""",
    ),
    # A self-join: each member with their manager (NULLs when there is none).
    View(
        "member_managers",
        """SELECT e.id, e.name, m.id AS manager_id, m.name AS manager_name,
       m.level - e.level AS level_gap
FROM members e
LEFT JOIN members m ON e.manager_id = m.id""",
    ),
    View(
        "manager_reports",
        """SELECT m.id, m.name, COUNT(e.id) AS reports, SUM(e.salary) AS report_salary,
       MAX(e.level) AS top_report_level
FROM members m
LEFT JOIN members e ON e.manager_id = m.id
GROUP BY m.id""",
    ),
    # The same table at three positions.
    View(
        "grand_managers",
        """SELECT e.id, m.id AS boss, g.id AS grand_boss, g.name AS grand_name
FROM members e
JOIN members m ON e.manager_id = m.id
JOIN members g ON m.manager_id = g.id""",
    ),
    # Many-to-many on non-key columns (join indexes on both sides), two equalities AND-ed.
    View(
        "peers",
        """SELECT a.id AS a_id, b.id AS b_id, a.team_id
FROM members a
JOIN members b ON a.team_id = b.team_id AND a.level = b.level
WHERE a.id < b.id""",
    ),
    # A join condition on columns of two earlier tables; bigint against integer keys.
    View(
        "task_owners",
        """SELECT k.id, k.hours, m.name, t.name AS team, r.zone
FROM tasks k
LEFT JOIN members m ON m.id = k.member_id
LEFT JOIN teams t ON t.id = m.team_id
LEFT JOIN regions r ON r.id = t.region_id AND r.id = m.level
WHERE k.done IS NULL OR NOT k.done""",
    ),
    View(
        "team_hours",
        """SELECT t.id, t.name, r.name AS region, COUNT(*) AS rows, SUM(k.hours) AS hours
FROM teams t
JOIN regions r ON r.id = t.region_id
JOIN members m ON m.team_id = t.id
JOIN tasks k ON k.member_id = m.id AND k.hours = m.level
GROUP BY t.id, r.name""",
    ),
]


def test_joins_equal_postgres(dsn: str, tmp_path: Path) -> None:
    # With the replication connection dropped now and then: the pipeline throws away what it
    # has not synced, the engine's caches included, and applies it again.
    stats = run_differential(
        dsn,
        tmp_path,
        JOINS_SCHEMA,
        JOIN_TABLES,
        JOIN_VIEWS,
        seed_value=seed(2),
        transactions=400,
        disconnect_every=60,
    )
    assert_mix(stats)
    assert stats["reconnects"] >= 4, stats


# --------------------------------------------------------------------------- join syntax

# The shapes of another incremental-view project's tests (issue 17), pasted as written: USING,
# a comma join, and with aggregates over them; NATURAL and RIGHT joins beside them.
SYNTAX_SCHEMA = """
CREATE TABLE mv_base_a (id integer PRIMARY KEY, i integer, j integer);
CREATE TABLE mv_base_b (id integer PRIMARY KEY, i integer, k integer);
"""
SYNTAX_TABLES = [
    Table(
        "mv_base_a", ids=30, columns={"i": maybe_null(ints(1, 8)), "j": maybe_null(ints(-5, 50))}
    ),
    Table(
        "mv_base_b", ids=30, columns={"i": maybe_null(ints(1, 8)), "k": maybe_null(ints(-5, 50))}
    ),
]
SYNTAX_VIEWS = [
    View("using_inner", "SELECT i, j, k FROM mv_base_a a INNER JOIN mv_base_b b USING (i)"),
    View("using_left", "SELECT a.i, j, k FROM mv_base_a a LEFT JOIN mv_base_b b USING (i)"),
    View("comma", "SELECT a.i, a.j FROM mv_base_a a, mv_base_b b WHERE a.i = b.i"),
    View(
        "using_grouped",
        "SELECT i, COUNT(*) AS n, SUM(k) AS total, COUNT(b.id) AS matched "
        "FROM mv_base_a a LEFT JOIN mv_base_b b USING (i) GROUP BY i",
    ),
    View(
        "comma_grouped",
        "SELECT a.i, COUNT(*) AS n, SUM(b.k) AS total FROM mv_base_a a, mv_base_b b "
        "WHERE a.i = b.i AND b.k > 0 GROUP BY a.i",
    ),
    View("range_left", "SELECT a.i, b.i AS bi FROM mv_base_a a LEFT JOIN mv_base_b b ON a.i > b.i"),
    View(
        "range_left_grouped",
        "SELECT a.i, COUNT(*) AS n, SUM(b.k) AS total, COUNT(b.id) AS matched "
        "FROM mv_base_a a LEFT JOIN mv_base_b b ON a.i > b.i GROUP BY a.i",
    ),
    View("natural_join", "SELECT id, i, j, k FROM mv_base_a NATURAL JOIN mv_base_b"),
    View(
        "right_join",
        "SELECT b.id AS bid, a.id AS aid, a.j, b.k "
        "FROM mv_base_a a RIGHT JOIN mv_base_b b ON a.i = b.i",
    ),
    View(
        "right_using_grouped",
        "SELECT i, COUNT(a.id) AS n, MAX(a.j) AS top "
        "FROM mv_base_a a RIGHT JOIN mv_base_b b USING (i) GROUP BY i",
    ),
]


def test_join_syntax_equals_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SYNTAX_SCHEMA,
        SYNTAX_TABLES,
        SYNTAX_VIEWS,
        seed_value=seed(17),
        transactions=360,
        as_of=True,
    )
    assert_mix(stats)
    assert stats["as-of reads"] >= 40, stats
    rows = {k: v for k, v in stats.items() if k.startswith("rows")}
    assert all(n > 0 for n in rows.values()), str(rows)  # NATURAL matches id and i: few


# FULL OUTER JOIN (issue 17): a row of either side that loses its last match shows
# null-extended, and stops when it gains one; the merged USING column is COALESCE(a.i, b.i).
FULL_VIEWS = [
    View(
        "full_on",
        "SELECT a.id AS aid, b.id AS bid, a.j, b.k "
        "FROM mv_base_a a FULL OUTER JOIN mv_base_b b ON a.i = b.i",
    ),
    View("full_using", "SELECT i, j, k FROM mv_base_a a FULL JOIN mv_base_b b USING (i)"),
    View(
        "full_grouped",
        "SELECT i, COUNT(*) AS n, COUNT(a.id) AS na, COUNT(b.id) AS nb, SUM(k) AS total "
        "FROM mv_base_a a FULL JOIN mv_base_b b USING (i) GROUP BY i",
    ),
    View(
        "full_two_columns",
        "SELECT a.id AS aid, b.id AS bid FROM mv_base_a a FULL JOIN mv_base_b b "
        "ON a.i = b.i AND a.j = b.k",
    ),
    View(
        "full_filtered",
        "SELECT a.j, b.k FROM mv_base_a a FULL JOIN mv_base_b b ON a.i = b.i WHERE b.k > 0 "
        "OR a.j IS NULL",
    ),
    View(
        "full_self",
        "SELECT x.id AS xid, y.id AS yid FROM mv_base_a x FULL JOIN mv_base_a y ON x.j = y.i",
    ),
]


def test_full_joins_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SYNTAX_SCHEMA,
        SYNTAX_TABLES,
        FULL_VIEWS,
        seed_value=seed(1717),
        transactions=360,
        as_of=True,
    )
    assert_mix(stats)
    assert stats["as-of reads"] >= 40, stats


# Range joins (issue 17): conditions a range scan of a sort index bounds, on either side.
RANGE_VIEWS = [
    View(
        "range_inner",
        "SELECT a.id AS aid, b.id AS bid, a.j, b.k "
        "FROM mv_base_a a JOIN mv_base_b b ON a.j BETWEEN b.i AND b.k",
    ),
    View(
        "range_mixed",
        "SELECT a.id AS aid, b.id AS bid FROM mv_base_a a LEFT JOIN mv_base_b b "
        "ON b.i = a.i AND a.j <= b.k",
    ),
    View(
        "range_comma",
        "SELECT a.id AS aid, b.id AS bid FROM mv_base_a a, mv_base_b b "
        "WHERE a.i <= b.i AND a.j > 10",
    ),
    View(
        "range_right",
        "SELECT a.id AS aid, b.id AS bid, a.i, b.i AS bi "
        "FROM mv_base_a a RIGHT JOIN mv_base_b b ON a.i < b.i AND b.i < a.j",
    ),
    View(
        "range_grouped",
        "SELECT b.id, COUNT(a.id) AS n, SUM(a.j) AS total, MIN(a.j) AS low "
        "FROM mv_base_b b LEFT JOIN mv_base_a a ON a.j >= b.k GROUP BY b.id",
    ),
    View(
        "range_self",
        "SELECT x.id AS xid, y.id AS yid FROM mv_base_a x LEFT JOIN mv_base_a y "
        "ON x.i < y.i AND y.j <= x.j",
    ),
]


def test_range_joins_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SYNTAX_SCHEMA,
        SYNTAX_TABLES,
        RANGE_VIEWS,
        seed_value=seed(1718),
        transactions=360,
        as_of=True,
    )
    assert_mix(stats)


# CROSS JOIN (issue 17): every row with every row; a comma join without an equality or a
# comparison is one too, filtered by WHERE.
CROSS_VIEWS = [
    View(
        "cross_all",
        "SELECT a.id AS aid, b.id AS bid, a.j + b.k AS s FROM mv_base_a a CROSS JOIN mv_base_b b",
    ),
    View(
        "cross_grouped",
        "SELECT a.i, COUNT(*) AS n, SUM(b.k) AS total FROM mv_base_a a CROSS JOIN mv_base_b b "
        "GROUP BY a.i",
    ),
    View(
        "cross_comma",
        "SELECT a.id AS aid, b.id AS bid FROM mv_base_a a, mv_base_b b WHERE a.j IS NULL "
        "OR b.k IS NULL",
    ),
    View("cross_total", "SELECT COUNT(*) AS n, SUM(a.j) AS total FROM mv_base_a a, mv_base_b b"),
    View(
        "cross_self",
        "SELECT x.id AS xid, y.id AS yid FROM mv_base_a x, mv_base_a y WHERE x.j IS NOT NULL",
    ),
]


def test_cross_joins_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SYNTAX_SCHEMA,
        SYNTAX_TABLES,
        CROSS_VIEWS,
        seed_value=seed(1719),
        transactions=300,
        as_of=True,
    )
    assert_mix(stats, commits=250)


# --------------------------------------------------------------------------- expressions

ITEMS_SCHEMA = """
CREATE TABLE categories (id integer PRIMARY KEY, label text);
CREATE TABLE items (
    id integer PRIMARY KEY,
    cat_id integer,
    name text,
    code varchar(12),
    qty integer,
    price numeric(10, 2),
    ratio double precision,
    created timestamp,
    created_tz timestamptz,
    day date,
    flag boolean,
    note text
);
"""


def _when(rng: random.Random) -> dt.datetime:
    micro = rng.choice((0, 0, rng.randint(0, 999_999)))
    return dt.datetime(2024, 1, 1) + dt.timedelta(
        seconds=rng.randint(0, 400 * 86400), microseconds=micro
    )


ITEM_TABLES = [
    Table(
        "categories",
        ids=6,
        columns={"label": maybe_null(choice("food", "tools", "hidden", "toys"))},
        weight=0.3,
    ),
    Table(
        "items",
        ids=70,
        columns={
            "cat_id": maybe_null(ints(1, 7)),
            # Mixed case for ILIKE/lower/upper; '_' and '%' for LIKE's escapes.
            "name": maybe_null(
                choice("apple", "Banana", "bolt", "BOX", "cherry", "b_x", "x%y", "")
            ),
            "code": maybe_null(choice("ab", "AB", "xyz", "x_1", "X_2", "x12", "apple")),
            "qty": maybe_null(ints(-20, 60)),
            "price": maybe_null(lambda rng: Decimal(rng.randint(-500, 15000)).scaleb(-2)),
            "ratio": maybe_null(
                lambda rng: rng.choice((0.1, 0.5, -3.75, 1e10, 2.5e-7, rng.uniform(-100, 100)))
            ),
            "created": maybe_null(_when),
            "created_tz": maybe_null(lambda rng: _when(rng).replace(tzinfo=dt.UTC)),
            "day": maybe_null(
                lambda rng: dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 400))
            ),
            "flag": maybe_null(choice(True, False)),
            "note": maybe_null(choice("fragile", "new", "sale"), 0.5),
        },
    ),
]

EXPRESSION_VIEWS = [
    View(
        "item_math",
        """SELECT i.id, i.qty * 2 + 1 AS q2, i.price * i.qty AS total,
       i.price / NULLIF(i.qty, 0) AS unit_price, i.qty / 7 AS sevenths, i.qty % 4 AS rem,
       -i.qty AS neg, i.price - 0.5 AS less, i.ratio * i.qty AS scaled, i.ratio + 1 AS ratio1,
       (i.qty + 0.5) * 2 AS halves, i.qty::numeric / 3 AS thirds, i.price % 3 AS price_rem,
       i.day + 7 AS next_week, i.day - 1 AS yesterday, i.day - DATE '2024-01-01' AS day_no
FROM items i""",
    ),
    View(
        "item_text",
        """SELECT i.id, i.name || '-' || i.code AS label, i.name || i.qty AS name_qty,
       'p=' || i.price AS price_label, lower(i.name) AS lower_name, upper(i.code) AS upper_code,
       length(i.name) AS name_len, length(i.code) AS code_len,
       COALESCE(i.note, i.code, 'n/a') AS note_or_code, NULLIF(i.name, 'apple') AS not_apple,
       NULLIF(i.qty, 0) AS nonzero_qty, i.qty::text AS qty_text, CAST(i.price AS text) AS price_text,
       i.ratio::text AS ratio_text, i.flag::text AS flag_text, i.created::text AS created_text,
       i.day::text AS day_text, 1 AS one, 'x' AS x, NULL::integer AS nothing
FROM items i""",
    ),
    View(
        "item_logic",
        """SELECT i.id, i.qty > 10 AS big, i.price <= 5 AS cheap, i.name = i.code AS same,
       i.qty <> 0 AND i.flag AS flagged, i.flag OR i.qty < 0 AS either, NOT i.flag AS unflagged,
       CASE WHEN i.qty IS NULL THEN 'none' WHEN i.qty < 0 THEN 'neg'
            WHEN i.qty < 10 THEN 'low' ELSE 'high' END AS bucket,
       CASE i.code WHEN 'ab' THEN 1 WHEN 'xyz' THEN 2 END AS code_no,
       CASE WHEN i.flag THEN i.price ELSE i.qty END AS flag_value,
       GREATEST(i.qty, 0, i.price) AS at_least_0, LEAST(i.qty, i.price, 50) AS at_most_50,
       GREATEST(i.day, DATE '2024-06-01') AS from_june, LEAST(i.ratio, 1) AS ratio_cap
FROM items i""",
    ),
    View(
        "item_casts",
        """SELECT i.id, i.price::integer AS price_int, CAST(i.qty AS bigint) AS qty8,
       i.qty::smallint AS qty2, i.price::numeric(6, 1) AS price_1, i.ratio::numeric AS ratio_num,
       i.qty::double precision / 4 AS quarter, LEAST(i.ratio, 1000)::integer AS ratio_int,
       (i.qty <> 0)::integer AS nonzero, CAST(i.qty % 2 AS boolean) AS odd,
       i.day::timestamp AS day_ts, i.created::date AS created_day, i.qty::real AS qty_real,
       date_trunc('month', i.created) AS month, date_trunc('hour', i.created) AS hour,
       date_trunc('week', i.day::timestamp) AS week, date_trunc('quarter', i.created) AS qtr,
       date_trunc('year', i.created) AS year, date_trunc('day', i.created_tz) AS tz_day,
       date_trunc('minute', i.created_tz) AS tz_minute
FROM items i""",
    ),
    # WHERE: AND/OR/NOT, BETWEEN, LIKE, IS NOT NULL.
    View(
        "item_filter",
        """SELECT i.id, i.name, i.qty, i.price
FROM items i
WHERE (i.qty BETWEEN 5 AND 40 OR i.price > 80) AND NOT (i.name LIKE 'b%') AND i.code IS NOT NULL""",
    ),
    # ILIKE with an escaped '_', IN lists, IS NULL, three-valued OR.
    View(
        "item_filter_or",
        """SELECT i.id, i.code, i.note
FROM items i
WHERE i.code ILIKE 'x\\_%' OR i.qty IN (1, 2, 3, 30) OR (i.note IS NULL AND i.flag)
   OR i.name LIKE '%\\%%'""",
    ),
    # The negated forms, and comparisons with date and timestamp literals.
    View(
        "item_filter_not",
        """SELECT i.id, i.day, i.created, i.name
FROM items i
WHERE i.qty NOT IN (0, 10, 20) AND i.price NOT BETWEEN 10 AND 20
  AND i.name NOT ILIKE '%an%' AND i.day >= '2024-03-01'
  AND i.created < '2024-09-01 12:00' AND i.flag IS NOT NULL
  AND i.day BETWEEN '2024-02-01' AND '2024-12-31'""",
    ),
    # A join without GROUP BY, filtered on the LEFT JOIN's nullable side.
    View(
        "item_categories",
        """SELECT i.id, i.name, c.id AS cat, c.label,
       upper(c.label) || ':' || lower(i.name) AS tag, COALESCE(c.label, 'none') AS label_or_none
FROM items i
LEFT JOIN categories c ON c.id = i.cat_id
WHERE c.label IS NULL OR c.label <> 'hidden'""",
    ),
]


def test_expressions_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        ITEMS_SCHEMA,
        ITEM_TABLES,
        EXPRESSION_VIEWS,
        seed_value=seed(3),
        transactions=400,
    )
    assert_mix(stats)


def test_chunked_transactions_equal_postgres(dsn: str, tmp_path: Path) -> None:
    # Past --large-txn-rows a transaction is replayed and applied in chunks, the views written
    # as of each chunk and the engine's caches dropped between them: longer transactions and a
    # tiny threshold make many of them large.
    stats = run_differential(
        dsn,
        tmp_path,
        SCORES_SCHEMA + JOINS_SCHEMA,
        [PLAYERS, PLAYER_SCORES, *JOIN_TABLES],
        AGGREGATE_VIEWS + JOIN_VIEWS,
        seed_value=seed(4),
        transactions=300,
        max_statements=8,
        large_txn_rows=5,
        chunk_rows=2,
    )
    assert_mix(stats, commits=250)
    assert stats["large transactions"] >= 20, stats


# --------------------------------------------------------------------------- keys and names

KEYS_SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.courses (code text PRIMARY KEY, title text, credits integer);
CREATE TABLE "Students" ("Id" integer PRIMARY KEY, "Name" text, essay text, mood integer);
ALTER TABLE "Students" ALTER COLUMN essay SET STORAGE EXTERNAL;
CREATE TABLE enrollments (
    student_id integer,
    course text,
    grade integer,
    PRIMARY KEY (student_id, course)
);
CREATE TABLE audits (id integer PRIMARY KEY, v integer);
"""
COURSES = ("math", "art", "bio", "chem", "law", "zoo", "geo")


def _essay(rng: random.Random) -> str:
    # Long, stored out of line (TOAST, STORAGE EXTERNAL): an UPDATE of another column
    # replicates it as "unchanged", and the engine must take it from the mirror.
    return "".join(rng.choices(string.ascii_lowercase, k=rng.choice((12, 4000))))


KEY_TABLES = [
    Table(
        "app.courses",
        ids=5,
        key={"code": choice(*COURSES[:6])},
        columns={
            "title": maybe_null(choice("intro", "advanced")),
            "credits": maybe_null(ints(1, 5)),
        },
        weight=0.4,
    ),
    Table(
        "Students",
        ids=16,
        key={"Id": ints(1, 16)},
        columns={
            "Name": maybe_null(choice("ann", "bob", "cid")),
            "essay": maybe_null(_essay),
            "mood": maybe_null(ints(1, 3)),
        },
    ),
    Table(
        "enrollments",
        ids=40,
        key={"student_id": ints(1, 17), "course": choice(*COURSES)},
        columns={"grade": maybe_null(ints(1, 6))},
    ),
]

KEY_VIEWS = [
    # A composite key, a text key found by a key get, quoted mixed-case names, another schema.
    View(
        "enrollment_details",
        """SELECT e.student_id, e.course, c.title, s."Name", e.grade, length(s.essay) AS essay_len
FROM enrollments e
LEFT JOIN app.courses c ON c.code = e.course
LEFT JOIN "Students" s ON s."Id" = e.student_id""",
    ),
    View(
        "course_grades",
        """SELECT c.code, c.title, COUNT(e.grade) AS graded, AVG(e.grade) AS avg_grade,
       SUM(c.credits) AS credits
FROM app.courses c
LEFT JOIN enrollments e ON e.course = c.code
GROUP BY c.code""",
    ),
    # Grouped by a whole composite key: the other columns are carried.
    View(
        "enrollment_groups",
        """SELECT e.student_id, e.course, e.grade, COUNT(*) AS n
FROM enrollments e
GROUP BY e.student_id, e.course""",
    ),
    View(
        "student_essays",
        """SELECT s."Id" AS "StudentId", s."Name", length(s.essay) AS len,
       s.essay LIKE 'a%' AS starts_a, upper(s."Name") AS shout, s.mood
FROM "Students" s
WHERE s.essay IS NOT NULL""",
    ),
    # Over a table no transaction touches, empty from the start: one row of COUNT 0 and NULLs.
    View("audit_totals", "SELECT COUNT(*) AS n, SUM(v) AS total, MAX(v) AS top FROM audits"),
]


def test_keys_and_names_equal_postgres(dsn: str, tmp_path: Path) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        KEYS_SCHEMA,
        KEY_TABLES,
        KEY_VIEWS,
        seed_value=seed(5),
        transactions=300,
        initial={"app.courses": 4, "Students": 10, "enrollments": 25},
    )
    assert_mix(stats, commits=250)
