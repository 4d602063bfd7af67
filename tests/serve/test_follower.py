"""`viewstore serve` (a FollowerSource of a store `viewstore run` writes): it sees new commits
within a second, over reads and over a change stream, also after the writer was killed and
restarted; and it refuses a data directory without a store with a clear error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from click.testing import CliRunner
from runner import kill9, wait_caught_up
from serve_support import (
    VIEW,
    free_port,
    seed,
    start_run,
    start_serve,
    wait_http,
    wait_view_ready,
    write_views,
)

from viewstore.cli import main
from viewstore.errors import StoreError
from viewstore.ingest.lsn import Lsn
from viewstore.store.sources import FollowerSource


class StreamReader:
    """Reads an NDJSON change stream in a thread, keeping (arrival time, line)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url) as r:
                for line in r.iter_lines():
                    self.lines.append((time.monotonic(), json.loads(line)))
        except httpx.HTTPError:
            pass  # closed by close()

    def close(self) -> None:
        self._client.close()


def _commit_score(conn: psycopg.Connection[Any], player: int, score: str) -> tuple[float, str]:
    """Insert a score; the time of the commit and the player's new total as Postgres has it."""
    conn.execute("INSERT INTO player_scores (player_id, score) VALUES (%s, %s)", (player, score))
    committed = time.monotonic()
    row = conn.execute(
        "SELECT COALESCE(SUM(score), 0)::text FROM player_scores WHERE player_id = %s", (player,)
    ).fetchone()
    assert row is not None
    return committed, row[0]


def _seen_by_reads(base: str, player: int, total: str, since: float, limit: float) -> float:
    while True:
        rows = httpx.get(f"{base}/views/{VIEW}", params={"player_id": player}, timeout=5).json()
        if rows["rows"] and rows["rows"][0]["total_score"] == total:
            return time.monotonic() - since
        assert time.monotonic() - since < limit, f"serve did not show total {total} in {limit} s"
        time.sleep(0.01)


def _seen_by_stream(reader: StreamReader, player: int, total: str, since: float) -> float:
    deadline = since + 5
    while time.monotonic() < deadline:
        for at, e in list(reader.lines):
            row = e.get("row") or {}
            if (
                e.get("diff") == 1
                and row.get("player_id") == player
                and row["total_score"] == total
            ):
                return at - since
        time.sleep(0.01)
    raise AssertionError(f"the stream never showed total {total} for player {player}")


def test_serve_sees_new_commits_within_a_second(dsn: str, tmp_path: Path) -> None:
    seed(dsn, extra_players=20)
    views = write_views(tmp_path)
    data = tmp_path / "data"
    writer = start_run(dsn, data, views)
    wait_caught_up(dsn, data)
    wait_view_ready(data)
    server, base = start_serve(data)
    wait_http(base, server, data.with_suffix(".serve.log"))
    reader = StreamReader(f"{base}/views/{VIEW}/changes")
    delays = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(5):
                committed, total = _commit_score(conn, 3, f"1.0{i}")
                delays.append(_seen_by_reads(base, 3, total, committed, limit=1.0))
                assert _seen_by_stream(reader, 3, total, committed) < 1.0, total
                time.sleep(0.2)
            # The writer killed and restarted: the follower goes on following its new logs.
            kill9(writer)
            writer = start_run(dsn, data, views)
            committed, total = _commit_score(conn, 4, "2.50")
            # The restart itself takes a moment: the writer must reconnect first.
            _seen_by_reads(base, 4, total, committed, limit=30)
            wait_caught_up(dsn, data)
            committed, total = _commit_score(conn, 5, "3.50")
            delays.append(_seen_by_reads(base, 5, total, committed, limit=1.0))
            assert _seen_by_stream(reader, 5, total, committed) < 1.0, total
    finally:
        reader.close()
    # The stream's progress lines moved forward across the restart.
    progress = [Lsn.parse(e["progress"]) for _, e in reader.lines if "progress" in e]
    assert progress == sorted(progress) and len(progress) >= 6
    print("serve saw commits after (s):", [round(d, 3) for d in delays])


@pytest.mark.parametrize("kind", ["missing", "empty", "not a store"])
def test_serve_refuses_a_data_dir_without_a_store(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    if kind != "missing":
        data.mkdir()
    if kind == "not a store":
        (data / "notes.txt").write_text("hello")
    address = f"127.0.0.1:{free_port()}"
    # In-process (a Python start-up each is slow); `viewstore subscribe` follows a store the
    # same way and refuses it the same way.
    for args in (
        ["serve", "--data", str(data), "--http", address],
        ["subscribe", "--data", str(data), VIEW],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr == (
            f"Error: no viewstore data in {data}\n"
            "Try: check --data, or start `viewstore run --data DIR` to create it\n"
        ), args
        assert result.stdout == ""
    with pytest.raises(StoreError, match="no viewstore data in"):
        FollowerSource(data)
    assert data.exists() == (kind != "missing"), "serve must not create the directory"
    with socket.socket() as s:  # nothing was left listening
        s.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))


def test_serve_process_refuses_an_empty_data_dir_and_a_bad_address(tmp_path: Path) -> None:
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "viewstore.cli", "serve", "--data", str(tmp_path), *http],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for http in (["--http", f"127.0.0.1:{free_port()}"], ["--http", "localhost:http"])
    ]
    (_, empty), (_, bad) = (proc.communicate(timeout=60) for proc in runs)
    assert [proc.returncode for proc in runs] == [1, 1]
    assert empty.startswith(f"Error: no viewstore data in {tmp_path}\nTry: "), empty
    assert bad.startswith("Error: --http 'localhost:http': expected HOST:PORT\nTry: "), bad
    assert "Traceback" not in empty + bad
