"""Aggregates: the incremental state of one aggregate call in one group.

The view engine feeds each group's aggregate a stream of additions and removals, one per row
entering or leaving the group (an UPDATE is a removal then an addition), in any order that is a
valid multiset history: a removal is always of a value added before and not yet removed. After
each transaction it reads `result()`. The states here turn that stream into exactly what
Postgres computes over the group's current rows (issue 3): COUNT(*), COUNT(x), SUM, AVG, MIN,
MAX, BOOL_AND, BOOL_OR, each optionally DISTINCT.

What the caller does, not this module: FILTER (WHERE ...) is applied before feeding (only rows
whose filter is true are added or removed); a group's existence is the engine's own row count
(`is_empty()` says the state is back to a fresh one and may be deleted from storage, which for
the NULL-ignoring aggregates also happens while NULL rows remain).

Exactness: integer sums are Python ints; numeric sums are Decimal under `expr.CTX` (never
rounded) with NaN and ±Infinity counted apart, so removing one works; float sums keep the exact
rational sum of the inputs (an int count of 2**-1074, the smallest double) and round once, in
`result()`. Postgres adds floats in scan order, so its own float SUM/AVG depends on row order in
the last bits: ours equals the exactly rounded sum, and matches Postgres only to that extent.
MIN/MAX keep a multiset, so removing the current extreme is exact; text orders by code point
(Postgres's "C" collation), numeric NaN above everything, float NaN above everything.

Values Postgres calls equal but prints differently (numeric 1.0 and 1.00, float 0 and -0,
timestamptz at two offsets) are one multiset class; when such a class is the MIN/MAX (or the
DISTINCT representative fed to SUM/AVG) we return the variant with the smallest encoding, where
Postgres returns whichever its scan met. The value is equal; only the printed form may differ.

Storage: `encode()` gives bytes that depend only on the current multiset of inputs, never on the
order of operations (multisets in sorted key order, Decimal sums normalised), so replaying a
transaction after a crash writes byte-identical data. No pickle: each value is a type tag and a
textual or fixed-width payload.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import Decimal, localcontext
from typing import Any

from viewstore.codecs.value import (
    CORRUPT_HINT,
    decode_value,
    encode_value,
    pack_fields,
    unpack_fields,
)
from viewstore.errors import StoreError, UnsupportedError
from viewstore.views.pgvalues import (
    CTX,
    EvalError,
    f4,
    f4_true,
    nozero,
    numeric_div,
    time_key,
    type_sql,
)
from viewstore.views.tree import (
    BOOL,
    BPCHAR,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
)

__all__ = [
    "AggState",
    "decode_state",
    "decode_value",
    "encode_value",
    "make_state",
    "order_key",
    "result_type",
]

INTS = (INT2, INT4, INT8)
FLOATS = (FLOAT4, FLOAT8)
# Types Postgres has min()/max() for, among those viewstore reads into Python values.
# (Postgres 15 has no min(bool), min(uuid) or min(bytea).)
ORDERED = frozenset({*INTS, NUMERIC, *FLOATS, TEXT, VARCHAR, BPCHAR, DATE, TIMESTAMP, TIMESTAMPTZ})

# --------------------------------------------------------------------------- result types


def result_type(name: str, arg_type: int | None) -> int:
    """The type OID Postgres gives `name(arg)`; UnsupportedError where Postgres has no such
    aggregate (its message, "function sum(text) does not exist")."""
    name = name.lower()
    if name == "count":
        return INT8
    t: int | None = None
    if arg_type is not None:
        if name == "sum":
            t = {INT2: INT8, INT4: INT8, INT8: NUMERIC, NUMERIC: NUMERIC}.get(arg_type)
            t = arg_type if arg_type in FLOATS else t
        elif name == "avg":
            t = FLOAT8 if arg_type in FLOATS else NUMERIC if arg_type in (*INTS, NUMERIC) else None
        elif name in ("min", "max"):
            # min(varchar) is min(text) after coercion: pg_typeof says text.
            t = TEXT if arg_type == VARCHAR else arg_type if arg_type in ORDERED else None
        elif name in ("bool_and", "bool_or"):
            t = BOOL if arg_type == BOOL else None
    if t is None:
        arg = "*" if arg_type is None else type_sql(arg_type)
        raise UnsupportedError(
            f"function {name}({arg}) does not exist",
            "viewstore supports count, sum, avg, min, max, bool_and and bool_or",
        )
    return t


# --------------------------------------------------------------------------- ordering


def _numeric_key(d: Decimal) -> tuple[Any, ...]:
    # Postgres orders numeric -Infinity < finite < Infinity < NaN, and NaN = NaN.
    if d.is_nan():
        return (3,)
    if d.is_infinite():
        return (2,) if d > 0 else (0,)
    return (1, d)


def _float_key(x: float) -> tuple[Any, ...]:
    # float8 NaN equals NaN and sorts above Infinity; -0 = 0 (equal, and equal hashes).
    return (1,) if math.isnan(x) else (0, x)


def order_key(arg_type: int | None) -> Callable[[Any], Any]:
    """Postgres's equality and ordering for `arg_type`, as a hashable, comparable key
    (keys of one type compare with each other; equal keys mean Postgres's `=` holds)."""
    if arg_type == NUMERIC:
        return _numeric_key
    if arg_type in FLOATS:
        return _float_key
    if arg_type in (DATE, TIMESTAMP, TIMESTAMPTZ):
        return time_key
    if arg_type == BPCHAR:
        return lambda s: s.rstrip(" ")  # character(n) ignores trailing spaces
    # Everything else Python orders as Postgres's "C" collation / memcmp does.
    return lambda v: v


class _Multiset:
    """Values by class (Postgres equality), each class by exact form (encoded bytes)."""

    def __init__(self, key: Callable[[Any], Any]) -> None:
        self.key = key
        self.classes: dict[Any, dict[bytes, list[Any]]] = {}  # key -> {bytes: [value, count]}
        self.changed: dict[bytes, Any] = {}  # exact forms whose count moved -> their class key

    def add(self, v: Any, count: int = 1) -> tuple[Any, bool]:
        """Add `v`; return its class key and whether the class is new."""
        k = self.key(v)
        cls = self.classes.get(k)
        new = cls is None
        if cls is None:
            cls = self.classes[k] = {}
        b = encode_value(v)
        if b in cls:
            cls[b][1] += count
        else:
            cls[b] = [v, count]
        self.changed[b] = k
        return k, new

    def remove(self, v: Any) -> Any:
        k = self.key(v)
        cls = self.classes.get(k)
        b = encode_value(v)
        if cls is None or b not in cls:
            raise StoreError(f"aggregate state: removing {v!r}, which is not there", CORRUPT_HINT)
        entry = cls[b]
        entry[1] -= 1
        self.changed[b] = k
        if not entry[1]:
            del cls[b]
            if not cls:
                del self.classes[k]
        return k

    def rep(self, k: Any) -> tuple[bytes, Any] | None:
        """The class's representative: its form with the smallest encoding (deterministic)."""
        cls = self.classes.get(k)
        if not cls:
            return None
        b = min(cls)
        return b, cls[b][0]

    def fields(self) -> list[Any]:
        out: list[Any] = []
        for k in sorted(self.classes):
            cls = self.classes[k]
            for b in sorted(cls):
                out += cls[b]
        return out

    def load(self, fields: list[Any]) -> None:
        for i in range(0, len(fields), 2):
            self.add(fields[i], fields[i + 1])
        self.changed.clear()

    def take_changes(self) -> list[tuple[bytes, int]]:
        """(exact form, its count now: 0 when gone) of every value whose count moved since
        the last call, in byte order; what the store writes per value of a spilled state."""
        out = []
        for b, k in sorted(self.changed.items()):
            entry = self.classes.get(k, {}).get(b)
            out.append((b, 0 if entry is None else entry[1]))
        self.changed.clear()
        return out


# --------------------------------------------------------------------------- states


class AggState(ABC):
    """One aggregate's state in one group. NULL inputs are ignored except by COUNT(*)."""

    @abstractmethod
    def add(self, value: Any) -> None: ...

    @abstractmethod
    def remove(self, value: Any) -> None:
        """Undo one `add(value)`; StoreError if there was none (silence would hide a bug)."""

    @abstractmethod
    def result(self) -> Any:
        """What Postgres's aggregate returns over the current inputs."""

    @abstractmethod
    def is_empty(self) -> bool:
        """True when the state equals a fresh one (it may be deleted from storage)."""

    @abstractmethod
    def fields(self) -> list[Any]: ...

    @abstractmethod
    def load(self, fields: list[Any]) -> None: ...

    # A state that keeps a multiset (MIN/MAX, DISTINCT) spills it: the store keeps one entry
    # per distinct value (its exact form -> count) beside the group, writes only the entries
    # whose count moved (`take_changes`), and hands them back to `load` when it reads the
    # group; the group's own value then holds `own_fields()`, which is empty for them. So a
    # group with a million distinct values is not rewritten whenever one of them changes.
    spills = False

    def own_fields(self) -> list[Any]:
        """What the group's value holds of this state (all of it, unless it spills)."""
        return [] if self.spills else self.fields()

    def take_changes(self) -> list[tuple[bytes, int]]:
        """A spilling state's multiset entries changed since the last call (see `spills`)."""
        return []

    def add_many(self, values: list[Any]) -> None:
        """`add` each of `values` (a view build feeds a group's values in one call)."""
        for value in values:
            self.add(value)

    def encode(self) -> bytes:
        """Bytes that depend only on the current multiset of inputs."""
        return pack_fields(self.fields())


def _underflow(what: str) -> StoreError:
    return StoreError(f"aggregate state: {what} removed more often than added", CORRUPT_HINT)


class Count(AggState):
    """COUNT(*) (`star`: every row) or COUNT(x) (non-NULL values)."""

    def __init__(self, star: bool) -> None:
        self.star = star
        self.n = 0

    def add(self, value: Any) -> None:
        if self.star or value is not None:
            self.n += 1

    def remove(self, value: Any) -> None:
        if self.star or value is not None:
            if not self.n:
                raise _underflow("count")
            self.n -= 1

    def result(self) -> int:
        return self.n

    def is_empty(self) -> bool:
        return not self.n

    def fields(self) -> list[Any]:
        return [self.n]

    def load(self, fields: list[Any]) -> None:
        (self.n,) = fields


class BoolAgg(AggState):
    """BOOL_AND / BOOL_OR: counts of true and false, so either can be removed."""

    def __init__(self, is_and: bool) -> None:
        self.is_and = is_and
        self.true = self.false = 0

    def add(self, value: Any) -> None:
        if value is not None:
            if value:
                self.true += 1
            else:
                self.false += 1

    def remove(self, value: Any) -> None:
        if value is not None:
            if (self.true if value else self.false) == 0:
                raise _underflow(repr(value))
            if value:
                self.true -= 1
            else:
                self.false -= 1

    def result(self) -> bool | None:
        if not (self.true or self.false):
            return None
        return not self.false if self.is_and else bool(self.true)

    def is_empty(self) -> bool:
        return not (self.true or self.false)

    def fields(self) -> list[Any]:
        return [self.true, self.false]

    def load(self, fields: list[Any]) -> None:
        self.true, self.false = fields


class IntSum(AggState):
    """SUM/AVG over int2, int4, int8: an exact int and a count."""

    def __init__(self, avg: bool, arg_type: int) -> None:
        self.avg, self.arg_type = avg, arg_type
        self.n = self.total = 0

    def add(self, value: Any) -> None:
        if value is not None:
            self.n += 1
            self.total += value

    def remove(self, value: Any) -> None:
        if value is not None:
            if not self.n:
                raise _underflow("sum input")
            self.n -= 1
            self.total -= value

    def result(self) -> int | Decimal | None:
        if not self.n:
            return None
        if self.avg:
            return numeric_div(Decimal(self.total), Decimal(self.n))
        return Decimal(self.total) if self.arg_type == INT8 else self.total

    def is_empty(self) -> bool:
        return not self.n

    def fields(self) -> list[Any]:
        return [self.n, self.total]

    def load(self, fields: list[Any]) -> None:
        self.n, self.total = fields


class _SpecialSum(AggState):
    """Shared by numeric and float sums: NaN, +Infinity and -Infinity are counted apart from
    the finite sum, so removing one restores the finite result (Postgres 14+ rules:
    any NaN, or both infinities, gives NaN)."""

    nan_value: Any
    inf_value: Any

    def __init__(self, avg: bool) -> None:
        self.avg = avg
        self.n = self.nan = self.pinf = self.ninf = 0

    @abstractmethod
    def _add_finite(self, value: Any, sign: int) -> None: ...

    @abstractmethod
    def _finite_result(self) -> Any: ...

    @abstractmethod
    def _special(self, value: Any) -> str | None:
        """ "nan", "pinf", "ninf" (the counter to move), or None for a finite value."""

    def add(self, value: Any) -> None:
        if value is None:
            return
        self.n += 1
        kind = self._special(value)
        if kind:
            setattr(self, kind, getattr(self, kind) + 1)
        else:
            self._add_finite(value, 1)

    def remove(self, value: Any) -> None:
        if value is None:
            return
        kind = self._special(value)
        if not self.n or (kind and not getattr(self, kind)):
            raise _underflow(repr(value))
        self.n -= 1
        if kind:
            setattr(self, kind, getattr(self, kind) - 1)
        else:
            self._add_finite(value, -1)

    def result(self) -> Any:
        if not self.n:
            return None
        if self.nan or (self.pinf and self.ninf):
            return self.nan_value
        if self.pinf or self.ninf:
            return self.inf_value if self.pinf else -self.inf_value
        return self._finite_result()

    def is_empty(self) -> bool:
        return not self.n


class NumericSum(_SpecialSum):
    """SUM/AVG(numeric). Postgres's sum has the largest scale among its inputs; the running
    Decimal may carry more digits (from values since removed), all zero, so a multiset of
    scales tells us what to quantize to."""

    nan_value = Decimal("NaN")
    inf_value = Decimal("Infinity")

    def __init__(self, avg: bool) -> None:
        super().__init__(avg)
        self.total = Decimal(0)
        self.scales: dict[int, int] = {}

    def _special(self, value: Any) -> str | None:
        if value.is_finite():
            return None
        return "nan" if value.is_nan() else "pinf" if value > 0 else "ninf"

    def add(self, value: Any) -> None:
        # The common case first, without the special-value bookkeeping.
        if value is not None and value.is_finite():
            self.n += 1
            self._add_finite(value, 1)
        else:
            super().add(value)

    def _add_finite(self, value: Any, sign: int) -> None:
        exponent = value.as_tuple().exponent
        s = max(0, -exponent)
        top = max(self.scales, default=0)
        self.total = CTX.add(self.total, value) if sign > 0 else CTX.subtract(self.total, value)
        left = self.scales.get(s, 0) + sign
        if left < 0:
            raise _underflow(f"numeric of scale {s}")
        if left:
            self.scales[s] = left
        else:
            del self.scales[s]
        # Keep the stored sum in its normal form so encode() is order-independent. The sum of
        # two Decimals has the larger scale, so while the largest input scale stays what it
        # was, only a negative zero needs fixing; quantize when it moved.
        if exponent <= 0 and (s < top or (s == top and left > 0)):
            self.total = nozero(self.total)
        else:
            self.total = self._sum()

    def _sum(self) -> Decimal:
        scale = max(self.scales, default=0)
        return nozero(self.total.quantize(Decimal(1).scaleb(-scale), context=CTX))

    def add_many(self, values: list[Any]) -> None:
        # One exact sum and one normalisation for the lot, instead of one per value.
        finite = []
        for value in values:
            if value is None:
                continue
            if value.is_finite():
                finite.append(value)
            else:
                self.add(value)
        if not finite:
            return
        self.n += len(finite)
        scales = self.scales
        for value in finite:
            s = max(0, -value.as_tuple().exponent)
            scales[s] = scales.get(s, 0) + 1
        with localcontext(CTX):
            self.total = sum(finite, self.total)
        self.total = self._sum()

    # `total` is kept in its normal form by every change (and stored so), so the result and
    # the stored fields read it as it is.

    def _finite_result(self) -> Decimal:
        if self.avg:
            # numeric_avg divides the sum by the count of all non-NULL inputs.
            return numeric_div(self.total, Decimal(self.n))
        return self.total

    def fields(self) -> list[Any]:
        out = [self.n, self.nan, self.pinf, self.ninf, self.total]
        for s in sorted(self.scales):
            out += [s, self.scales[s]]
        return out

    def load(self, fields: list[Any]) -> None:
        self.n, self.nan, self.pinf, self.ninf, self.total = fields[:5]
        rest = fields[5:]
        self.scales = {rest[i]: rest[i + 1] for i in range(0, len(rest), 2)}


_ULP_EXP = 1074  # every finite double is an integer multiple of 2**-1074


def _exact(x: float) -> int:
    num, den = x.as_integer_ratio()
    return num << (_ULP_EXP - (den.bit_length() - 1))


class FloatSum(_SpecialSum):
    """SUM/AVG over float4/float8: the exact sum of the inputs in units of 2**-1074, rounded
    once at result(). Float addition is not associative, so no float running sum survives
    arbitrary removals; Postgres's own result depends on scan order in the last bits.
    A finite sum beyond the type's range raises EvalError, as Postgres's float8pl does."""

    nan_value = math.nan
    inf_value = math.inf

    def __init__(self, avg: bool, arg_type: int) -> None:
        super().__init__(avg)
        self.float4 = arg_type == FLOAT4
        self.total = 0
        # SUM starts from its first input (float8pl, no initial value), so a sum of only -0
        # inputs is -0; any +0 or cancellation gives +0 under round-to-nearest.
        self.finite = self.negzero = 0

    def _special(self, value: Any) -> str | None:
        if math.isfinite(value):
            return None
        return "nan" if math.isnan(value) else "pinf" if value > 0 else "ninf"

    def _add_finite(self, value: Any, sign: int) -> None:
        x = f4_true(value) if self.float4 else value  # the float4's exact binary value
        self.total += sign * _exact(x)
        self.finite += sign
        if x == 0 and math.copysign(1.0, x) < 0:
            self.negzero += sign

    def _finite_result(self) -> float:
        try:
            if self.avg:  # float8_avg: float8 sum / count, both float8
                return self.total / (self.n << _ULP_EXP)
            r = self.total / (1 << _ULP_EXP)
        except OverflowError:
            raise EvalError("value out of range: overflow", "22003") from None
        if r == 0 and self.finite == self.negzero:
            r = -0.0
        return f4(r) if self.float4 else r

    def fields(self) -> list[Any]:
        return [self.n, self.nan, self.pinf, self.ninf, self.total, self.finite, self.negzero]

    def load(self, fields: list[Any]) -> None:
        self.n, self.nan, self.pinf, self.ninf, self.total, self.finite, self.negzero = fields


class _Rev:
    """Reverses `<` so heapq's min-heap serves MAX."""

    __slots__ = ("k",)

    def __init__(self, k: Any) -> None:
        self.k = k

    def __lt__(self, other: _Rev) -> bool:
        return other.k < self.k


class MinMax(AggState):
    """MIN/MAX: a multiset of values plus a lazily cleaned heap of its class keys, so that
    removing the current extreme (the case a plain running min gets wrong) costs O(log n)."""

    spills = True

    def __init__(self, is_max: bool, arg_type: int) -> None:
        self.is_max = is_max
        self.values = _Multiset(order_key(arg_type))
        self.heap: list[Any] = []

    def take_changes(self) -> list[tuple[bytes, int]]:
        return self.values.take_changes()

    def _push(self, k: Any) -> None:
        heapq.heappush(self.heap, _Rev(k) if self.is_max else k)
        # Keys removed and re-added leave stale entries; rebuild before they dominate.
        if len(self.heap) > 2 * len(self.values.classes) + 32:
            keys = list(self.values.classes)
            self.heap = [_Rev(k) for k in keys] if self.is_max else keys
            heapq.heapify(self.heap)

    def _top(self) -> Any:
        while self.heap:
            top = self.heap[0]
            k = top.k if self.is_max else top
            if k in self.values.classes:
                return k
            heapq.heappop(self.heap)
        return None

    def add(self, value: Any) -> None:
        if value is not None:
            k, new = self.values.add(value)
            if new:
                self._push(k)

    def remove(self, value: Any) -> None:
        if value is not None:
            self.values.remove(value)

    def result(self) -> Any:
        if not self.values.classes:
            return None
        rep = self.values.rep(self._top())
        assert rep is not None  # _top() returned a live class
        return rep[1]

    def is_empty(self) -> bool:
        return not self.values.classes

    def fields(self) -> list[Any]:
        return self.values.fields()

    def load(self, fields: list[Any]) -> None:
        self.values.load(fields)
        keys = list(self.values.classes)
        self.heap = [_Rev(k) for k in keys] if self.is_max else keys
        heapq.heapify(self.heap)


class Distinct(AggState):
    """agg(DISTINCT x): a multiset of the inputs; the inner state sees one representative per
    class of equal values (COUNT(DISTINCT x) counts classes)."""

    spills = True

    def __init__(self, inner: AggState, arg_type: int | None) -> None:
        self.inner = inner
        self.values = _Multiset(order_key(arg_type))

    def take_changes(self) -> list[tuple[bytes, int]]:
        return self.values.take_changes()

    def _swap(self, before: tuple[bytes, Any] | None, after: tuple[bytes, Any] | None) -> None:
        if before is not None and after is not None and before[0] == after[0]:
            return
        if before is not None:
            self.inner.remove(before[1])
        if after is not None:
            self.inner.add(after[1])

    def add(self, value: Any) -> None:
        if value is not None:
            k = self.values.key(value)
            before = self.values.rep(k)
            self.values.add(value)
            self._swap(before, self.values.rep(k))

    def remove(self, value: Any) -> None:
        if value is not None:
            k = self.values.key(value)
            before = self.values.rep(k)
            self.values.remove(value)
            self._swap(before, self.values.rep(k))

    def result(self) -> Any:
        return self.inner.result()

    def is_empty(self) -> bool:
        return not self.values.classes

    def fields(self) -> list[Any]:
        return self.values.fields()

    def load(self, fields: list[Any]) -> None:
        self.values.load(fields)
        for k in self.values.classes:
            rep = self.values.rep(k)
            assert rep is not None
            self.inner.add(rep[1])


# --------------------------------------------------------------------------- factory


def make_state(name: str, arg_type: int | None, distinct: bool) -> AggState:
    """A fresh state for `name(arg)` (lowercase or not); `arg_type` None means COUNT(*).
    UnsupportedError for an aggregate Postgres does not have, or viewstore cannot keep."""
    return state_factory(name, arg_type, distinct)()


def state_factory(name: str, arg_type: int | None, distinct: bool) -> Callable[[], AggState]:
    """What makes fresh states of `name(arg)`, checked once (a view build makes one per
    group: a million groups should not check the aggregate a million times)."""
    name = name.lower()
    result_type(name, arg_type)  # rejects what Postgres rejects
    make: Callable[[], AggState]
    if name == "count":
        if arg_type is None and distinct:
            raise UnsupportedError("count(DISTINCT *) is not SQL", "write count(DISTINCT x)")
        star = arg_type is None
        make = lambda: Count(star=star)  # noqa: E731
    elif name in ("min", "max"):
        # DISTINCT changes nothing for MIN/MAX.
        is_max = name == "max"
        return lambda: MinMax(is_max, arg_type)  # type: ignore[arg-type]
    elif name in ("bool_and", "bool_or"):
        is_and = name == "bool_and"
        make = lambda: BoolAgg(is_and)  # noqa: E731
    elif arg_type in INTS:
        avg = name == "avg"
        make = lambda: IntSum(avg, arg_type)  # type: ignore[arg-type]  # noqa: E731
    elif arg_type == NUMERIC:
        avg = name == "avg"
        make = lambda: NumericSum(avg)  # noqa: E731
    else:
        avg = name == "avg"
        make = lambda: FloatSum(avg, arg_type)  # type: ignore[arg-type]  # noqa: E731
    if distinct:
        return lambda: Distinct(make(), arg_type)
    return make


def decode_state(name: str, arg_type: int | None, distinct: bool, data: bytes) -> AggState:
    """The state whose `encode()` gave `data`; StoreError if the bytes are not such a state."""
    state = make_state(name, arg_type, distinct)
    fields = unpack_fields(data)
    try:
        state.load(fields)
    except (ValueError, TypeError, IndexError) as exc:
        raise StoreError(
            f"aggregate state for {name}: cannot decode: {exc}", CORRUPT_HINT
        ) from None
    return state
