"""Commit groups change nothing: the same transactions applied in groups of 1, 7 and 1,000
give stores that are identical key by key, mirror, view state and history included.

The engine batches: a group's state and an output row are written once per commit group, the
history once per transaction. If batching leaked into the result (a history entry keyed by the
group instead of the transaction, a before-image taken from the batch's start, a state written
twice), the stores would differ. The workload is random and in process (the Applier fed row
changes directly, as the pipeline feeds it decoded pgoutput): joins with a LEFT JOIN's NULL
extension, MIN/MAX losing their extreme, COUNT(DISTINCT), FILTER, HAVING, TRUNCATE, primary key
updates, and transactions that are never delivered (what a rollback is to logical decoding);
FULL, range (scans of a join index in value order) and cross joins.
Postgres as the oracle for the same views is tests/views/test_differential.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from viewstore.ingest.lsn import Lsn
from viewstore.store import db as meta
from viewstore.store import engine
from viewstore.store.apply import Applier, TableState
from viewstore.store.db import Store
from viewstore.store.viewcatalog import prepare_views
from viewstore.views.schema import TableInfo
from viewstore.views.sql import parse_views

PLAYERS = TableInfo.of(1, "public.players", "id int4, name text, team text")
SCORES = TableInfo.of(
    2, "public.player_scores", "id int4, player_id int4, score numeric, tag text, ok bool"
)
VIEWS = """
CREATE MATERIALIZED VIEW player_total_scores AS
SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;

CREATE MATERIALIZED VIEW extremes AS
SELECT s.player_id, MIN(s.score) AS lo, MAX(s.score) AS hi, COUNT(DISTINCT s.tag) AS tags,
       COUNT(*) FILTER (WHERE s.ok) AS ok_rows
FROM player_scores s GROUP BY s.player_id HAVING COUNT(*) >= 2;

CREATE MATERIALIZED VIEW team_tags AS
SELECT p.team, s.tag, COUNT(s.id) AS n, COUNT(*) AS joined, MAX(s.score) AS best
FROM players p LEFT JOIN player_scores s ON s.player_id = p.id GROUP BY p.team, s.tag;

CREATE MATERIALIZED VIEW summary AS
SELECT p.id, p.name, COUNT(s.id) AS scores, MAX(s.score) FILTER (WHERE s.ok) AS best_ok
FROM players p JOIN player_scores s ON s.player_id = p.id GROUP BY p.id
HAVING COUNT(s.id) > 1;

CREATE MATERIALIZED VIEW by_player AS
SELECT p.id, p.team, COUNT(*) AS n, MAX(s.score) AS best, COUNT(DISTINCT s.tag) AS tags
FROM player_scores s JOIN players p ON p.id = s.player_id GROUP BY p.id;

CREATE MATERIALIZED VIEW scored AS
SELECT s.id, s.score, p.name FROM player_scores s JOIN players p ON p.id = s.player_id
WHERE s.score > 0;

CREATE INDEX ON scored (name);

CREATE MATERIALIZED VIEW both_sides AS
SELECT p.id AS pid, s.id AS sid, s.score FROM players p FULL JOIN player_scores s
ON p.id = s.player_id;

CREATE MATERIALIZED VIEW below AS
SELECT p.id AS pid, s.id AS sid FROM players p LEFT JOIN player_scores s ON s.player_id < p.id;

