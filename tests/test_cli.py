"""The CLI: status from another process, Error/Try output, and no password anywhere."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import pg_exec, pg_query
from psycopg.conninfo import make_conninfo
from runner import start_process, wait_caught_up

import viewstore
from viewstore.ingest.lsn import Lsn

SECRET = "s3cret-Pa55word"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_status_json_follows_run_from_another_process(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY, v text)")
    data = tmp_path / "data"
    proc = start_process(dsn, data)
    wait_caught_up(dsn, data)
    pg_exec(dsn, "INSERT INTO a SELECT g, 'x' FROM generate_series(1, 10) g")
    committed = Lsn.parse(pg_query(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
    deadline = time.monotonic() + 1.0  # the promise: visible within a second
    while True:
        report = json.loads(cli("status", "--data", str(data), "--json").stdout)
        if Lsn.parse(report["applied_lsn"]) >= committed and report["tables"][0]["rows"] == 10:
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.05)
    assert report["snapshot"] == "complete"
    assert report["tables"] == [{"name": "public.a", "rows": 10, "progress": None}]
    assert report["state"] == "streaming" and report["views_live"]
    assert str(Lsn.parse(report["applied_lsn"])) == report["applied_lsn"]  # X/Y text form
    text = cli("status", "--data", str(data), "--dsn", dsn).stdout
    assert "applied LSN" in text and "public.a" in text and "bytes behind" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert viewstore.open(data).status().transactions >= 1


def test_password_never_printed(dsn: str, tmp_path: Path) -> None:
    # The test cluster trusts local connections, so a password is accepted and ignored.
    secret_dsn = make_conninfo(dsn, password=SECRET)
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    data = tmp_path / "data"
    proc = start_process(secret_dsn, data, "--verbose")
    wait_caught_up(dsn, data)
    pg_exec(dsn, "INSERT INTO a VALUES (1)")
    wait_caught_up(dsn, data)
    status = cli("status", "--data", str(data), "--dsn", secret_dsn, "--json")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log = data.with_suffix(".log").read_text()
    assert "password=***" in log  # the DSN is logged, redacted
    # A server that is not there: the error quotes the DSN, redacted.
    bad = cli(
        "run",
        "--dsn",
        f"postgresql://me:{SECRET}@127.0.0.1:1/db",
        "--data",
        str(tmp_path / "other"),
    )
    assert bad.returncode == 1
    assert any(
        line.startswith("Error: cannot connect to Postgres") for line in bad.stderr.splitlines()
    )
    assert "Try: check that Postgres is running" in bad.stderr
    for text in (log, status.stdout, status.stderr, bad.stdout, bad.stderr):
        assert SECRET not in text


def test_errors_print_error_and_try(tmp_path: Path) -> None:
    result = cli("status", "--data", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: no viewstore data in {tmp_path / 'nothing'}",
        "Try: check --data, or start `viewstore run --data DIR` to create it",
    ]


def test_every_command_has_help() -> None:
    for command in ("run", "status", "demo"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout
