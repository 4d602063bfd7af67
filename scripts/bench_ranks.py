#!/usr/bin/env python3
"""What keeping a ranking and a Top-K current costs per score insert (issue 16), against
REFRESH MATERIALIZED VIEW of the same matviews, in the same run.

Data: `--players` players (default 1,000,000), each with one score, so the seed's
`player_total_scores` has a row per player; totals are spread over 0..`--spread` (numeric with
2 decimals, so ties are rare). The issue's views, verbatim, over it:

    player_ranks   RANK() OVER (ORDER BY total_score DESC) over player_total_scores
    top100         ... ORDER BY total_score DESC, player_id LIMIT 100 over player_total_scores

Postgres (a throwaway cluster, same rows): the three as materialized views; REFRESH of each,
median of `--refreshes`. Keeping `player_ranks` and `top100` current by REFRESH costs one
REFRESH of player_total_scores plus one of each.

viewstore, in process (no replication: the Applier is fed the rows as the pipeline feeds it
decoded pgoutput, as scripts/bench_joins.py does): the same rows loaded into the mirror, the
three views built from it, then `--inserts` transactions, each inserting one score of 0 to
`--step` for a random player (commit groups of 100, unsynced). The time of each ranking view's
part is measured inside the engine (store.ranking's per-partition walks, per view), so one run
gives the seed view's cost and each ranking's on top of it; the output rows each view changed
come from the history. At the end the same inserts go into Postgres, the matviews are
refreshed, and top100 and the ranks of 1,000 random players must equal Postgres's, or the
benchmark fails.

A score insert moves its player up by about `--step / --spread` of the players: the rows between
its old and new rank are renumbered, so that is the ranking's cost per insert (with the default
0..100.00 over 0..1,000,000, about 50 rows at 1M players). `--step` near `--spread` moves a
player across much of the board: then each insert renumbers that many rows (see README).

    .venv/bin/python scripts/bench_ranks.py                       # bench/results/ranks.json
    .venv/bin/python scripts/bench_ranks.py --players 20000 --inserts 500   # a smoke test
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from viewstore.history import changelog
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store import db as meta
from viewstore.store import ranking
from viewstore.store.apply import Applier, TableState
from viewstore.store.db import Store
from viewstore.store.viewcatalog import prepare_views, stored_views
from viewstore.store.viewread import query_rows
from viewstore.views.schema import TableInfo
from viewstore.views.sql import parse_views

PLAYERS = TableInfo.of(1, "public.players", "id int4, name text")
SCORES = TableInfo.of(2, "public.player_scores", "id int4, score numeric, player_id int4")

SCHEMA = """
CREATE TABLE players (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE player_scores (id integer PRIMARY KEY, score numeric(10, 2) NOT NULL,
                            player_id integer);
"""
TOTALS = """SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id
GROUP BY p.id"""
RANKS = """SELECT player_id, name, total_score,
       RANK() OVER (ORDER BY total_score DESC) AS rank
FROM player_total_scores"""
TOP100 = """SELECT player_id, total_score FROM player_total_scores
ORDER BY total_score DESC, player_id LIMIT 100"""
VIEWS = {"player_total_scores": TOTALS, "player_ranks": RANKS, "top100": TOP100}


def _score(rng: random.Random, top: int) -> Decimal:
    return Decimal(rng.randint(0, top * 100)).scaleb(-2)


def postgres_side(
    rows: list[tuple[int, Decimal]], refreshes: int
) -> tuple[ThrowawayPostgres, dict[str, Any]]:
    """Load the rows into a throwaway Postgres, create the matviews, time REFRESH of each."""
    pg = ThrowawayPostgres({"fsync": "off", "synchronous_commit": "off"}).start()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        with conn.cursor().copy("COPY players (id, name) FROM STDIN") as cp:
            buf = io.StringIO()
            for pid, _ in rows:
                buf.write(f"{pid}\tPlayer {pid}\n")
            cp.write(buf.getvalue())
        with conn.cursor().copy("COPY player_scores (id, score, player_id) FROM STDIN") as cp:
            buf = io.StringIO()
            for pid, score in rows:
                buf.write(f"{pid}\t{score}\t{pid}\n")
            cp.write(buf.getvalue())
        conn.execute("ANALYZE")
        for name, sql in VIEWS.items():
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS {sql}")  # type: ignore[arg-type]
        timings: dict[str, list[float]] = {name: [] for name in VIEWS}
        for _ in range(refreshes):
            for name in VIEWS:
                t = time.perf_counter()
                conn.execute(f"REFRESH MATERIALIZED VIEW {name}")  # type: ignore[arg-type]
                timings[name].append(time.perf_counter() - t)
    medians = {name: round(statistics.median(ts) * 1000, 1) for name, ts in timings.items()}
    runs = {name: [round(t * 1000, 1) for t in ts] for name, ts in timings.items()}
    return pg, {"refresh_ms": medians, "refresh_runs_ms": runs}


class _Timer:
    """Time spent in store.ranking's walks, per view (the bench's own instrumentation)."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.total = 0.0  # all of store.ranking's work at transaction ends
        self._renumber = ranking.Ranking._renumber
        self._top = ranking.Ranking._top
        self._end = ranking.Ranking.end_transaction

    def install(self) -> None:
        timer = self

        def wrap(fn: Any) -> Any:
            def timed(self: Any, view: Any, *args: Any) -> Any:
                t = time.perf_counter()
                try:
                    return fn(self, view, *args)
                finally:
                    vid = view.view_id
                    timer.seconds[vid] = timer.seconds.get(vid, 0.0) + time.perf_counter() - t

            return timed

        ranking.Ranking._renumber = wrap(self._renumber)  # type: ignore[method-assign]
        ranking.Ranking._top = wrap(self._top)  # type: ignore[method-assign]
        end = self._end

        def ended(self: Any) -> None:
            t = time.perf_counter()
            try:
                end(self)
            finally:
                timer.total += time.perf_counter() - t

        ranking.Ranking.end_transaction = ended  # type: ignore[method-assign]

    def remove(self) -> None:
        ranking.Ranking._renumber = self._renumber  # type: ignore[method-assign]
        ranking.Ranking._top = self._top  # type: ignore[method-assign]
        ranking.Ranking.end_transaction = self._end  # type: ignore[method-assign]


