"""The history across crashes (issue 4, acceptance 2).

A single writer commits transactions against the seed's tables while `viewstore run` (a child
process) is killed with SIGKILL and restarted several times. For every transaction the writer
records its xid, the WAL insert position just before its COMMIT, and what Postgres itself says
each view's rows were before and after it (the views' SELECT restricted to the players the
transaction touched, run inside the transaction): the oracle the history is checked against.

1. Every committed transaction that changed a view is in that view's history exactly once, at
   one commit LSN inside its bracket, with exactly the rows Postgres changed (before and after);
   nothing else is there (rolled-back xids and transactions that changed nothing are absent).
2. The DuckDB copy equals the RocksDB log row for row after a sync that was itself killed
   (shown to be midway: its synced LSN strictly between 0 and the applied LSN), after syncs run
   while `viewstore run` writes the store under load, and after deleting it and syncing again.

Both tests share one store, built once per module by the `loaded` fixture.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from helpers import create_test_database, drop_test_database, pg_exec
from runner import (
    applied_lsn,
    assert_history_chains,
    assert_view_equals,
    current_lsn,
    kill9,
    reap_processes,
    start_process,
    view_rows,
    wait_applied,
    wait_caught_up,
)

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import unpack_fields
from viewstore.demo import SEED_SQL, VIEW, VIEW_SQL
from viewstore.history import checkpoint, duckdb_copy
from viewstore.history.changelog import Change, _rows_by_seeks, changes, rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views

STATS = "player_score_stats"
STATS_SELECT = (
    "SELECT player_id, count(*) AS scores, max(score) AS best FROM player_scores GROUP BY player_id"
)
TOTAL_SELECT = VIEW_SQL.split(" AS\n", 1)[1].strip().rstrip(";")
VIEWS_FILE = f"{VIEW_SQL}\nCREATE MATERIALIZED VIEW {STATS} AS\n{STATS_SELECT};\n"
# Each view's SELECT restricted to some players: the oracle of what a transaction changed.
ORACLE = {
    VIEW: "SELECT p.id, p.name, COALESCE(SUM(s.score), 0) FROM players p "
    "LEFT JOIN player_scores s ON p.id = s.player_id WHERE p.id = ANY(%s) GROUP BY p.id",
    STATS: "SELECT player_id, count(*), max(score) FROM player_scores "
    "WHERE player_id = ANY(%s) GROUP BY player_id",
}
MORE_PLAYERS = """
INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(6, 30) g;
INSERT INTO player_scores (player_id, score)
SELECT 1 + g % 30, (1 + g % 997) / 100.0 FROM generate_series(1, 300) g;
"""
XID_MOD = 1 << 32  # pgoutput carries the 32-bit xid; txid_current() adds the epoch
KILLS = 5
# History checkpoints every few changes (not 10,000), so that kills land among their writes.
CHECKPOINTS = {"VIEWSTORE_CHECKPOINT_INTERVAL": "40"}


def _canon(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    # 1.0 == 1.00 for Decimal: compare numeric by its exact text.
    if row is None:
        return None
    return tuple(("numeric", str(v)) if isinstance(v, Decimal) else v for v in row)


# --------------------------------------------------------------------------- the writer


@dataclass
class Txn:
    """A committed transaction as the writer saw it."""

    xid: int
    lower: Lsn  # WAL insert position read inside it, just before COMMIT: <= its commit LSN
    changed: dict[str, dict[int, tuple[Any, Any]]]  # view -> player id -> (before, after)
    upper: int = 0  # the next commit's `lower` (or the end of the load): >= its commit LSN


class Writer:
    """Random transactions in a background thread, one at a time, each recorded with the
    view rows Postgres says it changed. The writer is the only one writing, so its model of
    which score belongs to which player is exact."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.committed: list[Txn] = []
        self.rolled_back: list[int] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.scores: dict[int, int] = {}  # score id -> player id, as committed
        self.players: list[int] = []
        self.names = 0

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "writer did not stop"
        if self.error is not None:
            raise self.error

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                self.scores = dict(
                    conn.execute("SELECT id, player_id FROM player_scores").fetchall()
                )
                self.players = [r[0] for r in conn.execute("SELECT id FROM players")]
                while not self.stop_event.is_set():
                    self._transaction(conn)
        except BaseException as exc:
            self.error = exc

    def _score(self) -> Decimal:
        return Decimal(self.rng.randint(1, 999)) / 100  # nonzero: every insert changes a total

    def _plan(self, scores: dict[int, int], players: list[int]) -> list[tuple[Any, ...]]:
        rng = self.rng
        r = rng.random()
        pid = rng.choice(players)
        sid = rng.choice(list(scores)) if scores else None
        if sid is None or r < 0.45:
            return [("insert", pid, self._score())]
        if r < 0.57:  # several players in one transaction, sometimes two scores for one
            ops = [("insert", p, self._score()) for p in rng.sample(players, rng.randint(2, 3))]
            if rng.random() < 0.3:
                ops.append(("insert", ops[0][1], self._score()))
            return ops
        if r < 0.67:
            return [("update", sid, self._score())]
        if r < 0.75:
            return [("delete", sid)]
        if r < 0.82:  # insert, update and delete for (usually) different players
            other = rng.choice([s for s in scores if s != sid] or [sid])
            ops = [("insert", pid, self._score()), ("update", sid, self._score())]
            return [*ops, ("delete", other)] if other != sid else ops
        if r < 0.86:  # insert a score and delete it again: no view changes
            return [("insert_delete", pid, self._score())]
        if r < 0.90:
            return [("new_player", rng.randint(0, 2))]
        if r < 0.93:
            self.names += 1
            return [("rename", pid, f"renamed {self.names}")]
        if r < 0.95 and len(players) > 20:
            return [("delete_player", pid)]  # with its scores
        return [("insert", pid, self._score()), ("update", sid, self._score()), ("rollback",)]

    def _transaction(self, conn: psycopg.Connection) -> None:
        scores, players = dict(self.scores), list(self.players)
        ops = self._plan(scores, players)
        touched = sorted(
            {op[1] for op in ops if op[0] in ("insert", "insert_delete", "rename", "delete_player")}
            | {scores[op[1]] for op in ops if op[0] in ("update", "delete")}
        )
        rollback = ops[-1] == ("rollback",)
        before: dict[str, dict[int, Any]] = {}
        after: dict[str, dict[int, Any]] = {}
        xid = lower = None
        with conn.transaction():
            for view, sql in ORACLE.items():
                before[view] = {r[0]: _canon(r) for r in conn.execute(sql, (touched,))}
            for op in ops:
                self._execute(conn, op, scores, players, touched)
            for view, sql in ORACLE.items():
                after[view] = {r[0]: _canon(r) for r in conn.execute(sql, (touched,))}
            row = conn.execute(
                "SELECT txid_current() %% %s, pg_current_wal_insert_lsn()::text", (XID_MOD,)
            ).fetchone()
            assert row is not None
            xid, lower = row[0], Lsn.parse(row[1])
            if rollback:
                raise psycopg.Rollback()
        if rollback:
            self.rolled_back.append(xid)
            return
        changed = {
            view: {
                p: (before[view].get(p), after[view].get(p))
                for p in before[view].keys() | after[view].keys()
                if before[view].get(p) != after[view].get(p)
            }
            for view in ORACLE
        }
        self.committed.append(Txn(xid, lower, changed))
        self.scores, self.players = scores, players

    def _execute(
        self,
        conn: psycopg.Connection,
        op: tuple[Any, ...],
        scores: dict[int, int],
        players: list[int],
        touched: list[int],
    ) -> None:
        kind = op[0]
        if kind in ("insert", "insert_delete"):
            row = conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s) RETURNING id",
                (op[1], op[2]),
            ).fetchone()
            assert row is not None
            if kind == "insert":
                scores[row[0]] = op[1]
            else:
                conn.execute("DELETE FROM player_scores WHERE id = %s", (row[0],))
        elif kind == "update":
            conn.execute(
                "UPDATE player_scores SET score = score + %s WHERE id = %s", (op[2], op[1])
            )
        elif kind == "delete":
            conn.execute("DELETE FROM player_scores WHERE id = %s", (op[1],))
            del scores[op[1]]
        elif kind == "new_player":
            self.names += 1
            row = conn.execute(
                "INSERT INTO players (name) VALUES (%s) RETURNING id", (f"new {self.names}",)
            ).fetchone()
            assert row is not None
            players.append(row[0])
            touched.append(row[0])  # the after-images include it
            for _ in range(op[1]):
                self._execute(conn, ("insert", row[0], self._score()), scores, players, touched)
        elif kind == "rename":
            conn.execute("UPDATE players SET name = %s WHERE id = %s", (op[2], op[1]))
        elif kind == "delete_player":
            # The seed has two foreign keys on player_id, only one of them ON DELETE CASCADE.
            conn.execute("DELETE FROM player_scores WHERE player_id = %s", (op[1],))
            conn.execute("DELETE FROM players WHERE id = %s", (op[1],))
            players.remove(op[1])
            for s in [s for s, p in scores.items() if p == op[1]]:
                del scores[s]
        else:
            assert kind == "rollback"


