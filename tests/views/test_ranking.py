"""Differential tests of window views (ROW_NUMBER, RANK, DENSE_RANK) and Top-K: random
transactions, Postgres running each view's own SELECT as the oracle (issue 16, items 2 and 3).

Scores come from a small set of values, so ORDER BY sees many ties (RANK and DENSE_RANK number
peers alike) and NULLs (in the partition and the order columns); ROW_NUMBER and LIMIT views end
their ORDER BY with the key, since Postgres leaves the order among peers unspecified. Updates
move players up and down across the top-K boundary both ways, deletes and key moves remove the
leader, TRUNCATE empties a table within a transaction, and rollbacks change nothing.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

from viewdiff import Table, View, assert_mix, choice, ints, maybe_null, run_differential, seed

SCHEMA = """
CREATE TABLE players (
    id integer PRIMARY KEY,
    team text,
    score numeric(8, 1),
    level integer,
    name text,
    w double precision,
    day date
);
CREATE TABLE scores (id integer PRIMARY KEY, player_id integer, points integer);
"""

TABLES = [
    Table(
        "players",
        ids=40,
        columns={
            "team": maybe_null(choice("red", "blue", "green"), 0.15),
            # Few distinct values: ties everywhere; NULLs sort last (ASC) or first (DESC).
            "score": maybe_null(lambda rng: Decimal(rng.randint(0, 12)).scaleb(-1) * 5, 0.15),
            "level": maybe_null(ints(1, 4), 0.2),
            "name": maybe_null(choice("ann", "bob", "cid", "dee", "eve", "Zed", "al")),
            # -0 and 0 are peers (and one partition), NaN sorts after every number.
            "w": maybe_null(choice(-0.0, 0.0, 1.5, -2.25, math.inf, -math.inf, math.nan)),
            "day": maybe_null(
                lambda rng: dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 3))
            ),
        },
    ),
    Table(
        "scores",
        ids=60,
        columns={
            "player_id": maybe_null(ints(1, 44), 0.05),
            "points": maybe_null(ints(-3, 6), 0.1),
        },
        weight=0.7,
    ),
]

VIEWS = [
    # A full ranking per partition with ties: RANK and DENSE_RANK over one window (NULL team
    # is a partition of its own, NULL score sorts first under DESC).
    View(
        "team_ranks",
        """SELECT id, team, score,
       RANK() OVER (PARTITION BY team ORDER BY score DESC) AS rank,
       DENSE_RANK() OVER (PARTITION BY team ORDER BY score DESC) AS dense
FROM players""",
    ),
    # RANK alone (its row number comes from the peers before the first changed entry).
    View(
        "global_rank",
        "SELECT id, score, level, RANK() OVER (ORDER BY score, level DESC NULLS LAST) AS r "
        "FROM players WHERE id % 7 <> 3",
    ),
    # ROW_NUMBER over a total order, several ORDER BY items, explicit NULLS placement.
    View(
        "row_numbers",
        """SELECT id, name, level,
       ROW_NUMBER() OVER (PARTITION BY level ORDER BY name DESC NULLS LAST, score NULLS FIRST, id)
         AS rn
FROM players""",
    ),
    # DENSE_RANK over a join, partitioned by a column of the other table.
    View(
        "points_dense",
        """SELECT s.id, p.team, s.points,
       DENSE_RANK() OVER (PARTITION BY p.team ORDER BY s.points DESC) AS dr
FROM scores s JOIN players p ON p.id = s.player_id
WHERE s.points IS NOT NULL""",
    ),
    # Top-K per group, the issue's team_top3 shape.
    View(
        "team_top3",
        """SELECT * FROM (
  SELECT team, id, score,
         ROW_NUMBER() OVER (PARTITION BY team ORDER BY score DESC, id) AS rn
  FROM players
) t WHERE rn <= 3""",
    ),
    # Top-K by RANK (ties at the boundary all stay), not every column shown.
    View(
        "rank_top",
        """SELECT id, rk FROM (
  SELECT id, score, RANK() OVER (ORDER BY score DESC NULLS LAST) AS rk FROM players
) t WHERE t.rk < 5""",
    ),
    # DENSE_RANK = 1: every player sharing the best level of his team.
    View(
        "level_leaders",
        """SELECT team, id, level FROM (
  SELECT team, id, level, DENSE_RANK() OVER (PARTITION BY team ORDER BY level DESC) AS d
  FROM players WHERE level IS NOT NULL
) x WHERE d = 1""",
    ),
    # Floats (signed zeros, infinities, NaN) and dates, in partitions and ORDER BY.
    View(
        "float_ranks",
        """SELECT id, w, day,
       RANK() OVER (PARTITION BY day ORDER BY w DESC NULLS LAST) AS r,
       DENSE_RANK() OVER (PARTITION BY day ORDER BY w DESC NULLS LAST) AS d
