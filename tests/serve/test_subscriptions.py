"""Subscriptions equal the history (issue 5, acceptance 1).

A subscriber connects mid-load (a writer thread commits a steady mix of score inserts, updates
and deletes on the seed schema), with a snapshot. It is a real process that appends every line
to a file as it arrives, and it is killed with SIGKILL at random moments three times; each time
it reconnects with `since=` the last `progress` LSN it recorded, discarding what came after
that line (the rest of a step that may be incomplete). In the end:

- its change lines are exactly the history's after its first position (`Reader.changes`, an
  update as a -1 of the old row and a +1 of the new at one LSN): same order, nothing missing,
  nothing twice;
- its snapshot with every diff folded on equals the view in the store and Postgres's result of
  the view's SQL, once the load has stopped and the store has caught up.

Three ways to subscribe: HTTP from the ingesting process (`viewstore run --http`, LiveSource),
HTTP from a follower (`viewstore serve`, FollowerSource), and `viewstore subscribe` (the CLI,
a FollowerSource in the subscriber's own process).

The last test pins down, deterministically, the bug this load test runs into now and then: a
transaction whose commit LSN equals an LSN the store already reported as applied is lost to
subscribers (see the comments there).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from runner import kill9, wait_caught_up
from serve_support import (
    SUBSCRIBER,
    VIEW,
    SteadyLoad,
    canonical,
    fold,
    history_diffs,
    postgres_rows_json,
    seed,
    start_run,
    start_run_http,
    start_serve,
    store_rows_json,
    stream_diffs,
    wait_http,
    wait_view_ready,
    write_views,
)

import viewstore
from viewstore.ingest.lsn import Lsn
from viewstore.render import json_value

PLAYERS = 45  # the seed's 5 and 40 more


def _alive(proc: subprocess.Popen[bytes], what: str) -> Any:
    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")

    return check


class Subscriber:
    """One connection of the subscriber: a process recording lines to `out`."""

    def __init__(self, via: str, base: str, data: Path, out: Path, since: str | None) -> None:
        self.out = out
        self.snapshot = since is None
        if via == "cli-subscribe":
            args = [sys.executable, "-u", "-m", "viewstore.cli", "subscribe"]
            args += ["--data", str(data), VIEW]
            args += ["--snapshot"] if since is None else ["--since", since]
            with open(out, "ab") as stdout, open(out.with_suffix(".err"), "ab") as stderr:
                self.proc = subprocess.Popen(args, stdout=stdout, stderr=stderr)
        else:
            query = "snapshot=true" if since is None else f"since={since}"
            url = f"{base}/views/{VIEW}/changes?{query}"
            self.proc = subprocess.Popen([sys.executable, str(SUBSCRIBER), url, str(out)])

    def wait_for_lines(self, timeout: float = 20) -> None:
        """Until the first line is recorded: it has started, and it is streaming."""
        deadline = time.monotonic() + timeout
        while not (self.out.exists() and self.out.stat().st_size):
            assert self.proc.poll() is None, f"the subscriber exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "the subscriber recorded nothing"
            time.sleep(0.01)

    def lines(self) -> list[dict[str, Any]]:
        """Complete lines recorded so far (a kill may leave half a line at the end)."""
        raw = self.out.read_bytes() if self.out.exists() else b""
        complete = raw[: raw.rfind(b"\n") + 1]
        events = [json.loads(line) for line in complete.splitlines()]
        for e in events:
            assert "http_status" not in e and "error" not in e, e
        return events


def _subscribers_gauge(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("viewstore_subscribers "):
            return float(line.split()[1])
    raise AssertionError(f"no viewstore_subscribers in /metrics:\n{text}")


@pytest.mark.parametrize("via", ["run-http", "serve-http", "cli-subscribe"])
def test_killed_subscriber_resumes_to_exactly_the_history(
    dsn: str, tmp_path: Path, via: str
) -> None:
    seed(dsn, extra_players=PLAYERS - 5)
    views = write_views(tmp_path)
    data = tmp_path / "data"
    base = ""
    if via == "run-http":
        writer, base = start_run_http(dsn, data, views)
        wait_http(base, writer, data.with_suffix(".log"))
    else:
        writer = start_run(dsn, data, views)
    wait_caught_up(dsn, data, alive=_alive(writer, "viewstore run"))
    wait_view_ready(data)
    if via == "serve-http":
        server, base = start_serve(data)
        wait_http(base, server, data.with_suffix(".serve.log"))

    rng = random.Random(f"subscriptions-{via}")
    first_since: str | None = None  # the position of the snapshot
    position: str | None = None  # the last progress LSN recorded
    snapshot: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []  # every line up to each connection's last progress
    discarded = 0
    connections = 0

    def absorb(sub: Subscriber) -> None:
        nonlocal first_since, position, discarded
        lines = sub.lines()
        last = max((i for i, e in enumerate(lines) if "progress" in e), default=-1)
        discarded += len(lines) - (last + 1)
        if last < 0:
            return  # nothing complete: reconnect from the same point (with the snapshot again)
        lines = lines[: last + 1]
        if sub.snapshot:
            snap = [e for e in lines if e.get("snapshot")]
            assert snap, "the view is not empty: the snapshot has lines"
            assert len({e["lsn"] for e in snap}) == 1, "a snapshot is at one LSN"
            first_since = snap[0]["lsn"]
            snapshot.extend(e["row"] for e in snap)
        else:
            assert not any(e.get("snapshot") for e in lines), "since= gives no snapshot"
        kept.extend(e for e in lines if not e.get("snapshot"))
        position = lines[last]["progress"]

    with SteadyLoad(dsn, players=PLAYERS, seed=7) as load:
        time.sleep(0.5)  # the subscriber connects mid-load
        for kill in range(3):
            sub = Subscriber(via, base, data, tmp_path / f"conn{connections}.ndjson", position)
            connections += 1
            sub.wait_for_lines()
            time.sleep(rng.uniform(0.05, 1.0))  # a random moment of the stream
            kill9(sub.proc)
            absorb(sub)
            assert kill < 2 or position is not None, "three connections recorded no progress"
        last = Subscriber(via, base, data, tmp_path / f"conn{connections}.ndjson", position)
        connections += 1
        time.sleep(1.0)
    assert load.count > 50, "the load ran"
    final = wait_caught_up(dsn, data, alive=_alive(writer, "viewstore run"))
    deadline = time.monotonic() + 20
    while not any("progress" in e and Lsn.parse(e["progress"]) >= final for e in last.lines()):
        assert last.proc.poll() is None, f"the last subscriber exited with {last.proc.returncode}"
        assert time.monotonic() < deadline, f"the subscriber never reached {final}"
        time.sleep(0.05)
    kill9(last.proc)
    absorb(last)
    assert first_since is not None and position is not None

    # Exactly the history after the first position, in order: no gap, no duplicate.
    got = stream_diffs(kept)
    want = history_diffs(data, VIEW, first_since, position)
    assert len(want) > 50, "the load changed the view while the subscriber was connected"
    if got != want:
        seen = set()
        dups = [g for g in got if (k := json.dumps(g, sort_keys=True)) in seen or seen.add(k)]
        missing = [w for w in want if w not in got]
        extra = [g for g in got if g not in want]
        report = (
            f"{len(got)} lines streamed, {len(want)} in the history: {len(missing)} missing "
            f"{missing[:3]}, {len(extra)} not in the history {extra[:3]}, {len(dups)} "
            f"duplicates {dups[:3]}"
        )
        raise AssertionError(report)
    # Progress only moves forward, and each change line is covered by the progress after it.
    progress = [Lsn.parse(e["progress"]) for e in kept if "progress" in e]
    assert progress == sorted(progress)
    assert all(Lsn.parse(e["lsn"]) > Lsn.parse(first_since) for e in kept if "diff" in e)
    assert all(e.get("commit_time") for e in kept if "diff" in e), "changes carry commit times"

    # The snapshot with the diffs folded on is the view: in the store and in Postgres.
    assert Lsn.parse(position) >= final
    folded = fold(snapshot, got)
    assert folded == store_rows_json(data)
    assert folded == postgres_rows_json(dsn)
    as_of = viewstore.open(data).query(VIEW, as_of=position)
    assert folded == sorted(canonical({k: json_value(v) for k, v in r.items()}) for r in as_of)

    if base:  # the server noticed every killed subscriber going away
        deadline = time.monotonic() + 5
        while _subscribers_gauge(base) != 0:
            assert time.monotonic() < deadline, "killed subscribers still counted as open"
            time.sleep(0.1)
    print(f"{via}: {connections} connections, {len(got)} change lines, {discarded} discarded")


# Regression: history used to be keyed by the *start* of a transaction's commit record while
# the store reports the *end* of the last one as applied. The next transaction's commit record
# can start exactly there: here A writes, B commits (ending at E), A commits right after, its
# commit record starting at E. The store said "applied up to E" though A, "committed at E", was
# not in yet: `as_of=E` changed after it was served, and a subscriber resuming with since=E never
# got A. Keyed by the end of the commit record, A is after E.
def test_a_commit_at_the_applied_lsn_is_not_lost(dsn: str, tmp_path: Path) -> None:
    seed(dsn, extra_players=0)
    data = tmp_path / "data"
    writer, base = start_run_http(dsn, data, write_views(tmp_path))
    wait_http(base, writer, data.with_suffix(".log"))
    wait_caught_up(dsn, data, alive=_alive(writer, "viewstore run"))
    wait_view_ready(data)
    view = f"{base}/views/{VIEW}"
    with psycopg.connect(dsn) as a, psycopg.connect(dsn, autocommit=True) as b:
        a.execute("INSERT INTO player_scores (player_id, score) VALUES (1, 5)")
        b.execute("INSERT INTO player_scores (player_id, score) VALUES (2, 7)")
        b_applied = wait_caught_up(dsn, data, alive=_alive(writer, "viewstore run"))
        while (
            Lsn.parse(seen := httpx.get(f"{base}/healthz", timeout=10).json()["applied_lsn"])
            < b_applied
        ):
            time.sleep(0.01)  # the server looks at the applied LSN every 5 ms
        before = httpx.get(view, params={"as_of": seen}, timeout=10).json()["rows"]
        a.commit()
    final = str(wait_caught_up(dsn, data, alive=_alive(writer, "viewstore run")))
    history = history_diffs(data, VIEW, Lsn(Lsn.parse(seen) - 0x1000), final)
    a_lsn = [lsn for lsn, _, row in history if row["player_id"] == 1][-1]
    print(f"B applied: {seen}; A committed at {a_lsn}")
    # What a subscriber that got {"progress": seen} gets when it resumes from there.
    resumed = httpx.get(f"{view}/changes", params={"since": seen, "until": final}, timeout=10)
    got = stream_diffs([json.loads(line) for line in resumed.text.splitlines()])
    assert got == history_diffs(data, VIEW, seen, final)  # consistent with the history...
    assert any(row["player_id"] == 1 for _, _, row in got), (
        f"A (committed at {a_lsn}) is lost to a subscriber resuming from {seen}"
    )
    after = httpx.get(view, params={"as_of": seen, "limit": 1000}, timeout=10).json()["rows"]
    assert after == before, f"as_of={seen} changed after it was served"
