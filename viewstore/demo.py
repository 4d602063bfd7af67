"""Demo: the seed's leaderboard view, kept current from a live workload, on screen.

`run_demo` is what `viewstore demo` runs:

1. a Postgres: a private throwaway one (`viewstore.pgcluster`), or an empty database given
   with `dsn`;
2. the seed's `players` and `player_scores` tables and rows, a few hundred more players with
   some scores each, and the seed's `player_total_scores` materialized view (also created in
   Postgres, so that the closing check can `REFRESH` it there);
3. the view pasted verbatim into `views.sql` in the data directory and handed to a `Pipeline`
   (`RunConfig(views_file=...)`) in a background thread: snapshot, view built from the mirror,
   then streaming;
4. a workload thread committing scores (and some corrections: updates and deletes) at `rate`
   transactions per second, while the screen shows the top 10 by total_score as viewstore
   keeps it, with the applied LSN, lag and transactions/s: redrawn in place on a terminal,
   plain snapshots otherwise, so that logs stay readable; with `http`, the same process serves
   the HTTP API and the live leaderboard page (`serve/static/leaderboard.html`) from the
   pipeline's store, and its URL is printed first;
5. at Ctrl-C, SIGTERM, after `duration` seconds or `transactions` transactions: the workload
   stops, the store catches up with Postgres, the final top 10 is printed, and the mirrored
   tables, the whole view and that top 10 are compared with Postgres (`REFRESH MATERIALIZED
   VIEW` there, then `SELECT`). A difference raises StoreError.

Nothing outlives the demo unless asked: a throwaway Postgres and a temporary data directory are
removed; in a `dsn` database the slot and publication are dropped and the tables left to look
at; a `data_dir` given by the caller is kept.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql

import viewstore
from viewstore.dsn import redact
from viewstore.errors import ConfigError, StoreError, ViewstoreError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import connect, query
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.pipeline import Pipeline, RunConfig

# The seed, verbatim: the schema and rows of the players/leaderboard example (the same DDL
# twice in the document; both copies are identical).
SEED_SQL = (
    """CREATE TABLE players (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL
);""",
    """CREATE TABLE player_scores (
    id SERIAL PRIMARY KEY,
    score DECIMAL(10, 2) NOT NULL,
    player_id INTEGER REFERENCES players(id),
    CONSTRAINT fk_player
        FOREIGN KEY(player_id)
        REFERENCES players(id)
        ON DELETE CASCADE
);""",
    "INSERT INTO players (name) VALUES ('Mario'), ('Peach'), ('Bowser'), ('Luigi'), ('Yoshi');",
    """INSERT INTO player_scores (player_id, score) VALUES
(1, 0.31),
(3, 0.16),
(4, 0.24),
(5, 0.56),
(1, 0.19),
(2, 0.34),
(3, 0.49),
(5, 0.71);""",
)
# The seed's view, verbatim: written to views.sql for viewstore, and created in Postgres too.
VIEW = "player_total_scores"
VIEW_SQL = """CREATE MATERIALIZED VIEW player_total_scores AS
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
TOP = 10
# Postgres's order for the board. viewstore breaks ties by the view's key (player_id) ascending,
# so the same tie-break here makes the two top 10s comparable row for row.
TOP_SQL = f"SELECT * FROM {VIEW} ORDER BY total_score DESC, player_id LIMIT {TOP}"
TABLES = ("public.players", "public.player_scores")
_NAMES = (
    "Toad", "Daisy", "Wario", "Waluigi", "Rosalina", "Donkey Kong", "Diddy", "Koopa",
    "Birdo", "Kamek", "Shy Guy", "King Boo", "Lakitu", "Pauline", "Toadette", "Bowser Jr.",
)  # fmt: skip
_HISTORY = 10  # each added player gets about half this many scores before the snapshot
_TTY_INTERVAL = 0.5  # seconds between redraws on a terminal
_LOG_INTERVAL = 2.0  # seconds between plain snapshots: often enough to watch, few enough to read
_RATE_WINDOW = 3.0  # seconds of samples behind the transactions/s figure
_CATCH_UP_TIMEOUT = 30.0  # seconds the store gets to apply the last transactions
_STOP_TIMEOUT = 30.0
_SLOT_DROP_TIMEOUT = 10.0  # a stopped walsender may hold the slot for a moment

