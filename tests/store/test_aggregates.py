"""Aggregate states against Postgres: the same adds and removes, compared with SELECT agg(x).

Each differential test keeps one table per argument type, inserts and deletes one row per
operation (removing the current extreme often, and draining the group to empty once before
refilling it), feeds every aggregate's state the value Postgres stored (INSERT ... RETURNING),
and every 20 operations compares each state's result with Postgres's, as Postgres prints it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import pg_exec, pg_query
from psycopg import sql

from viewstore.errors import StoreError, UnsupportedError
from viewstore.views.aggregates import (
    decode_state,
    make_state,
    order_key,
    result_type,
)
from viewstore.views.expr import to_text
from viewstore.views.tree import (
    BOOL,
    DATE,
    FLOAT4,
    FLOAT8,
    INT4,
    INT8,
    NUMERIC,
    TEXT,
    TIMESTAMPTZ,
)

Pool = Callable[[random.Random], list[Any]]


def _numeric_pool(rng: random.Random) -> list[Any]:
    # 40-digit values at many scales, small ones, and NaN/±Infinity (rarer: one of each).
    big = [Decimal(f"{rng.randint(-(10**40), 10**40)}E-{rng.randint(0, 25)}") for _ in range(25)]
    small = [Decimal(s) for s in ("0", "0.5", "-3", "1.000", "2.50", "1E+5", "-7.0000001")]
    return big + small + [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]


def _float8_pool(rng: random.Random) -> list[Any]:
    vals = [round(rng.uniform(-1e6, 1e6), rng.randint(0, 9)) for _ in range(30)]
    return [*vals, 0.0, 1e-300, 3.5e-7, math.nan, math.inf, -math.inf]


TEXTS = ["", "a", "ab", "B", "z", "é", "É", "ü", "日本", "日", "😀", "Zebra", "a b", "~", "ÿ"]

# name -> (column type, type OID, value pool)
TYPES: dict[str, tuple[str, int, Pool]] = {
    "int4": (
        "int4",
        INT4,
        lambda r: [r.randint(-50, 50) for _ in range(40)] + [2**31 - 1, -(2**31)],
    ),
    "int8": (
        "int8",
        INT8,
        lambda r: [r.randint(-(2**62), 2**62) for _ in range(30)] + [2**63 - 1, -(2**63)],
    ),
    "numeric": ("numeric", NUMERIC, _numeric_pool),
    # Negative scale (Postgres 15+): values round to thousands, so the stored ones print as
    # integers whatever the input's scale.
    "numeric_neg_scale": (
        "numeric(60,-3)",
        NUMERIC,
        lambda r: [
            Decimal(f"{r.randint(-(10**40), 10**40)}E-{r.randint(0, 4)}") for _ in range(30)
        ],
    ),
    "float8": ("float8", FLOAT8, _float8_pool),
    "float4": (
        "float4",
        FLOAT4,
        lambda r: [round(r.uniform(-1000, 1000), r.randint(0, 3)) for _ in range(30)] + [math.nan],
    ),
    # COLLATE "C": the store orders text by code point, which is Postgres's "C" collation.
    "text": ('text COLLATE "C"', TEXT, lambda r: list(TEXTS)),
    "date": (
        "date",
        DATE,
        lambda r: [date(2000, 1, 1) + timedelta(days=r.randint(-9000, 9000)) for _ in range(30)],
    ),
    "timestamptz": (
        "timestamptz",
        TIMESTAMPTZ,
        lambda r: [
            datetime(2024, 1, 1, tzinfo=UTC)
            + timedelta(seconds=r.randint(-(10**8), 10**8), microseconds=r.randint(0, 999999))
            for _ in range(30)
        ],
    ),
    "bool": ("bool", BOOL, lambda r: [True, False]),
}

# (aggregate name, DISTINCT, is COUNT(*))
Spec = tuple[str, bool, bool]
COUNTS: list[Spec] = [("count", False, True), ("count", False, False), ("count", True, False)]
SUMS: list[Spec] = [("sum", False, False), ("avg", False, False)]
MINMAX: list[Spec] = [("min", False, False), ("max", False, False)]
DISTINCT_SUMS: list[Spec] = [("sum", True, False), ("avg", True, False)]
AGGS: dict[str, list[Spec]] = {
    "int4": COUNTS + SUMS + MINMAX + DISTINCT_SUMS,
    "int8": COUNTS + SUMS + MINMAX,
    "numeric": COUNTS + SUMS + MINMAX + DISTINCT_SUMS,
    "numeric_neg_scale": SUMS + MINMAX,
    "float8": COUNTS + SUMS + MINMAX + DISTINCT_SUMS,
    "float4": SUMS + MINMAX,
    "text": COUNTS + MINMAX,
    "date": COUNTS + MINMAX,
    "timestamptz": MINMAX,
    "bool": [*COUNTS, ("bool_and", False, False), ("bool_or", False, False)],
}


def _sql(spec: Spec) -> str:
    name, distinct, star = spec
    return f"{name}({'*' if star else ('DISTINCT x' if distinct else 'x')})::text"


def _matches(spec: Spec, arg_type: int, got: Any, pg: str | None, present: list[Any]) -> bool:
    name, _, star = spec
    if pg is None or got is None:
        return pg is None and got is None
    if name in ("sum", "avg") and arg_type in (FLOAT4, FLOAT8):
        # Postgres adds floats one at a time in scan order; the state rounds the exact sum
        # once. Float addition is not associative, so the two agree only to rounding error:
        # relative 1e-12, measured against the larger of the result and sum(|x|), because
        # when terms cancel, recursive summation's error scales with sum(|x|), not the result.
        want = float(pg)
        if math.isnan(want) or math.isinf(want):
            return str(want) == str(got)
        scale = sum(abs(x) for x in present if x is not None and math.isfinite(x))
        tol = 1e-5 if (name == "sum" and arg_type == FLOAT4) else 1e-12  # float4 adds in float4
        return abs(got - want) <= tol * max(abs(want), scale)
    return to_text(result_type(name, None if star else arg_type))(got) == pg


@pytest.mark.parametrize("type_name", sorted(TYPES))
def test_against_postgres(dsn: str, type_name: str) -> None:
    column, arg_type, pool_of = TYPES[type_name]
    specs = AGGS[type_name]
    rng = random.Random(f"aggregates-{type_name}")
    pool = pool_of(rng)
    key = order_key(arg_type)
    pg_exec(dsn, f"CREATE TABLE t (id serial PRIMARY KEY, x {column})")
    states = [make_state(n, None if star else arg_type, d) for n, d, star in specs]
    check_sql = f"SELECT {', '.join(_sql(s) for s in specs)} FROM t"
    rows: dict[int, Any] = {}
    checks = 0

    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:

        def insert(value: Any) -> None:
            row = conn.execute("INSERT INTO t (x) VALUES (%s) RETURNING id, x", (value,)).fetchone()
            assert row is not None
            rows[row[0]] = row[1]
            for s in states:
                s.add(row[1])

        def delete(row_id: int) -> None:
            value = rows.pop(row_id)
            conn.execute("DELETE FROM t WHERE id = %s", (row_id,))
            for s in states:
                s.remove(value)

        def compare(when: str) -> None:
            nonlocal checks
            checks += 1
            got_pg = conn.execute(check_sql).fetchone()
            assert got_pg is not None
            present = list(rows.values())
            for spec, state, pg in zip(specs, states, got_pg, strict=True):
                got = state.result()
                assert _matches(spec, arg_type, got, pg, present), (
                    f"{_sql(spec)} {when}: store {got!r}, postgres {pg!r}"
                )

        for i in range(400):
            if i == 200:
                # Drain the group, then refill it from nothing.
                for row_id in rng.sample(sorted(rows), len(rows)):
                    delete(row_id)
                compare(f"after draining at op {i}")
                assert all(s.is_empty() for s in states)
            r = rng.random()
            non_null = [(key(v), i) for i, v in rows.items() if v is not None]
            if not rows or r < 0.5:
                insert(None if rng.random() < 0.08 else rng.choice(pool))
            elif r < 0.75 or not non_null:
                delete(rng.choice(sorted(rows)))
            else:
                # Remove the current extreme, the case a running MIN/MAX cannot undo.
                pick = min if r < 0.87 else max
                delete(pick(non_null)[1])
            if i % 20 == 19:
                compare(f"at op {i}")
    assert checks >= 20


# --------------------------------------------------------------------------- without Postgres

ALL_STATES: list[tuple[str, int | None, bool, Pool]] = [
    ("count", None, False, TYPES["int4"][2]),
    ("count", TEXT, False, lambda r: [*TEXTS, None]),
    ("count", TEXT, True, lambda r: list(TEXTS)),
    ("count", NUMERIC, True, _numeric_pool),
    ("sum", INT4, False, TYPES["int4"][2]),
    ("sum", INT8, False, TYPES["int8"][2]),
    ("sum", NUMERIC, False, _numeric_pool),
    ("avg", NUMERIC, False, _numeric_pool),
    ("sum", FLOAT8, False, _float8_pool),
    ("avg", FLOAT4, False, TYPES["float4"][2]),
    ("sum", NUMERIC, True, _numeric_pool),
    ("min", NUMERIC, False, _numeric_pool),
    ("max", FLOAT8, False, _float8_pool),
    ("max", TEXT, False, lambda r: list(TEXTS)),
    ("min", DATE, False, TYPES["date"][2]),
    ("max", TIMESTAMPTZ, False, TYPES["timestamptz"][2]),
    ("bool_and", BOOL, False, lambda r: [True, False, None]),
    ("bool_or", BOOL, True, lambda r: [True, False]),
]


@pytest.mark.parametrize(("name", "arg_type", "distinct", "pool_of"), ALL_STATES)
def test_encoding_is_order_independent(
    name: str, arg_type: int | None, distinct: bool, pool_of: Pool
) -> None:
    rng = random.Random(f"encode-{name}-{arg_type}-{distinct}")
    pool = pool_of(rng)
    target = [rng.choice(pool) for _ in range(60)]
    straight = make_state(name, arg_type, distinct)
    for v in target:
        straight.add(v)

    # The same multiset by another road: shuffled, with values added and removed on the way
    # (numeric ones at a finer scale, which a naive running Decimal sum would remember).
    churned = make_state(name, arg_type, distinct)
    extra = [rng.choice(pool) for _ in range(40)]
    if arg_type == NUMERIC:
        extra += [Decimal("1.000000000000000000001"), Decimal("5.0000000000")]
    order = [(1, v) for v in target + extra]
    rng.shuffle(order)
    for sign, v in order:
        churned.add(v) if sign > 0 else churned.remove(v)
    for v in rng.sample(extra, len(extra)):
        churned.remove(v)

    data = straight.encode()
    assert churned.encode() == data
    assert str(churned.result()) == str(straight.result())

    decoded = decode_state(name, arg_type, distinct, data)
    assert decoded.encode() == data
    assert str(decoded.result()) == str(straight.result())
    # The decoded state keeps working: remove everything, extremes first.
    for v in sorted(target, key=lambda v: (v is None, str(v))):
        decoded.remove(v)
    assert decoded.is_empty()
    assert decoded.encode() == make_state(name, arg_type, distinct).encode()


def test_removing_the_extreme_repeatedly() -> None:
    state = make_state("max", INT4, False)
    for v in [5, 5, 3, 9, 9, 9, 1]:
        state.add(v)
    seen = []
    for v in [9, 9, 9, 5, 5, 3, 1]:
        seen.append(state.result())
        state.remove(v)
    assert seen == [9, 9, 9, 5, 5, 3, 1]
    assert state.result() is None and state.is_empty()


def test_heap_stays_small_under_churn() -> None:
    state = make_state("min", INT4, False)
    state.add(0)
    for i in range(10_000):
        state.add(i % 50 + 1)
        state.remove(i % 50 + 1)
    assert state.result() == 0
    assert len(state.heap) < 100  # type: ignore[attr-defined]


def test_bad_removals_and_bytes_fail_loudly() -> None:
    cases = [
        ("count", None, 1),
        ("sum", INT4, 1),
        ("sum", NUMERIC, Decimal(1)),
        ("sum", FLOAT8, 1.0),
    ]
    for name, t, value in cases:
        with pytest.raises(StoreError, match="removed more often than added"):
            make_state(name, t, False).remove(value)
    with pytest.raises(StoreError, match="not there"):
        make_state("min", TEXT, False).remove("a")
    with pytest.raises(StoreError, match="unknown value tag"):
        decode_state("sum", NUMERIC, False, b"\x01\x00\x00\x00\x09garbage")
    with pytest.raises(StoreError, match="unknown format"):
        decode_state("count", None, False, b"\x07")


def test_unsupported_aggregates_are_rejected() -> None:
    with pytest.raises(UnsupportedError, match=r"function sum\(text\) does not exist"):
        make_state("sum", TEXT, False)
    with pytest.raises(UnsupportedError, match=r"function min\(boolean\) does not exist"):
        make_state("min", BOOL, False)
    with pytest.raises(UnsupportedError, match="DISTINCT"):
        make_state("count", None, True)


RESULT_TYPE_CASES = [
    (name, t)
    for name in ("count", "sum", "avg", "min", "max")
    for t in ("int2", "int4", "int8", "numeric", "float4", "float8")
] + [
    ("min", "text"), ("max", "varchar"), ("max", "bpchar"), ("min", "date"),
    ("max", "timestamp"), ("min", "timestamptz"), ("bool_and", "bool"), ("bool_or", "bool"),
    ("count", "text"), ("count", "bool"),
]  # fmt: skip


def test_result_types_match_postgres(dsn: str) -> None:
    exprs = [
        sql.SQL("pg_typeof({}(NULL::{}))::oid, {}::regtype::oid").format(
            sql.Identifier(name), sql.SQL(t), sql.Literal(t)
        )
        for name, t in RESULT_TYPE_CASES
    ]
    row = pg_query(dsn, sql.SQL("SELECT {}").format(sql.SQL(", ").join(exprs)))[0]
    for i, (name, _) in enumerate(RESULT_TYPE_CASES):
        pg_result, arg_oid = row[2 * i], row[2 * i + 1]
        assert result_type(name, arg_oid) == pg_result, (name, arg_oid)
    assert result_type("count", None) == INT8


def test_float_edge_cases_match_postgres(dsn: str) -> None:
    cases: list[tuple[str, int, list[Any]]] = [
        ("sum", FLOAT8, [-0.0, -0.0]),
        ("sum", FLOAT8, [-0.0, 0.0]),
        ("avg", FLOAT8, [-0.0]),
        ("sum", FLOAT8, [math.inf, -math.inf]),
        ("sum", NUMERIC, [Decimal("Infinity"), Decimal("-Infinity")]),
        ("avg", NUMERIC, [Decimal("Infinity"), Decimal("1")]),
        ("sum", NUMERIC, [Decimal("1.0"), Decimal("1.00")]),
        ("avg", INT4, [1, 2, 2]),
        ("avg", NUMERIC, [Decimal("1E+5"), Decimal("0.333")]),
        ("sum", FLOAT4, [0.1, 0.2]),
    ]
    for name, t, values in cases:
        state = make_state(name, t, False)
        for v in values:
            state.add(v)
        type_sql = {FLOAT8: "float8", FLOAT4: "float4", NUMERIC: "numeric", INT4: "int4"}[t]
        query = sql.SQL("SELECT {}(x)::text FROM unnest(%s::{}[]) AS x").format(
            sql.Identifier(name), sql.SQL(type_sql)
        )
        want = pg_query(dsn, query, values)[0][0]
        assert to_text(result_type(name, t))(state.result()) == want, (name, values)


def test_cached_multisets_count_towards_the_cache_limit(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A MIN/MAX group read back from the store brings every distinct value of its multiset into
    # memory (~600 bytes each, per aggregate): those count towards the engine's CACHE_LIMIT, so
    # a store whose groups hold millions of values no longer keeps them all (issue 19.6: the
    # soak's RSS grew to 420 MiB with 240k scores under MIN and MAX).
    from runner import PipelineThread, assert_view_equals, wait_caught_up

    from viewstore.store import engine

    sql = "SELECT g, MIN(v) AS low, MAX(v) AS high, COUNT(*) AS n FROM mm GROUP BY g"
    pg_exec(dsn, "CREATE TABLE mm (id int PRIMARY KEY, g int, v int)")
    pg_exec(dsn, "INSERT INTO mm SELECT i, i % 2, i FROM generate_series(1, 3000) i")
    views = tmp_path / "views.sql"
    views.write_text(f"CREATE MATERIALIZED VIEW mm_stats AS {sql};\n")
    data = tmp_path / "data"
    with PipelineThread(dsn, data, views_file=views) as p:
        wait_caught_up(dsn, data, alive=p.check)
    monkeypatch.setattr(engine, "CACHE_LIMIT", 1000)  # rows and groups stay far below it
    with PipelineThread(dsn, data, views_file=views) as p:  # a restart: nothing cached
        pg_exec(dsn, "UPDATE mm SET v = -v WHERE id IN (1, 2)")  # both groups read back
        wait_caught_up(dsn, data, alive=p.check)
        eng = p.pipeline.applier.engine
        assert eng is not None
        assert eng.groups == {} and eng.spilled_values == 0  # 6,000 values: the cache let go
        pg_exec(dsn, "DELETE FROM mm WHERE id IN (1, 2, 3000)")  # read back again, exactly
        wait_caught_up(dsn, data, alive=p.check)
    assert_view_equals(dsn, data, "mm_stats", sql)
