"""Running the pipeline in tests: in a thread, or as a real `viewstore run` process to kill -9.

Postgres is the oracle: `assert_mirror_equals` compares a mirrored table with `SELECT` on the
server, after `wait_caught_up` has seen the store apply everything the server has written.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from helpers import pg_exec, pg_query

import viewstore
from viewstore.errors import ConfigError, StoreError
from viewstore.ingest.lsn import Lsn
from viewstore.store.pipeline import Pipeline, RunConfig


class PipelineThread:
    """`Pipeline.run` in a background thread; `stop()` ends it the way SIGTERM does."""

    def __init__(self, dsn: str, data_dir: Path, **config: Any) -> None:
        self.pipeline = Pipeline(RunConfig(dsn=dsn, data_dir=data_dir, **config))
        self.error: BaseException | None = None
        self.final: Lsn | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.final = self.pipeline.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> PipelineThread:
        self.thread.start()
        return self

    def check(self) -> None:
        """Raise what the pipeline died of, if it died (for `wait_*(alive=...)`)."""
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 30) -> Lsn | None:
        self.pipeline.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not stop"
        if self.error is not None:
            raise self.error
        return self.final

    def __enter__(self) -> PipelineThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_STARTED: list[subprocess.Popen[bytes]] = []


def reap_processes() -> None:
    """Kill whatever `start_process` started and is still running (test teardown)."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            kill9(proc)


def start_process(
    dsn: str, data_dir: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`viewstore run` as a child process, its output appended to `log`."""
    out = open(log or data_dir.with_suffix(".log"), "ab")  # noqa: SIM115 - child owns it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "viewstore.cli",
            "run",
            "--dsn",
            dsn,
            "--data",
            str(data_dir),
            *args,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    _STARTED.append(proc)
    return proc


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def current_lsn(dsn: str) -> Lsn:
    # The insert position: with synchronous_commit=off (the test cluster's setting) a commit
    # can return before pg_current_wal_lsn(), the write position, passes its record.
    return Lsn.parse(pg_query(dsn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])


def applied_lsn(data_dir: Path) -> Lsn:
    try:
        return viewstore.open(data_dir).applied_lsn()
    except StoreError:
        return Lsn(0)


def wait_applied(data_dir: Path, target: Lsn, timeout: float = 60, alive: Any = None) -> Lsn:
    """Wait until the store has durably applied `target`; `alive()` may raise to stop early."""
    deadline = time.monotonic() + timeout
    while True:
        got = applied_lsn(data_dir)
        if got >= target:
            return got
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"store applied {got}, expected at least {target}")
        time.sleep(0.05)


def wait_caught_up(dsn: str, data_dir: Path, timeout: float = 60, alive: Any = None) -> Lsn:
    """Wait until the store has applied everything the server had written when called."""
    return wait_applied(data_dir, current_lsn(dsn), timeout, alive)


def _norm(value: Any) -> Any:
    # Decimal NaN never equals itself and 1.0 == 1.00: compare numeric by exact text instead.
    if isinstance(value, Decimal):
        return ("numeric", str(value))
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return value


def source_rows(dsn: str, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    cols = ", ".join(f'"{c}"' for c in columns)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(f"SELECT {cols} FROM {table}").fetchall()  # type: ignore[call-overload]
    return sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)


def mirror_rows(data_dir: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    rows = viewstore.open(data_dir).rows(table)
    if not rows:
        return [], []
    columns = list(rows[0])
    return columns, sorted((tuple(_norm(r[c]) for c in columns) for r in rows), key=repr)


def assert_mirror_equals(dsn: str, data_dir: Path, table: str) -> int:
    """The mirrored table equals `SELECT *` on Postgres; returns the row count."""
    columns, mirrored = mirror_rows(data_dir, table)
    if not columns:
        columns = [
            r[0]
            for r in pg_query(
                dsn,
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                table,
            )
        ]
    expected = source_rows(dsn, table, columns)
    if mirrored != expected:
        missing = [r for r in expected if r not in mirrored][:5]
        extra = [r for r in mirrored if r not in expected][:5]
        raise AssertionError(
            f"mirror of {table} differs from Postgres: {len(mirrored)} vs {len(expected)} rows; "
            f"missing (first 5): {missing}; unexpected (first 5): {extra}"
        )
    return len(expected)


def view_rows(data_dir: Path, view: str, timeout: float = 60) -> list[tuple[Any, ...]]:
    """The view's rows, normalised and sorted (waiting while a new view is being built: the
    store is caught up with the source before its views are backfilled)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = viewstore.open(data_dir).query(view)
            break
        except ConfigError as exc:
            if "being built" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return normalise_rows(r.values() for r in rows)


def normalise_rows(rows: Any) -> list[tuple[Any, ...]]:
    """Rows (tuples) in the normalised, sorted form the view comparisons use."""
    return sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)


