#!/usr/bin/env python3
"""What a change costs per join kind (issue 17): an in-process timing of the view engine.

No Postgres and no replication: the Applier is fed row changes directly, as the pipeline feeds
it decoded pgoutput (as tests/store/test_group_identity.py does), so the figures are the
engine's own work per change, RocksDB writes included (commit groups of 100 transactions,
unsynced). Two tables `a(id, i, j)` and `b(id, i, k)` of `--rows` rows each; `i` takes
`--rows / 4` values (about 4 rows per value on each side, so an equality matches ~4 rows), `j`
the same range, and `b.k = b.i + 2` (a BETWEEN window of 3 values).

For each view alone (a fresh store, the tables loaded, the view built from the mirror): the
time of `--changes` single-row transactions, each an UPDATE that moves one row's `i` (and
`j`) to a random other value, alternately of `a` and of `b` (then only `a`, then only `b`),
and the output rows that changed (the view's history entries). A store without views is the
baseline: what the mirror alone costs a change. Results go to bench/results/joins.json.

    .venv/bin/python scripts/bench_joins.py [--rows 1000] [--changes 400]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from viewstore.history import changelog
from viewstore.ingest.lsn import Lsn
from viewstore.store import db as meta
from viewstore.store.apply import Applier, TableState
from viewstore.store.db import Store
from viewstore.store.viewcatalog import prepare_views
from viewstore.views.schema import TableInfo
from viewstore.views.sql import parse_views

A = TableInfo.of(1, "public.a", "id int4, i int4, j int4")
B = TableInfo.of(2, "public.b", "id int4, i int4, k int4")

VIEWS = {
    "none (mirror only)": None,
    "inner equality (USING)": "SELECT i, j, k FROM a INNER JOIN b USING (i)",
    "left equality (USING)": "SELECT a.i, j, k FROM a LEFT JOIN b USING (i)",
    "full outer equality": "SELECT a.id AS aid, b.id AS bid, a.j, b.k "
    "FROM a FULL JOIN b ON a.i = b.i",
    "full outer, grouped": "SELECT i, COUNT(*) AS n, SUM(k) AS total "
    "FROM a FULL JOIN b USING (i) GROUP BY i",
    "range, BETWEEN (narrow)": "SELECT a.id AS aid, b.id AS bid "
    "FROM a JOIN b ON a.j BETWEEN b.i AND b.k",
    "range, a.i > b.i (issue's)": "SELECT a.i, b.i AS bi FROM a LEFT JOIN b ON a.i > b.i",
    "range a.i > b.i, grouped": "SELECT a.id, COUNT(b.id) AS n, SUM(b.k) AS total "
    "FROM a LEFT JOIN b ON a.i > b.i GROUP BY a.id",
    "cross join": "SELECT a.id AS aid, b.id AS bid FROM a CROSS JOIN b",
    "cross join, grouped": "SELECT a.i, COUNT(*) AS n, SUM(b.k) AS total "
    "FROM a CROSS JOIN b GROUP BY a.i",
}


def _row(info: TableInfo, rid: int, rng: random.Random, values: int) -> tuple[bytes, ...]:
    i = rng.randint(1, values)
    third = i + 2 if info is B else rng.randint(1, values)
    return (str(rid).encode(), str(i).encode(), str(third).encode())


def run_one(sql: str | None, rows: int, changes: int, side: str, seed: int) -> dict[str, Any]:
    """Time `changes` single-row updates (of `side`: "a", "b" or "both") with `sql` kept."""
    rng = random.Random(seed)
    values = max(1, rows // 4)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp))
        batch = store.new_batch()
        for info in (A, B):
            meta.put_table(batch, store, info)
        store.write(batch, sync=True)
        states = {info.name: TableState(info) for info in (A, B)}
        current: dict[str, dict[int, tuple[bytes, ...]]] = {"a": {}, "b": {}}
        applier = Applier(store, views=[])
        lsn = 1000
        applier.begin_transaction(1_700_000_000_000_000, 999)
        for info in (A, B):
            for rid in range(1, rows + 1):
                row = _row(info, rid, rng, values)
                current[info.name][rid] = row
                applier.insert(states[info.name], row)
        applier.end_transaction(Lsn(lsn), 1_700_000_000_000_000)
        applier.commit_group()
        applier.close()
        built = time.perf_counter()
        views = prepare_views(store, parse_views(f"CREATE VIEW v AS {sql};")) if sql else []
        built = time.perf_counter() - built
        applier = Applier(store, views=views)
        start = time.perf_counter()
        cpu = time.process_time()
        for n in range(changes):
            info = (A, B)[n % 2] if side == "both" else (A if side == "a" else B)
            rid = rng.randint(1, rows)
            old = current[info.name][rid]
            new = _row(info, rid, rng, values)
            current[info.name][rid] = new
            lsn += 100
            applier.begin_transaction(1_700_000_000_000_000 + n, 1000 + n)
            applier.update(states[info.name], None, old, new)
            applier.end_transaction(Lsn(lsn), 1_700_000_000_000_000 + n)
            if n % 100 == 99:
                applier.commit_group()
        applier.commit_group()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        # One history entry per output row a transaction changed.
        entries = sum(len(list(changelog.changes(store, v.view_id, 1001))) for v in views)
        applier.close()
        store.close()
    return {
        "changes": changes,
        "side": side,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "us_per_change": round(seconds / changes * 1e6, 1),
        "cpu_us_per_change": round(cpu / changes * 1e6, 1),
        "output_rows_changed": entries,
        "build_seconds": round(built, 3),
    }


def main() -> None:
    """Run every view of VIEWS and print a table; write bench/results/joins.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000, help="rows in each table")
    ap.add_argument("--changes", type=int, default=400, help="single-row transactions timed")
    ap.add_argument("--repeat", type=int, default=2, help="runs per view; the fastest counts")
    ap.add_argument("--out", type=Path, default=Path("bench/results/joins.json"))
    args = ap.parse_args()
    results = []
    print(f"{args.rows:,} rows per table, {args.changes:,} single-row updates per run")
    print(
        f"{'view':28} {'side':>4} {'us/change':>10} {'CPU us':>9} {'rows/change':>13} "
        f"{'build s':>8}"
    )
    for name, sql in VIEWS.items():
        for side in ("a", "b"):
            runs = [
                run_one(sql, args.rows, args.changes, side, seed=17) for _ in range(args.repeat)
            ]
            r = min(runs, key=lambda x: x["cpu_seconds"])  # the machine is shared: least noise
            r.update(view=name, sql=sql, wall_us_all=[x["us_per_change"] for x in runs])
            results.append(r)
            print(
                f"{name:28} {side:>4} {r['us_per_change']:>10,.1f} {r['cpu_us_per_change']:>9,.1f} "
                f"{r['output_rows_changed'] / args.changes:>13,.1f} {r['build_seconds']:>8.2f}"
            )
    args.out.write_text(
        json.dumps({"rows": args.rows, "changes": args.changes, "runs": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
