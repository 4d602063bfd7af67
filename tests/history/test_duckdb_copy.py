"""The DuckDB copy of the history: value types, view changes, the CLI and the Python API.
(Kills and exactly-once are in test_history_crash.py, the leaderboard SQL in
test_leaderboard_sql.py.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from helpers import pg_exec, pg_query
from runner import PipelineThread, view_rows, wait_caught_up

import viewstore
from viewstore.errors import ConfigError
from viewstore.history import changecolumns, duckdb_copy
from viewstore.store import historycopy
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views

TYPED = """
CREATE TABLE typed (
    id int PRIMARY KEY, b bool, s smallint, big bigint, f4 real, f8 double precision,
    n numeric, t text, d date, ts timestamp, tz timestamptz, u uuid, j jsonb, arr int[],
    raw bytea
);
INSERT INTO typed VALUES
    (1, true, 1, 9007199254740993, 1.5, 2.25, 12345678901234567890.5, 'a''b', '2024-02-29',
     '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '{"k": [1, 2]}', '{1,2,3}', '\\x00ff'),
    (2, false, -1, -5, 'NaN', 'Infinity', 'NaN', '', 'infinity', '-infinity', 'infinity', NULL,
     'null', '{}', '\\x'),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""
COLUMNS = "id, b, s, big, f4, f8, n, t, d, ts, tz, u, j, arr, raw"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_values_of_every_type_arrive_intact(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, TYPED)
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE VIEW typed_v AS SELECT {COLUMNS} FROM typed;\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "typed_v")
        pg_exec(dsn, "UPDATE typed SET t = 'changed', n = -0.001 WHERE id = 1")
        pg_exec(dsn, "DELETE FROM typed WHERE id = 3")
        wait_caught_up(dsn, data, alive=p.check)
    con = viewstore.open(data).history()
    try:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'typed_v'"
            ).fetchall()
        )
        assert types["b"] == "BOOLEAN" and types["big"] == "BIGINT" and types["n"] == "DOUBLE"
        assert types["d"] == "DATE" and types["tz"] == "TIMESTAMP WITH TIME ZONE"
        assert types["before_t"] == "VARCHAR" and types["lsn"] == "UBIGINT"
        ops = con.execute(
            "SELECT op, coalesce(id, before_id), t, before_t, n, before_n FROM typed_v "
            "ORDER BY lsn, seq"
        ).fetchall()
        assert [o[:2] for o in ops] == [
            ("initial", 1),
            ("initial", 2),
            ("initial", 3),
            ("update", 1),
            ("delete", 3),
        ]
        assert ops[3][2:] == ("changed", "a'b", -0.001, 12345678901234567890.5)
        assert ops[4][2:] == (None, None, None, None)

        rows = {
            r[0]: r
            for r in con.execute(
                f"SELECT {COLUMNS}, isinf(d), isinf(ts), isinf(tz), ts::VARCHAR "
                "FROM typed_v_as_of((SELECT synced_lsn FROM viewstore_sync))"
            ).fetchall()
        }
        assert sorted(rows) == [1, 2]
        one, two = rows[1], rows[2]
        assert one[1:4] == (True, 1, 9007199254740993)
        assert (one[4], one[5], one[6], one[7]) == (1.5, 2.25, -0.001, "changed")
        assert one[8] == date(2024, 2, 29)
        assert one[9] == datetime(2024, 2, 29, 12, 34, 56, 789000)
        assert one[10] == datetime(2024, 2, 29, 10, 34, 56, 789000, tzinfo=UTC)
        assert str(one[11]) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        assert json.loads(one[12]) == {"k": [1, 2]}
        assert one[13] == "{1,2,3}" and one[14] == b"\x00\xff"
        assert two[1:4] == (False, -1, -5)
        assert math.isnan(two[4]) and two[5] == math.inf and math.isnan(two[6])
        assert two[7] == "" and two[11] is None and two[13] == "{}" and two[14] == b""
        assert two[15:] == (True, True, True, "-infinity")  # ±infinity dates and timestamps
    finally:
        con.close()


