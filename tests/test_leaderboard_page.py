"""The live leaderboard page (`serve/static/leaderboard.html`) in headless Chromium.

A real `viewstore run --views views.sql --http 127.0.0.1:PORT` follows the seed's tables in the
test's own Postgres database; Playwright drives Debian's chromium (`/usr/bin/chromium`: no
browser can be downloaded here) against it. Postgres is the oracle: the page's top rows must be
Postgres's `ORDER BY total_score DESC, player_id` of the seed view's SELECT, before and after a
score is committed, and after the server was restarted while the page stayed open (the page
resumes its stream with `since=` its last progress LSN, and counts no change twice). The chart must have one line per player
shown, the new leader's ending highest. With `--http-token`, the page works when opened with
`#token=...` and says 401 without it or with a wrong one. And `viewstore demo` prints the page's
address and serves it, live, while its workload runs.

Skips only when the browser or Playwright's Python package is missing (`scripts/test` installs
both).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from helpers import pg_exec, pg_query
from runner import current_lsn, start_process

import viewstore
from viewstore.demo import SEED_SQL, VIEW, VIEW_SQL
from viewstore.ingest.lsn import Lsn

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: Debian's chromium package drives this test "
        "(scripts/test installs it; by hand: apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright's Python package is missing (pip install -e '.[test]' installs it; "
    "no `playwright install` is needed: the test uses /usr/bin/chromium)",
)

SELECT = VIEW_SQL.split(" AS\n", 1)[1].rstrip().rstrip(";")
TOP_SQL = (
    f"SELECT player_id, name, total_score::text FROM ({SELECT}) v "
    "ORDER BY v.total_score DESC, v.player_id LIMIT 10"  # the numeric, not its text
)
TOKEN = "s3cret-t0ken"
SEEN_WITHIN = 5.0  # seconds: a committed score must be on the page by then

# The page's board and chart, read from the DOM: [player_id, name, total_score] per row, and
# the chart's polylines as {key, last point's y}.
BOARD_JS = """() => [...document.querySelectorAll('#board tbody tr[data-key]')].map(tr =>
    ['player_id', 'name', 'total_score'].map(c => tr.querySelector(`td[data-column="${c}"]`).textContent))"""
CHART_JS = """() => [...document.querySelectorAll('#chart polyline')].map(l => {
    const points = l.getAttribute('points').trim().split(' ');
    return {key: l.dataset.key, points: points.length, lastY: Number(points[points.length - 1].split(',')[1])};
})"""


def postgres_top(dsn: str) -> list[list[str]]:
    return [[str(pid), name, total] for pid, name, total in pg_query(dsn, TOP_SQL)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`viewstore run --views ... --http` on the seed's tables, as a child process."""

    def __init__(
        self,
        dsn: str,
        tmp_path: Path,
        token: str | None = None,
        views_sql: str = VIEW_SQL,
        names: tuple[str, ...] = (VIEW,),
    ) -> None:
        self.dsn, self.data, self.token = dsn, tmp_path / "data", token
        self.log = tmp_path / "run.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.views = tmp_path / "views.sql"
        self.views.write_text(views_sql)
        self.names = sorted(names)  # the views GET /views lists once ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--views", str(self.views), "--http", f"127.0.0.1:{self.port}"]
        if self.token is not None:
            args += ["--http-token", self.token]
        self.proc = start_process(self.dsn, self.data, *args, log=self.log)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until GET /views lists the view: snapshot taken, view built, HTTP up."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            try:
                r = httpx.get(self.url + "views", headers=headers, timeout=5)
                if r.status_code == 200 and sorted(v["name"] for v in r.json()) == self.names:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in {timeout}s\n{self.output()}"
            time.sleep(0.1)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_caught_up(self, timeout: float = 30) -> Lsn:
        """Until the server has applied everything Postgres has written (per /healthz)."""
        target = current_lsn(self.dsn)
        deadline = time.monotonic() + timeout
        while True:
            applied = Lsn.parse(httpx.get(self.url + "healthz", timeout=5).json()["applied_lsn"])
            if applied >= target:
                return applied
            assert time.monotonic() < deadline, f"applied {applied} of {target}"
            time.sleep(0.05)


