"""Smoke test of the benchmark suite: `scripts/bench --quick` runs every benchmark end to end
at smoke-test sizes (each starts its own throwaway Postgres), then writes the table and charts.

It checks that everything ran and wrote figures, not what the figures are: on a shared CI
machine they mean nothing. The full run's results are in bench/results/.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"
RESULTS = [
    "ingest_views.json",
    "freshness.json",
    "maintenance.json",
    "snapshot.json",
    "recovery.json",
    "memory.json",
    "history.json",
    "load.json",
]


def test_bench_quick_runs_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        # SIGTERM first: each benchmark then stops its Postgres and viewstore.
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        raise AssertionError(f"scripts/bench --quick took over 400 s:\n{output}") from None
    assert proc.returncode == 0, f"scripts/bench --quick exited {proc.returncode}:\n{output}"

    runs = json.loads((out / "runs.json").read_text())
    assert {r["benchmark"] for r in runs} >= {"ingest", "freshness", "maintenance", "ops"}
    assert all(run["exit"] == 0 for r in runs for run in r["runs"]), runs
    for name in RESULTS:
        assert (out / name).exists(), f"{name} missing:\n{output}"
    ingest = json.loads((out / "ingest_views.json").read_text())
    assert ingest["ratio"] > 0 and ingest["workload"]["views"]
    fresh = json.loads((out / "freshness.json").read_text())
    assert all(p["commit_to_subscriber"]["run --http"]["received"] for p in fresh["phases"])
    summary = (out / "summary.md").read_text()
    for heading in ("1. ingest", "2. freshness", "3. maintenance", "4. snapshot", "5. reads"):
        assert heading in summary, summary
    for chart in ("ingest.png", "freshness.png", "maintenance.png"):
        assert (out / "charts" / chart).stat().st_size > 1000