# --------------------------------------------------------------------------- the store


@dataclass
class Loaded:
    dsn: str
    data: Path
    views: Path
    built: dict[str, Lsn]
    committed: list[Txn]
    rolled_back: list[int]
    end: Lsn  # every transaction of the load committed before it; the store applied it
    restarts: list[Lsn] = field(default_factory=list)  # applied LSN after each kill


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"viewstore run exited with {proc.returncode}")

    return check


def _wait_streaming(log: Path, starts: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the log says `viewstore run` started streaming `starts` times in all."""
    deadline = time.monotonic() + 60
    while log.read_text().count("INFO streaming from slot") < starts:
        _alive(proc)()
        assert time.monotonic() < deadline, f"viewstore run did not start streaming: {log}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def loaded(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """The seed, a second view, and a load during which `viewstore run` is killed -9 and
    restarted KILLS times; the pipeline is stopped (SIGTERM) once caught up."""
    name, dsn = create_test_database(pg_server.dsn)
    try:
        yield _load(dsn, tmp_path_factory.mktemp("history_crash"))
    finally:
        reap_processes()
        drop_test_database(pg_server.dsn, name)


def _load(dsn: str, tmp: Path) -> Loaded:
    for statement in SEED_SQL:
        pg_exec(dsn, statement)
    pg_exec(dsn, MORE_PLAYERS)
    views = tmp / "views.sql"
    views.write_text(VIEWS_FILE)
    data = tmp / "data"
    rng = random.Random(23)
    proc = start_process(dsn, data, "--views", str(views), env=CHECKPOINTS)
    wait_caught_up(dsn, data, alive=_alive(proc))
    for view in (VIEW, STATS):
        view_rows(data, view)  # built: the load starts after the views' build LSNs
    with Store.open(data, readonly=True) as store:
        built = {n: Lsn.parse(i.built_at or "") for n, i in stored_views(store).items()}
    restarts = []
    with Writer(dsn, seed=7) as writer:
        high = applied_lsn(data)
        for started in range(1, KILLS + 1):
            # Killed while it streams (catching up with what was written while it was down),
            # not while it is still starting.
            _wait_streaming(data.with_suffix(".log"), started, proc)
            time.sleep(rng.uniform(0.1, 1.5))
            writer.check()
            kill9(proc)
            now = applied_lsn(data)
            assert now >= high, f"applied LSN went back from {high} to {now} across a kill"
            high = now
            restarts.append(now)
            proc = start_process(dsn, data, "--views", str(views), env=CHECKPOINTS)
        time.sleep(1.0)
    end = current_lsn(dsn)
    wait_applied(data, end, timeout=120, alive=_alive(proc))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    committed = writer.committed
    for txn, following in pairwise(committed):
        txn.upper = following.lower
    committed[-1].upper = end
    return Loaded(dsn, data, views, built, committed, writer.rolled_back, end, restarts)


# --------------------------------------------------------------------------- test 1


def test_checkpoints_written_across_kills_are_the_view_then(loaded: Loaded) -> None:
    """Each checkpoint written while `run` was killed -9 and restarted holds exactly the
    view's rows as of its LSN (by one seek per row key), and a whole-view read from it agrees
    with the seeks at the transactions' LSNs around it."""
    with Store.open(loaded.data, readonly=True) as store:
        for name, info in stored_views(store).items():
            marks = checkpoint.lsns(store, info.view_id)
            assert len(marks) >= 5, (name, marks)
            for c in marks:
                rows = {
                    k: tuple(unpack_fields(v))
                    for k, v in checkpoint.rows(store, info.view_id, c).items()
                }
                assert rows == _rows_by_seeks(store, info.view_id, c), (name, Lsn(c))
            lsns = sorted({int(t.lower) for t in loaded.committed[::7]} | {c + 1 for c in marks})
            for at in lsns:
                if at >= int(info.history_start or 0):
                    want = _rows_by_seeks(store, info.view_id, at)
                    assert rows_as_of(store, info.view_id, at) == want, (name, Lsn(at))


def test_kill9_under_load_history_holds_each_committed_transaction_once(loaded: Loaded) -> None:
    committed = loaded.committed
    rolled_back = set(loaded.rolled_back)
    assert len(committed) > 300 and len(rolled_back) > 5, (len(committed), len(rolled_back))
    assert len({t.xid for t in committed}) == len(committed)
    # Each kill hit a pipeline that was streaming, and the store moved on between most kills.
    assert len(set(loaded.restarts)) >= KILLS - 1, (
        f"little progress between kills: {loaded.restarts}"
    )
    with Store.open(loaded.data, readonly=True) as store:
        infos = stored_views(store)
        logs = {n: list(changes(store, infos[n].view_id, until=loaded.end)) for n in ORACLE}

    seqs: dict[int, list[int]] = defaultdict(list)  # commit LSN -> seq of all views' entries
    for view, log in logs.items():
        built = loaded.built[view]
        initial = [c for c in log if c.xid is None]
        assert initial and {c.lsn for c in initial} == {built}, view
        assert all(c.commit_time is None for c in initial)
        by_xid: dict[int, list[Change]] = defaultdict(list)
        for c in log:
            if c.xid is not None:
                assert c.lsn > built and c.commit_time is not None, c
                by_xid[c.xid].append(c)
                seqs[c.lsn].append(c.seq)

        expected = {t.xid for t in committed if t.changed[view]}
        missing = sorted(expected - by_xid.keys())
        extra = sorted(by_xid.keys() - expected)
        assert not missing and not extra, (
            f"{view}: {len(missing)} committed transaction(s) missing from the history "
            f"(first xids {missing[:10]}), {len(extra)} not expected there (first {extra[:10]}; "
            f"rolled back: {sorted(set(extra) & rolled_back)[:10]})"
        )
        assert not by_xid.keys() & rolled_back
        assert sum(len(e) for e in by_xid.values()) + len(initial) == len(log)

        last = built
        for txn in committed:  # in commit order
            entries = by_xid.get(txn.xid)
            if not entries:
                continue
            lsns = {c.lsn for c in entries}
            assert len(lsns) == 1, f"{view}: xid {txn.xid} at several LSNs {sorted(lsns)}"
            lsn = lsns.pop()
            # The commit LSN is the end of the commit record: the next transaction's WAL can
            # start right there.
            assert txn.lower <= lsn <= txn.upper, (view, txn.xid, lsn, txn.lower, txn.upper)
            assert lsn > last, f"{view}: xid {txn.xid} at {lsn}, not after {last}"
            last = lsn
            keys = [c.key for c in entries]
            assert len(keys) == len(set(keys)), f"{view}: xid {txn.xid} has a row key twice"
            got = {}
            for c in entries:
                image = c.after if c.after is not None else c.before
                assert image is not None
                pid = image[0]
                assert c.key == encode_key([pid]), (view, c)
                got[pid] = (_canon(c.before), _canon(c.after))
            assert got == txn.changed[view], f"{view}: xid {txn.xid} at {lsn}"

    # Within a transaction the sequence numbers of all views' entries are 0, 1, ... n-1 (a
    # view's initial rows are numbered per view, from 1).
    for lsn, numbers in seqs.items():
        assert sorted(numbers) == list(range(len(numbers))), f"seq at {lsn}: {sorted(numbers)}"

    assert_view_equals(loaded.dsn, loaded.data, VIEW, TOTAL_SELECT)
    assert_view_equals(loaded.dsn, loaded.data, STATS, STATS_SELECT)
    assert assert_history_chains(loaded.data) >= sum(len(v) for v in logs.values())


# --------------------------------------------------------------------------- test 2


def _history_cli(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "viewstore.cli", "history", "--data", str(data), *args]


def _remove_copy(data: Path) -> None:
    for path in data.glob(duckdb_copy.FILE_NAME + "*"):
        path.unlink()


def _synced(data: Path) -> dict[str, int]:
    """viewstore_sync.synced_lsn per view ({} if the copy or its table is not there yet)."""
    path = duckdb_copy.copy_path(data)
    if not path.exists():
        return {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT view, synced_lsn FROM viewstore_sync").fetchall())
    except duckdb.CatalogException:
        return {}
    finally:
        con.close()


def _expected_row(c: Change, width: int) -> tuple[Any, ...]:
    if c.xid is None:
        op = "initial"
    elif c.before is None:
        op = "insert"
    elif c.after is None:
        op = "delete"
    else:
        op = "update"

    def values(image: tuple[Any, ...] | None) -> tuple[Any, ...]:
        if image is None:
            return (None,) * width
        return tuple(float(v) if isinstance(v, Decimal) else v for v in image)

    return (int(c.lsn), c.seq, c.commit_time, c.xid, op, c.key, *values(c.after), *values(c.before))


def _assert_copy_matches_log(data: Path) -> dict[str, int]:
    """Each view's table in the DuckDB copy equals its RocksDB log up to the view's synced LSN,
    row for row; returns the rows compared per view."""
    synced = _synced(data)
    con = duckdb.connect(str(duckdb_copy.copy_path(data)), read_only=True)
    compared = {}
    try:
        with Store.open(data, readonly=True) as store:
            applied = store.applied_lsn()
            for view, info in stored_views(store).items():
                if view not in synced:
                    assert not con.execute(
                        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                        [view],
                    ).fetchone()[0], f"{view}: a table but no synced LSN"
                    continue
                assert synced[view] <= applied, (view, synced[view], applied)
                log = list(changes(store, info.view_id, until=synced[view]))
                names = [c.name for c in info.columns]
                select = ", ".join(
                    ["lsn", "seq", "epoch_us(commit_time)", "xid", "op", "row_key"]
                    + [f'"{n}"' for n in names]
                    + [f'"before_{n}"' for n in names]
                )
                rows = con.execute(f'SELECT {select} FROM "{view}" ORDER BY lsn, seq').fetchall()
                assert len(rows) == len(log), f"{view}: {len(rows)} rows in DuckDB, {len(log)} log"
                for got, change in zip(rows, log, strict=True):
                    assert got == _expected_row(change, len(names)), f"{view}: {change}"
                compared[view] = len(rows)
    finally:
        con.close()
    return compared


def _dump(data: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(duckdb_copy.copy_path(data)), read_only=True)
    try:
        sync = con.execute("SELECT * FROM viewstore_sync ORDER BY view").fetchall()
        out = {"viewstore_sync": sync}
        for row in sync:
            out[row[0]] = con.execute(f'SELECT * FROM "{row[0]}" ORDER BY lsn, seq').fetchall()
        return out
    finally:
        con.close()


def _killed_sync(data: Path, applied: int) -> dict[str, int]:
    """Kill -9 `viewstore history` midway through a sync (batches of 50 changes); returns the
    synced LSN per view it left. Times the kill by the growth of DuckDB's WAL file, adapting
    the threshold until the copy is left strictly between 0 and `applied`."""
    wal = duckdb_copy.copy_path(data).with_name(duckdb_copy.FILE_NAME + ".wal")
    threshold = 40_000
    seen = []
    for _ in range(10):
        _remove_copy(data)
        proc = subprocess.Popen(
            _history_cli(data, "--batch-rows", "50"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while proc.poll() is None and not (wal.exists() and wal.stat().st_size >= threshold):
                time.sleep(0.001)
        finally:
            if proc.poll() is None:
                kill9(proc)
        synced = _synced(data)
        seen.append((threshold, proc.returncode, synced))
        if any(0 < lsn < applied for lsn in synced.values()):
            return synced
        if synced and all(lsn >= applied for lsn in synced.values()):
            threshold //= 3  # finished before the kill: kill earlier
        else:
            threshold *= 2  # killed before the first chunk was committed
    raise AssertionError(f"never killed the sync midway (applied {applied}): {seen}")


def test_duckdb_copy_matches_the_log_after_a_killed_sync(loaded: Loaded) -> None:
    data = loaded.data
    with Store.open(data, readonly=True) as store:
        applied = int(store.applied_lsn())
        total = sum(len(list(changes(store, i.view_id))) for i in stored_views(store).values())
    assert total > 2000, f"only {total} history entries"

    # 1. A sync killed midway leaves a consistent prefix, which the next sync completes.
    synced = _killed_sync(data, applied)
    partial = _assert_copy_matches_log(data)
    assert sum(partial.values()) < total, (partial, total)
    done = subprocess.run(
        _history_cli(data, "--batch-rows", "50"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(_synced(data).values()) == {applied}, (synced, _synced(data), applied)
    assert sum(_assert_copy_matches_log(data).values()) == total

    # 2. Syncs while `viewstore run` applies a load: each is a consistent prefix of the log.
    proc = start_process(loaded.dsn, data, "--views", str(loaded.views))
    try:
        with Writer(loaded.dsn, seed=8) as writer:
            wait_caught_up(loaded.dsn, data, alive=_alive(proc))
            for _ in range(2):
                time.sleep(0.5)
                before = applied_lsn(data)
                during = subprocess.run(
                    _history_cli(data, "--batch-rows", "50"),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert during.returncode == 0, during.stdout + during.stderr
                assert min(_synced(data).values()) >= before
                _assert_copy_matches_log(data)
                writer.check()
            assert len(writer.committed) > 50
        target = wait_caught_up(loaded.dsn, data, alive=_alive(proc))
        final = historycopy.sync(data, batch_rows=50)
        assert final.synced_lsn >= target and final.rows > 0
        assert set(_synced(data).values()) == {final.synced_lsn}
        _assert_copy_matches_log(data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            kill9(proc)

    # 3. The copy is derived: deleted and synced again, it is the same, row for row.
    historycopy.sync(data)
    first = _dump(data)
    _remove_copy(data)
    historycopy.sync(data)
    assert _dump(data) == first
    with Store.open(data, readonly=True) as store:
        total = sum(len(list(changes(store, i.view_id))) for i in stored_views(store).values())
    assert sum(_assert_copy_matches_log(data).values()) == total