# ANSI: home, clear to end of line / of screen, clear all, hide and show the cursor.
_HOME, _EOL, _EOS, _CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def run_demo(
    duration: float | None,
    rate: float,
    players: int,
    out: TextIO,
    *,
    transactions: int | None = None,
    dsn: str | None = None,
    data_dir: Path | None = None,
    http: str | None = None,
    serve_http: Callable[[Pipeline, str], Any] | None = None,
) -> None:
    """Run the demo until Ctrl-C, `duration` seconds or `transactions` workload transactions;
    raise StoreError if the store differs from Postgres at the end.

    `rate` is the workload's transactions per second, `players` how many players join the
    seed's five before the snapshot. `dsn` names an empty database to use instead of a
    throwaway Postgres; `data_dir` a new or empty directory to keep the store in instead of a
    temporary one. `http` (HOST:PORT) also serves the HTTP API and the leaderboard page there
    while the demo runs (a free port instead when that one is taken; the URL is printed), through
    `serve_http(pipeline, http)` (the CLI passes serve's `HttpAlongside`: only the CLI imports
    serve).
    Progress goes to `out`, redrawn in place when it is a terminal. A second Ctrl-C raises
    KeyboardInterrupt (the clean-up still runs).
    """
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(
            f"{data_dir} is not empty",
            hint="give --data a new or empty directory: the demo builds a fresh store there",
        )
    stopping, cleaning = threading.Event(), threading.Event()
    cluster = ThrowawayPostgres() if dsn is None else None
    tmp: Path | None = None
    if data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="viewstore-demo-"))
        data = tmp / "data"
    else:
        data = data_dir
    conn: Any = None
    pipeline: _PipelineThread | None = None
    web: Any = None
    workload: _Workload | None = None
    with _stop_on_signals(stopping, cleaning):
        try:
            if cluster is not None:
                _say(out, f"starting a throwaway Postgres from {cluster.bindir} ...")
                cluster.start()
                dsn = cluster.dsn
            assert dsn is not None
            conn = connect(dsn, application_name="viewstore demo")
            (version,) = query(conn, "SHOW server_version")[0]
            if cluster is not None:
                _say(out, f"Postgres {version} on 127.0.0.1:{cluster.port}, deleted at the end")
            else:
                _say(out, f"Postgres {version} at {redact(dsn)}")
                _check_empty(conn)
            names = _player_names()
            added, scores = _seed(conn, players, names)
            _say(
                out,
                f"created the seed's tables and rows (5 players, 8 scores), {added:,} more "
                f"players with {scores:,} scores, and the seed's view {VIEW}",
            )

            data.mkdir(parents=True, exist_ok=True)
            views_file = data / "views.sql"
            views_file.write_text(VIEW_SQL)
            config = RunConfig(dsn=dsn, data_dir=data, views_file=views_file)
            ingest = Pipeline(config)
            if http is not None:
                assert serve_http is not None, "http needs serve_http"
                web = serve_http(ingest, http)
                if web.port != web.requested_port:
                    _say(out, f"port {web.requested_port} is taken: serving on {web.port}")
                _say(out, f"leaderboard page: {web.url}")
            pipeline = _PipelineThread(ingest)
            _say(out, f"wrote the view to {views_file}; viewstore keeps it in {data}")
            _say(out, "snapshot first, then the view is built from it ...")
            reader = viewstore.open(data)
            if not _wait_view_ready(reader, pipeline, stopping):
                _say(out, "stopped before the view was built")
                return
            _say(out, f"snapshot complete at {reader.applied_lsn()}; {VIEW} built from it")

            workload = _Workload(dsn, rate, names, limit=transactions)
            _say(out, f"committing ~{rate:g} transactions/s; Ctrl-C stops and checks the view")
            screen, meter = _Screen(out), _RateMeter()
            with screen:
                _show_until_stopped(
                    screen, reader, conn, pipeline, workload, meter, duration, stopping, web
                )
                screen.say("stopping the workload (Ctrl-C again skips the checks) ...")
                workload.finish()
                target = _server_lsn(conn)
                screen.say(f"waiting for viewstore to apply up to {target} ...")
                _wait_applied(reader, target, pipeline)
                final = _frame(reader, conn, workload, meter)
                screen.draw(final.lines(f"final: top {TOP} of {VIEW}, caught up at {final.lsn}"))
            if web is not None:
                web.stop()  # before the pipeline closes the store it reads
            _say(out, f"pipeline stopped at {pipeline.finish()}")
            _verify(conn, reader, final.top, out)
        finally:
            cleaning.set()
            try:
                if web is not None:
                    web.stop()
                if workload is not None:
                    workload.finish(raise_error=False)
                if pipeline is not None:
                    pipeline.finish(raise_error=False)
                if conn is not None:
                    if cluster is None and pipeline is not None:
                        _drop_replication_objects(conn, pipeline.pipeline.config, out)
                    conn.close()
                if cluster is not None:
                    _say(out, "stopping Postgres and removing the demo's files")
                elif data_dir is None:
                    _say(out, "removing the demo's store")
            finally:  # whatever failed above (a closed stdout...), Postgres must not outlive us
                if cluster is not None:
                    cluster.stop()
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
    if data_dir is not None:
        _say(out, f"the store stays in {data}: viewstore.open({str(data)!r}).query({VIEW!r})")


