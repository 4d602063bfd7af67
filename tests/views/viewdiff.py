"""Differential testing of views: random transactions against Postgres, the oracle.

A `Table` says how to make random values for each column of one table; a `Workload` runs random
transactions over a few tables (inserts, updates of one or several columns, updates that move
the primary key, deletes of one row or a range, occasionally a TRUNCATE; one to four statements
on any of the tables; some rolled back). Ids come from a small range, so that updates and
deletes usually hit a row and inserts often collide (ON CONFLICT DO NOTHING): no bookkeeping on
our side, and a rolled-back transaction needs none either.

`run_differential` starts the pipeline with a views file, then after every batch of
transactions waits until the store has caught up and compares every view with Postgres
evaluating the view's own SELECT (`assert_view_equals`).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from runner import (
    PipelineThread,
    assert_view_equals,
    normalise_rows,
    postgres_view_rows,
    wait_caught_up,
)

import viewstore
from viewstore.codecs.key import encode_value
from viewstore.errors import ConfigError, StoreError
from viewstore.store.db import Store
from viewstore.store.viewread import find_view, query_rows, row_count

Gen = Callable[[random.Random], Any]


def seed(default: int) -> int:
    """The workload's seed: `default`, or $VIEWSTORE_DIFF_SEED to explore other histories."""
    return int(os.environ.get("VIEWSTORE_DIFF_SEED", default))


def maybe_null(gen: Gen, p: float = 0.12) -> Gen:
    """`gen`, but NULL with probability `p`."""
    return lambda rng: None if rng.random() < p else gen(rng)


def choice(*values: Any) -> Gen:
    return lambda rng: rng.choice(values)


def ints(lo: int, hi: int) -> Gen:
    return lambda rng: rng.randint(lo, hi)


@dataclass
class Table:
    """How to make rows of one table (`name` may be `schema.table`). The primary key is an
    integer `id` from 1 to `ids`, or the columns of `key` with their own generators (then
    `ids` only sizes the initial fill and a TRUNCATE's refill)."""

    name: str
    ids: int
    columns: dict[str, Gen]
    weight: float = 1.0  # how often a statement picks this table
    key: dict[str, Gen] = field(default_factory=dict)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.name.split("."))

    def key_of(self, rng: random.Random) -> dict[str, Any]:
        if not self.key:
            return {"id": rng.randint(1, self.ids)}
        return {c: g(rng) for c, g in self.key.items()}

    def row(self, rng: random.Random) -> dict[str, Any]:
        return {c: g(rng) for c, g in self.columns.items()}


def _where(key: dict[str, Any]) -> tuple[sql.Composable, list[Any]]:
    """`k1 = %s AND k2 = %s` for a key, and its parameters."""
    cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)
    return cond, list(key.values())


@dataclass
class View:
    name: str
    select: str

    @property
    def ddl(self) -> str:
        return f"CREATE MATERIALIZED VIEW {self.name} AS\n{self.select};\n"


def views_file(path: Path, views: Sequence[View]) -> Path:
    path.write_text("\n".join(v.ddl for v in views))
    return path


def wait_views_ready(
    data: Path, names: Sequence[str], alive: Callable[[], None], timeout: float = 60
) -> None:
    """Wait until every view in `names` is built. The snapshot's end is durable before the
    views are built from the mirror, so "caught up" alone does not mean "readable"."""
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            try:
                viewstore.open(data).query(name, limit=1)
                break
            except (ConfigError, StoreError):  # no store or view yet, or still being built
                alive()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@dataclass
