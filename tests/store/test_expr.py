"""Compiled expressions against Postgres: the same SQL over the same rows, compared exactly."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from helpers import pg_exec

from viewstore.ingest.values import converter
from viewstore.views.expr import EvalError, compile_expr, to_text
from viewstore.views.resolve import TableShape, resolve
from viewstore.views.sql import parse_views

COLUMNS = [
    ("i", "int4", 23), ("b", "int8", 20), ("s", "int2", 21), ("n", "numeric", 1700),
    ("f", "float8", 701), ("t", "text", 25), ("d", "date", 1082), ("ts", "timestamp", 1114),
    ("ok", "bool", 16),
]  # fmt: skip
ROWS = [
    "(1, 10, 2, 1.50, 0.5, 'a%b', '2024-02-29', '2024-02-29 13:45:12.5', true)",
    "(-7, -9223372036854775808, -32768, 1234567890123456789012345678901234567890, -2.5, 'x_y', '2000-01-01', '1999-12-31 23:59:59', false)",
    "(2147483647, 9223372036854775807, 32767, -0.000000000000000000001, 1e300, 'ABC', '1970-01-01', '2024-01-01 00:00:00', NULL)",
    "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(0, 0, 0, 0, 0, '', '2024-12-31', '2024-06-15 06:07:08', true)",
    "(3, 7, -3, 1200, 3.5, 'a\\b', '2024-03-05', '2024-03-05 10:00:00', false)",
]  # fmt: skip
HAND_PICKED = [
    "i + 1", "i * 2", "i / 2", "i % 3", "-i", "b + 1", "b * 2", "s + s", "s * 2", "i / 0",
    "n + 1", "n * n", "n / 3", "1 / n", "n / 7", "n % 7", "-n", "i + n", "b / 3.0",
    "n::numeric(10,2)", "n::numeric(5,-2)", "n::int", "f::int", "(f * 2)::int8", "f / 3",
    "f * 1e10", "i + f", "n::float8", "f::numeric", "i::text || t", "t || n", "t || f",
    "t || d", "t || ts", "ok::text", "t like 'a%'", "t like 'a\\%b'", "t ilike 'abc'",
    "t not like '%\\_%'", "t like '_'", "i between 0 and 3", "i not between 0 and 3",
    "i in (1, 2, NULL)", "i not in (1, 2)", "i in (1, 3)", "n in (1.5, 1200)",
    "ok and i > 0", "ok or i > 0", "not ok", "i is null", "t is not null",
    "case when i > 0 then 'pos' when i < 0 then 'neg' end", "case i when 1 then n else 0 end",
    "coalesce(i, b, 0)", "coalesce(n, i)", "nullif(i, 1)", "greatest(i, s, 2)", "least(n, i)",
    "lower(t)", "upper(t)", "length(t)", "date_trunc('month', ts)", "date_trunc('week', ts)",
    "date_trunc('hour', ts)", "date_trunc('year', ts)", "d + 1", "d - 30", "d - '2000-01-01'::date",
    "d < ts", "ts::date", "d::timestamp", "i::bool", "t = 'ABC'", "'12'::int + i",
    "cast(t as int)", "i * 1000000", "b - 1", "abs_test(i)",
]  # fmt: skip


def _shape() -> TableShape:
    return TableShape([(c, oid) for c, _, oid in COLUMNS], [])


def _pg(dsn: str, exprs: list[str]) -> list[list[Any]]:
    """Each expression's text result per row (None for NULL), or the SQLSTATE it raised."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        for e in exprs:
            try:
                rows = conn.execute(f"SELECT ({e})::text FROM r ORDER BY k").fetchall()
                out.append([r[0] for r in rows])
            except psycopg.Error as exc:
                out.append([("error", exc.sqlstate)] * len(ROWS))
    return out


