"""The soak's short version (issue 19.6): `scripts/soak` for two minutes, with viewstore killed
(-9) and Postgres crashed (`pg_ctl stop -m immediate`, fsync on) in turn every ~25 s, both views
and the row counts compared with Postgres after each. The 30-minute run's results are in
bench/results/soak.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_two_minute_soak_never_diverges(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "soak"), "--minutes", "2", "--every", "25",
         "--out", str(out)],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["divergences"] == 0
    assert report["viewstore_kills"] >= 2 and report["postgres_crashes"] >= 1, report["events"]
    assert report["transactions_committed"] > 1000
    assert all(not e["problems"] for e in report["events"])
