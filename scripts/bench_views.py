#!/usr/bin/env python3
"""View benchmark: the cost of keeping the seed's leaderboard current, against the alternatives.

Data. A throwaway Postgres with the seed's schema (`players`, `player_scores` with
DECIMAL(10, 2) scores) holding `--players` players (default 1,000, as in the issue's first
benchmark; `--players 1000000` makes the view a million rows) and `--scores` score rows
(default 1,000,000), and the seed's view pasted verbatim, both in Postgres (as a materialized
view, with a unique index on player_id, which CONCURRENTLY needs) and in viewstore's views.sql.

REFRESH. `REFRESH MATERIALIZED VIEW player_total_scores` on that data, timed `--refreshes`
times (median): what "keeping the view current" costs when it is recomputed.

viewstore. Two stores follow one publication: `views` keeps the seed view, `mirror` keeps only
the tables (the ingest cost without any view). Both take their snapshot (timed for `views`: the
snapshot, the join index and the backfill of the view), are stopped, and then `--txns`
transactions (default 20,000) are committed with both stopped: each inserts a score for a
random player, or one in ten updates a score and one in ten deletes one. Each store is then
started and timed from its "streaming from slot" log line until its slot confirms the WAL
position after the load (viewstore confirms only what it has synced). Per-transaction cost is
that time (wall clock: one viewstore process, the walsender feeding it) over the number of
transactions; the view's own cost is the difference between the two stores.

REFRESH CONCURRENTLY. `REFRESH MATERIALIZED VIEW CONCURRENTLY`, also `--refreshes` times
(median), each with a diff to apply: the first right after the catch-up, when the matview is as
of before the load, so its diff is exactly the transactions viewstore processed; each further
one after another `--txns` transactions of the same mix. Each is timed with its commit, and the
rows it rewrote are counted (those whose xmin is its transaction).

Trigger. A summary table `player_totals(player_id PRIMARY KEY, total_score numeric)` kept by
plpgsql AFTER row triggers (INSERT/UPDATE/DELETE on player_scores, INSERT/UPDATE/DELETE on
players), filled from the view's query when the triggers are created (after the catch-up, so
viewstore's load never ran them). The writer's extra cost: `--txns` single-score INSERTs, each
its own transaction (autocommit, one connection, one round trip), timed with the trigger enabled
and the same `--txns` INSERTs (same values) with it disabled, in 20 rounds, each the two halves
back to back in alternating order; the rows inserted without the trigger are deleted again
(untimed, trigger still off). µs per transaction each way (median over rounds), and the
trigger's cost, the median of the rounds' differences: paid inside the writer's transaction,
where viewstore's is paid after commit by a separate process. At the end a few players are added and
deleted (with their scores), a score moves to another player, and the table must equal the
view (REFRESH, then compared row by row) or the benchmark fails.

Ratios. Each refresh as a number of viewstore transactions (its time over viewstore's µs per
transaction), and viewstore's µs per transaction (whole store, and the view's part) over the
trigger's extra µs per INSERT. viewstore's figure is over the mixed load (8 in 10 inserts), the
trigger's over inserts only. Postgres runs with fsync and synchronous_commit off (throwaway
cluster), which flatters every writer alike.

Reads. On the caught-up store: the top 10 by total_score, a point lookup by player_id, each
through the Python API (a read-only open of the store per call, as another process would) and
on an open store; median of 25 calls each. The whole view is compared with Postgres (REFRESH,
then SELECT) and the benchmark fails if a row differs.

    scripts/bench_views.py            # bench/results/views.json
    scripts/bench_views.py --quick    # 20k players, 20k scores, 2,000 txns: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import viewstore
from viewstore.demo import SEED_SQL, VIEW_SQL
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.db import Store
from viewstore.store.viewread import find_view, query_rows

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PG_SETTINGS = {"autovacuum": "off", "shared_buffers": "1GB"}

# The seed's tables and view, verbatim, as the demo has them.
SCHEMA = "\n".join(SEED_SQL[:2])
VIEW = VIEW_SQL
UNIQUE_INDEX = "CREATE UNIQUE INDEX player_total_scores_key ON player_total_scores (player_id)"

# The usual hand-written alternative: the view's totals in a table, kept by row triggers.
TRIGGER_SQL = """
CREATE TABLE player_totals (
    player_id INTEGER PRIMARY KEY,
    total_score NUMERIC NOT NULL
);
CREATE FUNCTION player_totals_scores() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE player_totals SET total_score = total_score + NEW.score
        WHERE player_id = NEW.player_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE player_totals SET total_score = total_score - OLD.score
        WHERE player_id = OLD.player_id;
    ELSIF NEW.player_id IS NOT DISTINCT FROM OLD.player_id THEN
        UPDATE player_totals SET total_score = total_score + (NEW.score - OLD.score)
        WHERE player_id = NEW.player_id;
    ELSE
        UPDATE player_totals SET total_score = total_score - OLD.score
        WHERE player_id = OLD.player_id;
        UPDATE player_totals SET total_score = total_score + NEW.score
        WHERE player_id = NEW.player_id;
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION player_totals_players() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO player_totals (player_id, total_score) VALUES (NEW.id, 0);
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM player_totals WHERE player_id = OLD.id;  -- its scores cascade
    ELSIF NEW.id <> OLD.id THEN  -- only possible without scores (the foreign key)
        UPDATE player_totals SET player_id = NEW.id WHERE player_id = OLD.id;
    END IF;
    RETURN NULL;
