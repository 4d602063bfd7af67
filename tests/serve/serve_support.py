"""Shared by the HTTP API tests: the seed schema, a steady writer, and the servers as processes.

`viewstore run --http` and `viewstore serve` run as real child processes on a free TCP port;
`wait_http` waits for /healthz. A process started by `start_run_http`/`start_serve` with
`reap=True` is killed by the suite's per-test teardown (runner.reap_processes); module-scoped
fixtures pass `reap=False` and stop theirs themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import runner

import viewstore
from viewstore.demo import SEED_SQL, VIEW, VIEW_SQL
from viewstore.errors import NotFound
from viewstore.ingest.lsn import Lsn
from viewstore.render import json_value

# The view's own SELECT, for Postgres to evaluate (the oracle).
SELECT_SQL = VIEW_SQL.split(" AS\n", 1)[1].rstrip().rstrip(";")
HERE = Path(__file__).parent
SUBSCRIBER = HERE / "http_subscriber.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(dsn: str, extra_players: int = 40) -> None:
    """The seed's schema and rows, plus `extra_players` players with a score or two each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in SEED_SQL:
            conn.execute(stmt)
        if extra_players:
            conn.execute(
                "INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(1, %s) g",
                (extra_players,),
            )
            conn.execute(
                "INSERT INTO player_scores (player_id, score) "
                "SELECT id, (id % 97) / 10.0 FROM players WHERE id > 5"
            )


def write_views(directory: Path) -> Path:
    path = directory / "views.sql"
    path.write_text(VIEW_SQL)
    return path


class SteadyLoad:
    """A writer thread: a steady mix of score inserts, updates and deletes (and now and then a
    transaction doing several), on the seed schema's players 1..`players`."""

    def __init__(self, dsn: str, players: int, seed: int = 1, pause: float = 0.01) -> None:
        self.dsn = dsn
        self.players = players
        self.rng = random.Random(seed)
        self.pause = pause
        self.count = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        player = rng.randint(1, self.players)
        r = rng.random()
        if r < 0.45:
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                (player, rng.randint(1, 999) / 100),
            )
        elif r < 0.75:
            conn.execute(
                "UPDATE player_scores SET score = score + %s WHERE id = "
                "(SELECT min(id) FROM player_scores WHERE player_id = %s)",
                (rng.randint(-50, 50) / 100, player),
            )
        else:
            conn.execute(
                "DELETE FROM player_scores WHERE id = "
                "(SELECT max(id) FROM player_scores WHERE player_id = %s)",
                (player,),
            )

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    with conn.transaction():
                        for _ in range(3 if self.rng.random() < 0.15 else 1):
                            self._one(conn)
                    self.count += 1
                    time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _popen(args: list[str], log: Path, reap: bool) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewstore.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    out.close()
    if reap:
        runner._STARTED.append(proc)
    return proc


def start_run_http(
    dsn: str, data: Path, views: Path, *, token: str | None = None, reap: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """`viewstore run --views ... --http 127.0.0.1:PORT`; its base URL."""
    port = free_port()
    args = ["run", "--dsn", dsn, "--data", str(data), "--views", str(views)]
    args += ["--http", f"127.0.0.1:{port}"]
    if token is not None:
        args += ["--http-token", token]
    proc = _popen(args, data.with_suffix(".log"), reap)
    return proc, f"http://127.0.0.1:{port}"


def start_run(dsn: str, data: Path, views: Path, *, reap: bool = True) -> subprocess.Popen[bytes]:
    """`viewstore run` without HTTP: the writer a `viewstore serve` follows."""
    args = ["run", "--dsn", dsn, "--data", str(data), "--views", str(views)]
    return _popen(args, data.with_suffix(".log"), reap)


def start_serve(
    data: Path, *, token: str | None = None, reap: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """`viewstore serve --data DATA --http 127.0.0.1:PORT`; its base URL."""
    port = free_port()
    args = ["serve", "--data", str(data), "--http", f"127.0.0.1:{port}"]
    if token is not None:
        args += ["--http-token", token]
    proc = _popen(args, data.with_suffix(".serve.log"), reap)
    return proc, f"http://127.0.0.1:{port}"


def wait_http(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait until `base`/healthz answers (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{base} did not answer within {timeout} s")
        time.sleep(0.05)


def wait_view_ready(data: Path, view: str = VIEW, timeout: float = 60) -> None:
    """Wait until the store has `view`, built (it is created after the snapshot is in)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            runner.view_rows(data, view, timeout=timeout)
            return
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go within 20 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            runner.kill9(proc)


def history_diffs(
    data: Path, view: str, since: Lsn | str, until: Lsn | str | None = None
) -> list[tuple[str, int, dict[str, Any]]]:
    """The view's history after `since` (exclusive) up to `until` as the stream's diff lines:
    (lsn, diff, row as JSON values); an update is a -1 of the old row and a +1 of the new."""
    out = []
    for c in viewstore.open(data).changes(view, since=since, until=until):
        lsn = str(c["lsn"])
        if c["before"] is not None:
            out.append((lsn, -1, {k: json_value(v) for k, v in c["before"].items()}))
        if c["after"] is not None:
            out.append((lsn, 1, {k: json_value(v) for k, v in c["after"].items()}))
    return out


def stream_diffs(lines: list[dict[str, Any]]) -> list[tuple[str, int, dict[str, Any]]]:
    """The change lines (not snapshot, progress or end) of a stream, as `history_diffs` has them."""
    return [(e["lsn"], e["diff"], e["row"]) for e in lines if "diff" in e and not e.get("snapshot")]


def canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def fold(snapshot: list[dict[str, Any]], diffs: list[tuple[str, int, dict[str, Any]]]) -> list[str]:
    """Apply the diffs to the snapshot's rows; the resulting rows, canonical and sorted. A -1
    of a row that is not there is an error (a gap or a duplicate in the stream)."""
    rows: dict[str, int] = {}
    for r in snapshot:
        rows[canonical(r)] = rows.get(canonical(r), 0) + 1
    for lsn, diff, row in diffs:
        key = canonical(row)
        n = rows.get(key, 0) + diff
        assert n >= 0, f"at {lsn}: -1 of a row that is not there: {row}"
        if n:
            rows[key] = n
        else:
            del rows[key]
    return sorted(k for k, n in rows.items() for _ in range(n))


def postgres_rows_json(dsn: str, sql: str = SELECT_SQL) -> list[str]:
    """Postgres's result of the view's SELECT, as canonical JSON rows (values as the API sends
    them), sorted."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[call-overload]
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    return sorted(
        canonical({n: json_value(v) for n, v in zip(names, r, strict=True)}) for r in rows
    )


def store_rows_json(data: Path, view: str = VIEW) -> list[str]:
    return sorted(
        canonical({k: json_value(v) for k, v in r.items()})
        for r in viewstore.open(data).query(view)
    )