def postgres_view_rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    """The view's own SELECT, evaluated by Postgres (the oracle), normalised like view_rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(sql).fetchall()  # type: ignore[call-overload]
    return normalise_rows(rows)


def assert_view_equals(dsn: str, data_dir: Path, view: str, sql: str) -> int:
    """The store's rows of `view` equal Postgres's result of `sql` (call once caught up and
    while nothing writes: both sides are then as of the same LSN). Returns the row count."""
    want = postgres_view_rows(dsn, sql)
    got = view_rows(data_dir, view)
    if got != want:
        missing = [r for r in want if r not in got]
        extra = [r for r in got if r not in want]
        raise AssertionError(
            f"view {view} differs from Postgres: {len(missing)} row(s) missing "
            f"{missing[:5]}, {len(extra)} unexpected {extra[:5]}"
        )
    return len(want)


def assert_history_chains(data_dir: Path) -> int:
    """Every view's change log is a chain: each change's `before` is the previous `after` of
    the same row, and the last `after` of each row is the current row. Returns the changes.
    (Where retention compacted the log, it starts with one change per row the view then had.)"""
    from viewstore.codecs.value import pack_fields
    from viewstore.history.changelog import changes
    from viewstore.store.db import Store
    from viewstore.store.engine import decode_output, view_prefix
    from viewstore.store.viewcatalog import stored_views

    n = 0
    with Store.open(data_dir, readonly=True) as store:
        for info in stored_views(store).values():
            last: dict[bytes, Any] = {}

            def enc(row: Any) -> Any:  # NaN != NaN: compare the stored encoding
                return None if row is None else pack_fields(list(row))

            start = info.history_start if info.history_from else None
            for c in changes(store, info.view_id):
                if start is not None and c.lsn <= start:
                    # Retention kept only each row's last change by then: its start.
                    assert c.key not in last and c.after is not None, (info.name, c)
                    last[c.key] = c.after
                    n += 1
                    continue
                assert enc(last.get(c.key)) == enc(c.before), (
                    f"view {info.name} at {c.lsn}: before {c.before} but the row was "
                    f"{last.get(c.key)}"
                )
                last[c.key] = c.after
                n += 1
            prefix = view_prefix(info.view_id) + b"r"
            current = {
                k[len(prefix) :]: decode_output(v)
                for k, v in store.views.items(from_key=prefix)
                if k.startswith(prefix)
            }
            assert {k: enc(v) for k, v in last.items() if v is not None} == {
                k: enc(v) for k, v in current.items()
            }, info.name
    return n


def run_following_hints(
    dsn: str, data_dir: Path, check: Any, *, max_hints: int = 3, **config: Any
) -> list[str]:
    """Run the pipeline until caught up; when it refuses, do what its `Try:` hint says,
    literally, and run again. Then `check()` (the store equals Postgres) must pass. A hint is
    SQL to run on the source (up to its first `;`), `viewstore run --resnapshot ...`, or both
    (`SQL; then viewstore run --resnapshot ...`), with the options it names before the `...`
    (`--source-encoding X`). Returns the hints followed."""
    from viewstore.errors import ViewstoreError

    followed: list[str] = []
    while True:
        p = PipelineThread(dsn, data_dir, **config).start()
        try:
            # A store ahead of the server looks caught up at once: wait for the start checks.
            while not p.pipeline.streaming.wait(0.05):
                p.check()
                assert p.thread.is_alive(), "the pipeline ended without an error"
            wait_caught_up(dsn, data_dir, alive=p.check)
        except ViewstoreError as err:
            p.thread.join(30)
            hint = err.hint or ""
            assert len(followed) < max_hints, f"hints go round in circles: {followed}"
            assert hint.startswith(("ALTER ", "CREATE ")) or "viewstore run --resnapshot" in hint, (
                f"{err}: the hint {hint!r} is not something to follow literally"
            )
            followed.append(hint)
            if not hint.startswith("viewstore run"):
                pg_exec(dsn, hint.split(";")[0])
            if "viewstore run --resnapshot" in hint:
                config["resnapshot"] = True
                # Options the hint names before its `...`: `--source-encoding LATIN1`.
                options = hint.split("viewstore run --resnapshot", 1)[1].split("...", 1)[0]
                encoding = re.search(r"--source-encoding (\S+)", options)
                if encoding:
                    config["source_encoding"] = encoding.group(1)
            continue
        try:
            check()
        finally:
            p.stop()
        return followed


def assert_row_count(dsn: str, data_dir: Path, table: str) -> int:
    """The store's own row count of `table` (kept beside the mirror, in the same batches)
    equals `count(*)` on Postgres: a transaction applied twice would move it twice."""
    from viewstore.store.db import Store

    qualified = table if "." in table else f"public.{table}"
    with Store.open(data_dir, readonly=True) as store:
        stored = store.row_count(store.tables()[qualified])
    want = pg_query(dsn, f"SELECT count(*) FROM {qualified}")[0][0]
    assert stored == want, f"the store counts {stored} rows in {table}, Postgres {want}"
    return want


def assert_stopped_with(proc: subprocess.Popen[bytes], log: Path, *expected: str) -> str:
    """`viewstore run` exited 1 (a ViewstoreError, not an unexpected one) and its output has
    every `expected` text; returns the output."""
    code = proc.wait(120)
    output = log.read_text(errors="replace")
    assert code == 1, output[-3000:]
    assert "unexpected error" not in output, output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    return output


def slot_confirmed_lsn(dsn: str) -> Lsn:
    """confirmed_flush_lsn of the one slot of the test's database."""
    (confirmed,) = pg_query(
        dsn,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE database = current_database()",
    )[0]
    return Lsn.parse(confirmed)


def restart_until_caught_up(
    dsn: str, data_dir: Path, *args: str, log: Path, then: str, timeout: float = 180
) -> None:
    """Start `viewstore run` again, run the SQL `then` on Postgres, wait until the store has
    applied it, and stop it cleanly (exit 0)."""
    proc = start_process(dsn, data_dir, *args, log=log)
    try:
        pg_exec(dsn, then)
        wait_caught_up(
            dsn,
            data_dir,
            timeout=timeout,
            alive=lambda: proc.poll() is None or _died(log),
        )
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            kill9(proc)


def _died(log: Path) -> bool:
    raise AssertionError(f"viewstore run exited:\n{log.read_text(errors='replace')[-3000:]}")