END $$;
INSERT INTO player_totals (player_id, total_score)
SELECT p.id, COALESCE(SUM(s.score), 0)
FROM players p LEFT JOIN player_scores s ON p.id = s.player_id
GROUP BY p.id;
CREATE TRIGGER player_totals_scores AFTER INSERT OR UPDATE OR DELETE ON player_scores
    FOR EACH ROW EXECUTE FUNCTION player_totals_scores();
CREATE TRIGGER player_totals_players AFTER INSERT OR UPDATE OF id OR DELETE ON players
    FOR EACH ROW EXECUTE FUNCTION player_totals_players();
"""
TRIGGER_ROUNDS = 20
INSERT_SCORE = "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lsn_of(conn: psycopg.Connection[Any], query: str, *params: Any) -> Lsn | None:
    row = conn.execute(query, params).fetchone()  # type: ignore[call-overload]
    return Lsn.parse(row[0]) if row and row[0] else None


PROFILE: list[str] = []  # py-spy command prefix for the timed `views` catch-up (--profile)
CHILDREN: list[subprocess.Popen[bytes]] = []  # killed on exit, whatever the exit


def start_run(pg: ThrowawayPostgres, data: Path, *extra: str) -> subprocess.Popen[bytes]:
    out = open(data.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
    argv = [sys.executable, "-m", "viewstore.cli", "run", "--dsn", pg.dsn, "--data", str(data)]

    proc = subprocess.Popen(
        [*argv, "--publication", "bench_pub", "--slot", data.name, *extra],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(120) != 0:
        raise SystemExit(f"viewstore run exited with {proc.returncode}")


def streaming_seen(data: Path) -> bool:
    return "streaming from slot" in data.with_suffix(".log").read_text()


def wait_streaming(proc: subprocess.Popen[bytes], data: Path, timeout: float) -> float:
    """Seconds from now until the log says streaming began (after snapshot and backfill)."""
    began = time.monotonic()
    while not streaming_seen(data):
        if proc.poll() is not None:
            raise SystemExit(f"viewstore run died:\n{data.with_suffix('.log').read_text()[-3000:]}")
        if time.monotonic() - began > timeout:
            raise SystemExit("viewstore run did not start streaming in time")
        time.sleep(0.05)
    return time.monotonic() - began


def wait_confirmed(
    conn: psycopg.Connection[Any], slot: str, target: Lsn, proc: subprocess.Popen[bytes]
) -> None:
    while True:
        got = lsn_of(
            conn,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            slot,
        )
        if got is not None and got >= target:
            return
        if proc.poll() is not None:
            raise SystemExit(f"viewstore run exited with {proc.returncode}")
        time.sleep(0.02)


def catch_up(pg: ThrowawayPostgres, data: Path, target: Lsn, views: Path | None) -> float:
    """Start a stopped store and time it from streaming start to having synced `target`."""
    data.with_suffix(".log").write_text("")
    proc = start_run(pg, data, *(["--views", str(views)] if views else []))
    spy = None
    if views and PROFILE:
        spy = subprocess.Popen([*PROFILE, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        wait_streaming(proc, data, 600)
        began = time.monotonic()
        wait_confirmed(conn, data.name, target, proc)
        seconds = time.monotonic() - began
    stop(proc)
    if spy is not None:
        spy.wait(60)
    return seconds


def seed_leaderboard(conn: psycopg.Connection[Any], players: int, scores: int) -> None:
    """The seed's tables with `players` players and `scores` scores spread over them (the
    same data every run), and the seed's view as a Postgres materialized view."""
    conn.execute(SCHEMA)
    conn.execute(
        "INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(1, %s) g",
        (players,),
    )
    conn.execute(
        "INSERT INTO player_scores (player_id, score) SELECT 1 + (g::bigint * 7919) %% %s,"
        " ((g::bigint * 104729) %% 10000) / 100.0 FROM generate_series(1, %s) g",
        (players, scores),
    )
    conn.execute("VACUUM ANALYZE players, player_scores")
    conn.execute(VIEW)


