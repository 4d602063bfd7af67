"""Progress: how far a long copy or build is, for a person to follow (issue 14).

A `Progress` counts the rows of one task (a table's snapshot, a join index, a view's build,
the DuckDB copy of a history) against an estimate, and logs a line every few seconds:

    snapshot public.scores: 4,200,000 of ~10,000,000 rows (42%), 1,150,000 rows/s, ETA 0:05

A `Board` gathers the tasks of one `viewstore run` and its phase (snapshot, views, streaming)
into a `RunProgress` record, handed to `publish` (the pipeline writes it into the store, where
`viewstore status` and `viewstore query` read it from another process) and to the terminal
bar of the CLI, if any, at most every `every` seconds and at each task's end. A `Progress`
joins the board that is `current` where it is created (`Board.activate`), or one it is given
(threads do not inherit the current board), so the code that builds a view needs no
parameter for it.

This module imports nothing of the packages that use it, so each can use it without pulling in
the others (or psycopg).
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

log = logging.getLogger("viewstore.snapshot")  # the name its lines have always had

Phase = Literal["snapshot", "views", "streaming"]


def duration(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`: minutes and seconds, hours when there are any."""
    s = max(int(seconds + 0.5), 0)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class TaskProgress(BaseModel):
    """One task's rows so far, of an estimate (0: none), and the seconds it has run."""

    task: str  # "snapshot", "join index", "view", "history copy"
    name: str  # the table, index or view
    rows: int = 0
    estimate: int = 0
    seconds: float = 0.0
    done: bool = False
    waiting: bool = False  # not begun yet (a table no worker has reached)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        """Rows of the estimate (at most 1), or None without an estimate."""
        if self.done:
            return 1.0
        return min(self.rows / self.estimate, 1.0) if self.estimate > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None without an estimate or a rate."""
        if self.done:
            return 0.0
        if self.estimate <= self.rows or self.rate <= 0:
            return None
        return (self.estimate - self.rows) / self.rate

    def describe(self) -> str:
        """`4,200,000 of ~10,000,000 rows (42%), 1,150,000 rows/s, ETA 0:05`, or the end."""
        if self.done:
            return f"done, {self.rows:,} rows in {self.seconds:.1f} s ({self.rate:,.0f} rows/s)"
        if self.waiting:
            return "waiting" + (f", ~{self.estimate:,} rows" if self.estimate else "")
        text = f"{self.rows:,}"
        if self.estimate > self.rows:
            text += f" of ~{self.estimate:,}"
        text += " rows"
        if self.fraction is not None and self.estimate > self.rows:
            text += f" ({self.fraction:.0%})"
        text += f", {self.rate:,.0f} rows/s"
        if self.eta is not None:
            text += f", ETA {duration(self.eta)}"
        return text


class RunProgress(BaseModel):
    """What a running `viewstore run` is doing, as the store keeps it (meta key `progress`)."""

    phase: Phase
    pid: int
    host: str
    updated: float  # unix seconds of this record
    views: list[str] = []  # the views this run keeps (built after the snapshot)
    tasks: list[TaskProgress] = []

    def task(self, task: str, name: str) -> TaskProgress | None:
        return next((t for t in self.tasks if t.task == task and t.name == name), None)

    def running(self) -> list[TaskProgress]:
        return [t for t in self.tasks if not t.done]

    def alive(self) -> bool:
        """The process that wrote this runs still (on another host: assumed so)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def snapshot_summary(self) -> str:
        """`2 of 3 table(s) left, 4,200,000 of ~10,000,000 rows (42%), ..., ETA 0:05`."""
        copies = [t for t in self.tasks if t.task == "snapshot"]
        total = TaskProgress(
            task="snapshot",
            name="",
            rows=sum(t.rows for t in copies),
            estimate=sum(max(t.estimate, t.rows) for t in copies),
            # the tables are copied at once: the whole copy's rate is all rows over its time
            seconds=max((t.seconds for t in copies if not t.waiting), default=0.0),
        )
        left = sum(1 for t in copies if not t.done)
        return f"{left} of {len(copies)} table(s) left, {total.describe()}"

    def describe(self) -> str:
        """One line: the phase, and how far its work is."""
        if self.phase == "streaming":
            return "streaming"
        if self.phase == "snapshot":
            return f"snapshot: {self.snapshot_summary()}"
        building = [t for t in self.running() if t.task in ("view", "join index")]
        if not building:
            return "building views"
        return "building " + "; ".join(f"{t.task} {t.name}: {t.describe()}" for t in building)


