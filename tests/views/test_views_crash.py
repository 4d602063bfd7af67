"""Acceptance 3 and 5: kill -9 under load with views defined, then `viewstore verify`; and
`verify` reports a store that was deliberately corrupted."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import pg_exec
from runner import applied_lsn, assert_history_chains, kill9, start_process, wait_caught_up
from workload import SCHEMA, SteadyLoad, run_transactions

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import pack_fields
from viewstore.ingest.lsn import Lsn
from viewstore.store.db import Store
from viewstore.store.engine import row_key
from viewstore.store.viewcatalog import stored_views

# Views over the crash workload's tables: aggregates over numeric with NaN and ±Infinity, a
# join from a composite-key table, a filter/project view, and NULL group keys throughout; a
# ranking (NaN and ±Infinity prices among the ties) and a Top-K.
VIEWS = """
CREATE MATERIALIZED VIEW by_label AS
SELECT label, count(*) AS n, sum(qty) AS qty, sum(price) AS price, avg(qty) AS avg_qty,
       min(day) AS first_day, max(at) AS last_at, count(DISTINCT flag) AS flags
FROM items GROUP BY label;

CREATE MATERIALIZED VIEW docs_items AS
SELECT d.k1, count(*) AS docs, max(d.version) AS top_version, max(i.qty) AS qty
FROM docs d LEFT JOIN items i ON i.id = d.k1
GROUP BY d.k1;

CREATE MATERIALIZED VIEW flagged AS
SELECT id, qty * 2 AS double_qty, coalesce(label, '?') || '!' AS shout
FROM items WHERE flag AND qty IS NOT NULL;

CREATE MATERIALIZED VIEW price_ranks AS
SELECT id, label, price, RANK() OVER (PARTITION BY label ORDER BY price DESC) AS rank,
       DENSE_RANK() OVER (PARTITION BY label ORDER BY price DESC) AS dense
FROM items;

CREATE MATERIALIZED VIEW top_qty AS
SELECT id, qty, label FROM items ORDER BY qty DESC NULLS LAST, id LIMIT 10;
"""


def _verify(dsn: str, data: Path, *views: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "viewstore.cli",
            "verify",
            "--dsn",
            dsn,
            "--data",
            str(data),
            *views,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _alive(proc: subprocess.Popen[bytes]):  # type: ignore[no-untyped-def]
    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"viewstore run exited with {proc.returncode}")

    return check


def test_kill9_under_load_then_verify_finds_no_difference(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    run_transactions(dsn, 30, seed=1)
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    data = tmp_path / "data"
    rng = random.Random(11)
    high_water = Lsn(0)
    with SteadyLoad(dsn, seed=3) as load:
        for _ in range(8):
            proc = start_process(dsn, data, "--views", str(views))
            time.sleep(rng.uniform(0.5, 2.0))
            kill9(proc)
            now = applied_lsn(data)
            assert now >= high_water
            high_water = now
        assert load.count > 50
    proc = start_process(dsn, data, "--views", str(views))
    # verify while a load runs: it compares as of one LSN, so it must not race. (Without
    # TRUNCATE: verify retries snapshots that a TRUNCATE raced, and this workload truncates
    # several times a second.)
    with SteadyLoad(dsn, seed=4, truncate_rate=0):
        wait_caught_up(dsn, data, alive=_alive(proc))
        for _ in range(3):
            result = _verify(dsn, data)
            assert result.returncode == 0, result.stdout + result.stderr
    wait_caught_up(dsn, data, alive=_alive(proc))
    result = _verify(dsn, data)
    assert result.returncode == 0, result.stdout + result.stderr
    for view in ("by_label", "docs_items", "flagged", "price_ranks", "top_qty"):
        assert f"{view}: OK" in result.stdout
    assert assert_history_chains(data) > 100  # no change lost or doubled by the crashes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


SEED = """
CREATE TABLE players (id SERIAL PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE player_scores (id SERIAL PRIMARY KEY, score DECIMAL(10, 2) NOT NULL,
                            player_id INTEGER REFERENCES players(id));
INSERT INTO players (name) VALUES ('Mario'), ('Peach'), ('Bowser');
INSERT INTO player_scores (player_id, score) VALUES (1, 0.31), (2, 0.16), (1, 0.5);
"""
SEED_VIEW = """CREATE MATERIALIZED VIEW player_total_scores AS
SELECT p.id AS player_id, p.name, COALESCE(SUM(s.score), 0) AS total_score
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id GROUP BY p.id;
"""


def test_verify_reports_a_corrupted_store(dsn: str, tmp_path: Path) -> None:
    from decimal import Decimal

    pg_exec(dsn, SEED)
    views = tmp_path / "views.sql"
    views.write_text(SEED_VIEW)
    data = tmp_path / "data"
    proc = start_process(dsn, data, "--views", str(views))
    wait_caught_up(dsn, data, alive=_alive(proc))
    ok = _verify(dsn, data, "player_total_scores")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "player_total_scores: OK, 3 rows" in ok.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    # Change Peach's total behind the engine's back.
    with Store.open(data) as store:
        info = stored_views(store)["player_total_scores"]
        key = row_key(info.view_id, encode_key([2]))
        assert store.views.get(key) is not None
        store.views[key] = pack_fields([2, "Peach", Decimal("99.00")])

    proc = start_process(dsn, data, "--views", str(views))
    wait_caught_up(dsn, data, alive=_alive(proc))
    bad = _verify(dsn, data)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "player_total_scores: DIFFERS" in bad.stdout
    assert "1 row(s) only in Postgres, 1 only in the store" in bad.stdout
    assert "99.00" in bad.stdout and "0.16" in bad.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