def _ours(rows: list[tuple[Any, ...]], e: str) -> list[Any] | None:
    try:
        (v,) = parse_views(f"CREATE VIEW v AS SELECT {e} FROM r;")
        rv = resolve(v, {"r": _shape()})
    except Exception:
        return None  # refused at start-up: Postgres must refuse too (checked by caller)
    col = rv.columns[0].expr
    f, text = compile_expr(col), to_text(col.type)  # type: ignore[arg-type]
    out = []
    for row in rows:
        try:
            value = f(row)
            out.append(None if value is None else text(value))
        except EvalError as exc:
            # Postgres evaluates row by row too; a failing row fails the whole query there.
            return [("error", exc.sqlstate)] * len(rows)
    return out


@pytest.fixture
def table(dsn: str) -> tuple[str, list[tuple[Any, ...]]]:
    cols = ", ".join(f"{c} {t}" for c, t, _ in COLUMNS)
    pg_exec(dsn, f"CREATE TABLE r (k serial, {cols})")
    for r in ROWS:
        pg_exec(dsn, f"INSERT INTO r ({', '.join(c for c, _, _ in COLUMNS)}) VALUES {r}")
    convs = [converter(oid) for _, _, oid in COLUMNS]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1")
        cur = conn.cursor(binary=False)
        # bool::text is 'true', the output function's text is 't': ask for the latter.
        names = ", ".join(
            f"{c}::text" if t != "bool" else f"CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END"
            for c, t, _ in COLUMNS
        )
        raw = cur.execute(f"SELECT {names} FROM r ORDER BY k").fetchall()
    rows = [
        tuple(None if v is None else cv(v.encode()) for cv, v in zip(convs, r, strict=True))
        for r in raw
    ]
    return dsn, rows


def _check(dsn: str, rows: list[tuple[Any, ...]], exprs: list[str]) -> None:
    expected = _pg(dsn, exprs)
    failures = []
    for e, want in zip(exprs, expected, strict=True):
        got = _ours(rows, e)
        if got is None:
            if want[0] != ("error", want[0][1] if isinstance(want[0], tuple) else None):
                failures.append((e, "refused by viewstore", want))
            continue
        if got != want:
            failures.append((e, got, want))
    assert not failures, "\n".join(map(str, failures))


def test_hand_picked(table: tuple[str, list[tuple[Any, ...]]]) -> None:
    dsn, rows = table
    _check(dsn, rows, HAND_PICKED)


def _random_expr(rng: random.Random, depth: int = 0) -> str:
    leaves = ["i", "b", "s", "n", "f", "1", "-2", "3.25", "0", "NULL", "100000"]
    if depth > 2 or rng.random() < 0.3:
        return rng.choice(leaves)
    a, b = _random_expr(rng, depth + 1), _random_expr(rng, depth + 1)
    form = rng.choice(["op", "op", "op", "coalesce", "greatest", "case", "cast", "neg"])
    if form == "op":
        return f"({a} {rng.choice(['+', '-', '*', '/', '%'])} {b})"
    if form == "coalesce":
        return f"coalesce({a}, {b})"
    if form == "greatest":
        return f"{rng.choice(['greatest', 'least'])}({a}, {b})"
    if form == "case":
        return f"(case when {a} {rng.choice(['<', '=', '>='])} {b} then {a} else {b} end)"
    if form == "cast":
        return f"({a})::{rng.choice(['int4', 'int8', 'numeric', 'numeric(12,3)', 'float8'])}"
    return f"(-{a})"


def test_random_expressions(table: tuple[str, list[tuple[Any, ...]]]) -> None:
    dsn, rows = table
    rng = random.Random(20240229)
    _check(dsn, rows, [_random_expr(rng) for _ in range(300)])


def test_numeric_is_exact() -> None:
    (v,) = parse_views("CREATE VIEW v AS SELECT n * n + n / 3 FROM r;")
    f = compile_expr(resolve(v, {"r": _shape()}).columns[0].expr)
    n = Decimal("1234567890123456789012345678901234567890")
    row = (None, None, None, n, None, None, None, None, None)
    # Python's default context would round this to 28 digits; compare with exact integers.
    assert str(f(row)) == str(int(n) ** 2 + int(n) // 3)