# -- setup ---------------------------------------------------------------------------------


@contextmanager
def _stop_on_signals(stopping: threading.Event, cleaning: threading.Event) -> Iterator[None]:
    """The first SIGINT or SIGTERM sets `stopping` instead of raising, so the demo ends with
    its checks and Postgres is never left running; a second one raises KeyboardInterrupt, for
    when the user does not want to wait for the checks. Once `cleaning` is set, signals are
    ignored: an interrupted clean-up could leave a slot in the user's database (every step of
    it waits with a time limit, so this cannot hang). Only the main thread can handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(_signum: int, _frame: object) -> None:
        if cleaning.is_set():
            return
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_empty(conn: Any) -> None:
    """Refuse a database that already has the seed's tables: the demo must not touch data
    that is not its own (and CREATE TABLE would fail half-way anyway)."""
    found = [
        name
        for name in ("players", "player_scores", VIEW)
        if query(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]
    ]
    if found:
        raise ConfigError(
            "the database already has " + ", ".join(found),
            hint="give --dsn an empty database (CREATE DATABASE viewstore_demo), "
            "or leave --dsn out to use a throwaway Postgres",
        )


def _seed(conn: Any, players: int, names: Iterator[str]) -> tuple[int, int]:
    """The seed verbatim, then `players` more players with about `_HISTORY / 2` random scores
    each (so that the board is full from the start), then the view. Returns the players and
    scores added beyond the seed's."""
    for statement in SEED_SQL:
        query(conn, statement)
    new = [next(names) for _ in range(players)]
    ids = []
    if new:
        insert = "INSERT INTO players (name) SELECT unnest(%s::text[]) RETURNING id"
        ids = [r[0] for r in query(conn, insert, (new,))]
    scores = 0
    if ids:
        # numeric arithmetic throughout: scores are exact cents, 0.01 to 1.00 like the seed's.
        scores = len(
            query(
                conn,
                "INSERT INTO player_scores (player_id, score) "
                "SELECT p.id, (1 + floor(random() * 100))::numeric / 100 "
                "FROM unnest(%s::int[]) AS p(id) CROSS JOIN generate_series(1, %s) "
                "WHERE random() < 0.5 RETURNING id",
                (ids, _HISTORY),
            )
        )
    query(conn, VIEW_SQL)
    return len(ids), scores


def _player_names() -> Iterator[str]:
    yield from _NAMES
    n = 5 + len(_NAMES)  # "Player N" for the N-th player: the seed has five
    while True:
        n += 1
        yield f"Player {n}"


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


