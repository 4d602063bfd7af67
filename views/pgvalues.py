"""Postgres value semantics: the types, casts, arithmetic, comparisons and text forms of values.

What a value of each supported type means and does, as Postgres defines it: the type names and
categories the resolver reports, exact numeric arithmetic (Decimal under a context with maximal
precision, division at Postgres's select_div_scale), integer overflow, float rounding, casts and
text input/output, three-valued comparison keys, date_trunc. The expression compiler
(`viewstore.views.expr`) and the aggregates (`viewstore.views.aggregates`) build on these; errors
Postgres raises at run time raise EvalError with Postgres's SQLSTATE. No RocksDB, no I/O.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from functools import lru_cache
from typing import Any

from viewstore.errors import UnsupportedError
from viewstore.views.tree import (
    BOOL,
    BPCHAR,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    NAME,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    UNKNOWN,
    VARCHAR,
)

# --------------------------------------------------------------------------- types

TEXTS = frozenset({TEXT, VARCHAR, BPCHAR, NAME})
# Numeric types in the order Postgres converts implicitly (int2 → int4 → ... → float8).
NUM_RANK = {INT2: 0, INT4: 1, INT8: 2, NUMERIC: 3, FLOAT4: 4, FLOAT8: 5}
DATETIMES = frozenset({DATE, TIMESTAMP, TIMESTAMPTZ})
TYPE_SQL = {
    BOOL: "boolean", INT2: "smallint", INT4: "integer", INT8: "bigint", NUMERIC: "numeric",
    FLOAT4: "real", FLOAT8: "double precision", TEXT: "text", VARCHAR: "character varying",
    BPCHAR: "character", NAME: "name", DATE: "date", TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone", UNKNOWN: "unknown",
}  # fmt: skip
# Types whose values the engine compares, orders and matches as Postgres does. Any other type
# (money, interval, inet, enums, domains, citext...) reaches the store as Postgres's text only,
# and text comparison differs (`$9.00` > `$10.00`): such columns may only pass through a view.
COMPARED_EXACTLY = (
    frozenset(NUM_RANK) | TEXTS | DATETIMES | {BOOL, 2950, 17, 26}
)  # uuid, bytea, oid
_BUILTIN_NAMES = {
    790: "money", 1186: "interval", 869: "inet", 650: "cidr", 829: "macaddr", 774: "macaddr8",
    114: "json", 3802: "jsonb", 142: "xml", 1083: "time", 1266: "timetz", 600: "point",
    1560: "bit", 1562: "varbit", 3614: "tsvector", 3904: "int4range", 3926: "int8range",
    3906: "numrange", 3912: "daterange", 3910: "tstzrange", 3908: "tsrange",
}  # fmt: skip


def describe_type(oid: int) -> str:
    """A type's name for an error message: Postgres's, or what a user-defined one may be."""
    if oid in TYPE_SQL:
        return TYPE_SQL[oid]
    if oid in _BUILTIN_NAMES:
        return _BUILTIN_NAMES[oid]
    if oid >= 16384:  # FirstNormalObjectId: created in the database, not built in
        return (
            f"a user-defined type (oid {oid}: an enum, a domain, or an extension type such as "
            "citext)"
        )
    return f"oid {oid}"


DATE_TRUNC_UNITS = frozenset(
    {"microseconds", "milliseconds", "second", "minute", "hour", "day", "week", "month",
     "quarter", "year", "decade", "century", "millennium"}
)  # fmt: skip


def type_sql(oid: int) -> str:
    return TYPE_SQL.get(oid, f"oid {oid}")


def category(oid: int) -> str:
    if oid in NUM_RANK:
        return "numeric"
    if oid in TEXTS or oid == UNKNOWN:
        return "text"
    if oid in DATETIMES:
        return "datetime"
    return "bool" if oid == BOOL else f"oid {oid}"


def arith_type(a: int, b: int) -> int:
    """Result type of + - * / % between two numeric types, as Postgres's operators give it."""
    if a in (FLOAT4, FLOAT8) or b in (FLOAT4, FLOAT8):
        return FLOAT4 if a == b == FLOAT4 else FLOAT8
    return max(a, b, key=NUM_RANK.__getitem__)


