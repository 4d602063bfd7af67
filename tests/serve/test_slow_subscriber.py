"""A subscriber that stops reading is cut off with a final message (issue 5, acceptance 3).

The server's `slow_after` is 30 s by default; here the app is `create_app(ServerConfig(...,
slow_after=0.5))` served by uvicorn in a thread, over a FollowerSource of a store built by a
pipeline (stopped before the server starts: the history is fixed). The client is a raw socket
that sends one request, does not read for 2 s, then reads everything until the server closes
the connection (`Connection: close`). Both ends have 64 kB socket buffers (the server's through
its listening socket), so that what can be in flight is small and the same on every machine.

The store: the seed schema with 3,000 more players whose names are padded to ~400 bytes (a
snapshot of ~1.4 MB), then three transactions that each rename 600 players (steps of 1,200
lines, ~0.5 MB each).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import create_test_database, drop_test_database, pg_exec
from runner import PipelineThread, wait_caught_up
from serve_support import (
    VIEW,
    history_diffs,
    seed,
    stream_diffs,
    wait_view_ready,
    write_views,
)

import viewstore
from viewstore.serve.app import ServerConfig, create_app
from viewstore.serve.hosting import allowed_hosts, http_server
from viewstore.store.sources import FollowerSource

PLAYERS = 3_005
NAME_PAD = 400  # bytes added to every name: big lines, few rows to write
STEP_PLAYERS = 600  # players each history transaction renames: steps of ~0.5 MB
STALL = 2.0  # seconds the client does not read
BUFFER = 64 * 1024  # the server's SO_SNDBUF and the client's SO_RCVBUF


@dataclass
class Served:
    port: int
    data: Path
    history_start: str
    applied: str


@pytest.fixture(scope="module")
def served(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name, dsn = create_test_database(pg_server.dsn)
    source = None
    try:
        tmp = tmp_path_factory.mktemp("slow")
        seed(dsn, extra_players=PLAYERS - 5)
        pg_exec(dsn, f"UPDATE players SET name = name || ' ' || repeat('x', {NAME_PAD})")
        data = tmp / "data"
        with PipelineThread(dsn, data, views_file=write_views(tmp)) as p:
            wait_caught_up(dsn, data, alive=p.check)
            wait_view_ready(data)
            for _ in range(3):
                pg_exec(dsn, f"UPDATE players SET name = name || '!' WHERE id <= {STEP_PLAYERS}")
            wait_caught_up(dsn, data, alive=p.check)
        source = FollowerSource(data)
        # Small socket buffers on both sides (accepted sockets inherit the listener's
        # SO_SNDBUF), so that what is "in flight" is small and the same on every machine.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        # With the loopback Host check the servers have (it must not buffer the stream).
        config = ServerConfig(source, slow_after=0.5, allowed_hosts=allowed_hosts("127.0.0.1"))
        app = create_app(config)
        server = http_server(app, "127.0.0.1", port)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
                time.sleep(0.02)
            views = httpx.get(f"http://127.0.0.1:{port}/views", timeout=10).json()
            applied = str(viewstore.open(data).applied_lsn())
            yield Served(port, data, views[0]["history_from"], applied)
        finally:
            server.should_exit = True
            thread.join(20)
    finally:
        if source is not None:
            source.close()
        drop_test_database(pg_server.dsn, name)


def _stalled_request(port: int, target: str) -> list[dict[str, Any]]:
    """GET `target`, read nothing for STALL seconds, then everything until the server closes
    the connection: the body's lines."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)  # before connect
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    time.sleep(STALL)
    sock.settimeout(2)  # the stream must end by itself: no news comes after the backlog
    chunks = []
    try:
        while data := sock.recv(1 << 16):
            chunks.append(data)
    except TimeoutError:
        pass  # still open 2 s after the last byte: the assertions below say what came
    finally:
        sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    return [json.loads(line) for line in _dechunk(body).splitlines()]


def _dechunk(body: bytes) -> bytes:
    out = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break  # cut off mid-chunk: what came is still lines
        size = int(body[pos:end], 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    data = b"".join(out)
    return data[: data.rfind(b"\n") + 1]


def _metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name}")


def _assert_cut_off(lines: list[dict[str, Any]], port: int, disconnects_before: float) -> None:
    assert lines, "nothing arrived"
    last = lines[-1]
    assert "error" in last, (
        f"the stream did not end with an error line; its last lines: {lines[-3:]} "
        f"({len(lines)} lines)"
    )
    assert last["error"].startswith("subscriber too slow: "), last
    # It names where to go on from: the last progress line it got, the end of the step sent.
    progress = [e["progress"] for e in lines if "progress" in e]
    assert progress, "the step before the cut was complete and ended with progress"
    assert f"reconnect with since={progress[-1]} to go on from here" in last["error"], last
    disconnects = _metric(port, "viewstore_slow_subscriber_disconnects_total")
    assert disconnects == disconnects_before + 1
    deadline = time.monotonic() + 5
    while _metric(port, "viewstore_subscribers") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_stalled_reader_of_a_backlog_is_cut_off_with_a_final_message(served: Served) -> None:
    """Not reading while the steps of a long backlog are sent: the step that waited more than
    slow_after for the socket is followed by the error line, and the stream ends."""
    target = f"/views/{VIEW}/changes?since={served.history_start}"
    before = _metric(served.port, "viewstore_slow_subscriber_disconnects_total")
    lines = _stalled_request(served.port, target)
    _assert_cut_off(lines, served.port, before)
    assert not any(e.get("snapshot") for e in lines)
    # Reconnecting where the message says gives the rest of the history, nothing twice.
    since = lines[-1]["error"].split("since=")[1].split()[0]
    rest = httpx.get(
        f"http://127.0.0.1:{served.port}/views/{VIEW}/changes",
        params={"since": since, "until": served.applied},
        timeout=30,
    )
    rest_lines = [json.loads(line) for line in rest.text.splitlines()]
    assert rest_lines[-1] == {"end": served.applied}
    got = stream_diffs(lines) + stream_diffs(rest_lines)
    assert got == history_diffs(served.data, VIEW, served.history_start, served.applied)


def test_stalled_reader_of_a_large_snapshot_is_cut_off_with_a_final_message(
    served: Served,
) -> None:
    """Not reading while a snapshot larger than the socket buffers is sent: the chunk that
    waited more than slow_after is followed by the error line (start the snapshot again), and
    the rest of the snapshot is never sent."""
    target = f"/views/{VIEW}/changes?since={served.history_start}&snapshot=true"
    before = _metric(served.port, "viewstore_slow_subscriber_disconnects_total")
    lines = _stalled_request(served.port, target)
    assert lines and "error" in lines[-1], f"no error line at the end: {lines[-3:]}"
    message = lines[-1]["error"]
    assert message.startswith("subscriber too slow: the snapshot took over 0.5 s"), message
    assert f"snapshot=true&since={served.history_start}" in message, message
    snapshot = [e for e in lines if e.get("snapshot")]
    assert 0 < len(snapshot) < PLAYERS and len(lines) == len(snapshot) + 1
    assert _metric(served.port, "viewstore_slow_subscriber_disconnects_total") == before + 1