class _PipelineThread:
    """`Pipeline.run` in a background thread; its error, if any, is raised by `check`."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.error: BaseException | None = None
        self.final: Lsn | None = None
        self.thread = threading.Thread(target=self._run, name="viewstore-pipeline", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.final = self.pipeline.run()
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            raise StoreError("the pipeline stopped unexpectedly")

    def finish(self, raise_error: bool = True) -> Lsn | None:
        self.pipeline.stop.set()
        self.thread.join(_STOP_TIMEOUT)
        if raise_error:
            if self.thread.is_alive():
                raise StoreError(f"the pipeline did not stop within {_STOP_TIMEOUT:g}s")
            if self.error is not None:
                raise self.error
        return self.final


def _wait_view_ready(
    reader: viewstore.Reader, pipeline: _PipelineThread, stopping: threading.Event
) -> bool:
    """True once the view can be read (snapshot taken, view built); False when stopped first.

    The store marks the snapshot complete before it builds the views from the mirror, so the
    snapshot state alone is not enough: the view itself must answer.
    """
    while not stopping.is_set():
        pipeline.check()
        try:
            reader.query(VIEW, limit=1)
            return True
        except ViewstoreError:
            pass  # no store yet (StoreError), or the view not yet there or built (ConfigError)
        time.sleep(0.1)
    return False


def _drop_replication_objects(conn: Any, config: RunConfig, out: TextIO) -> None:
    """In a database the demo does not own, drop the slot and publication it created: a slot
    left behind would hold WAL on that server for ever. The tables stay, to look at."""
    slot, publication = config.slot_name, config.publication_name
    deadline = time.monotonic() + _SLOT_DROP_TIMEOUT
    while True:
        try:
            query(
                conn,
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            break
        except ViewstoreError as exc:  # still active: the walsender has not exited yet
            if time.monotonic() > deadline:
                _say(out, f"could not drop the slot {slot}: {exc}")
                _say(out, f"  drop it yourself: SELECT pg_drop_replication_slot('{slot}');")
                break
            time.sleep(0.2)
    try:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
    except psycopg.Error as exc:  # the demo is ending anyway: say what is left, do not mask
        _say(out, f"could not drop the publication {publication}: {exc}")
        return
    _say(
        out,
        f"dropped the slot {slot} and the publication {publication}; the tables and the "
        f"materialized view {VIEW} stay in the database",
    )


# -- the workload --------------------------------------------------------------------------


class _Workload:
    """Commits random transactions at `rate` per second in a thread, until `finish` or
    `limit` transactions.

    Mostly 1-3 new scores for random players; ~5% a new player with a first score; ~5% a
    correction that updates one score and deletes another.
    """

    def __init__(
        self, dsn: str, rate: float, names: Iterator[str], limit: int | None = None
    ) -> None:
        self.dsn, self.interval, self.names, self.limit = dsn, 1.0 / rate, names, limit
        self.rng = random.Random()
        self.committed = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="viewstore-workload", daemon=True)
        self.thread.start()

    @property
    def done(self) -> bool:
        """Ended by itself: `limit` reached, or an error (`finish` raises it)."""
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            conn = connect(self.dsn, application_name="viewstore demo workload")
            try:
                self._loop(conn)
            finally:
                conn.close()
        except BaseException as exc:
            self.error = exc

    def _loop(self, conn: Any) -> None:
        player_ids = [r[0] for r in query(conn, "SELECT id FROM players")]
        max_score_id = query(conn, "SELECT coalesce(max(id), 0) FROM player_scores")[0][0]
        next_at = time.monotonic()
        while not self.stop.is_set() and (self.limit is None or self.committed < self.limit):
            kind = self.rng.random()
            with conn.transaction():
                if kind < 0.05:
                    (pid,) = query(
                        conn, "INSERT INTO players (name) VALUES (%s) RETURNING id",
                        (next(self.names),),
                    )[0]  # fmt: skip
                    player_ids.append(pid)
                    new_scores = [(pid, self._score())]
                elif kind < 0.10:
                    new_scores = []
                    query(
                        conn,
                        "UPDATE player_scores SET score = %s WHERE id = "
                        "(SELECT id FROM player_scores WHERE id >= %s ORDER BY id LIMIT 1)",
                        (self._score(), self.rng.randint(1, max(max_score_id, 1))),
                    )
                    query(
                        conn,
                        "DELETE FROM player_scores WHERE id = "
                        "(SELECT id FROM player_scores WHERE id >= %s ORDER BY id LIMIT 1)",
                        (self.rng.randint(1, max(max_score_id, 1)),),
                    )
                else:
                    new_scores = [
                        (self.rng.choice(player_ids), self._score())
                        for _ in range(self.rng.randint(1, 3))
                    ]
                for pid, score in new_scores:
                    (sid,) = query(
                        conn,
                        "INSERT INTO player_scores (player_id, score) VALUES (%s, %s) RETURNING id",
                        (pid, score),
                    )[0]
                    max_score_id = max(max_score_id, sid)
            self.committed += 1
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()  # behind schedule: do not burst to catch up

    def _score(self) -> Decimal:
        return Decimal(self.rng.randint(1, 100)) / 100  # like the seed's: 0.01 to 1.00

    def finish(self, raise_error: bool = True) -> None:
        self.stop.set()
        self.thread.join(_STOP_TIMEOUT)
        if raise_error and self.error is not None:
            raise self.error


# -- the screen ----------------------------------------------------------------------------


class _Screen:
    """Where frames go: redrawn in place on a terminal, appended as plain blocks otherwise
    (no escape sequences in logs, pipes and tests)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = _TTY_INTERVAL if self.tty else _LOG_INTERVAL
        self.drawn = False

    def __enter__(self) -> _Screen:
        if self.tty:
            self.out.write(_HIDE_CURSOR)  # a cursor blinking over the table is distracting
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.out.write(_SHOW_CURSOR)
            self.out.flush()

    def draw(self, lines: Sequence[str]) -> None:
        if self.tty:
            # Home, then each line clears its own rest: no flicker; the first draw clears all.
            clear = "" if self.drawn else _CLEAR
            body = "".join(f"{line}{_EOL}\n" for line in lines)
            self.out.write(clear + _HOME + body + _EOS)
        else:
            # A blank line around each block: one snapshot per paragraph in a log.
            self.out.write(("" if self.drawn else "\n") + "\n".join(lines) + "\n\n")
        self.out.flush()
        self.drawn = True

    def say(self, line: str) -> None:
        """A line below the frame (on a terminal, the next draw would overwrite it)."""
        _say(self.out, line)


