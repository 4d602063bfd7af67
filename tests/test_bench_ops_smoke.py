"""Smoke test of `scripts/bench_ops.py --quick`: the snapshot, recovery and memory benchmarks
run end to end and write their JSON.

The script starts its own throwaway Postgres clusters, so the test needs the server binaries but
no fixture. It checks that the script finishes and writes figures, not what the figures are.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ops.py"


def test_bench_ops_quick(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the script then stops its Postgres and viewstore and drops its slots.
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        raise AssertionError(f"bench_ops.py --quick took over 300 s:\n{output}") from None
    assert proc.returncode == 0, f"bench_ops.py exited with {proc.returncode}:\n{output}"

    for name in ("snapshot", "recovery", "memory"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert "error" not in result, result["error"]
        assert result["ratio"], name