def viewstore_side(
    rows: list[tuple[int, Decimal]], inserts: list[tuple[int, int, Decimal]], tmp: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load, build, then time the inserts; returns the figures and the views' rows to check."""
    store = Store.open(tmp)
    batch = store.new_batch()
    for info in (PLAYERS, SCORES):
        meta.put_table(batch, store, info)
    store.write(batch, sync=True)
    states = {info.name: TableState(info) for info in (PLAYERS, SCORES)}
    t = time.perf_counter()
    applier = Applier(store, views=[])
    applier.begin_transaction(1_700_000_000_000_000, 999)
    for i, (pid, score) in enumerate(rows):
        applier.insert(states["players"], (str(pid).encode(), f"Player {pid}".encode()))
        applier.insert(
            states["player_scores"], (str(pid).encode(), str(score).encode(), str(pid).encode())
        )
        if i % 50_000 == 49_999:  # a large transaction's chunk, as the pipeline would
            applier.end_transaction(Lsn(1000), 1_700_000_000_000_000)
            applier.commit_group()
            applier.begin_transaction(1_700_000_000_000_000, 999)
    applier.end_transaction(Lsn(1000), 1_700_000_000_000_000)
    applier.commit_group()
    applier.close()
    load_s = time.perf_counter() - t
    text = "".join(f"CREATE MATERIALIZED VIEW {n} AS {sql};\n" for n, sql in VIEWS.items())
    build: dict[str, float] = {}
    views = []
    for n in VIEWS:  # one at a time (each after the views it reads), to time each build
        t = time.perf_counter()
        views = prepare_views(
            store, [v for v in parse_views(text) if v.name in build or v.name == n]
        )
        build[n] = round(time.perf_counter() - t, 2)
    ids = {v.plan.name: v.view_id for v in views}
    timer = _Timer()
    timer.install()
    applier = Applier(store, views=views)
    lsn = 2000
    t = time.perf_counter()
    cpu = time.process_time()
    for n, (sid, pid, score) in enumerate(inserts):
        lsn += 100
        applier.begin_transaction(1_700_000_000_000_000 + n, 1000 + n)
        applier.insert(
            states["player_scores"], (str(sid).encode(), str(score).encode(), str(pid).encode())
        )
        applier.end_transaction(Lsn(lsn), 1_700_000_000_000_000 + n)
        if n % 100 == 99:
            applier.commit_group()
    applier.commit_group()
    seconds = time.perf_counter() - t
    cpu = time.process_time() - cpu
    timer.remove()
    applier.close()
    changed = {
        name: sum(1 for _ in changelog.changes(store, vid, 2001)) for name, vid in ids.items()
    }
    infos = stored_views(store)
    top100 = [tuple(r) for r in query_rows(store, infos["top100"])]
    ranks = {r[0]: r[3] for r in query_rows(store, infos["player_ranks"])}
    store.close()
    k = len(inserts)
    per_view = {
        name: round(timer.seconds.get(vid, 0.0) / k * 1e6, 1)
        for name, vid in ids.items()
        if name != "player_total_scores"
    }
    figures = {
        "load_mirror_s": round(load_s, 1),
        "build_s": build,
        "inserts": k,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "us_per_insert_all_three_views": round(seconds / k * 1e6, 1),
        "us_per_insert_ranking_walk": per_view,
        # store.ranking in all (both views' walks, and moving the rows in the order index)
        "us_per_insert_ranking_total": round(timer.total / k * 1e6, 1),
        "us_per_insert_rest": round((seconds - timer.total) / k * 1e6, 1),
        "output_rows_changed_per_insert": {n: round(c / k, 2) for n, c in changed.items()},
    }
    return figures, {"top100": top100, "ranks": ranks}


def check(
    pg: ThrowawayPostgres, inserts: list[tuple[int, int, Decimal]], got: dict[str, Any]
) -> int:
    """The same inserts in Postgres, REFRESH, and the store's views must equal Postgres's."""
    rng = random.Random(7)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        with conn.cursor().copy("COPY player_scores (id, score, player_id) FROM STDIN") as cp:
            cp.write("".join(f"{sid}\t{score}\t{pid}\n" for sid, pid, score in inserts))
        for name in VIEWS:
            conn.execute(f"REFRESH MATERIALIZED VIEW {name}")  # type: ignore[arg-type]
        want_top = conn.execute("SELECT * FROM top100").fetchall()
        sample = rng.sample(sorted(got["ranks"]), min(1000, len(got["ranks"])))
        want_ranks = dict(
            conn.execute(
                "SELECT player_id, rank FROM player_ranks WHERE player_id = ANY(%s)", [sample]
            ).fetchall()
        )
    if sorted(want_top) != sorted(got["top100"]):
        raise SystemExit(f"top100 differs from Postgres: {want_top[:5]} vs {got['top100'][:5]}")
    bad = [p for p in sample if want_ranks[p] != got["ranks"][p]]
    if bad:
        raise SystemExit(f"ranks differ from Postgres for {len(bad)} players, e.g. {bad[:5]}")
    return len(sample)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--players", type=int, default=1_000_000)
    ap.add_argument("--spread", type=int, default=1_000_000, help="totals in 0..spread")
    ap.add_argument("--step", type=int, default=100, help="an insert's score in 0..step")
    ap.add_argument("--inserts", type=int, default=2000)
    ap.add_argument("--refreshes", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/ranks.json"))
    args = ap.parse_args()
    rng = random.Random(16)
    rows = [(pid, _score(rng, args.spread)) for pid in range(1, args.players + 1)]
    inserts = [
        (args.players + 1 + n, rng.randint(1, args.players), _score(rng, args.step))
        for n in range(args.inserts)
    ]
    started = time.perf_counter()
    pg, refresh = postgres_side(rows, args.refreshes)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures, got = viewstore_side(rows, inserts, Path(tmp))
        checked = check(pg, inserts, got)
    finally:
        pg.stop()
    ms = refresh["refresh_ms"]
    us = figures["us_per_insert_all_three_views"]
    stack_ms = {
        "player_ranks": ms["player_total_scores"] + ms["player_ranks"],
        "top100": ms["player_total_scores"] + ms["top100"],
    }
    result = {
        "benchmark": "bench_ranks",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "command": "scripts/bench_ranks.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "players": args.players,
        "spread": args.spread,
        "step": args.step,
        "postgres": refresh,
        "viewstore": figures,
        # One REFRESH of each stack (the totals, then the ranking on them) is worth this many
        # inserts kept current by viewstore with all three views.
        "inserts_per_refresh": {n: round(v * 1000 / us) for n, v in stack_ms.items()},
        "checked": {"top100": True, "ranks_sampled": checked},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("postgres", "viewstore", "inserts_per_refresh")},
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