def load(conn: psycopg.Connection[Any], txns: int, players: int, seed: int) -> Lsn:
    rng = random.Random(seed)
    max_score = conn.execute("SELECT max(id) FROM player_scores").fetchone()[0] or 1  # type: ignore[index]
    for _ in range(txns):
        r = rng.random()
        with conn.transaction():
            if r < 0.1:
                conn.execute(
                    "UPDATE player_scores SET score = %s WHERE id = %s",
                    (rng.randint(0, 10000) / 100, rng.randint(1, max_score)),
                )
            elif r < 0.2:
                conn.execute(
                    "DELETE FROM player_scores WHERE id = %s", (rng.randint(1, max_score),)
                )
            else:
                conn.execute(INSERT_SCORE, (rng.randint(1, players), rng.randint(0, 10000) / 100))
    target = lsn_of(conn, "SELECT pg_current_wal_insert_lsn()::text")
    assert target is not None
    return target


def refresh_concurrently(conn: psycopg.Connection[Any]) -> tuple[float, int]:
    """Seconds of one REFRESH ... CONCURRENTLY with its commit, and the rows it rewrote."""
    with conn.transaction():
        xid = conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0]  # type: ignore[index]
        began = time.perf_counter()
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY player_total_scores")
    seconds = time.perf_counter() - began
    rewritten = conn.execute(
        "SELECT count(*) FROM player_total_scores WHERE xmin = %s::xid", (xid,)
    ).fetchone()[0]  # type: ignore[index]
    return seconds, rewritten


