"""Smoke tests of the benchmarks: `scripts/bench_ingest.py --quick`,
`scripts/bench_views.py --quick` and `scripts/bench_history.py --quick` run end to end.

It starts its own throwaway Postgres (whatever server the suite was pointed at), so the test
needs the server binaries but no fixture. It checks that the script finishes and writes
figures, not what the figures are: a 50,000-row run on a shared machine is a smoke test only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ingest.py"


def test_bench_ingest_quick(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the script then stops its Postgres and viewstore and drops its slots.
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        raise AssertionError(f"bench_ingest.py --quick took over 180 s:\n{output}") from None
    assert proc.returncode == 0, f"bench_ingest.py exited with {proc.returncode}:\n{output}"

    result = json.loads(out.read_text())
    assert result["workload"]["rows"] == 50_000
    assert result["reference"]["rows_per_s"] > 0
    assert result["viewstore"]["rows_per_s"] > 0
    assert result["ratio"] > 0
    assert result["viewstore"]["peak_rss_kib"] > 0
    assert "error" not in result


VIEWS_SCRIPT = SCRIPT.parent / "bench_views.py"


def test_bench_views_quick(tmp_path: Path) -> None:
    out = tmp_path / "views.json"
    proc = subprocess.run(
        [sys.executable, str(VIEWS_SCRIPT), "--quick", "--txns", "500", "--refreshes", "1",
         "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, f"bench_views.py exited with {proc.returncode}:\n{proc.stdout}"
    result = json.loads(out.read_text())
    assert result["transactions"] == 500
    assert result["view_rows"] == result["players"]  # and it checked them against Postgres
    assert result["catch_up_us_per_txn"]["views"] > 0
    assert result["refresh_median_ms"] > 0
    assert result["reads"]["top10_open_store_ms"] > 0


HISTORY_SCRIPT = SCRIPT.parent / "bench_history.py"


def test_bench_history_quick(tmp_path: Path) -> None:
    out = tmp_path / "history.json"
    proc = subprocess.run(
        [sys.executable, str(HISTORY_SCRIPT), "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"bench_history.py exited with {proc.returncode}:\n{proc.stdout}"
    result = json.loads(out.read_text())
    assert result["ingest"]["with_history"]["rows_per_s"] > 0
    assert result["ingest"]["without_history"]["rows_per_s"] > 0
    assert result["synthetic"]["as_of"]["row_as_of"]["p99_us"] > 0
    assert result["synthetic"]["full_sync"]["rows"] == result["synthetic"]["entries"]
