"""Long reads run off the HTTP server's event loop (issue 19.5), and stay consistent.

- While one client's read of a view is in progress (held open here, as a whole-view as-of of a
  million rows would be for seconds), other clients are answered: /healthz, another view read.
  With the read on the event loop, the second requests wait for the first.
- A follower (`viewstore serve`) cannot isolate a read from a catch-up with a RocksDB snapshot,
  so it does not catch up while a read on another thread is open; it catches up at the next
  tick after, and a reader that arrives while it waits to catch up waits for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from helpers import pg_exec
from runner import PipelineThread, wait_caught_up

from viewstore.ingest.lsn import Lsn
from viewstore.serve.app import ServerConfig, create_app
from viewstore.store.db import Store
from viewstore.store.sources import FollowerSource

VIEW = "SELECT g, SUM(v) AS total FROM t GROUP BY g"


def _store(dsn: str, tmp_path: Path) -> Path:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 10, i FROM generate_series(1, 100) i")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW};\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
    return data


class _HeldSource(FollowerSource):
    """A follower whose first `reading()` on a worker thread holds until released."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.held = 0

    @contextmanager
    def reading(self) -> Iterator[Store]:
        with super().reading() as store:
            if self.held == 0:
                self.held += 1
                self.entered.set()
                assert self.release.wait(10), "never released"
            yield store


def test_a_long_read_does_not_hold_up_other_clients(dsn: str, tmp_path: Path) -> None:
    source = _HeldSource(_store(dsn, tmp_path))
    app = create_app(ServerConfig(source))

    async def scenario() -> list[str]:
        order: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:

            async def slow() -> None:
                r = await c.get("/views/totals", params={"limit": 100})
                assert r.status_code == 200 and len(r.json()["rows"]) == 10
                order.append("slow read")

            task = asyncio.create_task(slow())
            while not source.entered.is_set():
                await asyncio.sleep(0.01)
            for path in ("/healthz", "/views/totals?g=3", "/views"):
                r = await asyncio.wait_for(c.get(path), 5)
                assert r.status_code == 200, r.text
                order.append(path)
            source.release.set()
            await asyncio.wait_for(task, 10)
        return order

    try:
        order = asyncio.run(scenario())
    finally:
        source.release.set()
        source.close()
    assert order == ["/healthz", "/views/totals?g=3", "/views", "slow read"]


def test_a_follower_never_catches_up_under_an_open_read(dsn: str, tmp_path: Path) -> None:
    data = _store(dsn, tmp_path)
    source = FollowerSource(data)
    try:
        before = source.refresh()
        views = tmp_path / "views.sql"
        with source.reading() as store:
            with PipelineThread(dsn, data, views_file=views) as p:
                pg_exec(dsn, "UPDATE t SET v = v + 1")
                after = wait_caught_up(dsn, data, alive=p.check)
            assert after > before
            assert source.refresh() == before  # a read is open: no catch-up under it
            assert store.applied_lsn() == before
            # A reader that arrives now waits for the catch-up that is due.
            arrived: list[Lsn] = []

            def late_reader() -> None:
                with source.reading() as late:
                    arrived.append(late.applied_lsn())

            thread = threading.Thread(target=late_reader)
            thread.start()
            time.sleep(0.2)
            assert not arrived and thread.is_alive()
        assert source.refresh() == after  # the read closed: the next tick catches up
        thread.join(5)
        assert arrived == [after]
    finally:
        source.close()