Row = Sequence[Any]
Fn = Callable[[Row], Any]

# Exact arithmetic: with this precision no sum or product of stored values is ever rounded
# (Python's default context keeps 28 digits; DESIGN.md).
CTX = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
INT_RANGE = {
    INT2: (-(2**15), 2**15 - 1, "smallint"),
    INT4: (-(2**31), 2**31 - 1, "integer"),
    INT8: (-(2**63), 2**63 - 1, "bigint"),
}
FLOATS = (FLOAT4, FLOAT8)
_EXACT = (INT2, INT4, INT8, NUMERIC)
OUT_OF_RANGE, DIV_ZERO, BAD_INPUT, BAD_DATETIME = "22003", "22012", "22P02", "22007"


class EvalError(UnsupportedError):
    """An expression failed on a row as it fails in Postgres; `sqlstate` is Postgres's code."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message, "the view's SQL fails on this data in Postgres too")
        self.sqlstate = sqlstate


# --------------------------------------------------------------------------- value helpers


def int_check(t: int) -> Callable[[int], int]:
    lo, hi, name = INT_RANGE[t]

    def check(v: int) -> int:
        if lo <= v <= hi:
            return v
        raise EvalError(f"{name} out of range", OUT_OF_RANGE)

    return check


def f4(x: float) -> float:
    """Round a double to float4 and return the double of its shortest decimal text, which is
    how `ingest.values` represents a float4 read from Postgres."""
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        f = struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        raise EvalError("value out of range: overflow", OUT_OF_RANGE) from None
    if math.isinf(f):
        raise EvalError("value out of range: overflow", OUT_OF_RANGE)
    if f == 0.0 and x != 0.0:
        raise EvalError("value out of range: underflow", OUT_OF_RANGE)
    for digits in range(1, 10):
        s = f"{f:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(s)))[0] == f:
            return float(s)
    return f


def f4_true(x: float) -> float:
    """The exact binary value of a float4 (what float4 → float8 gives in Postgres)."""
    return x if math.isnan(x) or math.isinf(x) else struct.unpack("f", struct.pack("f", x))[0]


def _float_text(x: float, fixed_limit: int) -> str:
    """Postgres's shortest-exact float output: fixed notation for exponents in
    [-4, fixed_limit), else d.ddde+XX (15 for float8, 6 for float4; src/common/d2s.c)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp = int(exp) + len(digits) - len(ds)  # value = ds * 10**exp
    e10 = exp + len(ds) - 1
    neg = "-" if sign else ""
    if -4 <= e10 < fixed_limit:
        return neg + format(Decimal(f"{ds}E{exp}"), "f")
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{neg}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"


def _numeric_text(d: Decimal) -> str:
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    return format(d, "f")


def _ts_text(v: datetime) -> str:
    s = v.replace(tzinfo=None).isoformat(sep=" ")
    if "." in s:
        s = s.rstrip("0")
    return s


def rtrim(s: str) -> str:
    return s.rstrip(" ")


def to_text(t: int) -> Callable[[Any], str]:
    """The function giving a value of type `t` as text, as Postgres's cast to text does."""
    if t in INT_RANGE:
        return str
    if t == BPCHAR:
        # character(n) keeps its padding (ingest leaves it), but Postgres's cast to text or
        # varchar (rtrim1) drops trailing spaces: 'ab'::char(4) || 'x' is 'abx'.
        return rtrim
    if t == NUMERIC:
        return _numeric_text
    if t == FLOAT8:
        return lambda x: _float_text(x, 15)
    if t == FLOAT4:
        return lambda x: _float_text(x, 6)
    if t == BOOL:
        return lambda b: "true" if b else "false"
    if t == DATE:
        return lambda d: d if isinstance(d, str) else d.isoformat()
    if t == TIMESTAMP:
        return lambda v: v if isinstance(v, str) else _ts_text(v)
    if t == TIMESTAMPTZ:
        # The session TimeZone the store pins is UTC, so that is the zone we print in.
        return lambda v: v if isinstance(v, str) else _ts_text(v.astimezone(UTC)) + "+00"
    return str


