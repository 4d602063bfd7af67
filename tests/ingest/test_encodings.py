"""Databases not in UTF-8 (issue 18, item 8). A LATIN1 database's text is converted by Postgres,
since viewstore's connections ask for UTF8. A SQL_ASCII database declares no encoding: its
bytes are whatever clients stored, and Postgres would refuse to send bytes that are not UTF-8
as UTF8. viewstore reads them raw and decodes them as UTF8 unless `--source-encoding` says
otherwise; a value that is not valid stops the store with an error naming the table, the
column and where it was read, whose hint, followed literally, rebuilds a store equal to
Postgres (read in that encoding). Both the snapshot's COPY and the stream are covered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import drop_test_database, pg_exec, unique_name
from psycopg import sql
from psycopg.conninfo import make_conninfo
from runner import (
    PipelineThread,
    assert_mirror_equals,
    assert_row_count,
    assert_view_equals,
    run_following_hints,
    wait_caught_up,
)

from viewstore.errors import ConfigError, UnsupportedError
from viewstore.ingest.psqlcopy import find_psql
from viewstore.store.db import Store
from viewstore.store.verify import verify

SCHEMA = "CREATE TABLE t (id int PRIMARY KEY, name text, tag varchar(10), v int)"
# length() counts bytes in SQL_ASCII, characters in LATIN1: each read must agree with Postgres.
VIEW_SQL = (
    "SELECT name, count(*) AS n, sum(v) AS s, max(tag) AS top, min(length(name)) AS len "
    "FROM t GROUP BY name"
)
VIEWS = f"CREATE MATERIALIZED VIEW by_name AS {VIEW_SQL};\n"


class Db:
    """A database in `encoding`: `dsn` for viewstore and the helpers (client_encoding UTF8,
    as viewstore pins it), `latin1` for a client that writes and reads LATIN1."""

    def __init__(self, admin_dsn: str, encoding: str) -> None:
        self.name = unique_name("test_")
        pg_exec(
            admin_dsn,
            sql.SQL(
                "CREATE DATABASE {} ENCODING {} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
            ).format(sql.Identifier(self.name), sql.Literal(encoding)),
        )
        self.dsn = make_conninfo(admin_dsn, dbname=self.name, client_encoding="UTF8")
        self.latin1 = make_conninfo(admin_dsn, dbname=self.name, client_encoding="LATIN1")


@pytest.fixture
def make_db(pg_server) -> Iterator:  # type: ignore[no-untyped-def,type-arg]
    made: list[Db] = []

    def make(encoding: str) -> Db:
        made.append(Db(pg_server.dsn, encoding))
        return made[-1]

    yield make
    for db in made:
        drop_test_database(pg_server.dsn, db.name)


def _config(tmp_path: Path) -> dict[str, object]:
    views = tmp_path / "views.sql"
    views.write_text(VIEWS)
    return {"views_file": views}


def _equal(read_dsn: str, dsn: str, data: Path) -> None:
    """Mirror, row count and view equal Postgres, read by a client in `read_dsn`'s encoding."""
    assert_mirror_equals(read_dsn, data, "t")
    assert_row_count(dsn, data, "t")
    assert_view_equals(read_dsn, data, "by_name", VIEW_SQL)


def _insert(dsn: str, rows: list[tuple[int, str, str, int]]) -> None:
    for row in rows:  # one transaction each
        pg_exec(dsn, "INSERT INTO t VALUES (%s, %s, %s, %s)", *row)