@pytest.fixture
def seeded(dsn: str, tmp_path: Path) -> Callable[..., Server]:
    """The seed's tables and rows in the test's database; returns a started Server."""
    for statement in SEED_SQL:
        pg_exec(dsn, statement)

    def start(token: str | None = None, **views: Any) -> Server:
        server = Server(dsn, tmp_path, token, **views)
        server.start()
        return server

    return start


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def wait_for(read: Callable[[], Any], want: Any, timeout: float, what: str) -> float:
    """Poll `read()` until it equals `want`; the seconds it took."""
    started = time.monotonic()
    while True:
        got = read()
        if got == want:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: after {timeout}s the page shows {got}, expected {want}")
        time.sleep(0.05)


def key(player_id: str) -> str:
    return json.dumps([int(player_id)], separators=(",", ":"))  # the page's JSON row key


def test_page_follows_scores_as_they_commit_and_charts_the_leaders(
    seeded: Callable[..., Server], dsn: str, page: Any
) -> None:
    server = seeded()
    # Some history before the page opens, for the chart to draw: Luigi and Peach score.
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (4, 0.50)")
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (2, 0.30)")
    server.wait_caught_up()

    page.goto(server.url)
    board = lambda: page.evaluate(BOARD_JS)  # noqa: E731
    chart = lambda: page.evaluate(CHART_JS)  # noqa: E731
    before = postgres_top(dsn)
    assert [r[1] for r in before] == ["Yoshi", "Luigi", "Bowser", "Peach", "Mario"]
    wait_for(board, before, 10, "the first board")
    # The defaults: the only view, ranked by its last numeric column, top 10.
    assert page.input_value("#view") == VIEW
    assert page.input_value("#order") == "total_score"
    assert page.input_value("#n") == "10"
    # The chart: one line per player shown, once the history is read; Luigi's has a step.
    wait_for(lambda: sorted(line["key"] for line in chart()), sorted(key(r[0]) for r in before),
             10, "the chart's lines")  # fmt: skip
    assert {line["key"]: line["points"] for line in chart()}[key("4")] >= 4, chart()

    # Bowser (0.65) scores 5.00 and takes the lead: the page shows it within a few seconds.
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (3, 5.00)")
    committed = current_lsn(dsn)
    after = postgres_top(dsn)
    assert after[0] == ["3", "Bowser", "5.65"] and [r[1] for r in after[1:]] == [
        r[1] for r in before if r[1] != "Bowser"
    ]
    took = wait_for(board, after, SEEN_WITHIN, "the board after Bowser's score")
    assert took < SEEN_WITHIN
    assert "fresh" in (page.get_attribute(f'#board tr[data-key="{key("3")}"]', "class") or "")
    assert Lsn.parse(page.text_content("#lsn")) >= committed
    assert page.text_content("#last-change") != "none yet"
    assert page.text_content("#row-count") == "5"
    # The chart follows: still one line per player, Bowser's now ending highest (smallest y).
    lines = chart()
    assert sorted(line["key"] for line in lines) == sorted(key(r[0]) for r in after), lines
    top_line = min(lines, key=lambda line: line["lastY"])
    assert top_line["key"] == key("3"), lines

    # A player joins (a row of the view, total 0) while the page is live; then the server
    # restarts while the page stays open, and meanwhile another player joins with the best
    # score. The page reconnects with since= its last progress LSN and gets exactly what it
    # missed: a change applied twice would count a row twice.
    pg_exec(dsn, "INSERT INTO players (name) VALUES ('Toad')")
    wait_for(board, postgres_top(dsn), SEEN_WITHIN, "the board after Toad joined")
    assert page.text_content("#row-count") == "6"
    server.stop()
    pg_exec(dsn, "INSERT INTO players (name) VALUES ('Daisy')")
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (7, 9.99)")
    server.start()
    final = postgres_top(dsn)
    assert final[0] == ["7", "Daisy", "9.99"] and final[-1] == ["6", "Toad", "0"], final
    wait_for(board, final, 20, "the board after the server restarted")
    assert page.text_content("#row-count") == "7"
    wait_for(lambda: len(chart()), 7, 5, "the chart's lines after the restart")