def _store_with_views(dsn: str, tmp_path: Path, views_sql: str) -> tuple[Path, Path]:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 3, i FROM generate_series(1, 30) i")
    views = tmp_path / "views.sql"
    views.write_text(views_sql)
    return tmp_path / "data", views


def test_views_dropped_and_rebuilt_follow_the_store(dsn: str, tmp_path: Path) -> None:
    data, views = _store_with_views(
        dsn,
        tmp_path,
        "CREATE VIEW sums AS SELECT g, sum(v) AS total FROM t GROUP BY g;\n"
        "CREATE VIEW evens AS SELECT id, v FROM t WHERE v % 2 = 0;\n",
    )
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "evens")
        pg_exec(dsn, "UPDATE t SET v = v + 1 WHERE id <= 10")
        wait_caught_up(dsn, data, alive=p.check)
    first = historycopy.sync(data)
    assert first.appended["sums"] == 3 + 3 and first.appended["evens"] > 15
    assert historycopy.sync(data).rows == 0  # nothing new: nothing appended twice

    # `sums` changes its SQL (rebuilt from the mirror), `evens` goes away.
    views.write_text(
        "CREATE VIEW sums AS SELECT g, sum(v) AS total, count(*) AS n FROM t GROUP BY g;\n"
    )
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "sums")
    second = historycopy.sync(data)
    assert second.appended == {"sums": 3}
    con = historycopy.connect(data, sync_first=False)
    try:
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert "evens" not in tables and "sums" in tables
        assert con.execute("SELECT op, count(*) FROM sums GROUP BY op").fetchall() == [
            ("initial", 3)
        ]
        assert con.execute("SELECT sum(n)::INT FROM sums").fetchone() == (30,)
        with pytest.raises(duckdb.Error):
            con.execute("SELECT * FROM evens_as_of(0)")  # its macros went with it
    finally:
        con.close()