def implicit(src: int | None, dst: int | None) -> Callable[[Any], Any] | None:
    """The conversion Postgres applies implicitly from `src` to `dst`; None when none is needed."""
    if src == dst or src is None or dst is None:
        return None
    if dst == FLOAT8:
        if src == FLOAT4:
            return f4_true
        if src in NUM_RANK:
            return _to_float8
    if dst == FLOAT4 and src in NUM_RANK:
        return lambda v: f4(float(v))
    if dst == NUMERIC and src in INT_RANGE:
        return Decimal
    if dst == TIMESTAMP and src == DATE:
        return lambda d: d if isinstance(d, str) else datetime(d.year, d.month, d.day)
    if src == BPCHAR and dst in TEXTS and dst != BPCHAR:
        return rtrim  # char(n) to text/varchar drops the padding (see to_text)
    return None


def _to_float8(v: Any) -> float:
    try:
        f = float(v)
    except OverflowError:
        raise EvalError("value out of range: overflow", OUT_OF_RANGE) from None
    if math.isinf(f) and not (isinstance(v, Decimal) and v.is_infinite()):
        raise EvalError("value out of range: overflow", OUT_OF_RANGE)
    return f


def pg_apply(f: Fn, conv: Callable[[Any], Any] | None) -> Fn:
    if conv is None:
        return f
    return lambda row: None if (v := f(row)) is None else conv(v)


# --------------------------------------------------------------------------- arithmetic


def _div_scale(a: Decimal, b: Decimal) -> int:
    """Postgres's select_div_scale: at least 16 significant digits, at least either input's
    scale (weights and first digits are in base-10000 digits, as numeric stores them)."""

    def weight_first(d: Decimal) -> tuple[int, int]:
        if not d:
            return 0, 0
        w = d.adjusted() // 4
        return w, int(CTX.scaleb(abs(d), -4 * w))

    w1, f1 = weight_first(a)
    w2, f2 = weight_first(b)
    qweight = w1 - w2 - (1 if f1 <= f2 else 0)
    scale = max(16 - qweight * 4, pg_scale(a), pg_scale(b), 0)
    return min(scale, 1000)


def pg_scale(d: Decimal) -> int:
    return max(0, -int(d.as_tuple().exponent))


def numeric_div(a: Decimal, b: Decimal) -> Decimal:
    if not b:
        raise EvalError("division by zero", DIV_ZERO)
    a, b = Decimal(a), Decimal(b)
    scale = _div_scale(a, b)
    # Exact integer division, rounded half away from zero at `scale` digits.
    ta, tb = a.as_tuple(), b.as_tuple()
    ia = int("".join(map(str, ta.digits)))
    ib = int("".join(map(str, tb.digits)))
    k = int(ta.exponent) - int(tb.exponent) + scale
    num, den = (ia * 10**k, ib) if k >= 0 else (ia, ib * 10**-k)
    q, r = divmod(num, den)
    if 2 * r >= den:
        q += 1
    neg = (ta.sign != tb.sign) and q != 0
    return Decimal(f"{'-' if neg else ''}{q}E-{scale}")


def _trunc_div(a: int, b: int) -> int:
    if b == 0:
        raise EvalError("division by zero", DIV_ZERO)
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _trunc_mod(a: int, b: int) -> int:
    if b == 0:
        raise EvalError("division by zero", DIV_ZERO)
    r = abs(a) % abs(b)
    return -r if a < 0 else r


def nozero(d: Decimal) -> Decimal:
    # Postgres numeric has no negative zero; Decimal('-1') * 0 is Decimal('-0').
    return CTX.copy_abs(d) if not d and d.is_signed() else d


# Decimal's IEEE rules for NaN and infinities, with an invalid operation giving NaN (as
# Postgres's numeric does: Infinity - Infinity, Infinity * 0) instead of raising.
_SPECIAL_CTX = CTX.copy()
_SPECIAL_CTX.traps[InvalidOperation] = False