def test_page_with_a_token_and_without(
    seeded: Callable[..., Server], dsn: str, page: Any, browser: Any
) -> None:
    server = seeded(token=TOKEN)
    page.goto(f"{server.url}#token={TOKEN}")
    wait_for(lambda: page.evaluate(BOARD_JS), postgres_top(dsn), 10, "the board with the token")
    assert page.is_hidden("#message")

    for fragment, says in [("", "this server needs a token"), ("#token=wrong", "refused")]:
        other = browser.new_page()
        try:
            other.goto(server.url + fragment)
            other.wait_for_selector("#message", state="visible", timeout=10_000)
            message = other.text_content("#message") or ""
            assert "401" in message and says in message, message
            assert other.text_content("#connection") == "not authorised"
            assert other.evaluate(BOARD_JS) == []
        finally:
            other.close()


def test_demo_serves_the_page_live(dsn: str, page: Any) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewstore.cli", "demo", "--dsn", dsn, "--players", "30",
         "--http", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the address comes before the snapshot
            seen.append(line)
            if line.startswith(("leaderboard page: ", "snapshot first")):
                break
        url = f"http://127.0.0.1:{port}/"
        assert seen[-1] == f"leaderboard page: {url}\n", "".join(seen)
        page.goto(url)
        rows = lambda: len(page.evaluate(BOARD_JS))  # noqa: E731
        wait_for(rows, 10, 30, "the demo's top 10")
        # Live: the applied LSN moves as the workload commits; the board stays in order.
        first = page.text_content("#lsn")
        wait_for(lambda: page.text_content("#lsn") != first, True, 10, "a new applied LSN")
        totals = [Decimal(r[2]) for r in page.evaluate(BOARD_JS)]
        assert totals == sorted(totals, reverse=True), totals
        wait_for(lambda: len(page.evaluate(CHART_JS)), 10, 10, "the chart's lines")
        proc.send_signal(signal.SIGINT)  # the demo stops, checks itself, stops serving
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "view matches Postgres" in output, output
    assert re.search(rf"leaderboard page: {re.escape(url)}$", output, re.M), output


# The scrubber's state, read from the DOM: the mode pill's text and the LSN it shows (None: live).
MODE_JS = """() => ({text: document.querySelector('#mode').textContent,
                    lsn: document.querySelector('#mode').dataset.lsn || null})"""
FRAGMENT_AS_OF_JS = "() => new URLSearchParams(location.hash.slice(1)).get('as_of')"


def record_transactions(dsn: str, server: Server) -> list[tuple[Lsn, list[list[str]]]]:
    """Transactions committed one at a time, each followed by Postgres's top 10 (nothing else
    writes: it is the view as of that commit); the view's build first. Returns (the commit LSN
    the store recorded for it, that top 10), oldest first."""
    statements = [
        "INSERT INTO player_scores (player_id, score) VALUES (3, 2.00)",  # Bowser leads
        "INSERT INTO players (name) VALUES ('Toad')",  # a row joins, total 0
        "UPDATE player_scores SET score = score + 4 WHERE player_id = 1",  # Mario leads
        "DELETE FROM player_scores WHERE player_id = 3",  # Bowser drops to 0
        "INSERT INTO player_scores (player_id, score) VALUES (2, 9.00), (6, 1.00)",
        "UPDATE players SET name = 'Luigi II' WHERE id = 2",  # the leader's name, not its total
    ]
    tops: list[tuple[int | None, list[list[str]]]] = [(None, postgres_top(dsn))]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in statements:
            with conn.transaction():
                conn.execute(sql)  # type: ignore[call-overload]
                xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
            tops.append((xid, postgres_top(dsn)))
            server.wait_caught_up()  # commit times apart
    with viewstore.open(server.data) as vs:
        start = Lsn.parse(vs_history_from(server))
        commits = {c["xid"]: c["lsn"] for c in vs.changes(VIEW, since=start)}
    records = [(start, tops[0][1])] + [(commits[xid], top) for xid, top in tops[1:]]
    assert len({lsn for lsn, _ in records}) == len(records), records
    return records


