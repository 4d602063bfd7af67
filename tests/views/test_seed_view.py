"""Acceptance 1: the seed's leaderboard, pasted verbatim, equals Postgres after every step."""

from __future__ import annotations

from pathlib import Path

from helpers import pg_exec
from runner import PipelineThread, assert_view_equals, wait_caught_up

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
