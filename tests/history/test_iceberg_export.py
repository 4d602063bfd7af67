"""The history as Apache Iceberg tables (issue 15.4): `viewstore export` and `run --export`.

1. Against a real S3-compatible server (moto's, started here on loopback): a store fed random
   transactions by a real pipeline is exported by `viewstore export` processes that kill
   themselves with SIGKILL right after writing a commit's Parquet files and before the catalog
   commit, then after a commit; each run leaves exactly a prefix of the log, and the next one
   completes it: read back with pyiceberg's scan and with DuckDB over the committed Parquet
   files, each table equals the store's log row for row (numerics exact). More transactions
   are then exported incrementally, in commits whose LSN ranges follow on. Exports killed from
   outside at moments that follow the load leave a prefix too. The S3 secret and a
   catalog password appear in no output.
2. A synthetic store whose history spans several days: a one-day scan plans only that day's
   files (partition pruning), with that day's rows; a Postgres catalog; DuckDB's read_parquet.
3. `viewstore run --export` keeps the tables current while it ingests.
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import pg_exec
from psycopg.conninfo import make_conninfo
from runner import PipelineThread, kill9, start_process, view_rows, wait_caught_up

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import pack_fields
from viewstore.demo import SEED_SQL, VIEW_SQL
from viewstore.history import iceberg
from viewstore.history.changelog import changes, entries
from viewstore.history.duckdb_copy import _layout
from viewstore.history.iceberg import LSN_FROM, LSN_TO, Target, exported_lsn
from viewstore.ingest.lsn import Lsn
from viewstore.store import db as meta
from viewstore.store import lakeexport
from viewstore.store.db import Store
from viewstore.store.viewcatalog import ViewInfo, put_info, stored_views
from viewstore.views.schema import ColumnInfo

SECRET = "s3cr3t-Never-Printed-9f27"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "viewstore-test",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_REGION": "us-east-1",
}
VIEWS = (
    VIEW_SQL  # numeric without a precision: double + exact text
    + """
CREATE MATERIALIZED VIEW exact_totals AS
SELECT player_id, SUM(score)::numeric(14,2) AS total, count(*) AS n
FROM player_scores GROUP BY player_id;
CREATE MATERIALIZED VIEW dated AS SELECT id, day, at, flag FROM events;
"""
)
EVENTS = """
CREATE TABLE events (id int PRIMARY KEY, day date, at timestamptz, flag bool);
INSERT INTO events VALUES (1, '2024-02-29', '2024-02-29 12:00:00.5+02', true),
    (2, 'infinity', '-infinity', false), (3, NULL, NULL, NULL);
"""


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3-compatible server on loopback, with a bucket `lake`; its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket="lake")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def _export_cli(
    data: Path, *args: str, crash_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **S3_ENV}
    if crash_at:
        env["VIEWSTORE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", "export", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # NaN != NaN
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value


def _expected(store: Store, info: Any, until: int | None = None) -> list[tuple[Any, ...]]:
    """The view's log up to `until` as rows of its Iceberg table (the export's types)."""
    layout = _layout(info)

    def image(row: tuple[Any, ...] | None) -> list[Any]:
        out: list[Any] = []
        for col, v in zip(layout, row or (None,) * len(layout), strict=True):
            if col.duck.startswith("DECIMAL"):
                out.append(None if v is None or v.is_nan() else v)
            elif col.exact_text:
                out += [None, None] if v is None else [_norm(float(v)), format(v, "f")]
            elif col.duck in ("DATE", "TIMESTAMP", "TIMESTAMPTZ") and isinstance(v, str):
                out.append(None)  # ±infinity, which Iceberg cannot hold
            else:
                out.append(_norm(v))
        return out

    rows = []
    for c in changes(store, info.view_id, until=until):
        when = None if c.commit_time is None else datetime.fromtimestamp(0, UTC)
        if c.commit_time is not None:
            when = datetime.fromtimestamp(c.commit_time // 1_000_000, UTC).replace(
                microsecond=c.commit_time % 1_000_000
            )
        op = "initial" if c.xid is None else c.op
        head = [int(c.lsn), c.seq, when, c.xid, op, c.key]
        rows.append(tuple(head + image(c.after) + image(c.before)))
    return rows


def _rows(arrow: Any) -> list[tuple[Any, ...]]:
    """An Arrow table's rows in (lsn, seq) order, as comparable tuples."""
    arrow = arrow.sort_by([("lsn", "ascending"), ("seq", "ascending")])
    return [tuple(_norm(v) for v in row.values()) for row in arrow.to_pylist()]