FROM players""",
    ),
    View(
        "float_top",
        """SELECT * FROM (
  SELECT id, w, RANK() OVER (PARTITION BY w ORDER BY day NULLS FIRST) AS r FROM players
) t WHERE r <= 2""",
    ),
    # ORDER BY ... LIMIT in a view: a hidden row number.
    View("top5", "SELECT id, score, name FROM players ORDER BY score DESC, id LIMIT 5"),
    View(
        "bottom3_points",
        "SELECT s.id, s.points FROM scores s ORDER BY s.points NULLS FIRST, 1 DESC LIMIT 3",
    ),
]


def test_rankings_equal_postgres(dsn: str, tmp_path) -> None:
    """Every window and Top-K view equals Postgres's evaluation of its SELECT after each batch
    of random transactions, and as of every LSN it was compared at (the history)."""
    stats = run_differential(
        dsn,
        tmp_path,
        SCHEMA,
        TABLES,
        VIEWS,
        seed_value=seed(16),
        transactions=360,
        check_every=15,
        as_of=True,
    )
    assert_mix(stats)
    assert stats["as-of reads"] >= 20 * len(VIEWS), stats


def test_rankings_through_chunks_and_reconnects(dsn: str, tmp_path) -> None:
    """The same views when transactions are applied in chunks (each chunk's view changes are
    undo-logged, the next chunk renumbers over them) and the replication connection drops
    (the engine's caches and the ranking's batch overlay are discarded, the group streamed
    again)."""
    stats = run_differential(
        dsn,
        tmp_path,
        SCHEMA,
        TABLES,
        VIEWS,
        seed_value=seed(61),
        transactions=360,
        check_every=20,
        max_statements=10,
        disconnect_every=45,
        large_txn_rows=6,
        chunk_rows=3,
    )
    assert_mix(stats)
    assert stats["large transactions"] >= 10 and stats["reconnects"] >= 4, stats


STACK_SCHEMA = """
CREATE TABLE players (id integer PRIMARY KEY, name text NOT NULL, team_id integer);
CREATE TABLE player_scores (id integer PRIMARY KEY, player_id integer, score numeric(6, 1));
"""

STACK_TABLES = [
    Table(
        "players",
        ids=60,
        columns={
            "name": choice("mario", "peach", "bowser", "luigi"),
            "team_id": maybe_null(ints(1, 4), 0.1),
        },
        weight=0.5,
    ),
    Table(
        "player_scores",
        ids=150,
        columns={
            "player_id": maybe_null(ints(1, 64), 0.05),
            "score": lambda rng: Decimal(rng.randint(0, 6)),  # ties between totals
        },
    ),
]

# The issue's views, pasted verbatim: a ranking over a view, Top-K per group over a join with
# an aggregate subquery, and the global top 100 over a view; and a smaller top, so that
# players cross its boundary.
STACK_VIEWS = [
    View(
        "player_total_scores",
        """SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id
GROUP BY p.id""",
    ),
    View(
        "player_ranks",
        """SELECT player_id, name, total_score,
       RANK() OVER (ORDER BY total_score DESC) AS rank
FROM player_total_scores""",
    ),
    View(
        "team_top3",
        """SELECT * FROM (
  SELECT p.team_id, p.id, s.total, ROW_NUMBER() OVER (PARTITION BY p.team_id ORDER BY s.total DESC, p.id) AS rn
  FROM players p JOIN (SELECT player_id, SUM(score) AS total FROM player_scores GROUP BY player_id) s
    ON s.player_id = p.id
) t WHERE rn <= 3""",
    ),
    View(
        "top100",
        """SELECT player_id, total_score FROM player_total_scores ORDER BY total_score DESC, player_id LIMIT 100""",
    ),
    View(
        "top7",
        "SELECT player_id, total_score FROM player_total_scores "
        "ORDER BY total_score DESC, player_id LIMIT 7",
    ),
    # A view over a ranking: how many players share each rank.
    View("rank_sizes", "SELECT rank, COUNT(*) AS players FROM player_ranks GROUP BY rank"),
]


def test_issue_views_over_views_equal_postgres(dsn: str, tmp_path) -> None:
    """The issue's stacked leaderboard views, verbatim, equal Postgres (as of every compared
    LSN too): window views and Top-K over views and over a join with a subquery, and a view
    over a ranking."""
    stats = run_differential(
        dsn,
        tmp_path,
        STACK_SCHEMA
        + "".join(
            f"CREATE VIEW {v.name} AS {v.select};\n"
            for v in STACK_VIEWS
            if v.name in ("player_total_scores", "player_ranks")
        ),
        STACK_TABLES,
        STACK_VIEWS,
        seed_value=seed(160),
        transactions=345,
        check_every=15,
        as_of=True,
    )
    assert_mix(stats)