@dataclass
class _Frame:
    """One reading of the store and of Postgres: what a screen shows."""

    lsn: str
    server: str
    lag_bytes: int
    lag_seconds: float
    rate: float | None  # applied transactions/s; None until there are two samples
    applied: int
    committed: int
    top: list[dict[str, Any]]

    def lines(self, title: str) -> list[str]:
        # No rate until two readings are far enough apart to divide by.
        rate = "" if self.rate is None else f"{self.rate:.1f} transactions/s applied, "
        lines = [
            title,
            f"applied LSN   {self.lsn}",
            f"lag           {self.lag_bytes:,} bytes, {self.lag_seconds:.2f} s "
            f"(Postgres is at {self.server})",
            f"throughput    {rate}{self.applied:,} applied; "
            f"the workload committed {self.committed:,}",
            "",
        ]
        return lines + _table(self.top)


def _table(top: list[dict[str, Any]]) -> list[str]:
    """rank, player_id, name, total_score: numbers right-aligned, names left."""
    name_width = max([len("name"), *(len(str(r["name"])) for r in top)])
    lines = [f"rank  player_id  {'name':<{name_width}}  total_score"]
    for rank, r in enumerate(top, 1):
        name = f"{r['name']:<{name_width}}"
        lines.append(f"{rank:>4}  {r['player_id']:>9}  {name}  {r['total_score']!s:>11}")
    return lines