def _duckdb_rows(table: Any, tmp: Path) -> list[tuple[Any, ...]]:
    """The table's rows read by DuckDB's Parquet reader from the data files of its current
    snapshot (copied from the warehouse: this DuckDB has no S3 extension), not by pyiceberg."""
    tmp.mkdir(parents=True, exist_ok=True)
    local = []
    for i, task in enumerate(table.scan().plan_files()):
        path = tmp / f"{i}.parquet"
        with table.io.new_input(task.file.file_path).open() as f:
            path.write_bytes(f.read())
        local.append(str(path))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return _rows(con.sql(f"SELECT * FROM read_parquet({local!r})").to_arrow_table())
    finally:
        con.close()


def _assert_tables_equal_log(
    data: Path, target: Target, tmp: Path, *, duck: bool = True, complete: bool = False
) -> dict[str, int]:
    """Each ready view's table equals its log up to the LSN the table's last commit recorded
    (`complete`: the whole log); returns that LSN per view."""
    catalog = target.catalog()
    reached = {}
    with Store.open(data, readonly=True) as store:
        for name, info in stored_views(store).items():
            if not catalog.table_exists((target.namespace, name)):
                assert not complete, f"no table for view {name}"
                continue  # an export killed before it reached the view
            table = catalog.load_table((target.namespace, name))
            upto = exported_lsn(table)
            assert upto is not None, name
            want = _expected(store, info, None if complete else upto)
            got = _rows(table.scan().to_arrow())
            assert len(got) == len(want), (name, len(got), len(want))
            assert got == want, name
            if duck:
                assert _duckdb_rows(table, tmp / name) == want, name
            reached[name] = upto
    return reached