class Workload:
    dsn: str
    tables: list[Table]
    rng: random.Random
    truncate_every: int = 90  # every so many transactions one is a TRUNCATE
    rollback_p: float = 0.1
    max_statements: int = 4
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def fill(self, conn: psycopg.Connection[Any], n: dict[str, int]) -> None:
        """Initial rows (taken by the snapshot, so views are first built by the backfill)."""
        with conn.transaction():
            for t in self.tables:
                for _ in range(n.get(t.name, 0)):
                    self.insert(conn, t)

    def insert(self, conn: psycopg.Connection[Any], t: Table) -> None:
        row = {**t.key_of(self.rng), **t.row(self.rng)}
        q = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            t.ident,
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        )
        conn.execute(q, list(row.values()))

    def statement(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        t = rng.choices(self.tables, weights=[t.weight for t in self.tables])[0]
        name = t.ident
        r = rng.random()
        if r < 0.42:
            self.count("insert")
            self.insert(conn, t)
        elif r < 0.72:
            self.count("update")
            cols = rng.sample(list(t.columns), k=min(len(t.columns), rng.choice((1, 1, 2, 3))))
            sets = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in cols
            )
            values = [t.columns[c](rng) for c in cols]
            key = t.key_of(rng)
            if rng.random() < 0.2 and not t.key:  # several rows at once
                lo, hi = key["id"], key["id"] + rng.randint(1, 4)
                q = sql.SQL("UPDATE {} SET {} WHERE id BETWEEN %s AND %s").format(name, sets)
                conn.execute(q, [*values, lo, hi])
            else:
                cond, params = _where(key)
                q = sql.SQL("UPDATE {} SET {} WHERE {}").format(name, sets, cond)
                conn.execute(q, [*values, *params])
        elif r < 0.8:
            self.count("move key")
            old = t.key_of(rng)
            column = rng.choice(list(old)) if t.key else "id"
            new = {**old, column: t.key_of(rng)[column]}
            (cond, params), (cond_new, params_new) = _where(old), _where(new)
            q = sql.SQL(
                "UPDATE {0} SET {1} = %s WHERE {2} AND NOT EXISTS (SELECT 1 FROM {0} WHERE {3})"
            ).format(name, sql.Identifier(column), cond, cond_new)
            conn.execute(q, [new[column], *params, *params_new])
        elif r < 0.96 or t.key:
            self.count("delete")
            cond, params = _where(t.key_of(rng))
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(name, cond), params)
        else:
            self.count("delete range")
            lo = rng.randint(1, t.ids)
            q = sql.SQL("DELETE FROM {} WHERE id BETWEEN %s AND %s").format(name)
            conn.execute(q, [lo, lo + rng.randint(1, 5)])

    def transaction(self, conn: psycopg.Connection[Any], i: int) -> None:
        """Run the `i`th transaction (from 1)."""
        rng = self.rng
        if i % self.truncate_every == self.truncate_every // 2:
            # TRUNCATE one table or two at once, then they fill again in the same transaction:
            # the views must see every row leave, then the new ones come.
            ts = rng.sample(self.tables, k=min(len(self.tables), rng.choice((1, 1, 2))))
            self.count("truncate " + " ".join(t.name for t in ts))
            with conn.transaction():
                names = sql.SQL(", ").join(t.ident for t in ts)
                conn.execute(sql.SQL("TRUNCATE {}").format(names))
                for t in ts:
                    for _ in range(rng.randint(0, t.ids // 2)):
                        self.insert(conn, t)
            return
        rollback = rng.random() < self.rollback_p
        self.count("rollback" if rollback else "commit")
        conn.execute("BEGIN")
        for _ in range(rng.randint(1, self.max_statements)):
            self.statement(conn)
        conn.execute("ROLLBACK" if rollback else "COMMIT")


def run_differential(
    dsn: str,
    tmp_path: Path,
    schema: str,
    tables: list[Table],
    views: Sequence[View],
    *,
    seed_value: int,
    transactions: int,
    check_every: int = 40,
    initial: dict[str, int] | None = None,
    max_statements: int = 4,
    disconnect_every: int = 0,
    as_of: bool = False,
    **pipeline_config: Any,
) -> dict[str, int]:
    """Create `schema`, fill it, start the pipeline with `views`, run `transactions` random
    transactions (of up to `max_statements` statements) and compare every view with Postgres
    after each `check_every`; every `disconnect_every` transactions the replication connection
    is terminated; with `as_of`, every view is read again at the end as of each LSN it was
    compared at, and must equal what Postgres said then; `pipeline_config` goes to
    `RunConfig`. Returns the
    workload's statement counts and each view's largest row count (the caller can assert
    that the mix happened)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema)  # type: ignore[arg-type]
        work = Workload(dsn, tables, random.Random(seed_value), max_statements=max_statements)
        work.fill(conn, initial or {t.name: t.ids // 2 for t in tables})
        data = tmp_path / "data"
        path = views_file(tmp_path / "views.sql", views)
        rows: dict[str, int] = {}
        recorded: list[tuple[Any, View, list[tuple[Any, ...]]]] = []
        with PipelineThread(dsn, data, views_file=path, **pipeline_config) as p:

            def check(after: int) -> None:
                lsn = wait_caught_up(dsn, data, alive=p.check)
                for v in views:
                    try:
                        n = assert_view_equals(dsn, data, v.name, v.select)
                    except AssertionError as exc:
                        raise AssertionError(
                            f"after {after} transactions (seed {seed_value}): {exc}"
                        ) from None
                    rows[v.name] = max(rows.get(v.name, 0), n)
                    if as_of:
                        recorded.append((lsn, v, postgres_view_rows(dsn, v.select)))
                try:
                    check_indexes(data, [v.name for v in views])
                except AssertionError as exc:
                    raise AssertionError(f"after {after} transactions: {exc}") from None

            wait_views_ready(data, [v.name for v in views], p.check)
            check(0)
            for i in range(1, transactions + 1):
                work.transaction(conn, i)
                if disconnect_every and i % disconnect_every == disconnect_every // 3:
                    # The replication connection drops: what the pipeline has not synced
                    # is discarded (the engine's caches with it) and streamed again.
                    drop_replication(conn, p)
                if i % check_every == 0 or i == transactions:
                    check(i)
            work.stats["large transactions"] = len(p.pipeline.large_txns)
            work.stats["reconnects"] = p.pipeline.reconnects
        reader = viewstore.open(data)
        for lsn, v, want in recorded:
            got = normalise_rows(r.values() for r in reader.query(v.name, as_of=lsn))
            assert got == want, f"view {v.name} as of {lsn} differs from Postgres then"
        work.stats["as-of reads"] = len(recorded)
    # A view that never had a row compared nothing: the test would pass whatever the engine did.
    empty = [v.name for v in views if not rows.get(v.name)]
    assert not empty, f"views never had a row: {empty}; change the data or the views"
    work.stats["transactions"] = transactions
    return {**work.stats, **{f"rows {k}": n for k, n in rows.items()}}


def drop_replication(conn: psycopg.Connection[Any], p: PipelineThread) -> None:
    """Terminate the pipeline's replication connection, until the pipeline has seen one drop.

    Every call is one real reconnect, whatever the timing: a termination sent while the
    pipeline backs off from the last one finds no connection, and one that hits a walsender
    the pipeline was already leaving (it reconnects on its own after a large transaction)
    goes unnoticed; both are retried. Without this, a test asserting a number of reconnects
    fails by timing alone."""
    before = p.pipeline.reconnects
    deadline = time.monotonic() + 30
    active = "SELECT active_pid FROM pg_replication_slots WHERE database = current_database()"
    while p.pipeline.reconnects == before:
        p.check()
        assert time.monotonic() < deadline, "the pipeline did not see a dropped connection in 30 s"
        pid = conn.execute(active).fetchone()
        if pid is None or pid[0] is None:
            time.sleep(0.05)
            continue
        conn.execute("SELECT pg_terminate_backend(%s)", (pid[0],))
        # Until the pipeline notices, or a new walsender holds the slot (this one went unnoticed).
        while p.pipeline.reconnects == before and time.monotonic() < deadline:
            now = conn.execute(active).fetchone()
            if now is not None and now[0] not in (None, pid[0]):
                break
            time.sleep(0.05)


def assert_mix(stats: dict[str, int], *, commits: int = 300) -> None:
    """The workload did what the test claims: enough committed transactions, some rolled back,
    keys moved, rows deleted, and at least one TRUNCATE."""
    truncates = sum(n for k, n in stats.items() if k.startswith("truncate"))
    assert stats.get("commit", 0) + truncates >= commits, stats
    assert stats.get("rollback", 0) >= 5 and truncates >= 1, stats
    assert stats.get("move key", 0) >= 10 and stats.get("delete", 0) >= 10, stats


def check_indexes(data: Path, views: Sequence[str]) -> None:
    """Each view's sort indexes and key lookups agree with its rows (all three are kept by the
    engine): ordering by each indexed column, either way, gives every row once, in order; a
    lookup by the key finds its row; filtering on an indexed column finds the rows with it."""
    store = Store.open(data, readonly=True)
    try:
        for view in views:
            _check_view_indexes(store, view)
    finally:
        store.close()


def _check_view_indexes(store: Store, view: str) -> None:
    info = find_view(store, view)
    names = [c.name for c in info.columns]
    rows = query_rows(store, info)
    assert row_count(store, info.view_id) == len(rows), (view, "stored row count")
    everything = sorted(map(repr, rows))
    for c in info.sort_columns:
        for desc in (False, True):
            ordered = query_rows(store, info, order_by=names[c], desc=desc)
            assert sorted(map(repr, ordered)) == everything, (view, names[c], desc)
            keys = [encode_value(r[c]) for r in ordered]
            assert keys == sorted(keys, reverse=desc), (view, names[c], desc)
        value = next((r[c] for r in rows if r[c] is not None), None)
        if value is not None:
            want = sorted(repr(r) for r in rows if encode_value(r[c]) == encode_value(value))
            got = query_rows(store, info, where={names[c]: value})
            assert sorted(map(repr, got)) == want, (view, names[c], value)
    if info.key_columns:
        for r in rows[:5]:
            where = {names[c]: r[c] for c in info.key_columns}
            got = query_rows(store, info, where=where)
            assert list(map(repr, got)) == [repr(r)], (view, where)
