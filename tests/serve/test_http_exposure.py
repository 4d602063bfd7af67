"""Who may reach the HTTP API (issue 19.4): a non-loopback address without a token is refused
before anything starts unless --http-insecure says so; a non-loopback server, which has no
loopback names to check, answers any Host; loopback names are recognised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import pg_exec
from runner import PipelineThread, wait_caught_up
from serve_support import free_port, wait_http

from viewstore.errors import ConfigError
from viewstore.serve.hosting import allowed_hosts, check_exposure, is_loopback

NOT_THERE = "host=127.0.0.1 port=1 dbname=nothing connect_timeout=2"


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_loopback_names() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LocalHost"):
        assert is_loopback(host), host
        check_exposure(host, None, insecure=False)  # no token needed
    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.1"):
        assert not is_loopback(host), host
        assert allowed_hosts(host) is None
        with pytest.raises(ConfigError, match="without a token") as info:
            check_exposure(host, None, insecure=False)
        assert "--http-insecure" in (info.value.hint or "")
        check_exposure(host, "a-token", insecure=False)
        check_exposure(host, None, insecure=True)
    assert allowed_hosts("127.0.0.2") == {"localhost", "127.0.0.1", "::1", "127.0.0.2"}


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--data", "nowhere"],
        ["run", "--dsn", NOT_THERE, "--data", "nowhere"],
        ["demo", "--dsn", NOT_THERE, "--data", "nowhere"],
    ],
)
def test_open_address_without_token_is_refused_first(command: list[str], tmp_path: Path) -> None:
    command = [c if c != "nowhere" else str(tmp_path / "data") for c in command]
    out = _cli(*command, "--http", f"0.0.0.0:{free_port()}")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr.splitlines()[0].startswith("Error: --http 0.0.0.0: serving a non-loopback")
    assert "--http-insecure" in out.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_open_address_with_token_or_insecure_serves(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    data = tmp_path / "data"
    with PipelineThread(dsn, data) as p:
        wait_caught_up(dsn, data, alive=p.check)
    for extra, headers in (
        (["--http-insecure"], {}),
        (["--http-token", "tok"], {"Authorization": "Bearer tok"}),
    ):
        port = free_port()
        log = tmp_path / "serve.log"
        args = ["serve", "--data", str(data), "--http", f"0.0.0.0:{port}", *extra]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "viewstore.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base, proc, log)
            # Not bound to loopback: any name may reach it, so Host is not checked.
            r = httpx.get(base + "/views", headers={**headers, "Host": "viewstore.example"})
            assert r.status_code == 200, r.text
        finally:
            proc.terminate()
            proc.wait(30)
    assert "without a token (--http-insecure)" in log.read_text()
