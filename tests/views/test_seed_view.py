"""Acceptance 1: the seed's leaderboard, pasted verbatim, equals Postgres after every step."""

from __future__ import annotations

from pathlib import Path

from helpers import pg_exec
from runner import PipelineThread, assert_view_equals, wait_caught_up
from viewdiff import wait_views_ready

from viewstore.demo import SEED_SQL, VIEW_SQL

# The seed's schema, rows and view, verbatim (kept in one place: the demo uses them too).
SEED_SCHEMA = "\n".join(SEED_SQL[:2])
SEED_DATA = "\n".join(SEED_SQL[2:])
SEED_VIEW = VIEW_SQL

SEED_SELECT = SEED_VIEW.split(" AS\n", 1)[1].rstrip().rstrip(";")

STEPS = [
    "INSERT INTO player_scores (player_id, score) VALUES (2, 0.90), (4, 0.05)",
    "INSERT INTO players (name) VALUES ('Toad')",  # a player with no scores: LEFT JOIN NULLs
    "UPDATE player_scores SET score = 0.99 WHERE id = 1",
    "DELETE FROM player_scores WHERE id = 2",
    "UPDATE players SET name = 'Super Mario' WHERE id = 1",
    # The seed's schema declares two foreign keys on player_id: the inline REFERENCES (no
    # action) and fk_player (ON DELETE CASCADE). With both, Postgres refuses the delete; drop
    # the inline one so that deleting a player cascades, as the seed intends.
    "ALTER TABLE player_scores DROP CONSTRAINT player_scores_player_id_fkey",
    "DELETE FROM players WHERE id = 3",  # cascades to Bowser's scores
    "BEGIN; INSERT INTO player_scores (player_id, score) VALUES (1, 50); ROLLBACK",
    "BEGIN; INSERT INTO players (name) VALUES ('Daisy');"
    " INSERT INTO player_scores (player_id, score) VALUES (currval('players_id_seq'), 7.5);"
    " COMMIT",
]


def test_seed_view_equals_postgres_after_each_step(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SEED_SCHEMA)
    pg_exec(dsn, SEED_DATA)
    views = tmp_path / "views.sql"
    views.write_text(SEED_VIEW)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        assert assert_view_equals(dsn, data, "player_total_scores", SEED_SELECT) == 5
        for step in STEPS:
            pg_exec(dsn, step)
            wait_caught_up(dsn, data, alive=p.check)
            assert_view_equals(dsn, data, "player_total_scores", SEED_SELECT)


BUILT_SCHEMA = """
CREATE TABLE players (id integer PRIMARY KEY, name text, rank bigint);
CREATE TABLE player_scores (
    id integer PRIMARY KEY, player_id integer, score numeric, points bigint
);
-- Negative and multi-digit ids, NULL names and ranks, players with no scores.
INSERT INTO players
SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'player ' || g END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g * 7919) % 100003 - 50000 END
FROM generate_series(-40, 3000) g;
-- Scores of every scale and sign, NULL scores and fks, fks naming no player.
INSERT INTO player_scores
SELECT g,
       CASE WHEN g % 11 = 0 THEN NULL ELSE (g * 31) % 4000 - 60 END,
       CASE WHEN g % 13 = 0 THEN NULL
            ELSE round(((g * 7877) % 200001 - 100000)::numeric / power(10::numeric, g % 4), g % 4) END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE (g::bigint * 104729) % 1000000007 - 500000000 END
FROM generate_series(1, 20000) g;
"""
BUILT_VIEWS = {
    "player_total_scores": """SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0)
        AS total_score FROM players p LEFT JOIN player_scores s ON p.id = s.player_id
        GROUP BY p.id""",
    "counts": """SELECT p.id, p.rank, COUNT(*) AS joined, COUNT(s.score) AS scored,
        SUM(s.id) AS id_sum, SUM(s.points) AS points, COALESCE(SUM(s.points), -1) AS points_or
        FROM players p LEFT JOIN player_scores s ON s.player_id = p.id GROUP BY p.id""",
    "inner_totals": """SELECT p.id, p.name, SUM(s.score) AS total, COUNT(*) AS n
        FROM player_scores s JOIN players p ON p.id = s.player_id GROUP BY p.id""",
}


def test_views_built_at_first_start_equal_postgres(dsn: str, tmp_path: Path) -> None:
    """Views of the leaderboard shape are built from the snapshot a column at a time
    (store/columnbuild.py): 3,041 players and 20,000 scores of every sign and scale, NULLs
    and dangling foreign keys, compared with Postgres row by row."""
    pg_exec(dsn, BUILT_SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(
        "\n".join(f"CREATE MATERIALIZED VIEW {n} AS {sql};" for n, sql in BUILT_VIEWS.items())
        + "\nCREATE INDEX ON counts (rank);\n"
    )
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        wait_views_ready(data, list(BUILT_VIEWS), p.check)
        for name, sql in BUILT_VIEWS.items():
            assert assert_view_equals(dsn, data, name, sql) > 1000, name