def _special(v: Any) -> bool:
    """True for numeric NaN and ±Infinity."""
    return isinstance(v, Decimal) and not v.is_finite()


def num_key(v: Any) -> Any:
    """Postgres's numeric order, NaN/±Infinity included: -Infinity < finite < Infinity < NaN,
    NaN = NaN (Decimal raises comparing NaN with <, and says NaN != NaN)."""
    if _special(v):
        return (3,) if v.is_nan() else (2,) if v > 0 else (0,)
    return (1, v)


def _numeric_special(op: str, a: Any, b: Any) -> Decimal:
    """Postgres's numeric arithmetic when an operand is NaN or ±Infinity (numeric.c)."""
    a, b = Decimal(a), Decimal(b)
    if a.is_nan() or b.is_nan():
        return Decimal("NaN")  # even NaN / 0
    if op == "+":
        return _SPECIAL_CTX.add(a, b)
    if op == "-":
        return _SPECIAL_CTX.subtract(a, b)
    if op == "*":
        return _SPECIAL_CTX.multiply(a, b)
    if not b:
        raise EvalError("division by zero", DIV_ZERO)
    if a.is_infinite():
        if b.is_infinite() or op == "%":
            return Decimal("NaN")
        return Decimal("Infinity") if (a > 0) == (b > 0) else Decimal("-Infinity")
    return Decimal(0) if op == "/" else a  # finite / ±Infinity is 0, finite % it is itself


def numeric_op(op: str) -> Callable[[Any, Any], Any]:
    fn: Callable[[Any, Any], Any]
    if op == "+":
        fn = lambda a, b: nozero(CTX.add(a, b))  # noqa: E731
    elif op == "-":
        fn = lambda a, b: nozero(CTX.subtract(a, b))  # noqa: E731
    elif op == "*":
        fn = lambda a, b: nozero(CTX.multiply(a, b))  # noqa: E731
    elif op == "/":
        fn = numeric_div
    else:

        def fn(a: Any, b: Any) -> Decimal:
            if not b:
                raise EvalError("division by zero", DIV_ZERO)
            return nozero(CTX.remainder(Decimal(a), Decimal(b)))

    def numeric(a: Any, b: Any) -> Any:
        # NaN and infinities raise under CTX (or break the division's digit arithmetic).
        if _special(a) or _special(b):
            return _numeric_special(op, a, b)
        return fn(a, b)

    return numeric


def float_op(op: str, t: int) -> Callable[[float, float], float]:
    def checked(a: float, b: float) -> float:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
            if r == 0.0 and a != 0.0 and b != 0.0:
                raise EvalError("value out of range: underflow", OUT_OF_RANGE)
        else:
            if b == 0.0:
                raise EvalError("division by zero", DIV_ZERO)
            r = a / b
            if r == 0.0 and a != 0.0 and not math.isinf(b):
                raise EvalError("value out of range: underflow", OUT_OF_RANGE)
        if math.isinf(r) and not (math.isinf(a) or math.isinf(b)):
            raise EvalError("value out of range: overflow", OUT_OF_RANGE)
        return r

    if t == FLOAT4:
        return lambda a, b: f4(checked(f4_true(a), f4_true(b)))
    return checked


def int_op(op: str, t: int) -> Callable[[int, int], int]:
    check = int_check(t)
    fn: Callable[[int, int], int] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": _trunc_div,
        "%": _trunc_mod,
    }[op]
    return lambda a, b: check(fn(a, b))


def date_op(op: str, ta: int, tb: int) -> Callable[[Any, Any], Any]:
    def plus(d: date | str, n: int) -> date | str:
        if isinstance(d, str):
            return d  # ±infinity (text from ingest) plus days is itself, as in date_pli
        try:
            return d + timedelta(days=n)
        except OverflowError:
            raise EvalError("date out of range", "22008") from None

    def minus(a: date | str, b: date | str) -> int:
        if isinstance(a, str) or isinstance(b, str):
            raise EvalError("cannot subtract infinite dates", "22008")
        return (a - b).days

    if op == "+":
        return (lambda a, b: plus(a, b)) if ta == DATE else (lambda a, b: plus(b, a))
    if tb == DATE:
        return minus
    return lambda a, b: plus(a, -b)