def vs_history_from(server: Server) -> str:
    return httpx.get(server.url + "views", timeout=5).json()[0]["history_from"]


def as_of(records: list[tuple[Lsn, list[list[str]]]], lsn: Lsn) -> list[list[str]]:
    """Postgres's top 10 as of `lsn`: that of the last record at or before it."""
    return [top for at, top in records if at <= lsn][-1]


def test_scrubber_goes_back_in_time_and_plays_forward_to_live(
    seeded: Callable[..., Server], dsn: str, page: Any
) -> None:
    server = seeded()
    records = record_transactions(dsn, server)
    board = lambda: page.evaluate(BOARD_JS)  # noqa: E731
    mode = lambda: page.evaluate(MODE_JS)  # noqa: E731
    page.goto(server.url)
    wait_for(board, postgres_top(dsn), 10, "the live board")
    assert mode() == {"text": "live", "lsn": None}
    page.wait_for_selector("#prev:not([disabled])", timeout=10_000)  # the range is read

    # Drag the thumb to the middle of the track: the page shows the view as of the LSN there,
    # which must be Postgres's as of the last recorded commit at or before it.
    box = page.locator("#scrub").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] - 4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    wait_for(lambda: mode()["lsn"] is not None, True, 10, "a moment in the past")

    def settled() -> bool:  # the answer for where the thumb rests (not an earlier position's)
        now = mode()
        return not now["text"].endswith("…") and board() == as_of(records, Lsn.parse(now["lsn"]))

    wait_for(settled, True, 10, "the board as of the LSN under the thumb")
    dragged = Lsn.parse(mode()["lsn"])
    assert records[0][0] < dragged < records[-1][0], (dragged, records)
    assert board() == as_of(records, dragged)
    assert mode()["text"].startswith("as of ") and str(dragged) in mode()["text"]
    assert page.evaluate(FRAGMENT_AS_OF_JS) == str(dragged)
    assert page.text_content("#row-count") == str(len(as_of(records, dragged)))

    # Step to each recorded commit before it, then forward to each after: exactly the
    # recorded LSNs, each board Postgres's then; the chart has a line per row shown, ending
    # at the moment shown, the leader's highest.
    here = max(i for i, (lsn, _) in enumerate(records) if lsn <= dragged)
    for i in [*range(here - 1, -1, -1), *range(1, len(records) - 1)]:
        page.click("#prev" if i < here else "#next")
        lsn, top = records[i]
        wait_for(lambda: mode()["lsn"], str(lsn), 10, f"record {i}'s LSN")
        wait_for(board, top, 10, f"the board as of record {i} ({lsn})")
        here = i
        lines = page.evaluate(CHART_JS)
        assert sorted(line["key"] for line in lines) == sorted(key(r[0]) for r in top), lines
        leader = min(lines, key=lambda line: line["lastY"])
        assert leader["key"] == key(top[0][0]) or Decimal(top[0][2]) == Decimal(top[1][2]), lines
    assert page.is_disabled("#prev") is False
    # The first record: no change before the build.
    assert here == len(records) - 2

    # Play: forward to now, then live, and live updates arrive again.
    page.click("#prev")
    wait_for(lambda: mode()["lsn"], str(records[-3][0]), 10, "one change back")
    page.click("#play")
    assert page.text_content("#play") == "❚❚ pause"
    wait_for(mode, {"text": "live", "lsn": None}, 30, "live after playing")
    assert page.evaluate(FRAGMENT_AS_OF_JS) is None
    wait_for(board, postgres_top(dsn), 5, "the live board after playing")
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (5, 20.00)")
    now = postgres_top(dsn)
    assert now[0][:2] == ["5", "Yoshi"], now
    wait_for(board, now, SEEN_WITHIN, "a live update after playing")

    # An address with as_of= opens at that moment.
    lsn, top = records[2]
    page.goto("about:blank")
    page.goto(f"{server.url}#as_of={lsn}")
    wait_for(lambda: mode()["lsn"], str(lsn), 10, "the moment in the address")
    wait_for(board, top, 10, "the board of the moment in the address")
    page.click("#live")
    wait_for(board, postgres_top(dsn), 10, "live again")