CREATE MATERIALIZED VIEW every_pair AS
SELECT p.team, COUNT(*) AS n, SUM(s.score) AS total FROM players p CROSS JOIN player_scores s
GROUP BY p.team;
"""

Row = tuple[bytes | None, ...]
Op = tuple[str, TableInfo, Row | None, Row | None]  # kind, table, old, new


def _workload(seed: int, transactions: int) -> list[list[Op] | None]:
    """Random transactions over a model of both tables; None stands for a rolled-back one."""
    rng = random.Random(seed)
    rows: dict[str, dict[int, Row]] = {"players": {}, "player_scores": {}}
    out: list[list[Op] | None] = []

    def player(pid: int) -> Row:
        name = rng.choice(("mario", "peach", "bowser", "luigi")).encode()
        team = rng.choice((b"red", b"blue", None))
        return (str(pid).encode(), name, team)

    def score(sid: int) -> Row:
        pid = rng.choice((str(rng.randint(1, 14)).encode(), None))
        value = rng.choice((b"1.50", b"-2.00", b"3", b"0.25", b"7.75", None))
        return (
            str(sid).encode(),
            pid,
            value,
            rng.choice((b"a", b"b", None)),
            b"t" if rng.random() < 0.5 else b"f",
        )

    for _ in range(transactions):
        if rng.random() < 0.05:
            out.append(None)
            continue
        ops: list[Op] = []
        for _ in range(rng.randint(1, 6)):
            info = rng.choice((PLAYERS, SCORES, SCORES))
            table = rows[info.name]
            make = player if info is PLAYERS else score
            r = rng.random()
            if r < 0.01:
                ops.append(("truncate", info, None, None))
                table.clear()
            elif r < 0.5 or not table:
                new_id = rng.randint(1, 12 if info is PLAYERS else 60)
                if new_id in table:
                    continue
                new = make(new_id)
                table[new_id] = new
                ops.append(("insert", info, None, new))
            elif r < 0.8:
                old_id = rng.choice(sorted(table))
                new_id = old_id if rng.random() < 0.8 else rng.randint(1, 60)
                if new_id != old_id and new_id in table:
                    continue
                new = make(new_id)
                old = table.pop(old_id)
                table[new_id] = new
                ops.append(("update", info, old, new))
            else:
                old_id = rng.choice(sorted(table))
                ops.append(("delete", info, table.pop(old_id), None))
        out.append(ops)
    return out


def _apply(
    path: Path, work: list[list[Op] | None], group: int, *, build_after: bool = False
) -> dict[str, list]:
    """Apply `work` in commit groups of `group` transactions and return the column families'
    contents; with `build_after`, keep no views while applying and build them at the end."""
    store = Store.open(path)
    batch = store.new_batch()
    for info in (PLAYERS, SCORES):
        meta.put_table(batch, store, info)
    store.write(batch, sync=True)
    views = [] if build_after else prepare_views(store, parse_views(VIEWS))
    applier = Applier(store, views=views)
    states = {info.name: TableState(info) for info in (PLAYERS, SCORES)}
    lsn = 1000
    ended = 0
    for i, ops in enumerate(work):
        lsn += 100
        if ops is None:
            continue  # rolled back: logical decoding never sends it
        applier.begin_transaction(1_700_000_000_000_000 + i, 1000 + i)
        for kind, info, old, new in ops:
            table = states[info.name]
            if kind == "insert":
                applier.insert(table, new)  # type: ignore[arg-type]
            elif kind == "update":
                key_changed = old[0] != new[0]  # type: ignore[index]
                applier.update(
                    table, "K" if key_changed else None, old if key_changed else None, new
                )  # type: ignore[arg-type]
            elif kind == "delete":
                applier.delete(table, old)  # type: ignore[arg-type]
            else:
                applier.truncate(table)
        applier.end_transaction(Lsn(lsn), 1_700_000_000_000_000 + i)
        ended += 1
        if ended % group == 0:
            applier.commit_group()
    applier.commit_group()
    if build_after:
        applier.close()
        prepare_views(store, parse_views(VIEWS))
    contents = {name: list(getattr(store, name).items()) for name in ("mirror", "views", "history")}
    applier.close()
    store.close()
    return contents


@pytest.mark.parametrize("seed", [1, 2])
def test_commit_groups_give_identical_stores(tmp_path: Path, seed: int) -> None:
    work = _workload(seed, 400)
    stores = {group: _apply(tmp_path / f"g{group}", work, group) for group in (1, 7, 1000)}
    assert len(stores[1]["history"]) > 500, "the workload changed too little to compare"
    for group in (7, 1000):
        for cf in ("mirror", "views", "history"):
            ones, many = stores[1][cf], stores[group][cf]
            if ones != many:
                diff = sorted(set(ones) ^ set(many))[:5]
                pytest.fail(f"{cf} differs between groups of 1 and {group}: {diff}")


@pytest.mark.parametrize("seed", [3, 4])
def test_view_build_equals_incremental_state(tmp_path: Path, seed: int) -> None:
    """Building the views from the mirror gives the state that keeping them from the first
    transaction on gave: group states, rows, sort indexes and row counts, key by key. (The
    history differs by design: a build records every row once, at the LSN it was built at.)"""
    work = _workload(seed, 300)
    kept = _apply(tmp_path / "kept", work, 5)
    built = _apply(tmp_path / "built", work, 5, build_after=True)
    assert kept["mirror"] == built["mirror"]
    assert len(kept["views"]) > 50, "the workload left too little to compare"
    if kept["views"] != built["views"]:
        diff = sorted(set(kept["views"]) ^ set(built["views"]))[:5]
        pytest.fail(f"built views differ from kept ones: {diff}")


def test_state_read_back_from_the_store_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no cache between batches every group (and every MIN/MAX or DISTINCT multiset,
    spilled one entry per value) is read back from RocksDB for each batch: the stores must
    still equal those of a run whose states stayed in memory."""
    work = _workload(5, 300)
    cached = _apply(tmp_path / "cached", work, 3)
    monkeypatch.setattr(engine, "CACHE_LIMIT", 0)
    reread = _apply(tmp_path / "reread", work, 3)
    for cf in ("mirror", "views", "history"):
        assert cached[cf] == reread[cf], cf
    spilled = [k for k, _ in cached["views"] if k[3:4] == b"m"]
    assert spilled, "no MIN/MAX or DISTINCT value was kept as its own entry"