_current: contextvars.ContextVar[Board | None] = contextvars.ContextVar("board", default=None)


class Board:
    """The tasks and phase of one run; see the module docstring. Thread-safe."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.phase: Phase = "snapshot"
        self.views: list[str] = []
        self.log_lines = True  # False while a terminal bar shows the same
        self._tasks: dict[tuple[str, str], Progress] = {}
        self._listeners: list[Callable[[RunProgress], None]] = []
        self._lock = threading.Lock()
        self._publishing = threading.Lock()  # records leave in the order they were made
        self._last = 0.0

    @staticmethod
    def current() -> Board | None:
        """The board activated in this context (thread), if any."""
        return _current.get()

    def activate(self) -> contextvars.Token[Board | None]:
        """Make this the current board here; `Board.deactivate(token)` undoes it."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: contextvars.Token[Board | None]) -> None:
        _current.reset(token)

    def listen(self, listener: Callable[[RunProgress], None]) -> None:
        """Call `listener` with every record published (from whichever thread changed it)."""
        self._listeners.append(listener)

    def set_phase(self, phase: Phase, views: list[str] | None = None) -> None:
        with self._lock:
            self.phase = phase
            if views is not None:
                self.views = list(views)
            if phase == "snapshot":
                self._tasks.clear()
        self.changed(force=True)

    def add(self, progress: Progress) -> None:
        with self._lock:
            self._tasks[(progress.task, progress.table)] = progress

    def record(self) -> RunProgress:
        now = time.monotonic()
        with self._lock:
            tasks = [p.state(now) for p in self._tasks.values()]
            return RunProgress(
                phase=self.phase,
                pid=os.getpid(),
                host=socket.gethostname(),
                updated=time.time(),
                views=self.views,
                tasks=tasks,
            )

    def changed(self, *, force: bool = False) -> None:
        """A task moved: publish now if `force` or `every` seconds have passed."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.every:
                return
            self._last = now
        with self._publishing:
            record = self.record()
            for listener in self._listeners:
                listener(record)


class Progress:
    """Counts one task's rows; logs a line every `every` seconds and once at the end."""

    def __init__(
        self,
        table: str,
        estimate: int,
        every: float = 2.0,
        task: str = "snapshot",
        board: Board | None = None,
    ) -> None:
        self.table = table
        self.task = task
        self.estimate = estimate
        self.every = every
        self.rows = 0
        self.finished: float | None = None
        self.waiting = False
        self.started = self.last = time.monotonic()
        self.board = board or Board.current()
        if self.board is not None:
            self.board.add(self)
            self.board.changed()

    def begin(self) -> None:
        """The task begins now (it was created `waiting`): rows/s count from here."""
        self.waiting = False
        self.started = self.last = time.monotonic()
        if self.board is not None:
            self.board.changed()

    def add(self, n: int) -> None:
        self.rows += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            if self.board is None or self.board.log_lines:
                log.info("%s %s: %s", self.task, self.table, self.state(now).describe())
        if self.board is not None:
            self.board.changed()

    def done(self) -> None:
        self.finished = time.monotonic()
        if self.board is not None:  # first: a terminal bar goes before the line is written
            self.board.changed(force=True)
        log.info("%s %s: %s", self.task, self.table, self.state(self.finished).describe())

    def state(self, now: float) -> TaskProgress:
        end = self.finished if self.finished is not None else now
        return TaskProgress(
            task=self.task,
            name=self.table,
            rows=self.rows,
            estimate=self.estimate,
            seconds=0.0 if self.waiting else max(end - self.started, 1e-9),
            done=self.finished is not None,
            waiting=self.waiting and self.finished is None,
        )
