"""Progress a person can follow while the first start copies and builds (issue 14).

While `viewstore run` copies the snapshot and then builds its views, `viewstore status` (from
another process) says how far each table and view is, with rows/s and an ETA, and does not
present the mirror's applied LSN as the views'; `viewstore query VIEW` says the view is being
built and how far, instead of "unknown view". Not on a terminal, progress comes as log lines;
on one, as bars under the log lines.

The pipeline is paused at exact moments by a listener on its progress board (called in the
thread that moved the task, right after the pipeline wrote the record into the store), so the
reads below happen mid-copy and mid-build, however fast the machine is.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import pg_exec
from runner import PipelineThread, assert_view_equals, wait_caught_up

from viewstore.progress import Board, Progress, RunProgress, TaskProgress, duration
from viewstore.progressbar import TerminalBar
from viewstore.store.pipeline import Pipeline, RunConfig
from viewstore.store.status import run_state

VIEW_SQL = "SELECT grp, count(*) AS n, sum(v) AS total FROM big GROUP BY grp"
BIG = 300_000


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args], capture_output=True, text=True, timeout=60
    )


def _tables(dsn: str) -> None:
    # ~36 MB of COPY text: several chunks of the columnar copy, several ranges of pages.
    pg_exec(dsn, "CREATE TABLE big (id int PRIMARY KEY, grp int, v int, pad text)")
    pg_exec(dsn, "CREATE TABLE small (id int PRIMARY KEY)")
    pg_exec(
        dsn,
        f"INSERT INTO big SELECT g, g % 1000, g, repeat('p', 100) FROM generate_series(1, {BIG}) g",
    )
    pg_exec(dsn, "INSERT INTO small SELECT generate_series(1, 10)")
    pg_exec(dsn, "ANALYZE big")  # pg_class.reltuples: the estimate


class _PauseAt:
    """A board listener that blocks the pipeline at the first record `when` accepts."""

    def __init__(self, when) -> None:  # type: ignore[no-untyped-def]
        self.when = when
        self.reached = threading.Event()
        self.go_on = threading.Event()

    def __call__(self, record: RunProgress) -> None:
        if not self.reached.is_set() and self.when(record):
            self.reached.set()
            assert self.go_on.wait(120), "the test never let the pipeline go on"


def test_status_and_query_follow_the_snapshot_and_the_view_build(dsn: str, tmp_path: Path) -> None:
    _tables(dsn)
    data = tmp_path / "data"
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW totals AS {VIEW_SQL};\n")

    def copying(r: RunProgress) -> bool:
        t = r.task("snapshot", "public.big")
        return r.phase == "snapshot" and t is not None and t.rows > 0 and not t.done

    def building(r: RunProgress) -> bool:
        t = r.task("view", "totals")
        return r.phase == "views" and t is not None and t.rows > 0 and not t.done

    at_copy, at_build = _PauseAt(copying), _PauseAt(building)
    p = PipelineThread(dsn, data, views_file=views, tables=["big", "small"], snapshot_workers=2)
    p.pipeline.board.every = 0.05  # a record per chunk: the pauses come early in each task
    p.pipeline.board.listen(at_copy)
    p.pipeline.board.listen(at_build)
    with p:
        try:
            assert at_copy.reached.wait(60)
            status = _cli("status", "--data", str(data))
            assert status.returncode == 0, status.stderr
            print(status.stdout)
            state = re.search(
                r"^state +snapshot: (\d) of 2 table\(s\) left, (.*)$", status.stdout, re.M
            )
            assert state, status.stdout
            assert re.search(r"of ~[\d,]+ rows \(\d+%\), [\d,]+ rows/s, ETA \d+:\d\d", state[2])
            line = re.search(r"^  public\.big .* rows  copying: (.*)$", status.stdout, re.M)
            assert line, status.stdout
            assert re.fullmatch(
                rf"[\d,]+ of ~{BIG:,} rows \(\d+%\), [\d,]+ rows/s, ETA \d+:\d\d", line[1]
            ), line[1]
            assert re.search(r"^  totals +0 rows  \(waiting", status.stdout, re.M)
            assert re.search(r"^applied LSN +0/0 \(nothing yet: the snapshot", status.stdout, re.M)
            query = _cli("query", "--data", str(data), "totals")
            assert query.returncode == 1
            print(query.stderr)
            assert "unknown view" not in query.stderr and "--views" not in query.stderr
            assert re.search(
                r"^Error: view totals is being built, the initial snapshot comes first: "
                r"\d of 2 table\(s\) left, [\d,]+ of ~[\d,]+ rows",
                query.stderr,
                re.M,
            ), query.stderr
            assert "Try: " in query.stderr and "viewstore status" in query.stderr
        finally:
            at_copy.go_on.set()
        try:
            assert at_build.reached.wait(60)
            status = _cli("status", "--data", str(data), "--dsn", dsn)
            print(status.stdout)
            assert re.search(
                r"^state +building view totals: [\d,]+ of ~[\d,]+ rows \(\d+%\), [\d,]+ rows/s, "
                r"ETA \d+:\d\d$",
                status.stdout,
                re.M,
            ), status.stdout
            # The copy is over and its LSN applied to the mirror, but the view is not live.
            assert re.search(
                r"^applied LSN +\S+ \(the mirror's; views are not live until they are built\)$",
                status.stdout,
                re.M,
            ), status.stdout
            assert re.search(r"^  totals .* rows  building: [\d,]+ of ~", status.stdout, re.M)
            assert "copying" not in status.stdout
            report = _cli("status", "--data", str(data), "--json")
            assert '"views_live":false' in report.stdout
            query = _cli("query", "--data", str(data), "totals")
            print(query.stderr)
            assert query.returncode == 1
            assert re.search(
                r"^Error: view totals is being built from the mirror: [\d,]+ of ~[\d,]+ rows "
                r"\(\d+%\), [\d,]+ rows/s, ETA \d+:\d\d$",
                query.stderr,
                re.M,
            ), query.stderr
        finally:
            at_build.go_on.set()
        wait_caught_up(dsn, data, alive=p.check)
        assert_view_equals(dsn, data, "totals", VIEW_SQL)
        status = _cli("status", "--data", str(data))
        assert re.search(r"^state +streaming$", status.stdout, re.M), status.stdout
        assert "not live" not in status.stdout and "building" not in status.stdout


def test_progress_lines_when_not_a_terminal(
    dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tables(dsn)
    slow = threading.Event()

    def crawl(point: str) -> None:  # every 20,000 rows of the copy: a long snapshot
        if point == "snapshot-chunk":
            slow.wait(0.25)

    config = RunConfig(dsn=dsn, data_dir=tmp_path / "data", tables=["big"], snapshot_workers=1)
    pipeline = Pipeline(config, crawl)
    thread = threading.Thread(target=pipeline.run, daemon=True)
    with caplog.at_level(logging.INFO, logger="viewstore"):
        thread.start()
        wait_caught_up(dsn, config.data_dir)
        pipeline.stop.set()
        thread.join(30)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("snapshot public")]
    middle = [
        line
        for line in lines
        if re.fullmatch(
            rf"snapshot public\.big: [\d,]+ of ~{BIG:,} rows \(\d+%\), [\d,]+ rows/s, "
            r"ETA \d+:\d\d",
            line,
        )
    ]
    assert middle, lines
    assert re.fullmatch(
        rf"snapshot public\.big: done, {BIG:,} rows in [\d.]+ s \([\d,]+ rows/s\)", lines[-1]
    ), lines


def test_terminal_bars_under_the_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # bars are cut at the terminal's width
    screen = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(screen)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        board = Board(every=0)
        TerminalBar(screen).attach(board)
        assert not board.log_lines and handler.stream is not screen
        a = Progress("public.a", 1000, board=board, every=0)
        b = Progress("public.b", 0, board=board)
        a.add(250)
        bar = f"snapshot public.a  [{'#' * 6}{'·' * 18}] 250 of ~1,000 rows (25%), "
        assert re.search(re.escape(bar) + r"[\d,]+ rows/s, ETA \d+:\d\d\n", screen.getvalue())
        assert screen.getvalue().endswith(
            "\nsnapshot public.b  [????????????????????????] 0 rows, 0 rows/s"
        )
        assert "snapshot public.a: 250" not in screen.getvalue()  # no log line: the bar
        logging.getLogger("viewstore").info("a line above the bars")
        out = screen.getvalue()
        # The bars are taken off (\r, up a line, erase), the line written, the bars drawn again.
        assert re.search(
            r"\r\x1b\[1A\x1b\[Ja line above the bars\nsnapshot public\.a  \[#+·+\].*\n"
            r"snapshot public\.b  \[\?+\] 0 rows, 0 rows/s$",
            out,
        )
        a.done()
        # Its bar goes before its last line, and is not drawn again after it.
        before, _, after = screen.getvalue().rpartition("snapshot public.a: done, 250 rows")
        assert before.endswith(
            "\r\x1b[1A\x1b[Jsnapshot public.b  [????????????????????????] 0 rows, 0 rows/s\r\x1b[J"
        )
        assert "snapshot public.a  [" not in after and "public.b  [" in after
        b.done()
        assert re.search(
            r"\r\x1b\[Jsnapshot public\.b: done, 0 rows in [\d.]+ s .*\n$", screen.getvalue()
        )
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_a_record_of_a_process_that_ended_is_not_running() -> None:
    record = Board().record()
    assert record.alive()
    gone = record.model_copy(update={"pid": _ended_pid()})
    assert not gone.alive()
    assert run_state(gone) == ("not running (it stopped during: snapshot)", False)
    streaming = gone.model_copy(update={"phase": "streaming"})
    assert run_state(streaming) == ("not running", True)


def _ended_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_task_describes_itself() -> None:
    t = TaskProgress(task="snapshot", name="t", rows=1_200_000, estimate=10_000_000, seconds=2)
    assert t.describe() == "1,200,000 of ~10,000,000 rows (12%), 600,000 rows/s, ETA 0:15"
    assert TaskProgress(task="view", name="v", rows=5, seconds=1).describe() == "5 rows, 5 rows/s"
    assert duration(3725) == "1:02:05" and duration(59.6) == "1:00"