# Issue 16: a rank view and a Top-K view over the seed's, and a view with a subquery (whose
# own view, `best$1`, is not offered as a board).
RANK_VIEWS = (
    VIEW_SQL
    + """
CREATE MATERIALIZED VIEW player_ranks AS
SELECT player_id, name, total_score, RANK() OVER (ORDER BY total_score DESC) AS rank
FROM player_total_scores;

CREATE MATERIALIZED VIEW top3 AS
SELECT player_id, name, total_score FROM player_total_scores
ORDER BY total_score DESC, player_id LIMIT 3;

CREATE MATERIALIZED VIEW best AS
SELECT b.player_id, b.total_score FROM (SELECT player_id, total_score FROM player_total_scores
WHERE total_score > 0) b;
"""
)
RANKS_SQL = (
    f"SELECT rank::text, player_id, name, total_score::text FROM (SELECT player_id, name, "
    f"total_score, RANK() OVER (ORDER BY total_score DESC) AS rank FROM ({SELECT}) v) r "
    "ORDER BY rank, player_id LIMIT 10"
)
# The board as [#, player_id, name, total_score] per row.
RANKED_BOARD_JS = """() => [...document.querySelectorAll('#board tbody tr[data-key]')].map(tr =>
    [tr.querySelector('td.rank').textContent,
     ...['player_id', 'name', 'total_score'].map(c => tr.querySelector(`td[data-column="${c}"]`).textContent)])"""


def test_page_shows_a_rank_view_and_a_top_k_view(
    seeded: Callable[..., Server], dsn: str, page: Any
) -> None:
    server = seeded(views_sql=RANK_VIEWS, names=(VIEW, "player_ranks", "top3", "best", "best$1"))
    # A tie: Peach (0.34) reaches Bowser (0.65), so they share a rank and the next is skipped.
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (2, 0.31)")
    server.wait_caught_up()
    views = httpx.get(server.url + "views", timeout=5).json()
    ranking = {v["name"]: v["ranking"] for v in views}
    assert ranking["player_ranks"] == {
        "function": "rank", "column": "rank", "top": None, "partitioned": False
    }  # fmt: skip
    assert ranking["top3"] == {
        "function": "row_number", "column": None, "top": 3, "partitioned": False
    }  # fmt: skip
    assert ranking[VIEW] is None

    page.goto(f"{server.url}#view=player_ranks")
    board = lambda: page.evaluate(RANKED_BOARD_JS)  # noqa: E731
    want = [list(r) for r in pg_query(dsn, RANKS_SQL)]
    ranks = [r[0] for r in want]
    assert len(set(ranks)) < len(ranks), want  # the tie is there
    wait_for(board, [[r[0], str(r[1]), r[2], r[3]] for r in want], 10, "the rank view's board")
    assert page.input_value("#order") == "rank"  # ranked by the view's own rank, lowest first
    options = page.eval_on_selector_all("#view option", "os => os.map(o => o.value)")
    assert sorted(options) == sorted([VIEW, "player_ranks", "top3", "best"]), options

    # Bowser scores and leads: the ranks the server renumbered arrive on the page.
    pg_exec(dsn, "INSERT INTO player_scores (player_id, score) VALUES (3, 5.00)")
    want = [[r[0], str(r[1]), r[2], r[3]] for r in pg_query(dsn, RANKS_SQL)]
    assert want[0][:3] == ["1", "3", "Bowser"], want
    wait_for(board, want, SEEN_WITHIN, "the rank view's board after Bowser's score")

    # The Top-K view: the server keeps three rows, and the page says so.
    page.goto("about:blank")  # a fresh load (a new fragment alone makes the page reload itself)
    page.goto(f"{server.url}#view=top3&by=total_score")
    top3 = [[str(i), *row[1:]] for i, row in enumerate(want[:3], start=1)]
    wait_for(board, top3, 10, "the top-3 view's board")
    assert page.text_content("#row-count") == "3"
    assert "its top 3, kept by the server" in page.text_content("#status")
