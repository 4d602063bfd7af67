#!/usr/bin/env python3
"""The view engine alone, in process: the seed view fed through the Applier, no Postgres.

Measures the apply path (mirror + view + history, one synced write per commit group) for the
workloads of the ingest benchmark, so that engine changes can be compared in seconds and
profiled (`--profile`). Prints µs per row and per transaction, and a digest of the store's
views and history column families (two engines that write the same state print the same digest).

    scripts/engine_micro.py [--players 1000] [--txns 200] [--rows 1000] [--group 1]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import random
import tempfile
import time
from pathlib import Path

from viewstore.ingest.lsn import Lsn
from viewstore.store import db as meta
from viewstore.store.apply import Applier, TableState
from viewstore.store.db import Store
from viewstore.store.viewcatalog import prepare_views
from viewstore.views.schema import TableInfo
from viewstore.views.sql import parse_views

VIEW_SQL = """CREATE MATERIALIZED VIEW player_total_scores AS
SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;
"""
PLAYERS = TableInfo.of(1, "public.players", "id int4, name text")
SCORES = TableInfo.of(
    2, "public.player_scores", "id int4, score numeric, player_id int4, created_at timestamptz"
)


def digest(store: Store) -> str:
    h = hashlib.sha256()
    for cf in ("views", "history"):
        for k, v in getattr(store, cf).items():
            h.update(k)
            h.update(v)
    return h.hexdigest()[:16]


def build(path: Path, args: argparse.Namespace) -> None:
    """Time building the view from a mirror of `--players` players and `--build` scores."""
    store = Store.open(path)
    batch = store.new_batch()
    for info in (PLAYERS, SCORES):
        meta.put_table(batch, store, info)
    store.write(batch, sync=True)
    loader = Applier(store)
    players, scores = TableState(PLAYERS), TableState(SCORES)
    for i in range(1, args.players + 1):
        loader.load_row(players, (str(i).encode(), f"Player {i}".encode()))
        if i % 50_000 == 0:
            loader.write_chunk()
    rng = random.Random(7)
    for i in range(1, args.build + 1):
        score = f"{rng.randint(0, 99999) / 100:.2f}".encode()
        player = str(rng.randint(1, args.players)).encode()
        loader.load_row(scores, (str(i).encode(), score, player, b"2026-12-03 10:00:00+00"))
        if i % 50_000 == 0:
            loader.write_chunk()
    loader.write_chunk()
    loader.close()
    started = time.perf_counter()
    prepare_views(store, parse_views(VIEW_SQL))
    elapsed = time.perf_counter() - started
    print(
        f"view built from a mirror of {args.players:,} players and {args.build:,} scores: "
        f"{elapsed:.2f} s; digest {digest(store)}"
    )
    store.close()


def run(path: Path, args: argparse.Namespace) -> None:
    store = Store.open(path)
    batch = store.new_batch()
    for info in (PLAYERS, SCORES):
        meta.put_table(batch, store, info)
    store.write(batch, sync=True)
    rng = random.Random(7)
    lsn = 1000

    views = prepare_views(store, parse_views(VIEW_SQL))
    applier = Applier(store, views=views)
    players, scores = TableState(PLAYERS), TableState(SCORES)

    def txn(rows: list[tuple[TableState, tuple[bytes | None, ...]]]) -> None:
        nonlocal lsn
        lsn += 100
        applier.begin_transaction(lsn, lsn)
        for table, row in rows:
            applier.insert(table, row)
        applier.end_transaction(Lsn(lsn), lsn)

    txn([(players, (str(i).encode(), f"Player {i}".encode())) for i in range(1, args.players + 1)])
    applier.commit_group()
    next_id = 1
    work = []
    for _ in range(args.txns):
        rows = []
        for _ in range(args.rows):
            score = f"{rng.randint(0, 99999) / 100:.2f}".encode()
            player = str(rng.randint(1, args.players)).encode()
            rows.append((scores, (str(next_id).encode(), score, player, b"2026-12-03 10:00:00+00")))
            next_id += 1
        work.append(rows)

    profile = cProfile.Profile() if args.profile else None
    started, cpu = time.perf_counter(), time.thread_time()
    if profile:
        profile.enable()
    for i, rows in enumerate(work, 1):
        txn(rows)
        if i % args.group == 0:
            applier.commit_group()
    applier.commit_group()
    if profile:
        profile.disable()
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    n = args.txns * args.rows
    print(
        f"{n:,} rows in {args.txns:,} txns of {args.rows}, groups of {args.group}: "
        f"{elapsed:.2f} s, {n / elapsed:,.0f} rows/s, {elapsed / n * 1e6:.1f} µs/row, "
        f"{elapsed / args.txns * 1e6:.0f} µs/txn; this thread's CPU {cpu / n * 1e6:.1f} µs/row "
        f"(steadier than wall time on a busy machine); digest {digest(store)}"
    )
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    applier.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--txns", type=int, default=200)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--group", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--build", type=int, metavar="SCORES", help="time a view build instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (build if args.build else run)(Path(tmp) / "store", args)


if __name__ == "__main__":
    main()
