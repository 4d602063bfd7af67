"""The CLI: status from another process, Error/Try output, and no password anywhere."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from helpers import pg_exec, pg_query
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from runner import start_process, wait_caught_up

import viewstore
from viewstore.ingest.lsn import Lsn

SECRET = "s3cret-Pa55word"
SSL_SECRET = "ssl-Key-Pa55phrase"


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uri(dsn: str, userinfo_password: str, **query: str) -> str:
    """The same server as a postgresql:// URI with a password in its userinfo."""
    p = conninfo_to_dict(dsn)
    params = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return (
        f"postgresql://{p['user']}:{quote(userinfo_password, safe='')}@{p['host']}:{p['port']}"
        f"/{p['dbname']}" + (f"?{params}" if params else "")
    )


def test_password_never_printed(dsn: str, tmp_path: Path) -> None:
    """No libpq secret (password, sslpassword, a URI's password, in its userinfo or its query)
    in the log, in errors, in status, in verify or over HTTP (issue 19.4)."""
    # The test cluster trusts local connections, so a password is accepted and ignored.
    secret_dsn = make_conninfo(dsn, password=SECRET, sslpassword=SSL_SECRET)
    pg_exec(dsn, "CREATE TABLE a (id int PRIMARY KEY)")
    views = tmp_path / "views.sql"
    views.write_text("CREATE VIEW n AS SELECT count(*) AS n FROM a;\n")
    data = tmp_path / "data"
    port = free_port()
    proc = start_process(
        secret_dsn, data, "--verbose", "--views", str(views), "--http", f"127.0.0.1:{port}"
    )
    wait_caught_up(dsn, data)
    pg_exec(dsn, "INSERT INTO a VALUES (1)")
    wait_caught_up(dsn, data)
    uri = _uri(dsn, SECRET, sslpassword=SSL_SECRET)
    outputs = []
    for d in (secret_dsn, uri, _uri(dsn, "x", password=SECRET, sslpassword=SSL_SECRET)):
        outputs.append(cli("status", "--data", str(data), "--dsn", d, "--json"))
        outputs.append(cli("verify", "--dsn", d, "--data", str(data)))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
    # verify and status against a database that does not exist: errors that quote the DSN.
    missing = _uri(dsn, SECRET, sslpassword=SSL_SECRET).replace(
        f"/{conninfo_to_dict(dsn)['dbname']}?", "/no_such_db?"
    )
    for command in ("verify", "status"):
        bad = cli(command, "--dsn", missing, "--data", str(data))
        assert bad.returncode == 1 and "no_such_db" in bad.stderr, bad.stderr
        outputs.append(bad)
    http = [
        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).text
        for path in ("/healthz", "/views", "/metrics", "/openapi.json")
    ]
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log = data.with_suffix(".log").read_text()
    assert "password=*** " in log and "sslpassword=***" in log  # the DSN is logged, redacted
    # A server that is not there: the error quotes the DSN, redacted.
    bad = cli(
        "run",
        "--dsn",
        f"postgresql://me:{SECRET}@127.0.0.1:1/db?sslpassword={SSL_SECRET}&password={SECRET}x",
        "--data",
        str(tmp_path / "other"),
    )
    assert bad.returncode == 1
    assert any(
        line.startswith("Error: cannot connect to Postgres") for line in bad.stderr.splitlines()
    )
    assert "Try: check that Postgres is running" in bad.stderr
    assert "sslpassword=***" in bad.stderr
    texts = [log, bad.stdout, bad.stderr, *http]
    texts += [t for o in outputs for t in (o.stdout, o.stderr)]
    for text in texts:
        assert SECRET not in text and SSL_SECRET not in text, text


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
