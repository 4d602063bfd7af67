"""`viewstore demo` end to end, as a real process the way `scripts/demo` runs it.

Postgres is the oracle. With `--dsn` the demo works in the test's own database, and with
`--data` it keeps its store, so after it exits the test compares, itself, the final top 10 the
demo printed and the whole view in the store with the seed view's SELECT run by Postgres. The
default mode (a throwaway Postgres of the demo's own) is covered too: there only the demo's
closing check can see that Postgres, so the test reads its verdict and the output's shape.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import pg_exec, pg_query
from runner import assert_view_equals

from viewstore.errors import ViewstoreError
from viewstore.pgcluster import find_bindir

# The seed's view, verbatim: the demo must hand viewstore exactly this.
SEED_VIEW = """CREATE MATERIALIZED VIEW player_total_scores AS
SELECT
    p.id AS player_id,
    p.name,
    COALESCE(SUM(s.score), 0) AS total_score
FROM
    players p
LEFT JOIN
    player_scores s ON p.id = s.player_id
GROUP BY
    p.id;
"""
SEED_SELECT = SEED_VIEW.split(" AS\n", 1)[1].rstrip().rstrip(";")
# Postgres's top 10 from the view's own SELECT (not the demo's matview). The tie-break by
# player_id is viewstore's documented order for equal totals.
TOP10_SQL = f"SELECT * FROM ({SEED_SELECT}) v ORDER BY total_score DESC, player_id LIMIT 10"
DEMO = [sys.executable, "-m", "viewstore.cli", "demo"]
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(.+?)\s+(-?\d+(?:\.\d+)?)$")


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def frames(stdout: str) -> list[list[str]]:
    """The printed boards (each one block of lines), in order."""
    return [b.splitlines() for b in stdout.split("\n\n") if b.startswith("rank  player_id")]


def final_top(stdout: str) -> list[tuple[int, int, str, str]]:
    """rank, player_id, name, total_score (exact text) of the board printed after `final:`."""
    assert "\nfinal: " in stdout, stdout
    board = frames(stdout.split("\nfinal: ", 1)[1])[0]
    rows = []
    for line in board[1:]:
        m = ROW.match(line)
        assert m, f"not a board row: {line!r}"
        rows.append((int(m[1]), int(m[2]), m[3], m[4]))
    return rows


def postgres_top(dsn: str) -> list[tuple[int, str, str]]:
    return [(pid, name, str(total)) for pid, name, total in pg_query(dsn, TOP10_SQL)]


def replication_objects(dsn: str) -> list[Any]:
    slots = pg_query(
        dsn,
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()",
    )
    return slots + pg_query(dsn, "SELECT pubname FROM pg_publication")


def test_demo_with_its_own_postgres_checks_itself_and_prints_plain_boards() -> None:
    try:
        find_bindir()
    except ViewstoreError as exc:
        pytest.skip(f"the demo starts its own Postgres: {exc}")
    result = run_demo("--duration", "6", "--players", "100")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "mirror matches Postgres" in result.stdout, output
    assert "view matches Postgres: " in result.stdout, output
    assert re.search(r"applied LSN\s+[0-9A-F]+/[0-9A-F]+", result.stdout), output
    assert re.search(r"lag\s+[\d,]+ bytes, [\d.]+ s", result.stdout), output
    assert re.search(r"[\d.]+ transactions/s applied", result.stdout), output
    assert "\x1b[" not in result.stdout, "not a terminal: plain blocks, no escape sequences"
    boards = frames(result.stdout)
    assert len(boards) >= 3, output  # live snapshots while it ran, then the final one
    top = final_top(result.stdout)
    assert [r[0] for r in top] == list(range(1, 11)), output
    totals = [Decimal(r[3]) for r in top]
    assert totals == sorted(totals, reverse=True), output


def test_demo_leaderboard_equals_postgres(dsn: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_demo(
        "--dsn", dsn, "--data", str(data), "--transactions", "200", "--rate", "100",
        "--players", "200",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "the workload committed 200" in result.stdout, output
    # What the demo printed last is Postgres's top 10, row for row (rank, id, name, total).
    top = final_top(result.stdout)
    assert [(pid, name, total) for _, pid, name, total in top] == postgres_top(dsn), output
    assert [r[0] for r in top] == list(range(1, 11))
    # And the whole view it kept, not just the top, equals the seed view's SELECT.
    assert (data / "views.sql").read_text() == SEED_VIEW
    assert assert_view_equals(dsn, data, "player_total_scores", SEED_SELECT) >= 205
    assert pg_query(dsn, "SELECT count(*) FROM players")[0][0] >= 205
    assert replication_objects(dsn) == [], "the demo drops its slot and publication"


def test_demo_redraws_in_place_on_a_terminal(dsn: str) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*DEMO, "--dsn", dsn, "--transactions", "60", "--rate", "40", "--players", "50"],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the demo exited and the terminal closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
    screen = b"".join(chunks).decode(errors="replace")
    assert screen.count("\x1b[H") >= 2, screen  # redrawn in place, not appended
    assert "\x1b[?25l" in screen and screen.rindex("\x1b[?25h") > screen.rindex("\x1b[H")
    assert "view matches Postgres" in screen, screen


def test_ctrl_c_stops_the_demo_cleanly(dsn: str) -> None:
    proc = subprocess.Popen(
        [*DEMO, "--dsn", dsn, "--players", "50"],  # no bound: only Ctrl-C ends it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # until the first board shows: the workload is running
            seen.append(line)
            if line.startswith("rank  player_id"):
                break
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "view matches Postgres" in output, output
    assert [(pid, name, total) for _, pid, name, total in final_top(output)] == postgres_top(dsn)
    assert replication_objects(dsn) == [], output


def test_demo_refuses_a_database_with_the_seed_tables(dsn: str) -> None:
    pg_exec(dsn, "CREATE TABLE players (id int PRIMARY KEY, name text)")
    pg_exec(dsn, "INSERT INTO players VALUES (1, 'mine')")
    result = run_demo("--dsn", dsn, "--duration", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Error: the database already has players" in result.stderr
    assert "Try: give --dsn an empty database" in result.stderr
    assert pg_query(dsn, "SELECT * FROM players") == [(1, "mine")]
