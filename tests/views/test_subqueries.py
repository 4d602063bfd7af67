"""Subqueries in FROM, SELECT DISTINCT, IN/EXISTS and UNION ALL (issue 16), each against
Postgres running the view's own SQL after random transactions.

Each construct is lowered to views over views (`views.stack`): a subquery in FROM is a view of
its own, DISTINCT a GROUP BY of every column, [NOT] IN and [NOT] EXISTS a join (or an anti-join)
with a DISTINCT view of the subquery, UNION ALL a FULL JOIN of its branches that never matches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_stacked import SEED_SCHEMA, TABLES
from viewdiff import View, assert_mix, run_differential, seed

DERIVED = [
    # The team_top3 without its ranking: a join with an aggregate subquery, SELECT *.
    View(
        "team_totals",
        "SELECT * FROM (SELECT p.team, p.id, s.total FROM players p JOIN "
        "(SELECT player_id, SUM(score) AS total FROM player_scores GROUP BY player_id) s "
        "ON s.player_id = p.id) t WHERE total > 10",
    ),
    View(
        "left_derived",
        "SELECT p.id, p.name, x.n FROM players p LEFT JOIN (SELECT player_id, COUNT(*) AS n "
        "FROM player_scores WHERE score > 0 GROUP BY player_id) x ON x.player_id = p.id",
    ),
    View(
        "comma_derived",
        "SELECT p.name, x.best FROM players p, (SELECT player_id, MAX(score) AS best "
        "FROM player_scores GROUP BY player_id) x WHERE x.player_id = p.id AND x.best > 5",
    ),
    View(
        "grouped_over_derived",
        "SELECT t.team, COUNT(*) AS n, SUM(t.total) AS total FROM (SELECT p.team, "
        "COALESCE(SUM(s.score), 0) AS total FROM players p LEFT JOIN player_scores s "
        "ON s.player_id = p.id GROUP BY p.id) t GROUP BY t.team",
    ),
    View("teams", "SELECT DISTINCT team FROM players"),
    View(
        "distinct_join",
        "SELECT DISTINCT p.name, s.player_id FROM players p JOIN player_scores s "
        "ON s.player_id = p.id",
    ),
    View("distinct_star", "SELECT DISTINCT * FROM (SELECT team, name FROM players) x"),
]


SEMI = [
    View(
        "scorers",
        "SELECT p.id, p.name FROM players p "
        "WHERE p.id IN (SELECT player_id FROM player_scores WHERE score > 20)",
    ),
    # NOT IN: a NULL player_id among the scores makes it NULL for every player (no row),
    # unless no score passes the filter at all (then every player, NULL team or not).
    View(
        "not_scorers",
        "SELECT p.id, p.team FROM players p "
        "WHERE p.id NOT IN (SELECT player_id FROM player_scores WHERE score > 24)",
    ),
    # NULL on the left too: a player without a team is NOT IN only an empty set.
    View(
        "other_teams",
        "SELECT p.id, p.team FROM players p "
        "WHERE p.team NOT IN (SELECT q.team FROM players q WHERE q.name = 'mario')",
    ),
    View(
        "not_in_nonnull",
        "SELECT p.id FROM players p WHERE p.id NOT IN "
        "(SELECT player_id FROM player_scores WHERE player_id IS NOT NULL AND score > 25)",
    ),
    View(
        "has_big_score",
        "SELECT p.id, p.name FROM players p WHERE EXISTS "
        "(SELECT 1 FROM player_scores s WHERE s.player_id = p.id AND s.score > 10) "
        "AND p.team IS NOT NULL",
    ),
    View(
        "no_scores",
        "SELECT p.id, p.name FROM players p WHERE NOT EXISTS "
        "(SELECT 1 FROM player_scores s WHERE s.player_id = p.id)",
    ),
    View(
        "any_huge",
        "SELECT p.id FROM players p WHERE EXISTS (SELECT 1 FROM player_scores WHERE score > 29.5)",
    ),
    View(
        "team_has_scorer",
        "SELECT team, COUNT(*) AS n FROM players p WHERE p.id IN "
        "(SELECT player_id FROM player_scores GROUP BY player_id HAVING SUM(score) > 30) "
        "GROUP BY team",
    ),
]


UNIONS = [
    View(
        "people_and_scores",
        "SELECT id, name, NULL::numeric AS score FROM players WHERE team = 'red' "
        "UNION ALL SELECT player_id, 'score', score FROM player_scores WHERE score > 15",
    ),
    # Duplicates kept by UNION ALL (the same name twice), removed by UNION; three branches.
    View(
        "names_all",
        "SELECT name FROM players WHERE team = 'blue' UNION ALL SELECT name FROM players "
        "WHERE team IS NULL UNION ALL SELECT name FROM players WHERE id < 5",
    ),
    View(
        "names_distinct",
        "SELECT name, team FROM players WHERE id < 12 UNION SELECT name, team FROM players "
        "WHERE id > 8",
    ),
    # int and numeric sides: numeric, as Postgres resolves UNION types.
    View(
        "mixed_types",
        "SELECT id AS v FROM players WHERE team = 'green' UNION ALL "
        "SELECT score FROM player_scores WHERE score < 0",
    ),
    View(
        "grouped_union",
        "SELECT k, COUNT(*) AS n FROM (SELECT team AS k FROM players UNION ALL "
        "SELECT name FROM players) u GROUP BY k",
    ),
]


@pytest.mark.parametrize(
    ("views", "seed_value"),
    [(DERIVED, 161), (SEMI, 162), (UNIONS, 163)],
    ids=["derived tables and DISTINCT", "IN and EXISTS", "UNION"],
)
def test_subqueries_equal_postgres(
    dsn: str, tmp_path: Path, views: list[View], seed_value: int
) -> None:
    stats = run_differential(
        dsn,
        tmp_path,
        SEED_SCHEMA,
        TABLES,
        views,
        seed_value=seed(seed_value),
        transactions=300,
        disconnect_every=80,
        as_of=True,
    )
    assert_mix(stats, commits=200)