class _RateMeter:
    """Transactions/s over the last `_RATE_WINDOW` seconds of (time, applied count) samples."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, applied: int) -> float | None:
        now = time.monotonic()
        self.samples.append((now, applied))
        while len(self.samples) > 2 and now - self.samples[1][0] >= _RATE_WINDOW:
            self.samples.popleft()
        (t0, n0) = self.samples[0]
        return None if now - t0 < 0.2 else (applied - n0) / (now - t0)


def _frame(reader: viewstore.Reader, conn: Any, workload: _Workload, meter: _RateMeter) -> _Frame:
    # The status first, then the board: the board is then at least as new as the LSN shown.
    report = reader.status()
    top = reader.query(VIEW, order_by="total_score", desc=True, limit=TOP)
    server = _server_lsn(conn)
    lag = max(server - Lsn.parse(report.applied_lsn), 0)
    # Lag in time: while transactions wait, the board is at most as old as the newest commit
    # it shows (Postgres's commit timestamp; clamped, the clocks may differ on another host).
    seconds = 0.0
    if lag and report.applied_time is not None:
        applied_at = datetime.fromisoformat(report.applied_time)
        seconds = max((datetime.now(UTC) - applied_at).total_seconds(), 0.0)
    return _Frame(
        lsn=report.applied_lsn,
        server=str(server),
        lag_bytes=lag,
        lag_seconds=seconds,
        rate=meter.add(report.transactions),
        applied=report.transactions,
        committed=workload.committed,
        top=top,
    )


def _show_until_stopped(
    screen: _Screen,
    reader: viewstore.Reader,
    conn: Any,
    pipeline: _PipelineThread,
    workload: _Workload,
    meter: _RateMeter,
    duration: float | None,
    stopping: threading.Event,
    web: Any = None,
) -> None:
    started = time.monotonic()
    footer = ["", "Ctrl-C stops and checks the view against Postgres"]
    if web is not None:
        footer.append(f"leaderboard page: {web.url}")
    while True:
        pipeline.check()
        if workload.error is not None:
            workload.finish()  # raises the workload's error
        elapsed = time.monotonic() - started
        frame = _frame(reader, conn, workload, meter)
        title = f"viewstore demo, {elapsed:.0f}s: top {TOP} of {VIEW} as viewstore keeps it"
        screen.draw([*frame.lines(title), *footer])
        if workload.done:
            return  # its `limit` reached
        left = None if duration is None else duration - (time.monotonic() - started)
        if left is not None and left <= 0:
            return
        wait = screen.interval if left is None else min(screen.interval, left)
        # Wake early when the workload reaches its limit, so --transactions ends promptly.
        deadline = time.monotonic() + wait
        while not stopping.is_set() and not workload.done and time.monotonic() < deadline:
            stopping.wait(min(0.05, max(deadline - time.monotonic(), 0)))
        if stopping.is_set():
            return


def _server_lsn(conn: Any) -> Lsn:
    return Lsn.parse(query(conn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])


# -- the end -------------------------------------------------------------------------------


def _wait_applied(reader: viewstore.Reader, target: Lsn, pipeline: _PipelineThread) -> None:
    deadline = time.monotonic() + _CATCH_UP_TIMEOUT
    while (applied := reader.applied_lsn()) < target:
        pipeline.check()
        if time.monotonic() > deadline:
            raise StoreError(
                f"viewstore did not catch up: applied {applied} of {target} "
                f"after {_CATCH_UP_TIMEOUT:g}s"
            )
        time.sleep(0.05)


def _verify(conn: Any, reader: viewstore.Reader, top: list[dict[str, Any]], out: TextIO) -> None:
    """Compare the mirrored tables with `SELECT *`, the whole view with Postgres's refreshed
    materialized view, and the final top 10 shown with Postgres's; raise if any differs."""
    counts, problems = [], []
    for table in TABLES:
        cur = conn.execute(f"SELECT * FROM {table}")  # a constant name, not a value
        columns = [d.name for d in cur.description]
        mirror = [tuple(r[c] for c in columns) for r in reader.rows(table)]
        counts.append(len(mirror))
        problems += _differences(table, mirror, cur.fetchall())
    # Postgres recomputes its copy of the view from scratch: the oracle for what viewstore kept.
    conn.execute(f"REFRESH MATERIALIZED VIEW {VIEW}")
    cur = conn.execute(f"SELECT * FROM {VIEW}")
    columns = [d.name for d in cur.description]
    view = [tuple(r[c] for c in columns) for r in reader.query(VIEW)]
    problems += _differences(VIEW, view, cur.fetchall())
    want_top = [tuple(r) for r in conn.execute(TOP_SQL).fetchall()]
    got_top = [tuple(r[c] for c in columns) for r in top]
    if [_norm(r) for r in got_top] != [_norm(r) for r in want_top]:
        problems.append(f"  top {TOP}: shown {got_top}\n  Postgres's {TOP_SQL}: {want_top}")
    if problems:
        _say(out, "viewstore differs from Postgres:\n" + "\n".join(problems))
        raise StoreError(
            "viewstore differs from Postgres after the demo",
            hint="this is a bug in viewstore: please report it with the output above",
        )
    _say(out, f"mirror matches Postgres: {counts[0]:,} players, {counts[1]:,} scores")
    _say(
        out,
        f"view matches Postgres: {len(view):,} rows of {VIEW} equal REFRESH MATERIALIZED VIEW's, "
        f"and the final top {TOP} equals {TOP_SQL}",
    )


def _differences(
    name: str, ours: list[tuple[Any, ...]], theirs: list[tuple[Any, ...]]
) -> list[str]:
    mine = sorted((_norm(r) for r in ours), key=repr)
    source = sorted((_norm(r) for r in theirs), key=repr)
    if mine == source:
        return []
    missing = [r for r in source if r not in mine]
    extra = [r for r in mine if r not in source]
    return [
        f"  {name}: {len(mine)} in viewstore vs {len(source)} in Postgres; "
        f"missing {missing[:5]}, unexpected {extra[:5]}"
    ]


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # numeric compares by its exact text: Decimal('1.0') == Decimal('1.00') would hide a change.
    return tuple(("numeric", str(v)) if isinstance(v, Decimal) else v for v in row)