def trigger_cost(conn: psycopg.Connection[Any], txns: int, players: int) -> dict[str, Any]:
    """The writer's µs per single-score INSERT transaction with the trigger and without it.

    TRIGGER_ROUNDS rounds, each the same values twice, trigger on and off back to back, in
    alternating order; the rows inserted with it off are deleted again (untimed) so the table
    stays equal to the view. Medians over the rounds; the extra cost is the median of each
    round's difference, so that load from elsewhere on the machine mostly cancels.
    """
    n = max(1, txns // TRIGGER_ROUNDS)
    us: dict[bool, list[float]] = {True: [], False: []}
    for r in range(-1, TRIGGER_ROUNDS):  # round -1 warms up (plans, caches), untimed
        rng = random.Random(1000 + r)
        values = [(rng.randint(1, players), rng.randint(0, 10000) / 100) for _ in range(n)]
        for on in (True, False) if r % 2 else (False, True):
            switch = "ENABLE" if on else "DISABLE"
            conn.execute(f"ALTER TABLE player_scores {switch} TRIGGER player_totals_scores")
            last = conn.execute("SELECT max(id) FROM player_scores").fetchone()[0]  # type: ignore[index]
            began = time.perf_counter()
            for v in values:
                conn.execute(INSERT_SCORE, v)
            if r >= 0:
                us[on].append((time.perf_counter() - began) / n * 1e6)
            if not on:
                conn.execute("DELETE FROM player_scores WHERE id > %s", (last,))
        conn.execute("ALTER TABLE player_scores ENABLE TRIGGER player_totals_scores")
    extra = [a - b for a, b in zip(us[True], us[False], strict=True)]
    return {
        "inserts_each_way": n * TRIGGER_ROUNDS,
        "rounds": TRIGGER_ROUNDS,
        "with_trigger_us_per_txn": round(statistics.median(us[True]), 1),
        "without_trigger_us_per_txn": round(statistics.median(us[False]), 1),
        "extra_us_per_txn": round(statistics.median(extra), 1),
        "extra_us_per_txn_by_round": [round(x, 1) for x in extra],
    }


def exercise_players(conn: psycopg.Connection[Any]) -> None:
    """Players come and go and a score moves: the trigger paths INSERTs don't take.

    The seed's player_id has two foreign keys, one ON DELETE CASCADE and one NO ACTION, and
    the NO ACTION one wins: a player is deleted only once their scores are.
    """
    new = [
        r[0]
        for r in conn.execute(
            "INSERT INTO players (name) SELECT 'late ' || g FROM generate_series(1, 3) g"
            " RETURNING id"
        ).fetchall()
    ]
    conn.execute(
        "INSERT INTO player_scores (player_id, score) SELECT p, s FROM unnest(%s::int[]) p,"
        " (VALUES (1.25), (40.5)) v(s)",
        (new[:2],),
    )
    conn.execute(
        "UPDATE player_scores SET player_id = %s, score = score + 1"
        " WHERE id = (SELECT min(id) FROM player_scores WHERE player_id = 3)",
        (new[1],),
    )
    for gone in (1, new[0]):
        conn.execute("DELETE FROM player_scores WHERE player_id = %s", (gone,))
        conn.execute("DELETE FROM players WHERE id = %s", (gone,))


def summary_differs(conn: psycopg.Connection[Any]) -> int:
    """Rows where player_totals and the (refreshed) view disagree, either way."""
    conn.execute("REFRESH MATERIALIZED VIEW player_total_scores")
    return conn.execute(
        "SELECT count(*) FROM player_total_scores v FULL JOIN player_totals t USING (player_id)"
        " WHERE v.total_score IS DISTINCT FROM t.total_score"
    ).fetchone()[0]  # type: ignore[index]


def costs_as(ms: float, us_per_txn: float) -> int:
    return round(ms * 1000 / us_per_txn)


def ratios(result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The comparisons, as numbers and as sentences."""
    store = result["catch_up_us_per_txn"]["views"]
    view = result["view_us_per_txn"]
    plain, conc = result["refresh_median_ms"], result["refresh_concurrently_median_ms"]
    trig = result["trigger"]["extra_us_per_txn"]
    numbers: dict[str, Any] = {
        "refresh_in_viewstore_txns": costs_as(plain, store),
        "refresh_concurrently_in_viewstore_txns": costs_as(conc, store),
        "viewstore_txn_over_trigger_extra": round(store / trig, 1) if trig > 0 else None,
        "view_part_over_trigger_extra": round(view / trig, 1) if trig > 0 else None,
    }
    said = [
        f"REFRESH MATERIALIZED VIEW ({plain:,} ms) costs as much as "
        f"{numbers['refresh_in_viewstore_txns']:,} viewstore transactions ({store} µs each)",
        f"REFRESH MATERIALIZED VIEW CONCURRENTLY ({conc:,} ms) costs as much as "
        f"{numbers['refresh_concurrently_in_viewstore_txns']:,} viewstore transactions",
    ]
    if trig > 0:
        said.append(
            f"viewstore's per-transaction cost ({store} µs, {view} µs of it the view; paid after"
            f" commit by a separate process) is {numbers['viewstore_txn_over_trigger_extra']}×"
            f" ({numbers['view_part_over_trigger_extra']}× for the view's part) the trigger's"
            f" extra INSERT cost ({trig} µs, paid by the writer inside its transaction:"
            f" {result['trigger']['without_trigger_us_per_txn']} →"
            f" {result['trigger']['with_trigger_us_per_txn']} µs per INSERT)"
        )
    else:
        said.append(f"the trigger's extra INSERT cost was lost in the noise ({trig} µs): no ratio")
    return numbers, said


def timed(fn: Any, n: int = 25) -> float:
    """Median milliseconds of `n` calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds: Postgres and files go


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        bench()
    finally:
        for proc in CHILDREN:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--players", type=int, default=1_000)
    ap.add_argument("--scores", type=int, default=1_000_000)
    ap.add_argument("--txns", type=int, default=20_000)
    ap.add_argument("--refreshes", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--profile", action="store_true", help="py-spy the views store's catch-up")
    args = ap.parse_args()
    if args.quick:
        args.players, args.scores = 20_000, 20_000
        args.txns = min(args.txns, 2_000)
    out = args.out or RESULTS / ("views_quick.json" if args.quick else "views.json")
    if args.profile:
        speedscope = out.with_suffix(".speedscope.json")
        PROFILE.extend(["py-spy", "record", "-r", "200", "-f", "speedscope", "-o", str(speedscope)])
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "players": args.players,
        "scores": args.scores,
        "transactions": args.txns,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-views-") as tmp,
        ThrowawayPostgres(settings=PG_SETTINGS) as pg,
    ):
        work = Path(tmp)
        views = work / "views.sql"
        views.write_text(VIEW)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            result["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            log(f"loading {args.players:,} players and {args.scores:,} scores")
            seed_leaderboard(conn, args.players, args.scores)
            conn.execute(UNIQUE_INDEX)
            conn.execute("CREATE PUBLICATION bench_pub FOR TABLE players, player_scores")

            refresh = []
            for _ in range(args.refreshes):
                t = time.perf_counter()
                conn.execute("REFRESH MATERIALIZED VIEW player_total_scores")
                refresh.append(time.perf_counter() - t)
            result["refresh_seconds"] = [round(x, 3) for x in refresh]
            result["refresh_median_ms"] = round(statistics.median(refresh) * 1000, 1)
            log(f"REFRESH MATERIALIZED VIEW: {result['refresh_median_ms']:,} ms (median)")

            # First starts: snapshot (and for `views`, join index + backfill of the view).
            built = {}
            for name, extra in (("views", ["--views", str(views)]), ("mirror", [])):
                data = work / name
                began = time.monotonic()
                proc = start_run(pg, data, *extra)
                wait_streaming(proc, data, 3600)
                built[name] = round(time.monotonic() - began, 2)
                stop(proc)
                log(f"{name}: snapshot{' + view build' if extra else ''} took {built[name]} s")
            result["first_start_seconds"] = built

            log(f"committing {args.txns:,} transactions with both stores stopped")
            target = load(conn, args.txns, args.players, seed=1)

            per_txn = {}
            for name in ("views", "mirror"):
                seconds = catch_up(pg, work / name, target, views if name == "views" else None)
                per_txn[name] = round(seconds / args.txns * 1e6, 1)
                log(f"{name}: {args.txns:,} txns in {seconds:.2f} s = {per_txn[name]} µs/txn")
            result["catch_up_us_per_txn"] = per_txn
            result["view_us_per_txn"] = round(per_txn["views"] - per_txn["mirror"], 1)
            result["txns_per_refresh"] = costs_as(result["refresh_median_ms"], per_txn["views"])

            # The matview is as of before the load: this diff is exactly viewstore's transactions.
            concurrently = [refresh_concurrently(conn)]
            log(
                f"REFRESH CONCURRENTLY after the same {args.txns:,} txns: "
                f"{concurrently[0][0] * 1000:,.1f} ms, {concurrently[0][1]:,} rows rewritten"
            )

            reader = viewstore.open(work / "views")
            top = reader.query("player_total_scores", order_by="total_score", desc=True, limit=10)
            pid = top[0]["player_id"]
            reads = {
                "top10_api_ms": timed(
                    lambda: reader.query(
                        "player_total_scores", order_by="total_score", desc=True, limit=10
                    )
                ),
                "point_api_ms": timed(
                    lambda: reader.query("player_total_scores", where={"player_id": pid})
                ),
            }
            with Store.open(work / "views", readonly=True) as store:
                info = find_view(store, "player_total_scores")
                reads["top10_open_store_ms"] = timed(
                    lambda: query_rows(store, info, order_by="total_score", desc=True, limit=10)
                )
                reads["point_open_store_ms"] = timed(
                    lambda: query_rows(store, info, where={"player_id": pid})
                )
            result["reads"] = reads
            log(f"reads: {reads}")

            conn.execute("REFRESH MATERIALIZED VIEW player_total_scores")
            want = {
                (r[0], r[1], str(r[2]))
                for r in conn.execute("SELECT * FROM player_total_scores").fetchall()
            }
            got = {
                (r["player_id"], r["name"], str(r["total_score"]))
                for r in reader.query("player_total_scores")
            }
            if got != want:
                raise SystemExit(
                    f"the view differs from Postgres: {len(want - got)} missing, "
                    f"{len(got - want)} extra"
                )
            result["view_rows"] = len(got)
            log(f"the view equals Postgres: {len(got):,} rows")

            conn.execute(TRIGGER_SQL)
            log("player_totals and its triggers created; from here on every write runs them")
            for i in range(1, args.refreshes):
                load(conn, args.txns, args.players, seed=1 + i)
                concurrently.append(refresh_concurrently(conn))
                log(
                    f"REFRESH CONCURRENTLY after {args.txns:,} more txns: "
                    f"{concurrently[-1][0] * 1000:,.1f} ms, {concurrently[-1][1]:,} rows rewritten"
                )
            result["refresh_concurrently_seconds"] = [round(x, 3) for x, _ in concurrently]
            result["refresh_concurrently_rows_rewritten"] = [n for _, n in concurrently]
            result["refresh_concurrently_median_ms"] = round(
                statistics.median(x for x, _ in concurrently) * 1000, 1
            )

            log(f"timing {args.txns:,} INSERT transactions with the trigger and without")
            result["trigger"] = trigger_cost(conn, args.txns, args.players)
            exercise_players(conn)
            differ = summary_differs(conn)
            if differ:
                raise SystemExit(f"player_totals differs from the view in {differ} rows")
            result["trigger"]["summary_equals_view"] = True
            log(
                f"trigger: {result['trigger']['without_trigger_us_per_txn']} → "
                f"{result['trigger']['with_trigger_us_per_txn']} µs per INSERT "
                f"(+{result['trigger']['extra_us_per_txn']} µs; by round "
                f"{result['trigger']['extra_us_per_txn_by_round']}); player_totals equals the view"
            )
    result["ratios"], said = ratios(result)
    result["ratios_stated"] = said
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(
        f"keeping the view current: {result['catch_up_us_per_txn']['views']} µs/txn "
        f"({result['view_us_per_txn']} µs of it the view); REFRESH: "
        f"{result['refresh_median_ms']:,} ms = {result['txns_per_refresh']:,} txns' worth. "
        f"Written to {out}"
    )
    for line in said:
        log(line)


if __name__ == "__main__":
    main()
