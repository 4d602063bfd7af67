"""Demo: a throwaway Postgres, a live workload, and the mirror following it on screen.

`run_demo` is what `viewstore demo` runs. It starts a private Postgres (`viewstore.pgcluster`),
creates the seed's `players` and `player_scores` tables with their rows, mirrors them with a
`Pipeline` in a background thread while a workload thread commits random scores, and prints
once a second how far the mirror has got, with a leaderboard computed in Python from the
mirrored rows (a preview of what views will maintain). On Ctrl-C, SIGTERM or after `duration`
it stops the workload, lets the mirror catch up, stops the pipeline and compares both tables
with `SELECT *` on Postgres. Postgres and the temporary directory are always removed.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import viewstore
from viewstore.errors import StoreError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import connect, query
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.pipeline import Pipeline, RunConfig

# The seed, verbatim: the schema and rows of the players/leaderboard example that viewstore's
# views will maintain (the same DDL twice in the document; both copies are identical).
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
TABLES = ("public.players", "public.player_scores")
_NAMES = (
    "Toad", "Daisy", "Wario", "Waluigi", "Rosalina", "Donkey Kong", "Diddy", "Koopa",
    "Birdo", "Kamek", "Shy Guy", "King Boo", "Lakitu", "Pauline", "Toadette", "Bowser Jr.",
)  # fmt: skip
_CATCH_UP_TIMEOUT = 30.0  # seconds the mirror gets to apply the last transactions
_STOP_TIMEOUT = 30.0


def run_demo(duration: float | None, rate: float, players: int, out: TextIO) -> None:
    """Run the demo until Ctrl-C (or `duration` seconds); raise StoreError if the mirror differs.

    `rate` is the workload's transactions per second, `players` how many players join the
    seed's five before the snapshot. Progress goes to `out`, redrawn in place on a terminal.
    """
    stopping = threading.Event()
    cluster = ThrowawayPostgres()
    tmp = Path(tempfile.mkdtemp(prefix="viewstore-demo-"))
    conn: Any = None
    pipeline: _PipelineThread | None = None
    workload: _Workload | None = None
    with _stop_on_signals(stopping):
        try:
            _say(out, f"starting a throwaway Postgres from {cluster.bindir} ...")
            cluster.start()
            conn = connect(cluster.dsn, application_name="viewstore demo")
            (version,) = query(conn, "SHOW server_version")[0]
            _say(out, f"Postgres {version} on 127.0.0.1:{cluster.port}, deleted at the end")
            names = _player_names()
            for statement in SEED_SQL:
                query(conn, statement)
            for _ in range(players):
                query(conn, "INSERT INTO players (name) VALUES (%s)", (next(names),))
            seeded = "the seed's tables and rows (5 players, 8 scores)"
            _say(out, f"created {seeded} and {players} more players")

            data_dir = tmp / "data"
            pipeline = _PipelineThread(Pipeline(RunConfig(dsn=cluster.dsn, data_dir=data_dir)))
            _say(out, f"mirroring them into {data_dir}: snapshot first ...")
            if not _wait_snapshot(data_dir, pipeline, stopping):
                _say(out, "stopped before the snapshot completed")
                return
            reader = viewstore.open(data_dir)
            _say(out, f"snapshot complete at {reader.applied_lsn()}")

            workload = _Workload(cluster.dsn, rate, names)
            _say(out, f"committing ~{rate:g} transactions/s; Ctrl-C stops and checks the mirror")
            _show_until_stopped(reader, conn, pipeline, workload, duration, stopping, out)

            _say(out, ("\n" if out.isatty() else "") + "stopping the workload ...")
            workload.finish()
            target = Lsn.parse(query(conn, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
            _say(out, f"waiting for the mirror to apply up to {target} ...")
            _wait_applied(reader, target, pipeline)
            _say(out, f"pipeline stopped at {pipeline.finish()}")
            _verify(conn, reader, out)
        finally:
            try:
                if workload is not None:
                    workload.finish(raise_error=False)
                if pipeline is not None:
                    pipeline.finish(raise_error=False)
                if conn is not None:
                    conn.close()
                _say(out, "stopping Postgres and removing the demo's files")
            finally:  # whatever failed above (a closed stdout...), Postgres must not outlive us
                cluster.stop()
                shutil.rmtree(tmp, ignore_errors=True)


# -- setup ---------------------------------------------------------------------------------


@contextmanager
def _stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stopping` instead of raising, so every step ends cleanly and
    Postgres is never left running. Only the main thread can handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _player_names() -> Iterator[str]:
    yield from _NAMES
    n = len(_NAMES)
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


def _wait_snapshot(data_dir: Path, pipeline: _PipelineThread, stopping: threading.Event) -> bool:
    """True once the snapshot is complete; False when stopped first."""
    reader = viewstore.open(data_dir)
    while not stopping.is_set():
        pipeline.check()
        try:
            if reader.status().snapshot == "complete":
                return True
        except StoreError:
            pass  # the pipeline has not created the store yet
        time.sleep(0.1)
    return False


# -- the workload --------------------------------------------------------------------------


class _Workload:
    """Commits random transactions at `rate` per second in a thread, until `finish`.

    Mostly 1-3 new scores for random players; ~5% a new player with a first score; ~5% a
    correction that updates one score and deletes another.
    """

    def __init__(self, dsn: str, rate: float, names: Iterator[str]) -> None:
        self.dsn, self.interval, self.names = dsn, 1.0 / rate, names
        self.rng = random.Random()
        self.committed = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="viewstore-workload", daemon=True)
        self.thread.start()

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
        while not self.stop.is_set():
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


def _show_until_stopped(
    reader: viewstore.Reader,
    conn: Any,
    pipeline: _PipelineThread,
    workload: _Workload,
    duration: float | None,
    stopping: threading.Event,
    out: TextIO,
) -> None:
    tty = out.isatty()
    started = time.monotonic()
    first = True
    while True:
        pipeline.check()
        if workload.error is not None:
            workload.finish()  # raises the workload's error
        elapsed = time.monotonic() - started
        lines = _status_block(reader, conn, workload, elapsed)
        if tty:
            # Home, then each line clears its own rest: no flicker; the first draw clears all.
            clear = "\x1b[2J" if first else ""
            out.write(clear + "\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        else:
            out.write("\n".join(lines) + "\n\n")
        out.flush()
        first = False
        left = None if duration is None else duration - (time.monotonic() - started)
        if left is not None and left <= 0:
            return
        if stopping.wait(1.0 if left is None else min(1.0, left)):
            return


def _status_block(
    reader: viewstore.Reader, conn: Any, workload: _Workload, elapsed: float
) -> list[str]:
    report = reader.status()
    (server,) = query(conn, "SELECT pg_current_wal_insert_lsn()::text")[0]
    lag = max(Lsn.parse(server) - Lsn.parse(report.applied_lsn), 0)
    # Scores before players: players are never deleted, so every score read has its player.
    scores = reader.rows("public.player_scores")
    players = reader.rows("public.players")
    lines = [
        f"viewstore demo, {elapsed:.0f}s (Ctrl-C stops and checks the mirror against Postgres)",
        f"applied LSN   {report.applied_lsn}",
        f"lag           {lag:,} bytes behind pg_current_wal_insert_lsn() {server}",
        f"transactions  {report.transactions:,} applied; the workload committed "
        f"{workload.committed:,}",
        "mirrored rows " + ", ".join(f"{t.name} {t.rows:,}" for t in report.tables),
        "",
        "top 5 players by total score, computed from the mirror in Python",
        "(a preview of the views to come):",
    ]
    totals: dict[Any, Decimal] = {p["id"]: Decimal("0.00") for p in players}
    counts: dict[Any, int] = dict.fromkeys(totals, 0)
    for s in scores:
        pid = s["player_id"]
        if pid in totals:
            totals[pid] += s["score"]
            counts[pid] += 1
    names = {p["id"]: p["name"] for p in players}
    top = sorted(totals, key=lambda pid: (-totals[pid], pid))[:5]
    for rank, pid in enumerate(top, 1):
        n = counts[pid]
        lines.append(f"  {rank}. {names[pid]:<12} {totals[pid]:>10}  ({n:,} score{'s' * (n != 1)})")
    return lines


# -- the end -------------------------------------------------------------------------------


def _wait_applied(reader: viewstore.Reader, target: Lsn, pipeline: _PipelineThread) -> None:
    deadline = time.monotonic() + _CATCH_UP_TIMEOUT
    while (applied := reader.applied_lsn()) < target:
        pipeline.check()
        if time.monotonic() > deadline:
            raise StoreError(
                f"the mirror did not catch up: applied {applied} of {target} "
                f"after {_CATCH_UP_TIMEOUT:g}s"
            )
        time.sleep(0.05)


def _verify(conn: Any, reader: viewstore.Reader, out: TextIO) -> None:
    """Compare each mirrored table with `SELECT *`; print the result, raise if they differ."""
    counts, problems = [], []
    for table in TABLES:
        cur = conn.execute(f"SELECT * FROM {table}")  # a constant name, not a value
        columns = [d.name for d in cur.description]
        source = sorted((_norm(r) for r in cur.fetchall()), key=repr)
        mirror = sorted((_norm(tuple(r[c] for c in columns)) for r in reader.rows(table)), key=repr)
        counts.append(len(source))
        if mirror != source:
            missing = [r for r in source if r not in mirror]
            extra = [r for r in mirror if r not in source]
            problems.append(
                f"  {table}: {len(mirror)} mirrored vs {len(source)} in Postgres; "
                f"missing {missing[:5]}, unexpected {extra[:5]}"
            )
    if problems:
        _say(out, "mirror differs from Postgres:\n" + "\n".join(problems))
        raise StoreError(
            "mirror differs from Postgres after the demo",
            hint="this is a bug in viewstore: please report it with the output above",
        )
    _say(out, f"mirror matches Postgres: {counts[0]:,} players, {counts[1]:,} scores")


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # numeric compares by its exact text: Decimal('1.0') == Decimal('1.00') would hide a change.
    return tuple(("numeric", str(v)) if isinstance(v, Decimal) else v for v in row)
