"""Progress: a log line with rows and rows/s every few seconds, for long copies.

Used by the snapshot, a view's build from the mirror and the DuckDB copy of the history; it
imports nothing of theirs, so each can use it without pulling in the others (or psycopg).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("viewstore.snapshot")  # the name its lines have always had


class Progress:
    """Logs `rows` and rows/s for one table every `every` seconds, and once at the end."""

    def __init__(
        self, table: str, estimate: int, every: float = 2.0, task: str = "snapshot"
    ) -> None:
        self.table = table
        self.task = task
        self.estimate = estimate
        self.every = every
        self.rows = 0
        self.started = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.rows += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.info("%s %s: %s", self.task, self.table, self._line(now))

    def done(self) -> None:
        log.info("%s %s: done, %s", self.task, self.table, self._line(time.monotonic()))

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        of = f" of ~{self.estimate:,}" if self.estimate > self.rows else ""
        return f"{self.rows:,}{of} rows ({self.rows / elapsed:,.0f} rows/s)"
