"""The time scrubber's endpoints (issue 15.5): `/views/{name}/history` and `/views/{name}/top`
against Postgres at recorded LSNs.

One store for the module: the seed schema with 60 more players, written by the pipeline with
a checkpoint every 66 changes (the view's rows) (so that as-of reads start from checkpoints as well as from the
view's build), then a dozen recorded transactions, one at a time: after each commit, Postgres's
result of the view's SELECT is recorded (nothing else writes: it is the view as of that
commit), and the transaction's xid, which the store's history maps to its commit LSN and commit
time. `viewstore serve` then answers over HTTP. Postgres is the oracle: the top N as of each
recorded LSN, between two of them and at each recorded commit time equals Postgres's
`ORDER BY total_score DESC, player_id` of that record; each top row's series equals the
changes of its row across the records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from helpers import create_test_database, drop_test_database, pg_exec
from runner import PipelineThread, wait_caught_up
from serve_support import (
    SELECT_SQL,
    VIEW,
    seed,
    start_serve,
    stop,
    wait_http,
    wait_view_ready,
    write_views,
)

import viewstore
from viewstore.history import checkpoint
from viewstore.history.changelog import changes
from viewstore.history.retention import compact
from viewstore.ingest.lsn import Lsn
from viewstore.render import json_value
from viewstore.store.db import Store
from viewstore.store.viewcatalog import CATALOG, stored_views

ORDER = "ORDER BY total_score DESC, player_id"

# Each a transaction of its own; between them, Postgres's view is recorded.
TRANSACTIONS = [
    "INSERT INTO player_scores (player_id, score) VALUES (3, 20.00)",  # Bowser leads
    "UPDATE player_scores SET score = score + 1 WHERE player_id > 5",  # ~60 rows change
    "INSERT INTO players (name) VALUES ('Zelda'); "
    "INSERT INTO player_scores (player_id, score) VALUES (currval('players_id_seq'), 30)",
    "DELETE FROM player_scores WHERE player_id = 3",  # Bowser falls back to 0
    "UPDATE players SET name = 'Luigi II' WHERE id = 2",  # a row changes, its total does not
    "INSERT INTO player_scores (player_id, score) VALUES (1, 29.50), (1, 0.50)",  # ties Zelda
    "UPDATE player_scores SET score = score - 2 WHERE player_id > 5",
    "INSERT INTO player_scores (player_id, score) VALUES (4, -3.25)",
    "DELETE FROM player_scores WHERE player_id BETWEEN 30 AND 45",
    "INSERT INTO player_scores (player_id, score) VALUES (5, 99999999.99)",
    "UPDATE player_scores SET score = 0 WHERE player_id = 5",
]


@dataclass
class Record:
    """The view as of one point: its commit LSN and time (None: the view's build)."""

    lsn: Lsn
    time: datetime | None
    rows: list[dict[str, Any]]  # Postgres's, in ORDER, values as the API sends them


@dataclass
class Env:
    dsn: str
    data: Path
    base: str
    records: list[Record] = field(default_factory=list)
    client: httpx.Client | None = None

    def get(self, path: str, **params: Any) -> httpx.Response:
        assert self.client is not None
        return self.client.get(path, params=params)

    def top(self, **params: Any) -> dict[str, Any]:
        r = self.get(f"/views/{VIEW}/top", order_by="total_score", **params)
        assert r.status_code == 200, r.text
        return r.json()


def postgres_view(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(f"SELECT * FROM ({SELECT_SQL}) v {ORDER}")  # type: ignore[call-overload]
        names = [d.name for d in cur.description]
        return [{n: json_value(v) for n, v in zip(names, r, strict=True)} for r in cur]


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@pytest.fixture(scope="module")
def env(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    name, dsn = create_test_database(pg_server.dsn)
    serve = None
    try:
        tmp = tmp_path_factory.mktemp("scrubber_api")
        seed(dsn, extra_players=60)
        data = tmp / "data"
        with PipelineThread(
            dsn, data, views_file=write_views(tmp), history_checkpoint_interval=20
        ) as p:
            wait_caught_up(dsn, data, alive=p.check)
            wait_view_ready(data)
            build = viewstore.open(data).applied_lsn()
            states = [(None, postgres_view(dsn))]
            with psycopg.connect(dsn, autocommit=True) as conn:
                for sql in TRANSACTIONS:
                    with conn.transaction():
                        for statement in sql.split("; "):
                            conn.execute(statement)  # type: ignore[call-overload]
                        xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
                    states.append((xid, postgres_view(dsn)))
                    # Commit groups end here (checkpoints are written with the next one), and
                    # commit times are apart.
                    wait_caught_up(dsn, data, alive=p.check)
            wait_caught_up(dsn, data, alive=p.check)
        # The view's build is its history's first point; each transaction's commit LSN and time
        # are what the store recorded for it.
        start = Lsn.parse(_history_from(data))
        assert start <= build
        commits = {c.xid: (c.lsn, c.time) for c in history_commits(data)}
        env = Env(dsn, data, "")
        env.records.append(Record(start, None, states[0][1]))
        for xid, rows in states[1:]:
            lsn, at = commits[xid]
            env.records.append(Record(Lsn(lsn), at, rows))
        assert [r.lsn for r in env.records] == sorted({r.lsn for r in env.records})
        with Store.open(data, readonly=True) as store:  # reads start from checkpoints too
            marks = checkpoint.lsns(store, stored_views(store)[VIEW].view_id)
        assert any(start < c < env.records[-1].lsn for c in marks), marks
        serve, env.base = start_serve(data, reap=False)
        wait_http(env.base, serve, data.with_suffix(".serve.log"))
        with httpx.Client(base_url=env.base, timeout=30) as env.client:
            yield env
    finally:
        if serve is not None:
            stop(serve)
        drop_test_database(pg_server.dsn, name)


@dataclass(frozen=True)
class Commit:
    xid: int | None
    lsn: Lsn
    time: datetime | None


def history_commits(data: Path) -> list[Commit]:
    """Each transaction in the view's history, oldest first, with its exact commit time."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out: dict[Lsn, Commit] = {}
    with Store.open(data, readonly=True) as store:
        info = stored_views(store)[VIEW]
        for c in changes(store, info.view_id):
            t = None if c.commit_time is None else epoch + timedelta(microseconds=c.commit_time)
            out[c.lsn] = Commit(c.xid, c.lsn, t)
    return list(out.values())


def _history_from(data: Path) -> str:
    with Store.open(data, readonly=True) as store:
        start = stored_views(store)[VIEW].history_start
    assert start is not None
    return str(start)


def test_history_range_names_the_build_and_the_applied_lsn(env: Env) -> None:
    r = env.get(f"/views/{VIEW}/history", marks=4)
    assert r.status_code == 200, r.text
    got = r.json()
    first, last = env.records[0], env.records[-1]
    assert got["view"] == VIEW
    assert got["first_lsn"] == str(first.lsn) and got["first_reason"] == "build"
    assert got["first_change"] == {
        "lsn": str(env.records[1].lsn),
        "commit_time": iso(env.records[1].time),
    }
    applied = viewstore.open(env.data).applied_lsn()
    assert got["last_lsn"] == str(applied) and Lsn.parse(got["last_lsn"]) >= last.lsn
    assert got["last_commit_time"] == iso(last.time)
    marks = got["marks"]
    assert [m["lsn"] for m in marks] == [
        str(Lsn(first.lsn + (applied - first.lsn) * i // 4)) for i in range(5)
    ]
    for mark in marks:  # each with the last recorded commit at or before it
        record = [r for r in env.records if r.lsn <= Lsn.parse(mark["lsn"])][-1]
        assert mark["change"] == {"lsn": str(record.lsn), "commit_time": iso(record.time)}, mark


@pytest.mark.parametrize("limit", [5, 1000])
def test_top_as_of_every_recorded_lsn_equals_postgres(env: Env, limit: int) -> None:
    records = env.records
    applied = viewstore.open(env.data).applied_lsn()
    for i, record in enumerate(records):
        want = record.rows[:limit]
        got = env.top(as_of=str(record.lsn), limit=limit)
        assert got["rows"] == want, f"as of {record.lsn} (record {i})"
        assert got["row_count"] == len(record.rows)
        assert got["live"] is (record.lsn == applied)  # the last: the sort index answers
        assert got["lsn"] == str(record.lsn)
        assert got["change"] == {"lsn": str(record.lsn), "commit_time": iso(record.time)}
        assert got["previous_lsn"] == (str(records[i - 1].lsn) if i else None)
        assert got["next_lsn"] == (str(records[i + 1].lsn) if i + 1 < len(records) else None)
        # Between this commit and the next, the view stands as this one left it.
        if i + 1 < len(records) and records[i + 1].lsn > record.lsn + 1:
            between = env.top(as_of=str(Lsn(records[i + 1].lsn - 1)), limit=limit)
            assert between["rows"] == want and between["change"] == got["change"]
    # The whole view, sorted on the server (more than the limit matched: 66 rows).
    assert len(records[-1].rows) > 60


def test_top_now_is_live_and_uses_the_applied_lsn(env: Env) -> None:
    got = env.top(limit=7)
    assert got["live"] is True and got["lsn"] == got["applied_lsn"]
    assert got["rows"] == env.records[-1].rows[:7]
    assert got["next_lsn"] is None
    assert env.top(as_of=str(env.records[-2].lsn))["live"] is False


def test_top_at_a_commit_time(env: Env) -> None:
    for record in env.records[1:]:
        assert record.time is not None
        for at in (record.time, record.time + timedelta(microseconds=1)):
            got = env.top(at=at.isoformat(), limit=5)
            assert got["lsn"] == str(record.lsn), (at, got["lsn"])
            assert got["rows"] == record.rows[:5]
    # A microsecond before a commit: the one before it.
    for before, record in zip(env.records[1:], env.records[2:], strict=False):
        assert record.time is not None
        got = env.top(at=(record.time - timedelta(microseconds=1)).isoformat())
        assert got["lsn"] == str(before.lsn)
    # Another zone, the same instant.
    t = env.records[3].time
    assert t is not None
    other = t.astimezone(datetime.now().astimezone().tzinfo).isoformat()
    assert env.top(at=other)["lsn"] == str(env.records[3].lsn)
    assert env.top(at=t.astimezone(UTC).isoformat().replace("+00:00", "Z"))["lsn"] == str(
        env.records[3].lsn
    )


def test_series_are_each_rows_changes_up_to_the_point(env: Env) -> None:
    records = env.records
    for i in (0, 3, 6, len(records) - 1):
        got = env.top(as_of=str(records[i].lsn), limit=5, points=1000)
        assert len(got["series"]) == len(got["rows"]) == 5
        for row, line in zip(got["rows"], got["series"], strict=True):
            want = []
            seen = None
            for record in records[: i + 1]:
                now = next((r for r in record.rows if r["player_id"] == row["player_id"]), None)
                if now != seen:
                    value = None if now is None else now["total_score"]
                    want.append(
                        {"lsn": str(record.lsn), "commit_time": iso(record.time), "value": value}
                    )
                seen = now
            assert line == want, row
        # Thinned: at most `points` a row, the row's latest change always among them.
        thin = env.top(as_of=str(records[i].lsn), limit=5, points=2)
        for full, short in zip(got["series"], thin["series"], strict=True):
            assert len(short) <= 2 and short[-1] == full[-1] and all(p in full for p in short)
    assert env.top(limit=3)["series"] is None  # not asked for


def assert_error(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "hint"} and body["hint"], body
    for word in words:
        assert word in body["error"] + " " + body["hint"], (word, body)
    return body


def test_bad_input_is_a_4xx_that_says_what_to_do(env: Env) -> None:
    first, last = env.records[0], env.records[-1]
    applied = viewstore.open(env.data).applied_lsn()
    top = f"/views/{VIEW}/top"
    assert_error(
        env.get(top, order_by="total_score", as_of="12:34"), 400, "invalid LSN", "0/1532260"
    )
    assert_error(env.get(top, order_by="total_score", as_of=str(Lsn(applied + 1))), 400,
                 "applied only up to", "at or before the applied LSN")  # fmt: skip
    body = assert_error(env.get(top, order_by="total_score", as_of=str(Lsn(first.lsn - 1))), 400,
                        "history starts at", str(first.lsn), str(applied))  # fmt: skip
    assert "give an LSN between" in body["hint"]
    assert_error(env.get(top, order_by="total_score", at="2026-12-04 14:05"), 400,
                 "invalid time", "with its zone")  # fmt: skip
    assert_error(env.get(top, order_by="total_score", at="yesterday"), 400, "invalid time")
    t1 = env.records[1].time
    assert t1 is not None
    body = assert_error(env.get(top, order_by="total_score", at=(t1 - timedelta(seconds=1)).isoformat()),
                        400, iso(t1) or "", f"as_of={first.lsn}")  # fmt: skip
    assert_error(env.get(top, order_by="total_score", as_of=str(last.lsn), at=iso(t1)), 400,
                 "not both")  # fmt: skip
    assert_error(env.get(top, order_by="score"), 400, "no column 'score'", "total_score")
    assert_error(env.get(top, order_by="total_score", limit=5000), 400, "limit")
    assert_error(env.get(top), 400, "order_by")
    assert_error(env.get("/views/nope/top", order_by="total_score"), 404, "unknown view")
    assert_error(env.get("/views/nope/history"), 404, "unknown view")


def test_history_before_a_retention_cutoff_is_gone(dsn: str, tmp_path: Path) -> None:
    """A store whose history retention compacted to a recorded commit: as-of reads before it are
    410 naming the retention, at and after it they equal Postgres's records."""
    seed(dsn, extra_players=20)
    data = tmp_path / "data"
    records = []
    with PipelineThread(dsn, data, views_file=write_views(tmp_path)) as p:
        wait_caught_up(dsn, data, alive=p.check)
        wait_view_ready(data)
        for score in (3, 5, 7, 9):
            pg_exec(dsn, f"INSERT INTO player_scores (player_id, score) VALUES ({score}, {score})")
            records.append((wait_caught_up(dsn, data, alive=p.check), postgres_view(dsn)))
    commits = [c for c in history_commits(data) if c.time is not None]
    lsns = [c.lsn for c in commits]
    times = {c.lsn: c.time for c in commits}
    assert len(lsns) == len(records)
    cutoff = lsns[1]  # the second transaction's commit
    with Store.open(data) as store:
        compact(store, stored_views(store)[VIEW], int(cutoff), catalog=CATALOG)
    serve, base = start_serve(data)
    wait_http(base, serve, data.with_suffix(".serve.log"))
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            got = client.get(f"/views/{VIEW}/history").json()
            assert got["first_lsn"] == str(cutoff) and got["first_reason"] == "retention"
            assert got["first_change"] == {
                "lsn": str(lsns[2]),
                "commit_time": times[lsns[2]].isoformat(),
            }
            top = f"/views/{VIEW}/top"
            body = assert_error(client.get(top, params={"order_by": "total_score", "as_of": str(lsns[0])}),
                                410, "--history-retention", f"give an LSN between {cutoff}")  # fmt: skip
            assert str(cutoff) in body["error"]
            for lsn, (_, rows) in zip(lsns[1:], records[1:], strict=True):
                r = client.get(
                    top, params={"order_by": "total_score", "as_of": str(lsn), "limit": 100}
                )
                assert r.status_code == 200 and r.json()["rows"] == rows, r.text
            # The cutoff's own commit time is before the first change the history holds after it.
            assert_error(client.get(top, params={"order_by": "total_score", "at": times[lsns[1]].isoformat()}),
                         400, times[lsns[2]].isoformat(), f"as_of={cutoff}")  # fmt: skip
            r = client.get(
                top,
                params={"order_by": "total_score", "at": times[lsns[2]].isoformat(), "limit": 100},
            )
            assert r.json()["lsn"] == str(lsns[2]) and r.json()["rows"] == records[2][1]
    finally:
        stop(serve)
