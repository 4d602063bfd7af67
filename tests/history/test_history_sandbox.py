"""User SQL over the history copy reads the history and nothing else (issue 19.3): `viewstore
history` and `Reader.history()` refuse COPY ... TO, reading other files, ATTACH, INSTALL/LOAD
and SET of the settings that forbid them, unless the caller opts in (`--allow-files`,
`allow_files=True`). Each refusal is checked against the same statement succeeding with the
opt-in, so the test fails if the sandbox is dropped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from helpers import pg_exec
from runner import PipelineThread, view_rows, wait_caught_up

import viewstore
from viewstore.store import historycopy


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "viewstore.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def data(dsn: str, tmp_path: Path) -> Path:
    pg_exec(dsn, "CREATE TABLE t (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO t SELECT i, i % 3, i FROM generate_series(1, 30) i")
    views = tmp_path / "views.sql"
    views.write_text("CREATE VIEW sums AS SELECT g, sum(v) AS total FROM t GROUP BY g;\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
        view_rows(data, "sums")
    historycopy.sync(data)
    return data


def _escapes(tmp: Path) -> dict[str, str]:
    secret = tmp / "secret.csv"
    secret.write_text("k,v\nsecret,42\n")
    other = tmp / "other.duckdb"
    duckdb.connect(str(other)).close()
    return {
        "copy_to": f"COPY (SELECT 42 AS x) TO '{tmp / 'out.csv'}'",
        "read_text": f"SELECT content FROM read_text('{secret}')",
        "read_csv": f"SELECT v FROM read_csv('{secret}')",
        "replacement_scan": f"SELECT v FROM '{secret}'",
        "glob": f"SELECT * FROM glob('{tmp}/*')",
        "attach": f"ATTACH '{other}' AS other (READ_ONLY)",
        "export": f"EXPORT DATABASE '{tmp / 'exported'}'",
        "install": "INSTALL httpfs",
        "load": f"LOAD '{tmp / 'x.duckdb_extension'}'",
    }


_UNLOCKS = [
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "SET allow_unsigned_extensions = true",
    "SET autoload_known_extensions = true",
]


def test_history_sql_cannot_reach_files_or_settings(data: Path, tmp_path: Path) -> None:
    tmp = tmp_path / "outside"
    tmp.mkdir()
    escapes = _escapes(tmp)
    applied = viewstore.open(data).applied_lsn()
    con = viewstore.open(data).history(sync=False)
    try:
        # The history itself, and viewstore's macros over it, still answer.
        as_of = f"SELECT g, total FROM sums_as_of(lsn('{applied}'))"
        assert sorted(con.execute(as_of).fetchall()) == [
            (0, 165.0),
            (1, 145.0),
            (2, 155.0),
        ]
        for name, sql in escapes.items():
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
                pytest.fail(f"{name} was allowed: {sql}")
        for sql in _UNLOCKS:
            with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
                con.execute(sql)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (
            False,
        )
    finally:
        con.close()
    assert sorted(p.name for p in tmp.iterdir()) == ["other.duckdb", "secret.csv"]

    # The opt-in: the same statements that read and write files now do.
    con = viewstore.open(data).history(sync=False, allow_files=True)
    try:
        con.execute(escapes["copy_to"])
        assert con.execute(escapes["read_text"]).fetchone() == ("k,v\nsecret,42\n",)
        assert con.execute(escapes["read_csv"]).fetchone() == (42,)
        assert con.execute(escapes["replacement_scan"]).fetchone() == (42,)
        con.execute(escapes["attach"])
    finally:
        con.close()
    assert (tmp / "out.csv").read_text() == "x\n42\n"


def test_cli_refuses_files_unless_allowed(data: Path, tmp_path: Path) -> None:
    out_csv = tmp_path / "export.csv"
    export = f"COPY (SELECT g, total FROM sums ORDER BY g) TO '{out_csv}'"
    out = _cli("history", "--data", str(data), "--no-sync", export)
    assert out.returncode == 1, out.stdout
    assert "Error: DuckDB: Permission Error" in out.stderr and "--allow-files" in out.stderr
    assert not out_csv.exists()
    out = _cli(
        "history", "--data", str(data), "--no-sync", "SELECT * FROM read_text('/etc/hostname')"
    )
    assert out.returncode == 1 and "Permission Error" in out.stderr
    out = _cli("history", "--data", str(data), "--no-sync", "SET enable_external_access = true")
    assert out.returncode == 1 and "locked" in out.stderr and "--allow-files" in out.stderr

    out = _cli("history", "--data", str(data), "--no-sync", "--allow-files", export)
    assert out.returncode == 0, out.stderr
    assert out_csv.read_text().splitlines() == ["g,total", "0,165", "1,145", "2,155"]