# --------------------------------------------------------------------------- comparisons


def time_key(v: Any) -> tuple[Any, ...]:
    """A date or timestamp as Postgres orders it. Ingest leaves ±infinity (and dates Python
    cannot hold) as Postgres's text, which Python cannot compare with dates."""
    if isinstance(v, str):
        if v == "infinity":
            return (2,)
        if v == "-infinity":
            return (0,)
        raise UnsupportedError(
            f"cannot compare the date/time value {v!r}",
            "views compare dates and timestamps from year 1 to 9999, and ±infinity",
        )
    return (1, v)


def nan_key(x: float) -> tuple[int, float]:
    # Postgres orders NaN above every other float and equal to itself.
    return (1, 0.0) if x != x else (0, x)


def pg_comparable(ta: int | None, tb: int | None) -> tuple[Callable[[Any], Any] | None, ...]:
    """Conversions that make values of types ta and tb compare as Postgres compares them."""
    if (ta in FLOATS or tb in FLOATS) and ta in NUM_RANK and tb in NUM_RANK:
        conv = {FLOAT4: f4_true, FLOAT8: None}
        return (
            (lambda v: nan_key(conv[ta](v) if conv.get(ta) else float(v))),  # type: ignore[index, misc]
            (lambda v: nan_key(conv[tb](v) if conv.get(tb) else float(v))),  # type: ignore[index, misc]
        )
    if {ta, tb} == {DATE, TIMESTAMP}:
        return implicit(ta, TIMESTAMP), implicit(tb, TIMESTAMP)
    if BPCHAR in (ta, tb) and ta in TEXTS and tb in TEXTS:
        # character(n) compares without trailing spaces. Against char(n) or varchar Postgres
        # picks bpchar's own operators (both sides trimmed: 'ab  '::char(4) = 'ab '::varchar);
        # against text or name it casts char(n) to text and compares texts (only the char(n)
        # side trimmed: 'ab  '::char(4) = 'ab '::text is false).
        both = {ta, tb} <= {BPCHAR, VARCHAR}
        return (
            rtrim if both or ta == BPCHAR else None,
            rtrim if both or tb == BPCHAR else None,
        )
    return None, None


CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def comparator(op: str, ta: int | None, tb: int | None) -> Callable[[Any, Any], bool]:
    """A non-NULL comparison of a value of type ta with one of type tb."""
    fa, fb = pg_comparable(ta, tb)
    cmp = CMP[op]
    ka = fa or (lambda v: v)
    kb = fb or (lambda v: v)
    if NUMERIC in (ta, tb) and ta in _EXACT and tb in _EXACT:

        def numbers(a: Any, b: Any) -> bool:
            if _special(a) or _special(b):  # NaN, ±Infinity (see num_key)
                return cmp(num_key(a), num_key(b))
            return cmp(a, b)

        return numbers
    if ta in DATETIMES and tb in DATETIMES:

        def times(a: Any, b: Any) -> bool:
            a, b = ka(a), kb(b)
            if isinstance(a, str) or isinstance(b, str):  # ±infinity (see time_key)
                return cmp(time_key(a), time_key(b))
            return cmp(a, b)

        return times
    if fa is None and fb is None:
        return cmp
    return lambda a, b: cmp(ka(a), kb(b))


# --------------------------------------------------------------------------- LIKE


