"""Expressions: compile a resolved view expression once into a Python closure `f(row)`.

`compile_expr` turns a typed, resolved expression tree (`viewstore.views.sql`) into nested
closures over a row (a tuple of Python values as `viewstore.ingest.values` produces them, one per
column of the joined FROM items). The tree is walked once, at compile time; evaluating a row is
only closure calls (issue 3: "do not walk an AST per row").

Semantics are Postgres's, because Postgres is the oracle the views are checked against:
NULL propagates, AND/OR/NOT are three-valued, numeric is exact (Decimal under a context with
maximal precision, division at Postgres's select_div_scale), integer arithmetic truncates and
overflows with "integer out of range", casts round as Postgres does (numeric half away from
zero, float half to even). Errors Postgres raises at run time raise EvalError, carrying the
SQLSTATE Postgres would report.

Known differences (documented, not silent): text compares by code point (Postgres's "C"
collation); lower/upper use Python's Unicode rules; timestamptz is handled in the offset the
value carries (the store pins TimeZone UTC). Numeric NaN/±Infinity and ±infinity dates (which
ingest keeps as text) compare and compute as in Postgres.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from viewstore.errors import UnsupportedError
from viewstore.views.pgvalues import (
    CMP,
    CTX,
    DATETIMES,
    FLOATS,
    INT_RANGE,
    EvalError,
    Fn,
    Row,
    comparator,
    date_op,
    float_op,
    implicit,
    int_check,
    int_op,
    like_regex,
    nan_key,
    nozero,
    num_key,
    numeric_op,
    pg_apply,
    pg_cast,
    pg_date_trunc,
    rtrim,
    time_key,
    to_text,
)
from viewstore.views.tree import (
    BOOL,
    BPCHAR,
    DATE,
    INT4,
    NUMERIC,
    TEXT,
    Agg,
    Between,
    BoolOp,
    Case,
    Cast,
    Col,
    Const,
    Expr,
    Func,
    InList,
    Like,
    NullTest,
    Op,
)

__all__ = ["EvalError", "compile_expr", "to_text"]


def compile_expr(e: Expr, slots: Mapping[Expr, int] | None = None) -> Fn:
    """Compile resolved expression `e` into `f(row) -> value`.

    `slots` maps sub-expressions to row positions that already hold their value: an aggregate
    view's output expressions are compiled over (group key values..., aggregate values...),
    e.g. {SUM(s.score): 1} for COALESCE(SUM(s.score), 0). An Agg not in `slots` is an error.
    """
    return _Compiler(slots or {}).compile(e)


# --------------------------------------------------------------------------- the compiler


class _Compiler:
    def __init__(self, slots: Mapping[Expr, int]) -> None:
        self.slots = slots

    def compile(self, e: Expr) -> Fn:
        if self.slots and e in self.slots:
            return itemgetter(self.slots[e])
        method = getattr(self, "c_" + type(e).__name__, None)
        if method is None or isinstance(e, Agg):
            raise UnsupportedError(f"cannot compile {type(e).__name__} here: {e}")
        return method(e)

    def converted(self, e: Expr, dst: int | None) -> Fn:
        """Compile `e` and convert its values to `dst` the way Postgres does implicitly."""
        return pg_apply(self.compile(e), implicit(e.type, dst))

    def c_Col(self, e: Col) -> Fn:
        assert e.index is not None, f"column {e.name} is not resolved"
        return itemgetter(e.index)

    def c_Const(self, e: Const) -> Fn:
        v = e.value
        return lambda row: v

    def c_Op(self, e: Op) -> Fn:
        t = e.type
        if e.op == "neg":
            a = self.compile(e.args[0])
            if t in INT_RANGE:
                check = int_check(t)  # type: ignore[arg-type]
                return lambda row: None if (v := a(row)) is None else check(-v)
            if t == NUMERIC:
                return lambda row: None if (v := a(row)) is None else nozero(CTX.minus(v))
            return lambda row: None if (v := a(row)) is None else -v
        x, y = e.args
        if e.op in CMP:
            fn = comparator(e.op, x.type, y.type)
            a, b = self.compile(x), self.compile(y)
        elif e.op == "||":
            a = pg_apply(self.compile(x), to_text(x.type))  # type: ignore[arg-type]
            b = pg_apply(self.compile(y), to_text(y.type))  # type: ignore[arg-type]
            fn = str.__add__  # type: ignore[assignment]
        elif t == DATE or (t == INT4 and x.type == DATE):
            fn = date_op(e.op, x.type, y.type)  # type: ignore[arg-type]
            a, b = self.compile(x), self.compile(y)
        else:
            if t in INT_RANGE:
                fn = int_op(e.op, t)  # type: ignore[arg-type, assignment]
            elif t == NUMERIC:
                fn = numeric_op(e.op)
            else:
                fn = float_op(e.op, t)  # type: ignore[arg-type, assignment]
            a, b = self.converted(x, t), self.converted(y, t)

        def op(row: Row) -> Any:
            va = a(row)
            if va is None:
                return None
            vb = b(row)
            return None if vb is None else fn(va, vb)

        return op

    def c_BoolOp(self, e: BoolOp) -> Fn:
        fs = [self.compile(a) for a in e.args]
        if e.op == "not":
            (f,) = fs
            return lambda row: None if (v := f(row)) is None else not v
        stop = e.op == "or"  # the value that decides: true for OR, false for AND

        def junction(row: Row) -> bool | None:
            unknown = False
            for f in fs:
                v = f(row)
                if v is None:
                    unknown = True
                elif v is stop:
                    return stop
            return None if unknown else not stop

        return junction

    def c_NullTest(self, e: NullTest) -> Fn:
        f = self.compile(e.arg)
        if e.negated:
            return lambda row: f(row) is not None
        return lambda row: f(row) is None

    def c_InList(self, e: InList) -> Fn:
        a = self.compile(e.arg)
        items = [(self.compile(x), comparator("=", e.arg.type, x.type)) for x in e.items]
        negated = e.negated

        def in_list(row: Row) -> bool | None:
            v = a(row)
            if v is None:
                return None
            unknown = False
            for f, eq in items:
                w = f(row)
                if w is None:
                    unknown = True
                elif eq(v, w):
                    return not negated
            return None if unknown else negated

        return in_list

    def c_Between(self, e: Between) -> Fn:
        lo = Op(">=", (e.arg, e.low), type=BOOL)
        hi = Op("<=", (e.arg, e.high), type=BOOL)
        both = BoolOp("and", (lo, hi), type=BOOL)
        return self.compile(BoolOp("not", (both,), type=BOOL) if e.negated else both)

    def c_Like(self, e: Like) -> Fn:
        # char(n) LIKE (bpcharlike) matches the padded value: 'ab'::char(4) LIKE 'ab' is
        # false. A char(n) pattern is cast to text, which drops its padding (to_text).
        a = self.compile(e.arg)
        ins, neg = e.insensitive, e.negated

        if isinstance(e.pattern, Const):
            if e.pattern.value is None:
                return lambda row: None
            rx = like_regex(e.pattern.value, ins)

            def like_const(row: Row) -> bool | None:
                v = a(row)
                if v is None:
                    return None
                return (rx.fullmatch(v) is not None) != neg

            return like_const
        p = self.converted(e.pattern, TEXT)

        def like(row: Row) -> bool | None:
            v, pat = a(row), p(row)
            if v is None or pat is None:
                return None
            return (like_regex(pat, ins).fullmatch(v) is not None) != neg

        return like

    def c_Case(self, e: Case) -> Fn:
        t = e.type
        results = [self.converted(r, t) for _, r in e.whens]
        default = self.converted(e.default, t) if e.default is not None else (lambda row: None)
        if e.operand is None:
            conds = [self.compile(c) for c, _ in e.whens]
        else:
            operand = self.compile(e.operand)
            conds = []
            for c, _ in e.whens:
                eq, fc = comparator("=", e.operand.type, c.type), self.compile(c)

                def cond(row: Row, fc: Fn = fc, eq: Callable[[Any, Any], bool] = eq) -> Any:
                    v, w = operand(row), fc(row)
                    return None if v is None or w is None else eq(v, w)

                conds.append(cond)
        pairs = list(zip(conds, results, strict=True))

        def case(row: Row) -> Any:
            for c, r in pairs:
                if c(row) is True:
                    return r(row)
            return default(row)

        return case

    def c_Func(self, e: Func) -> Fn:
        name, t = e.name, e.type
        if name == "coalesce":
            fs = [self.converted(a, t) for a in e.args]

            def coalesce(row: Row) -> Any:
                for f in fs:
                    v = f(row)
                    if v is not None:
                        return v
                return None

            return coalesce
        if name in ("greatest", "least"):
            fs = [self.converted(a, t) for a in e.args]
            pick = max if name == "greatest" else min
            # char(n) values compare without their padding (as in pg_comparable).
            key = (
                nan_key
                if t in FLOATS
                else num_key
                if t == NUMERIC
                else rtrim
                if t == BPCHAR
                else time_key
                if t in DATETIMES
                else None
            )

            def extreme(row: Row) -> Any:
                vals = [v for f in fs if (v := f(row)) is not None]
                return pick(vals, key=key) if vals else None  # type: ignore[call-overload]

            return extreme
        if name == "nullif":
            a, b = self.compile(e.args[0]), self.compile(e.args[1])
            eq = comparator("=", e.args[0].type, e.args[1].type)

            def nullif(row: Row) -> Any:
                v = a(row)
                if v is None:
                    return None
                w = b(row)
                return None if w is not None and eq(v, w) else v

            return nullif
        if name == "date_trunc":
            assert isinstance(e.args[0], Const)
            trunc = pg_date_trunc(e.args[0].value)
            return pg_apply(self.compile(e.args[1]), trunc)
        # lower/upper/length take text: a char(n) argument loses its padding (to_text).
        f = self.converted(e.args[0], TEXT)
        if name == "length":
            return pg_apply(f, len)
        return pg_apply(f, str.lower if name == "lower" else str.upper)

    def c_Cast(self, e: Cast) -> Fn:
        src = e.arg.type
        f = self.compile(e.arg)
        if src == e.target and not e.typmod:
            return f
        return pg_apply(f, pg_cast(src, e.target, e.typmod))  # type: ignore[arg-type]
