"""Progress bar: the running tasks of `viewstore run` drawn at the bottom of a terminal.

`viewstore run` on a terminal draws one bar per running task (a table being copied, a view
being built) under its log lines, in place of the periodic progress lines:

    snapshot public.scores  [##########··············] 4,200,000 of ~10,000,000 rows (42%), ...

Log lines still appear above the bars: the handler's stream clears the bars before a line is
written and draws them again after. Not on a terminal, nothing here runs and the progress
comes as log lines (`viewstore.progress`).
"""

from __future__ import annotations

import logging
import shutil
import threading
from typing import TextIO

from viewstore.progress import Board, RunProgress

_WIDTH = 24  # characters of the bar itself


def bar(fraction: float | None, width: int = _WIDTH) -> str:
    """`[#####·····]` filled to `fraction`; without one, a bar of `?`."""
    if fraction is None:
        return "[" + "?" * width + "]"
    filled = int(fraction * width + 1e-9)
    return "[" + "#" * filled + "·" * (width - filled) + "]"


def lines(record: RunProgress) -> list[str]:
    """One line per running task that has begun."""
    out = []
    for t in record.running():
        if t.waiting:
            continue  # a table no worker has reached yet
        out.append(f"{t.task} {t.name}  {bar(t.fraction)} {t.describe()}")
    return out


class TerminalBar:
    """Draws a board's running tasks on `stream`, a terminal; see the module docstring."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = 0  # lines of bars on the screen now
        self.shown: list[str] = []
        self.lock = threading.RLock()

    def attach(self, board: Board) -> None:
        """Draw `board`'s tasks, instead of its log lines, and route log lines around them."""
        board.log_lines = False
        board.listen(self.update)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream:
                handler.setStream(_AroundBars(self))  # type: ignore[arg-type]

    def update(self, record: RunProgress) -> None:
        with self.lock:
            shown = lines(record)
            if shown == self.shown:
                return
            self.clear()
            self.shown = shown
            self.draw()

    def clear(self) -> None:
        """Take the bars off the screen (until the next update)."""
        with self.lock:
            if self.drawn:
                up = f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else ""
                self.stream.write(f"\r{up}\x1b[J")
                self.drawn = 0

    def draw(self) -> None:
        with self.lock:
            if not self.shown:
                return
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\n".join(line[:width] for line in self.shown))
            self.stream.flush()
            self.drawn = len(self.shown)


class _AroundBars:
    """A log handler's stream: clears the bars, writes the line, draws them again."""

    def __init__(self, bars: TerminalBar) -> None:
        self.bars = bars

    def write(self, text: str) -> None:
        with self.bars.lock:
            self.bars.clear()
            self.bars.stream.write(text)
            if text.endswith("\n"):
                self.bars.draw()

    def flush(self) -> None:
        self.bars.stream.flush()
