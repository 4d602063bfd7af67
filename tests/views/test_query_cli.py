"""`viewstore query` and the Python API: key lookups, indexed filters, top-N, the three output
formats; errors that name the view or column; views.sql errors at start-up."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import pg_exec
from runner import PipelineThread, start_process, view_rows, wait_caught_up

import viewstore
from viewstore.errors import ConfigError

SCHEMA = """
CREATE TABLE players (id int PRIMARY KEY, name text NOT NULL, team text);
CREATE TABLE player_scores (id serial PRIMARY KEY, player_id int, score numeric(10, 2));
INSERT INTO players VALUES (1, 'Mario', 'red'), (2, 'Peach', 'pink'), (3, 'Bowser', NULL),
                           (4, 'Luigi', 'green'), (5, 'Yoshi', 'green');
INSERT INTO player_scores (player_id, score) VALUES
    (1, 0.31), (3, 0.16), (4, 0.24), (5, 0.56), (1, 0.19), (2, 0.34), (3, 0.49), (5, 0.71),
    (2, 10.005);
"""
VIEWS = """
CREATE MATERIALIZED VIEW board AS
SELECT p.id AS player_id, p.name, p.team, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def board(dsn: str, tmp_path: Path) -> Path:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "board")  # built
    return data


def test_python_api_reads(board: Path) -> None:
    vs = viewstore.open(board)
    assert vs.views() == ["board"]
    top = vs.query("board", order_by="total_score", desc=True, limit=3)
    assert [(r["name"], r["total_score"]) for r in top] == [
        ("Peach", Decimal("10.35")),  # 0.34 + 10.01 (numeric(10,2) rounds 10.005 up)
        ("Yoshi", Decimal("1.27")),
        ("Bowser", Decimal("0.65")),
    ]
    assert vs.query("board", where={"player_id": 4}) == [
        {"player_id": 4, "name": "Luigi", "team": "green", "total_score": Decimal("0.24")}
    ]
    assert [r["name"] for r in vs.query("board", where={"team": "green"}, order_by="name")] == [
        "Luigi",
        "Yoshi",
    ]
    # NULLs sort last ascending and first descending, as in Postgres.
    assert vs.query("board", order_by="team", limit=5)[-1]["team"] is None
    assert vs.query("board", order_by="team", desc=True, limit=1)[0]["team"] is None
    assert vs.query("board", where={"player_id": 99}) == []


def test_query_formats(board: Path) -> None:
    table = cli("query", "--data", str(board), "board", "--order-by", "total_score", "--desc",
                "--limit", "2")  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split(" | ")[0].strip() == "player_id"
    assert "Peach" in lines[2] and "10.35" in lines[2] and "Yoshi" in lines[3]
    assert lines[-1] == "(2 rows)"

    js = cli("query", "--data", str(board), "board", "--where", "player_id=2", "--format", "json")
    assert js.returncode == 0, js.stderr
    assert [json.loads(x) for x in js.stdout.splitlines()] == [
        {"player_id": 2, "name": "Peach", "team": "pink", "total_score": "10.35"}
    ]

    out = cli("query", "--data", str(board), "board", "--order-by", "player_id", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["player_id", "name", "team", "total_score"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert rows[3] == ["3", "Bowser", "", "0.65"]


def test_query_errors_name_the_thing(board: Path) -> None:
    unknown = cli("query", "--data", str(board), "nope")
    assert unknown.returncode == 1
    assert "unknown view: 'nope'" in unknown.stderr and "board" in unknown.stderr
    column = cli("query", "--data", str(board), "board", "--order-by", "score")
    assert column.returncode == 1
    assert "view board has no column 'score'" in column.stderr
    assert "player_id, name, team, total_score" in column.stderr
    value = cli("query", "--data", str(board), "board", "--where", "player_id=abc")
    assert value.returncode == 1 and "player_id='abc'" in value.stderr
    with pytest.raises(ConfigError, match="unknown view"):
        viewstore.open(board).query("nope")


def test_run_refuses_a_bad_views_file_before_touching_anything(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    bad = tmp_path / "views.sql"
    bad.write_text("CREATE VIEW ok AS SELECT id FROM players;\n\n"
                   "CREATE VIEW ranks AS SELECT id, ntile(4) OVER (ORDER BY id) FROM players;\n")  # fmt: skip
    proc = start_process(dsn, tmp_path / "data", "--views", str(bad))
    assert proc.wait(60) == 1
    log = (tmp_path / "data.log").read_text()
    assert f"{bad}:3:33: view ranks: window function ntile() is not supported" in log
    assert not (tmp_path / "data").exists()  # failed before creating the store


def test_view_over_a_table_missing_from_the_publication(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA + "CREATE PUBLICATION only_players FOR TABLE players;")
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    proc = start_process(
        dsn, tmp_path / "data", "--views", str(views), "--publication", "only_players"
    )
    assert proc.wait(60) == 1
    log = (tmp_path / "data.log").read_text()
    # The tables the views read are checked against the publication before anything else.
    assert "publication 'only_players' does not include table public.player_scores" in log
    assert 'Try: ALTER PUBLICATION "only_players" ADD TABLE "public"."player_scores";' in log


def test_adding_and_removing_views_on_an_existing_store(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    data = tmp_path / "data"
    flags = ["--views", str(views)]
    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    view_rows(data, "board")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (4, 100)")
    views.write_text("CREATE VIEW teams AS SELECT team, count(*) AS n FROM players GROUP BY team;")
    proc = start_process(dsn, data, *flags)
    wait_caught_up(dsn, data)
    assert view_rows(data, "teams") == sorted(
        [("red", 1), ("pink", 1), (None, 1), ("green", 2)], key=repr
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (tmp_path / "data.log").read_text()
    assert "view board is no longer in the views file: dropping its state" in log
    assert viewstore.open(data).views() == ["teams"]
    # A restart without --views keeps the views the store has.
    proc = start_process(dsn, data)
    wait_caught_up(dsn, data)
    pg_exec(dsn, "INSERT INTO players VALUES (6, 'Toad', 'red')")
    wait_caught_up(dsn, data)
    assert ("red", 2) in view_rows(data, "teams")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_restart_without_views_keeps_quoted_names_and_trailing_comments(
    dsn: str, tmp_path: Path
) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text('CREATE VIEW "MyView" AS SELECT id, name FROM players -- the roster\n;\n')
    data = tmp_path / "data"
    proc = start_process(dsn, data, "--views", str(views))
    wait_caught_up(dsn, data)
    assert len(view_rows(data, "MyView")) == 5
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    proc = start_process(dsn, data)  # no --views: the stored definitions
    wait_caught_up(dsn, data)
    pg_exec(dsn, "INSERT INTO players VALUES (6, 'Toad', 'red')")
    wait_caught_up(dsn, data)
    assert len(view_rows(data, "MyView")) == 6
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (tmp_path / "data.log").read_text()
    assert "rebuilding" not in log and "dropping" not in log
    assert viewstore.open(data).views() == ["MyView"]
