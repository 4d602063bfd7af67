"""Types without a converter (money, interval, inet, citext, enums, domains) reach the store as
Postgres's text. Compared as text they order and match differently from Postgres (`$9.00` >
`$10.00`, `'1 day'` is not `'24:00:00'`, citext matches case-sensitively), so a view that
compares, groups, joins or takes MIN/MAX/COUNT(DISTINCT) of one is refused at start-up, naming
the column and its type. Passing such a column through unchanged stays allowed, and equals
Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import pg_exec
from runner import PipelineThread, assert_view_equals, wait_caught_up

from viewstore.errors import ConfigError

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN small AS int CHECK (VALUE < 1000);
CREATE TABLE t (id int PRIMARY KEY, m money, iv interval, ip inet, ci citext, e mood,
                d small, v int);
INSERT INTO t VALUES (1, 9, '1 day', '10.0.0.9', 'Ab', 'happy', 5, 1),
                     (2, 10, '24 hours', '10.0.0.10', 'ab', 'sad', 7, 2);
CREATE TABLE u (id int PRIMARY KEY, ci citext, d small);
INSERT INTO u VALUES (1, 'AB', 5);
"""

REFUSED = [
    ("SELECT max(m) AS x FROM t", "column t.m", "money"),
    ("SELECT min(iv) AS x FROM t", "column t.iv", "interval"),
    ("SELECT count(DISTINCT iv) AS x FROM t", "column t.iv", "interval"),
    ("SELECT id FROM t WHERE ip > '10.0.0.1'", "column t.ip", "inet"),
    ("SELECT id FROM t WHERE m = m", "column t.m", "money"),
    ("SELECT id FROM t WHERE e IN ('ok', 'happy')", "column t.e", "user-defined type"),
    ("SELECT e, count(*) AS n FROM t GROUP BY e", "column t.e", "user-defined type"),
    ("SELECT ci, count(*) AS n FROM t GROUP BY ci", "column t.ci", "user-defined type"),
    ("SELECT t.id, u.id AS uid FROM t JOIN u ON u.ci = t.ci", "column", "user-defined type"),
    ("SELECT t.id, u.id AS uid FROM t JOIN u ON u.d = t.d", "column", "user-defined type"),
    ("SELECT id, greatest(iv, iv) AS g FROM t", "column t.iv", "interval"),
]


@pytest.mark.parametrize(("sql", "names", "type_name"), REFUSED)
def test_view_comparing_a_type_without_converter_is_refused(
    dsn: str, tmp_path: Path, sql: str, names: str, type_name: str
) -> None:
    pg_exec(dsn, SCHEMA)
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW bad AS {sql};\n")
    p = PipelineThread(dsn, tmp_path / "data", views_file=views).start()
    p.thread.join(60)
    if p.thread.is_alive():
        p.stop()
        raise AssertionError(f"view accepted: {sql}")
    err = p.error
    assert isinstance(err, ConfigError), err
    message = str(err)
    assert "view bad" in message and names in message and type_name in message, message
    assert "compare" in message, message
    assert err.hint and "pass" in err.hint, err.hint


def test_passing_such_columns_through_is_allowed(dsn: str, tmp_path: Path) -> None:
    pg_exec(dsn, SCHEMA)
    sql = "SELECT id, m, iv, ip, ci, e, d FROM t WHERE v > 0"
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW ok AS {sql};\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        pg_exec(dsn, "INSERT INTO t VALUES (3, 1.5, '1 mon', '::1', 'X', 'ok', 9, 3)")
        pg_exec(dsn, "UPDATE t SET m = 11, ci = 'AB' WHERE id = 1")
        wait_caught_up(dsn, data, alive=p.check)
        text_sql = (
            "SELECT id, m::text, iv::text, host(ip), ci::text, e::text, d::text FROM t WHERE v > 0"
        )
        assert assert_view_equals(dsn, data, "ok", text_sql) == 3
