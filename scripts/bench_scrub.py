#!/usr/bin/env python3
"""What the leaderboard page's time scrubber costs the server: the top 10 of a large view as of
an LSN (`store.asofread.top_as_of`, what GET /views/{name}/top runs), against reading the
whole view as of it and sorting it (`viewread.query_rows(..., as_of=...)`), and the chart's
series of the top 10 (`asofread.series`, 200 points a row).

The history is bench_history.py's synthetic one (NOT ingested: written with the changelog's
own writer into a fresh store): `--keys` leaderboard rows (numeric totals), each in
`--versions` versions (the build, then one update per transaction, rows in a random order),
with the applier's checkpoints (every max(10,000, rows) changes). The reads run at
`--reads` random LSNs strictly before the applied one (the synthetic store holds no current
rows, so the applied LSN itself would be answered by an empty sort index), each checked
against the whole-view read. Wall and thread CPU seconds, medians.

    scripts/bench_scrub.py --keys 1000000 --versions 2   # bench/results/scrub_top.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_history import History

from viewstore.ingest.lsn import Lsn
from viewstore.store import asofread
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import query_rows

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return out, time.perf_counter() - wall, time.thread_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--versions", type=int, default=2)
    ap.add_argument("--reads", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "scrub_top.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_scrub_") as work:
        data = Path(work) / "data"
        hist = History(args.keys, args.versions)
        write_s = hist.write(data, args.versions)
        print(f"wrote {hist.entries:,} entries in {write_s:.1f} s", flush=True)
        rng = random.Random(5)
        low, high = int(History.BUILT_AT), hist.last_lsn - 1
        reads: list[dict[str, Any]] = []
        with Store.open(data, readonly=True) as store:
            info = stored_views(store)["player_total_scores"]
            for _ in range(args.reads):
                lsn = Lsn(rng.randint(low, high))
                (top, count), wall, cpu = timed(
                    lambda lsn=lsn: asofread.top_as_of(store, info, "total_score", True, 10, lsn)
                )
                keys = [k for k, _ in top]
                _, s_wall, s_cpu = timed(
                    lambda lsn=lsn, keys=keys: asofread.series(
                        store, info, keys, "total_score", lsn, 200
                    )
                )
                whole, w_wall, w_cpu = timed(
                    lambda lsn=lsn: query_rows(store, info, None, "total_score", True, 10, lsn)
                )
                assert [r for _, r in top] == whole, (lsn, top, whole)
                reads.append(
                    {
                        "lsn": str(lsn),
                        "rows": count,
                        "top_wall_s": round(wall, 3),
                        "top_cpu_s": round(cpu, 3),
                        "series_wall_s": round(s_wall, 4),
                        "series_cpu_s": round(s_cpu, 4),
                        "whole_view_wall_s": round(w_wall, 3),
                        "whole_view_cpu_s": round(w_cpu, 3),
                    }
                )
                print(json.dumps(reads[-1]), flush=True)
    result = {
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "keys": args.keys,
        "versions": args.versions,
        "entries": hist.entries,
        "checkpoints": len(hist.checkpoints),
        "write_s": round(write_s, 1),
        "reads": reads,
        "median": {
            k: statistics.median(r[k] for r in reads)
            for k in (
                "top_wall_s",
                "top_cpu_s",
                "series_wall_s",
                "whole_view_wall_s",
                "whole_view_cpu_s",
            )
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"]))


if __name__ == "__main__":
    main()