def _random_transactions(dsn: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        statements = []
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            player = rng.randint(1, 12)
            if kind < 0.6:
                score = Decimal(rng.randint(-500, 99_999)) / 100
                statements.append(
                    f"INSERT INTO player_scores (player_id, score) VALUES ({player}, {score})"
                )
            elif kind < 0.8:
                statements.append(
                    "UPDATE player_scores SET score = score + 1.01 WHERE id = "
                    f"(SELECT min(id) FROM player_scores WHERE player_id = {player})"
                )
            elif kind < 0.9:
                statements.append(
                    "DELETE FROM player_scores WHERE id = "
                    f"(SELECT max(id) FROM player_scores WHERE player_id = {player})"
                )
            else:
                statements.append(
                    f"UPDATE events SET at = now(), flag = NOT coalesce(flag, false) "
                    f"WHERE id = {rng.randint(1, 3)}"
                )
        pg_exec(dsn, "; ".join(statements))


def _seed(dsn: str, tmp: Path) -> Path:
    for statement in SEED_SQL:
        pg_exec(dsn, statement)
    pg_exec(dsn, "INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(6, 12) g")
    pg_exec(dsn, EVENTS)
    views = tmp / "views.sql"
    views.write_text(VIEWS)
    return views


# --------------------------------------------------------------------------- 1. S3, kills


def test_export_to_s3_exactly_once_across_kill9_then_incremental(
    dsn: str, s3: str, tmp_path: Path
) -> None:
    views = _seed(dsn, tmp_path)
    data = tmp_path / "data"
    args = ["--to", "s3://lake/wh", "--s3-endpoint", s3, "--commit-rows", "60"]
    args += ["--batch-rows", "30"]
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        for name in ("player_total_scores", "exact_totals", "dated"):
            view_rows(data, name)
        _random_transactions(dsn, 120, seed=1)
        wait_caught_up(dsn, data, alive=p.check)
    with Store.open(data, readonly=True) as store:
        applied = int(store.applied_lsn())
        total = {n: len(list(changes(store, i.view_id))) for n, i in stored_views(store).items()}
    assert total["player_total_scores"] > 200, total
    old = os.environ.copy()
    os.environ.update(S3_ENV)  # the test's own reads of the warehouse
    try:
        target = lakeexport.target(data, "s3://lake/wh", s3_endpoint=s3)
    finally:
        os.environ.clear()
        os.environ.update(old)

    # Killed with its second commit's Parquet files written, not committed: only the first
    # commit (of the first view) is there, and the files written after it are in no snapshot.
    # (Views go in name order: dated's one commit, exact_totals' first, then the kill.)
    killed = _export_cli(data, *args, crash_at="export-before-commit:3")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    catalog = target.catalog()
    partial = catalog.load_table(("viewstore", "exact_totals"))
    reached = exported_lsn(partial)
    assert reached is not None and 0 < reached < applied
    _assert_tables_equal_log(data, target, tmp_path / "duck0", duck=False)
    assert len(partial.snapshots()) == 1
    assert partial.current_snapshot().summary[LSN_FROM] == "0"
    written = _parquet_objects(s3, "wh/viewstore/exact_totals/")
    committed = {t.file.file_path for t in partial.scan().plan_files()}
    assert committed < written, "the killed commit wrote no files"
    # Killed right after a later commit: nothing to redo, nothing lost.
    killed = _export_cli(data, *args, crash_at="export-after-commit:3")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    _assert_tables_equal_log(data, target, tmp_path / "duck1", duck=False)

    # Killed from outside, at moments that follow the load (writing files, inside a catalog
    # commit, ...), in commits of 10 changes: each time a prefix of the log, at least once
    # partway through.
    small = [*args[:4], "--commit-rows", "10", "--batch-rows", "10"]
    before = _assert_tables_equal_log(data, target, tmp_path / "duck1", duck=False)
    delay, partway = 1.5, 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-m", "viewstore.cli", "export", "--data", str(data), *small],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **S3_ENV},
        )
        time.sleep(delay)
        kill9(proc)
        now = _assert_tables_equal_log(data, target, tmp_path / "duck1", duck=False)
        if now == before:
            delay += 0.5  # killed before its first commit
        elif set(now.values()) == {applied} and len(now) == len(total):
            break
        else:
            partway += 1
            break
        before = now
    assert partway, f"never killed partway (last delay {delay} s)"

    done = _export_cli(data, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"exported up to {Lsn(applied)}" in done.stdout
    reached_all = _assert_tables_equal_log(data, target, tmp_path / "duck2", complete=True)
    assert set(reached_all.values()) == {applied}
    for name, n in total.items():
        table = catalog.load_table(("viewstore", name))
        assert len(table.scan().to_arrow()) == n
        # The commits' LSN ranges follow on from 0 to the applied LSN, without gap or overlap.
        ranges = [(int(s.summary[LSN_FROM]), int(s.summary[LSN_TO])) for s in table.snapshots()]
        assert ranges[0][0] == 0 and ranges[-1][1] == applied, ranges
        assert all(a[1] == b[0] for a, b in pairwise(ranges)), ranges

    # A second export with nothing new commits nothing; after more transactions, it appends
    # only them.
    again = lakeexport.export(data, target, commit_rows=60, batch_rows=30)
    assert again.rows == 0 and not any(again.commits.values()), again
    with PipelineThread(dsn, data, views_file=views) as p:
        _random_transactions(dsn, 40, seed=2)
        wait_caught_up(dsn, data, alive=p.check)
    more = lakeexport.export(data, target, commit_rows=60, batch_rows=30)
    assert more.rows > 0, more
    after = _assert_tables_equal_log(data, target, tmp_path / "duck3", complete=True)
    assert min(after.values()) > applied
    table = catalog.load_table(("viewstore", "player_total_scores"))
    assert [int(s.summary[LSN_FROM]) for s in table.snapshots()].count(applied) == 1

    # Secrets: in no output, not even that of a failure that names the endpoint.
    bad = _export_cli(data, "--to", "s3://lake/wh", "--s3-endpoint", "http://127.0.0.1:9")
    bad_catalog = _export_cli(
        data, *args[:4], "--catalog", "postgresql://u:hunter2-Secret@127.0.0.1:9/db"
    )
    for run in (killed, done, bad, bad_catalog):
        assert SECRET not in run.stdout + run.stderr
    assert bad.returncode == 1 and "Error: " in bad.stderr, bad.stderr
    assert bad_catalog.returncode == 1 and "hunter2-Secret" not in bad_catalog.stderr
    assert "port 9 failed" in bad_catalog.stderr, bad_catalog.stderr


def _parquet_objects(endpoint: str, prefix: str) -> set[str]:
    """s3:// paths of the Parquet files under `prefix` in the bucket, committed or not."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    listing = client.list_objects_v2(Bucket="lake", Prefix=prefix)
    return {
        f"s3://lake/{o['Key']}"
        for o in listing.get("Contents", [])
        if o["Key"].endswith(".parquet")
    }


# --------------------------------------------------------------------------- 2. pruning

DAY_US = 86_400_000_000
T0 = 1_798_761_600_000_000  # 2027-01-01 UTC


def _synthetic_store(data: Path, keys: int, txns: int, days: int, first: bool = True) -> None:
    """A store with one view (player_id, name, total) whose history is written directly: its
    rows at the build LSN, then `txns` one-change transactions over `days` days of commit
    time (continuing where the last call ended)."""
    info = ViewInfo(
        name="board",
        view_id=1,
        sql="SELECT 1",
        fingerprint="synthetic (test_iceberg_export)",
        state="ready",
        columns=[
            ColumnInfo(name="player_id", type_oid=23),
            ColumnInfo(name="name", type_oid=25),
            ColumnInfo(name="total", type_oid=1700),
        ],
        key_columns=[0],
        sort_columns=[],
        aggregate=True,
        built_at=str(Lsn(0x1000)),
        typmods={"total": [12, 2]},
    )
    with Store.open(data) as store:
        hcf = store.cf["history"]
        batch = store.new_batch()
        applied = int(store.applied_lsn())
        start = applied if not first else 0x1000
        if first:
            for k in range(keys):
                row = pack_fields([k, f"p{k}", Decimal(k)])
                for key, value in entries(1, 0x1000, k, encode_key([k]), None, row, None, None):
                    batch.put(key, value, hcf)
        span = days * DAY_US // txns
        done = (start - 0x1000) // 0x100
        for i in range(done + 1, done + txns + 1):
            k = i % keys
            lsn = 0x1000 + i * 0x100
            before = pack_fields([k, f"p{k}", Decimal(k + i - keys)])
            row = pack_fields([k, f"p{k}", Decimal(k + i) / 100])
            when = T0 + (i - 1) * span
            for key, value in entries(1, lsn, 0, encode_key([k]), before, row, when, 1000 + i):
                batch.put(key, value, hcf)
        put_info(batch, store, info)
        meta.put_applied(batch, store, Lsn(0x1000 + (done + txns) * 0x100), None)
        store.write(batch, sync=True)


def test_time_range_scans_prune_files_and_a_postgres_catalog(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    data = tmp_path / "data"
    _synthetic_store(data, keys=50, txns=500, days=5)
    pg_exec(dsn, "CREATE SCHEMA lake")
    catalog = make_conninfo(dsn, options="-csearch_path=lake")
    target = lakeexport.target(data, str(tmp_path / "wh"), catalog=catalog)
    assert target.catalog_uri.startswith("postgresql+psycopg://")
    result = lakeexport.export(data, target)
    assert result.appended == {"board": 550} and result.commits == {"board": 1}
    table = target.catalog().load_table(("viewstore", "board"))
    files = list(table.scan().plan_files())
    assert len(files) == 6  # five days, and the initial rows' NULL commit time

    day2 = datetime.fromtimestamp((T0 + 2 * DAY_US) / 1e6, UTC)
    day3 = datetime.fromtimestamp((T0 + 3 * DAY_US) / 1e6, UTC)
    one_day = And(
        GreaterThanOrEqual("commit_time", day2.isoformat()),
        LessThan("commit_time", day3.isoformat()),
    )
    scan = table.scan(row_filter=one_day)
    assert len(list(scan.plan_files())) == 1  # the other five files are never opened
    with Store.open(data, readonly=True) as store:
        want = [
            r
            for r in _expected(store, stored_views(store)["board"])
            if r[2] and day2 <= r[2] < day3
        ]
    assert len(want) == 100 and _rows(scan.to_arrow()) == want

    # Incremental, on the local warehouse: DuckDB's read_parquet over the committed files.
    _synthetic_store(data, keys=50, txns=100, days=1, first=False)
    more = lakeexport.export(data, target)
    assert more.appended == {"board": 100}
    _assert_tables_equal_log(data, target, tmp_path / "duck")
    paths = [t.file.file_path.removeprefix("file://") for t in table.refresh().scan().plan_files()]
    con = duckdb.connect()
    [(count, total)] = con.execute(
        f"SELECT count(*), sum(total) FROM read_parquet({paths!r}) WHERE op <> 'initial'"
    ).fetchall()
    assert count == 600 and isinstance(total, Decimal)

    # The lake's maintenance rewrites the files (a snapshot without viewstore's summary) and
    # expires every older snapshot: the next export still goes on from where it was.
    table.refresh().overwrite(table.scan().to_arrow())
    table.refresh()
    current = table.current_snapshot().snapshot_id
    old = [x.snapshot_id for x in table.snapshots() if x.snapshot_id != current]
    table.maintenance.expire_snapshots().by_ids(old).commit()
    assert LSN_TO not in (table.refresh().current_snapshot().summary or {}).additional_properties
    _synthetic_store(data, keys=50, txns=20, days=1, first=False)
    assert lakeexport.export(data, target).appended == {"board": 20}
    _assert_tables_equal_log(data, target, tmp_path / "duck2", complete=True)

    # Snapshots do not pile up: past _EXPIRE_AT, all but the newest _KEEP_SNAPSHOTS go.
    monkeypatch.setattr(iceberg, "_EXPIRE_AT", 4)
    monkeypatch.setattr(iceberg, "_KEEP_SNAPSHOTS", 2)
    counts = []
    for _ in range(4):
        _synthetic_store(data, keys=50, txns=5, days=1, first=False)
        lakeexport.export(data, target)
        counts.append(len(table.refresh().snapshots()))
    assert max(counts) < 4 and counts[-1] == 2, counts
    _assert_tables_equal_log(data, target, tmp_path / "duck3", complete=True)


# --------------------------------------------------------------------------- 3. run --export


def test_run_export_keeps_the_tables_current(dsn: str, tmp_path: Path) -> None:
    views = _seed(dsn, tmp_path)
    data = tmp_path / "data"
    wh = tmp_path / "wh"
    proc = start_process(
        dsn, data, "--views", str(views), "--export", str(wh), "--export-interval", "0.5"
    )
    try:
        wait_caught_up(dsn, data)
        _random_transactions(dsn, 30, seed=3)
        applied = wait_caught_up(dsn, data)
        target = lakeexport.target(data, str(wh))
        names = ("dated", "exact_totals", "player_total_scores")
        deadline = time.monotonic() + 60
        while not _exported_up_to(target, names, int(applied)):  # while it runs
            assert proc.poll() is None, data.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, data.with_suffix(".log").read_text()
            time.sleep(0.2)
        _random_transactions(dsn, 10, seed=4)
        wait_caught_up(dsn, data)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            kill9(proc)
    # The last export ran at the stop: the tables hold the whole log.
    _assert_tables_equal_log(data, target, tmp_path / "duck", duck=False, complete=True)


def _exported_up_to(target: Target, names: tuple[str, ...], lsn: int) -> bool:
    catalog = target.catalog()
    for name in names:
        if not catalog.table_exists((target.namespace, name)):
            return False
        if (exported_lsn(catalog.load_table((target.namespace, name))) or 0) < lsn:
            return False
    return True