def test_cli_and_errors(dsn: str, tmp_path: Path) -> None:
    data, views = _store_with_views(
        dsn, tmp_path, "CREATE VIEW sums AS SELECT g, sum(v) AS total FROM t GROUP BY g;\n"
    )
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "sums")
        pg_exec(dsn, "INSERT INTO t VALUES (100, 0, 1000)")
        wait_caught_up(dsn, data, alive=p.check)
        # While `run` is running, from another process.
        out = _cli("history", "--data", str(data))
        assert out.returncode == 0, out.stderr
        assert "sums: 4 new changes" in out.stdout and "history copy synced to" in out.stdout
        lsn = pg_query(dsn, "SELECT pg_current_wal_lsn()::text")[0][0]
    out = _cli(
        "history",
        "--data",
        str(data),
        "--format",
        "json",
        "SELECT op, g, total, before_total FROM sums WHERE op = 'update'",
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"op": "update", "g": 0, "total": 1165.0, "before_total": 165.0}
    ]
    sql = tmp_path / "macros.sql"
    sql.write_text(
        "CREATE OR REPLACE TEMP MACRO top_group(x) AS TABLE "
        "SELECT g FROM sums_as_of(x) ORDER BY total DESC LIMIT 1;\n"
    )
    applied = str(viewstore.open(data).applied_lsn())
    out = _cli(
        "history",
        "--data",
        str(data),
        "-f",
        str(sql),
        "--format",
        "csv",
        f"SELECT * FROM top_group(lsn('{applied}'))",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["g", "0"]

    out = _cli("history", "--data", str(data), "SELECT * FROM nosuch")
    assert out.returncode == 1 and "Error: DuckDB: Catalog Error" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli("history", "--data", str(data), f"SELECT * FROM sums_as_of(lsn('{lsn}') + 1000000)")
    assert out.returncode == 1 and "the history copy of sums reaches only" in out.stderr
    out = _cli("history", "--data", str(data), "SELECT * FROM sums_as_of(1)")
    assert out.returncode == 1 and "the history of sums starts at" in out.stderr
    out = _cli("history", "--data", str(tmp_path / "nothing"), "SELECT 1")
    assert out.returncode == 1 and "no viewstore data in" in out.stderr

    # A copy held open elsewhere: a clear error (after a wait, if another process holds it).
    con = viewstore.open(data).history(sync=False)
    try:
        with pytest.raises(ConfigError, match="already open in this process"):
            historycopy.sync(data, wait=0.5)
    finally:
        con.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
            "read_only=True); print('open', flush=True); time.sleep(60)",
            str(duckdb_copy.copy_path(data)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(ConfigError, match="is open in another process"):
            historycopy.sync(data, wait=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert historycopy.sync(data).rows == 0


def test_python_changes_api(dsn: str, tmp_path: Path) -> None:
    data, views = _store_with_views(
        dsn, tmp_path, "CREATE VIEW sums AS SELECT g, sum(v) AS total FROM t GROUP BY g;\n"
    )
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "sums")
        vs = viewstore.open(data)
        built = vs.applied_lsn()
        pg_exec(dsn, "INSERT INTO t VALUES (100, 7, 1)")
        pg_exec(dsn, "DELETE FROM t WHERE g = 7")
        wait_caught_up(dsn, data, alive=p.check)
    every = vs.changes("sums")
    assert [c["op"] for c in every] == ["initial"] * 3 + ["insert", "delete"]
    later = vs.changes("sums", since=built)
    assert later == every[3:]
    assert later[0]["after"] == {"g": 7, "total": 1} and later[0]["before"] is None
    assert later[1]["before"] == {"g": 7, "total": 1} and later[1]["after"] is None
    assert later[0]["lsn"] < later[1]["lsn"] and later[0]["commit_time"].tzinfo is not None
    assert vs.changes("sums", since=str(later[0]["lsn"]), until=later[1]["lsn"]) == later[1:]
    assert vs.changes("sums", limit=2) == every[:2]
    with pytest.raises(ConfigError, match="unknown view"):
        vs.changes("nope")


NUMERIC_VIEWS = """
CREATE VIEW money AS SELECT g, sum(amount)::numeric(24,2) AS total, sum(amount) AS plain,
    sum(amount)::numeric(50,5) AS wide, count(*) AS n FROM ledger GROUP BY g;
"""


def test_numeric_columns_are_exact(dsn: str, tmp_path: Path) -> None:
    # Sums past a double's 15-17 digits, a tiny amount that str(Decimal) writes with an
    # exponent, and a NaN; the copy must hold each exactly (issue 15).
    pg_exec(dsn, "CREATE TABLE ledger (id int PRIMARY KEY, g int, amount numeric)")
    pg_exec(
        dsn,
        "INSERT INTO ledger VALUES (1, 1, 12345678901234567.89), (2, 1, 0.01), "
        "(3, 2, 0.00000001), (4, 3, 'NaN'), (5, 4, -98765432109876543210.12), "
        "(6, 5, 0.00000001), (7, 5, 0E-20)",
    )
    views = tmp_path / "views.sql"
    views.write_text(NUMERIC_VIEWS)
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "money")
        for i in range(8, 40):  # updates, so that the history has before images too
            pg_exec(dsn, "INSERT INTO ledger VALUES (%s, %s, %s)", i, i % 4 + 1, f"{i}.0{i % 7}")
        wait_caught_up(dsn, data, alive=p.check)
    want = {
        r[0]: r[1:]
        for r in pg_query(
            dsn,
            "SELECT g, sum(amount)::numeric(24,2), sum(amount), sum(amount)::numeric(50,5) "
            "FROM ledger GROUP BY g",
        )
    }
    con = viewstore.open(data).history()
    try:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'money'"
            ).fetchall()
        )
        assert types["total"] == "DECIMAL(24,2)" and types["before_total"] == "DECIMAL(24,2)"
        assert types["plain"] == "DOUBLE" and types["plain_text"] == "VARCHAR"
        assert types["wide"] == "DOUBLE" and types["before_wide_text"] == "VARCHAR"
        assert "total_text" not in types
        got = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT g, total, plain_text, wide_text, plain FROM "
                "money_as_of((SELECT synced_lsn FROM viewstore_sync))"
            ).fetchall()
        }
        assert sorted(got) == sorted(want)
        for g, (total, plain, wide) in want.items():
            if plain.is_nan():  # DECIMAL has no NaN: NULL there, 'NaN' in the exact text
                assert got[g][0] is None and got[g][1] == "NaN" and math.isnan(got[g][3])
                continue
            assert got[g][0] == total, g
            assert got[g][1] == format(plain, "f") and Decimal(got[g][2]) == wide, g
            assert "E" not in got[g][1] + got[g][2], "exact text is in plain notation"
        # Before images are exact too: each update's before is the previous change's after.
        pairs = con.execute(
            "SELECT before_total, before_plain_text, lag(total) OVER w, lag(plain_text) OVER w "
            "FROM money WINDOW w AS (PARTITION BY row_key ORDER BY lsn, seq) "
            "QUALIFY op = 'update'"
        ).fetchall()
        assert len(pairs) >= 30
        assert all(p[0] == p[2] and p[1] == p[3] for p in pairs)
    finally:
        con.close()