def test_latin1_database_is_converted_by_postgres(make_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = make_db("LATIN1")
    pg_exec(db.dsn, SCHEMA)
    _insert(db.dsn, [(1, "café", "Ærø", 1), (2, "plain", "x", 2), (3, "café", "ß", 3)])
    data, config = tmp_path / "data", _config(tmp_path)
    with PipelineThread(db.dsn, data, **config) as p:  # type: ignore[arg-type]
        _insert(db.dsn, [(4, "naïve", "ü", 4), (5, "café", "ÿ", 5)])
        pg_exec(db.dsn, "UPDATE t SET name = 'Ñandú' WHERE id = 2")
        pg_exec(db.dsn, "DELETE FROM t WHERE id = 1")
        wait_caught_up(db.dsn, data, alive=p.check)
        _equal(db.dsn, db.dsn, data)
    assert ("Ñandú",) in [(r["name"],) for r in _mirror(data)]


def _mirror(data: Path) -> list[dict[str, object]]:
    import viewstore

    with viewstore.open(data) as vs:
        return vs.rows("t")


def test_sql_ascii_holding_utf8_is_read_as_utf8(make_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = make_db("SQL_ASCII")
    pg_exec(db.dsn, SCHEMA)
    # A UTF-8 client: SQL_ASCII stores its bytes as they come. length() counts bytes in
    # SQL_ASCII, characters here, so this view's rows hold ASCII names (the tags are not).
    _insert(db.dsn, [(1, "cafe", "Ærø", 1), (2, "plain", "x", 2), (3, "cafe", "ß", 3)])
    data, config = tmp_path / "data", _config(tmp_path)
    with PipelineThread(db.dsn, data, **config) as p:  # type: ignore[arg-type]
        _insert(db.dsn, [(4, "naive", "ü€", 4), (5, "cafe", "日本", 5)])
        pg_exec(db.dsn, "UPDATE t SET tag = 'Ñandú' WHERE id = 2")
        pg_exec(db.dsn, "DELETE FROM t WHERE id = 1")
        wait_caught_up(db.dsn, data, alive=p.check)
        _equal(db.dsn, db.dsn, data)
    with Store.open(data, readonly=True) as store:
        source = store.source()
    assert source is not None and source.text_encoding == "UTF8"


def _refused(db: Db, data: Path, config: dict[str, object]) -> UnsupportedError:
    p = PipelineThread(db.dsn, data, **config).start()  # type: ignore[arg-type]
    p.thread.join(60)
    if p.thread.is_alive():
        p.stop()
        raise AssertionError("bytes that are not UTF-8 were accepted")
    assert isinstance(p.error, UnsupportedError), p.error
    return p.error


@pytest.mark.parametrize("copy_with", ["psql", "psycopg"])
def test_sql_ascii_bytes_not_utf8_in_the_snapshot(
    make_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_with: str
) -> None:  # type: ignore[no-untyped-def]
    # The snapshot's COPYs go through psql when one is installed (ingest.psqlcopy), else
    # psycopg: both must read the database's bytes unconverted.
    if copy_with == "psycopg":
        monkeypatch.setenv("VIEWSTORE_PSQL", "")
    else:
        assert find_psql() is not None, "the suite runs where Postgres's psql is installed"
        monkeypatch.delenv("VIEWSTORE_PSQL", raising=False)
    db = make_db("SQL_ASCII")
    pg_exec(db.dsn, SCHEMA)
    _insert(db.dsn, [(1, "ok", "a", 1), (2, "plain", "b", 2)])
    _insert(db.latin1, [(3, "café", "Ærø", 3), (4, "café", "ß", 4)])  # LATIN1 bytes
    data, config = tmp_path / "data", _config(tmp_path)
    err = _refused(db, data, config)
    message = str(err)
    assert "table public.t, column " in message and "is not UTF8 text" in message, message
    assert "in the snapshot as of 0/" in message, message
    assert err.hint and err.hint.startswith("viewstore run --resnapshot --source-encoding LATIN1")
    hints = run_following_hints(db.dsn, data, lambda: _equal(db.latin1, db.dsn, data), **config)
    assert len(hints) == 1, hints
    # Then it follows the stream in LATIN1, and a restart without the option keeps it.
    with PipelineThread(db.dsn, data, **config) as p:  # type: ignore[arg-type]
        _insert(db.latin1, [(5, "naïve", "ü", 5), (6, "café", "ÿ", 6)])
        pg_exec(db.latin1, "UPDATE t SET name = 'Ñandú' WHERE id = 2")
        pg_exec(db.latin1, "DELETE FROM t WHERE name = 'café' AND id = 3")
        wait_caught_up(db.dsn, data, alive=p.check)
        _equal(db.latin1, db.dsn, data)
        # `viewstore verify` reads Postgres's side in the store's encoding too.
        checks = verify(db.dsn, data)
        assert [c.ok for c in checks] == [True], checks
    names = {r["name"] for r in _mirror(data)}
    assert {"café", "naïve", "Ñandú"} <= names, names


def test_sql_ascii_bytes_not_utf8_in_the_stream(make_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = make_db("SQL_ASCII")
    pg_exec(db.dsn, SCHEMA)
    _insert(db.dsn, [(1, "ok", "a", 1), (2, "plain", "b", 2)])
    data, config = tmp_path / "data", _config(tmp_path)
    p = PipelineThread(db.dsn, data, **config).start()  # type: ignore[arg-type]
    wait_caught_up(db.dsn, data, alive=p.check)
    _insert(db.latin1, [(3, "café", "x", 3)])
    p.thread.join(60)
    assert not p.thread.is_alive(), "bytes that are not UTF-8 were accepted"
    err = p.error
    assert isinstance(err, UnsupportedError), err
    message = str(err)
    assert "table public.t, column name: b'caf\\xe9' is not UTF8 text" in message, message
    assert "in the transaction with xid " in message and "commit record starts at 0/" in message
    hints = run_following_hints(db.dsn, data, lambda: _equal(db.latin1, db.dsn, data), **config)
    assert len(hints) == 1 and "--source-encoding LATIN1" in hints[0], hints


def test_source_encoding_is_checked(make_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    latin1, ascii_db = make_db("LATIN1"), make_db("SQL_ASCII")
    for db in (latin1, ascii_db):
        pg_exec(db.dsn, SCHEMA)
    data, config = tmp_path / "data", _config(tmp_path)
    p = PipelineThread(latin1.dsn, data, source_encoding="LATIN1", **config).start()  # type: ignore[arg-type]
    p.thread.join(60)
    assert isinstance(p.error, ConfigError) and "SQL_ASCII databases" in str(p.error), p.error
    # A store that read the text as UTF8 does not read on in another encoding.
    data = tmp_path / "data2"
    with PipelineThread(ascii_db.dsn, data, **config) as p:  # type: ignore[arg-type]
        wait_caught_up(ascii_db.dsn, data, alive=p.check)
    p = PipelineThread(ascii_db.dsn, data, source_encoding="win1252", **config).start()  # type: ignore[arg-type]
    p.thread.join(60)
    assert isinstance(p.error, ConfigError), p.error
    assert "read this SQL_ASCII database's text as UTF8" in str(p.error), p.error
    assert p.error.hint == "viewstore run --resnapshot --source-encoding WIN1252 ..."