@lru_cache(maxsize=256)
def like_regex(pattern: str, insensitive: bool) -> re.Pattern[str]:
    """LIKE pattern → regular expression over the data: % any run, _ one character,
    backslash escapes the next character."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 == len(pattern):
                raise EvalError("LIKE pattern must not end with escape character", "22025")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if insensitive else 0))


# --------------------------------------------------------------------------- casts


def _parse_int(t: int) -> Callable[[str], int]:
    lo, hi, name = INT_RANGE[t]

    def parse(s: str) -> int:
        text = s.strip()
        body = text[1:] if text[:1] in "+-" else text
        if not body.isascii() or not body.isdigit():
            raise EvalError(f'invalid input syntax for type {name}: "{s}"', BAD_INPUT)
        v = int(text)
        if not lo <= v <= hi:
            raise EvalError(f'value "{s}" is out of range for type {name}', OUT_OF_RANGE)
        return v

    return parse


def _parse_numeric(s: str) -> Decimal:
    try:
        d = Decimal(s.strip())
    except InvalidOperation:
        raise EvalError(f'invalid input syntax for type numeric: "{s}"', BAD_INPUT) from None
    if "_" in s or (d.is_nan() and s.strip().lower() != "nan"):
        raise EvalError(f'invalid input syntax for type numeric: "{s}"', BAD_INPUT)
    return _no_exponent(d)


def _no_exponent(d: Decimal) -> Decimal:
    # 1E+3 has scale 0 in Postgres: keep the value, drop the positive exponent.
    if d.is_finite() and d.as_tuple().exponent > 0:  # type: ignore[operator]
        return d.quantize(Decimal(1), context=CTX)
    return d


def _parse_float(s: str) -> float:
    text = s.strip()
    try:
        f = float(text)
    except ValueError:
        raise EvalError(
            f'invalid input syntax for type double precision: "{s}"', BAD_INPUT
        ) from None
    if "_" in text:
        raise EvalError(f'invalid input syntax for type double precision: "{s}"', BAD_INPUT)
    if math.isinf(f) and "inf" not in text.lower():
        raise EvalError(f'"{s}" is out of range for type double precision', OUT_OF_RANGE)
    return f


def _parse_bool(s: str) -> bool:
    # Postgres's parse_bool: a prefix of true/false/yes/no, on/off (2+ letters), 1/0.
    v = s.strip().lower()
    if v in ("1", "on") or (v and ("true".startswith(v) or "yes".startswith(v))):
        return True
    if v in ("0", "off", "of") or (v and ("false".startswith(v) or "no".startswith(v))):
        return False
    raise EvalError(f'invalid input syntax for type boolean: "{s}"', BAD_INPUT)


def _infinity(s: str) -> str | None:
    """'infinity' or '-infinity' for Postgres's spellings of them (kept as text, as ingest
    keeps them), else None."""
    v = s.strip().lower()
    if v in ("infinity", "+infinity"):
        return "infinity"
    return "-infinity" if v == "-infinity" else None


def _parse_date(s: str) -> date | str:
    if (inf := _infinity(s)) is not None:
        return inf  # WHERE valid_until = 'infinity'
    try:
        return date.fromisoformat(s.strip())
    except ValueError:
        raise EvalError(f'invalid input syntax for type date: "{s}"', BAD_DATETIME) from None


def _parse_timestamp(tz: bool) -> Callable[[str], datetime | str]:
    def parse(s: str) -> datetime | str:
        if (inf := _infinity(s)) is not None:
            return inf
        try:
            v = datetime.fromisoformat(s.strip())
        except ValueError:
            kind = "timestamp with time zone" if tz else "timestamp"
            raise EvalError(f'invalid input syntax for type {kind}: "{s}"', BAD_DATETIME) from None
        if not tz:
            return v.replace(tzinfo=None)  # timestamp input ignores a zone, as in Postgres
        return v if v.tzinfo else v.replace(tzinfo=UTC)  # session TimeZone is UTC

    return parse


def _round_half_up(d: Decimal, scale: int) -> Decimal:
    return d.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=CTX)


def _numeric_typmod(p: int, s: int) -> Callable[[Decimal], Decimal]:
    limit = Decimal(10) ** (p - s)

    def apply(d: Decimal) -> Decimal:
        if d.is_nan():
            return d
        if d.is_infinite():
            raise EvalError("numeric field overflow", OUT_OF_RANGE)
        r = nozero(_no_exponent(_round_half_up(d, s)))
        if abs(r) >= limit:
            raise EvalError("numeric field overflow", OUT_OF_RANGE)
        return r

    return apply


def pg_cast(src: int, dst: int, typmod: tuple[int, ...] | None) -> Callable[[Any], Any]:
    """The function casting a non-NULL value of type src to dst (validated by resolve)."""
    if dst in TEXTS:
        out = to_text(src)
        if dst == VARCHAR and typmod:
            n = typmod[0]
            return lambda v: out(v)[:n]
        return out
    if src in TEXTS:
        parse = _parse_from_text(dst)
        if dst == NUMERIC and typmod:
            tm = _numeric_typmod(*typmod)
            return lambda s: tm(parse(s))
        return parse
    if dst in INT_RANGE:
        check = int_check(dst)
        if src in INT_RANGE:
            return check
        if src == BOOL:
            return int
        if src == NUMERIC:

            def from_numeric(d: Decimal) -> int:
                if not d.is_finite():
                    raise EvalError(f"cannot convert {d} to {INT_RANGE[dst][2]}", "0A000")
                return check(int(_round_half_up(d, 0)))

            return from_numeric

        def from_float(f: float) -> int:
            if math.isnan(f) or math.isinf(f):
                raise EvalError(f"{INT_RANGE[dst][2]} out of range", OUT_OF_RANGE)
            return check(round(f4_true(f) if src == FLOAT4 else f))  # round(): half to even

        return from_float
    if dst == NUMERIC:
        if src in INT_RANGE:
            conv: Callable[[Any], Decimal] = Decimal
        elif src == NUMERIC:
            conv = lambda d: d  # noqa: E731
        else:
            digits = 6 if src == FLOAT4 else 15  # FLT_DIG / DBL_DIG, as float8_numeric uses
            conv = lambda f: _no_exponent(Decimal(f"{f:.{digits}g}"))  # noqa: E731
        if typmod:
            tm = _numeric_typmod(*typmod)
            return lambda v: tm(conv(v))
        return conv
    if dst == FLOAT8:
        return implicit(src, FLOAT8) or (lambda v: v)
    if dst == FLOAT4:
        return lambda v: f4(float(v))
    if dst == BOOL:
        return bool  # from int4: nonzero is true
    if dst == DATE:
        return lambda v: v if isinstance(v, str) else v.date()
    if dst == TIMESTAMP:
        return implicit(DATE, TIMESTAMP) or (lambda v: v)
    raise UnsupportedError(f"cannot compile cast from {type_sql(src)} to {type_sql(dst)}")


def _parse_from_text(dst: int) -> Callable[[str], Any]:
    if dst in INT_RANGE:
        return _parse_int(dst)
    if dst == NUMERIC:
        return _parse_numeric
    if dst == FLOAT8:
        return _parse_float
    if dst == FLOAT4:
        return lambda s: f4(_parse_float(s))
    if dst == BOOL:
        return _parse_bool
    if dst == DATE:
        return _parse_date
    if dst in (TIMESTAMP, TIMESTAMPTZ):
        return _parse_timestamp(dst == TIMESTAMPTZ)
    raise UnsupportedError(f"cannot compile cast from text to {type_sql(dst)}")


# --------------------------------------------------------------------------- date_trunc


def pg_date_trunc(unit: str) -> Callable[[datetime], datetime]:
    def trunc(v: datetime) -> datetime:
        if unit == "microseconds":
            return v
        if unit == "milliseconds":
            return v.replace(microsecond=v.microsecond // 1000 * 1000)
        if unit == "second":
            return v.replace(microsecond=0)
        if unit == "minute":
            return v.replace(second=0, microsecond=0)
        if unit == "hour":
            return v.replace(minute=0, second=0, microsecond=0)
        day = v.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit == "day":
            return day
        if unit == "week":  # ISO weeks start on Monday
            return day - timedelta(days=day.weekday())
        if unit == "month":
            return day.replace(day=1)
        if unit == "quarter":
            return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
        y = day.year
        year = {
            "year": y,
            "decade": y // 10 * 10,
            "century": (y - 1) // 100 * 100 + 1,
            "millennium": (y - 1) // 1000 * 1000 + 1,
        }[unit]
        return day.replace(year=max(year, 1), month=1, day=1)

    # 'infinity' stays as the text Python cannot represent; date_trunc keeps it in Postgres.
    return lambda v: v if isinstance(v, str) else trunc(v)