def test_columnar_decode_equals_the_per_entry_decode(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every type, chunks far smaller than the history (so chunk ends fall between and inside
    # multi-row transactions): the columnar tables equal the entry-by-entry ones row for row.
    pg_exec(dsn, TYPED)
    pg_exec(dsn, "CREATE TABLE ledger (id int PRIMARY KEY, g int, amount numeric)")
    views = tmp_path / "views.sql"
    views.write_text(
        f"CREATE VIEW typed_v AS SELECT {COLUMNS} FROM typed;\n"
        "CREATE VIEW typed_narrow AS SELECT id, b, s, big, f4, f8, n, t, d, ts, tz, raw "
        "FROM typed;\n" + NUMERIC_VIEWS
    )
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "money")
        for i in range(1, 30):
            pg_exec(
                dsn,
                "INSERT INTO ledger SELECT %s * 10 + j, j %% 3, j * 1.5 FROM generate_series(0, 4) j",
                i,
            )
            pg_exec(dsn, "UPDATE typed SET n = n + 1, t = t || 'x', f8 = f8 * 2 WHERE id <> 3")
        pg_exec(dsn, "DELETE FROM typed WHERE id = 2")
        wait_caught_up(dsn, data, alive=p.check)

    def tables(store: Store, name: str) -> list[dict[str, object]]:
        info = stored_views(store)[name]
        rows = []
        for chunk in duckdb_copy._chunks(store, info, -1, int(store.applied_lsn()), 7):
            chunk = chunk.set_column(4, "op", chunk.column("op").cast("string"))
            rows += chunk.to_pylist()
        return rows

    with Store.open(data, readonly=True) as store:
        for name in ("typed_v", "typed_narrow", "money"):
            columnar = tables(store, name)
            with monkeypatch.context() as m:
                m.setattr(changecolumns, "_columnar", lambda *a: None)
                per_entry = tables(store, name)
            # repr: NaN equals NaN
            diff = [(a, b) for a, b in zip(columnar, per_entry, strict=True) if repr(a) != repr(b)]
            assert len(columnar) > 20 and not diff, (
                name,
                [(k, a[k], b[k]) for a, b in diff[:2] for k in a if a[k] != b[k]],
            )
            lsns = [(r["lsn"], r["seq"]) for r in columnar]
            assert lsns == sorted(set(lsns)), "key order, each change once"
    # The narrow view and the numbers decode a column at a time (the whole history as one
    # chunk); the view with JSON and UUID columns goes entry by entry.
    with Store.open(data, readonly=True) as store:
        infos = stored_views(store)
        for name, columnar_ok in (("typed_narrow", True), ("money", True), ("typed_v", False)):
            info = infos[name]
            wires = [c.wire for c in duckdb_copy._layout(info)]
            table = changecolumns._columnar(*_whole_log(store, info.view_id), wires)
            assert (table is not None) == columnar_ok, name


def _whole_log(store: Store, view_id: int) -> tuple[object, object, list[bytes]]:
    from viewstore.codecs.key import prefix_end
    from viewstore.history.keys import change_key_columns, change_prefix

    low = change_prefix(view_id)
    keys = store.history_range(low, prefix_end(low))
    values = store.history_range(low, prefix_end(low), values=True)
    lsn, seq = change_key_columns(b"".join(keys))
    return lsn, seq, values
