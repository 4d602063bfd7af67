"""`viewstore demo` end to end: its own Postgres, a live workload, and the closing check.

The demo starts its own throwaway cluster whatever `--test-dsn` says, so it needs the server
binaries; it runs as a real process, the way `scripts/demo` runs it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from viewstore.errors import ViewstoreError
from viewstore.pgcluster import find_bindir


def test_demo_mirrors_and_matches_postgres() -> None:
    try:
        find_bindir()
    except ViewstoreError as exc:
        pytest.skip(f"the demo starts its own Postgres: {exc}")
    result = subprocess.run(
        [sys.executable, "-m", "viewstore.cli", "demo", "--duration", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "mirror matches Postgres" in result.stdout, output
    assert re.search(r"applied LSN\s+[0-9A-F]+/[0-9A-F]+", result.stdout), output
    assert "\x1b[" not in result.stdout, "not a terminal: plain blocks, no escape sequences"
