"""View resolution: bind a parsed view to its tables' columns and give every expression a type.

Every column reference gets its index in the joined row (the columns of each FROM item in FROM
order, concatenated), every expression gets its Postgres result type OID, and GROUP BY is checked
with Postgres's functional-dependency rule. Type rules follow Postgres's operator and function
catalog for the supported subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from viewstore.errors import ConfigError
from viewstore.views import expr as expr_mod
from viewstore.views.pgvalues import (
    COMPARED_EXACTLY,
    DATE_TRUNC_UNITS,
    NUM_RANK,
    TEXTS,
    arith_type,
    category,
    describe_type,
    type_sql,
)
from viewstore.views.sql import (
    SUPPORTED_HINT,
    where,
)
from viewstore.views.stack import KEY_COLUMN
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
    Join,
    Like,
    NullTest,
    Op,
    OutputColumn,
    SortItem,
    Star,
    ViewDef,
    Window,
    children,
)

# --------------------------------------------------------------------------- resolution


def _join_class(t: int) -> int | str:
    """Types whose values a join can match by key encoding and ==, as Postgres's = does."""
    if t in (INT2, INT4, INT8, NUMERIC):
        return "exact number"  # int and Decimal share one key encoding: 1 = 1.0
    if t in (TEXT, VARCHAR, NAME):
        return "text"
    return t


@dataclass(frozen=True)
class TableShape:
    """A base table as the mirror knows it: columns (name, type OID) and primary key names."""

    columns: Sequence[tuple[str, int]]
    key: Sequence[str]


@dataclass(frozen=True)
class ResolvedTable:
    alias: str
    table: str
    offset: int  # its first column's index in the joined row
    shape: TableShape


@dataclass(frozen=True)
class ResolvedView:
    """A view bound to its tables: every Col has `table` (the alias) and `index`, every Expr
    has `type`. `joins[i].on` pairs (earlier table's column, joined table's column)."""

    view: ViewDef
    tables: tuple[ResolvedTable, ...]
    columns: tuple[OutputColumn, ...]
    joins: tuple[Join, ...]
    where: Expr | None
    group_by: tuple[Expr, ...]
    having: Expr | None

    @property
    def width(self) -> int:
        """Number of values in a joined row."""
        return sum(len(t.shape.columns) for t in self.tables)


def resolve(view: ViewDef, tables: Mapping[str, TableShape]) -> ResolvedView:
    """Bind `view` to `tables` (name → shape); see the module docstring. Raise ConfigError
    naming an unknown table or column, an ambiguous reference, a type mismatch, or a column
    that must appear in GROUP BY."""
    return _Resolver(view, tables).run()


class _Resolver:
    def __init__(self, view: ViewDef, tables: Mapping[str, TableShape]) -> None:
        self.view, self.shapes = view, tables
        self.scope: list[ResolvedTable] = []
        # USING/NATURAL columns by name: an unqualified reference is the earlier table's
        # column (Postgres's merged column; under a LEFT JOIN it equals COALESCE of the two).
        self.merged: dict[str, Col] = {}
        self.full_merged: dict[str, tuple[Col, Col]] = {}  # FULL JOIN USING: COALESCE(a, b)

    def fail(self, pos: int, what: str, hint: str = SUPPORTED_HINT) -> ConfigError:
        at = where(self.view.file_text, self.view.source, pos)
        return ConfigError(f"{at}: view {self.view.name}: {what}", hint)

    def run(self) -> ResolvedView:
        sel = self.view.select
        resolved: list[ResolvedTable] = []
        offset = 0
        for ref in sel.tables:
            shape = self.shapes.get(ref.table)
            if shape is None:
                raise self.fail(
                    ref.pos,
                    f'table "{ref.table}" is not in the publication (nor a view of the file)',
                    "add the table to the publication, define the view in the same file, or "
                    "remove the view from views.sql",
                )
            if any(t.alias == ref.alias for t in resolved):
                raise self.fail(ref.pos, f'table name "{ref.alias}" specified more than once')
            resolved.append(ResolvedTable(ref.alias, ref.table, offset, shape))
            offset += len(shape.columns)
        joins = []
        self.scope = resolved[:1]
        where = sel.where
        for i, j in enumerate(sel.joins, start=1):
            self.scope = resolved[: i + 1]
            right = resolved[i]
            ranges: tuple[tuple[Col, str, Col], ...] = ()
            if j.using or j.natural:
                on = self.using(j, right)
            elif j.from_where:
                on, ranges, where = self.where_equalities(where, right)
            else:
                on = tuple(self.join_pair(a, b, right) for a, b in j.on)
                ranges = tuple(r for c in j.cond for r in self.range_terms(c, right, refuse=True))
            if j.kind == "full" and len(sel.joins) > 1:
                raise self.fail(
                    j.table.pos,
                    f"FULL JOIN {right.alias} is supported as the only join of a view "
                    "(a FULL JOIN b)",
                    "join the other tables in a view of their own, or use LEFT JOINs",
                )
            if j.kind == "full" and ranges:
                raise self.fail(
                    j.table.pos,
                    "FULL JOIN is only supported with merge-joinable or hash-joinable join "
                    "conditions (as in Postgres): equalities, not comparisons",
                    "join on column equalities: FULL JOIN ... ON a.x = b.y",
                )
            if j.kind == "full" and (j.using or j.natural):
                # Postgres's merged column of a FULL JOIN is COALESCE(left, right).
                for a, b in on:
                    self.full_merged[a.name] = (a, b)
            joins.append(Join(j.kind, j.table, on, ranges=ranges))
        self.scope = resolved
        columns = []
        written = self.expand_stars(sel, resolved)
        for c in written:
            e = self.expr(c.expr)
            if e.type == UNKNOWN:  # Postgres 10+: an unknown-typed output column is text
                e = self.coerce(e, TEXT)
            columns.append(OutputColumn(c.name, e))
        where_ = None if where is None else self.condition(where, "WHERE")
        if any(isinstance(g, Star) for g in sel.group_by):  # SELECT DISTINCT *
            group = tuple(self.expr(c.expr) for c in written)
        else:
            group = tuple(self.expr(g) for g in sel.group_by)
        having = None if sel.having is None else self.condition(sel.having, "HAVING")
        rv = ResolvedView(
            self.view, tuple(resolved), tuple(columns), tuple(joins), where_, group, having
        )
        if sel.is_aggregate:
            self.check_grouping(rv)
        return rv

    # ---- columns and joins

    def expand_stars(self, sel: Any, resolved: list[ResolvedTable]) -> list[OutputColumn]:
        """The SELECT list with each `*` (`t.*`) replaced by the columns of every FROM item
        (of t), in order, as Postgres expands it (a view table's hidden key excluded)."""
        out: list[OutputColumn] = []
        for c in sel.columns:
            if not isinstance(c.expr, Star):
                out.append(c)
                continue
            star = c.expr
            if star.table is None and any(j.using or j.natural for j in sel.joins):
                raise self.fail(
                    star.pos,
                    "* over a join with USING or NATURAL is not supported; name the columns",
                )
            items = [t for t in resolved if star.table in (None, t.alias)]
            if not items:
                raise self.fail(star.pos, f'missing FROM-clause entry for table "{star.table}"')
            for t in items:
                for name, _ in t.shape.columns:
                    if name != KEY_COLUMN:
                        out.append(OutputColumn(name, Col(t.alias, name, pos=star.pos)))
        seen: set[str] = set()
        for c in out:
            if c.name in seen:
                raise self.fail(
                    c.expr.pos,
                    f'column "{c.name}" specified more than once',
                    "name the columns instead of *, with an alias for one of them",
                )
            seen.add(c.name)
        return out

    def column(self, c: Col) -> Col:
        """`c` bound to its table (an unqualified USING column to the left table's)."""
        merged = self.merged.get(c.name) if c.table is None else None
        if merged is not None:
            return Col(merged.table, c.name, merged.index, pos=c.pos, type=merged.type)
        if c.table is not None:
            matches = [t for t in self.scope if t.alias == c.table]
            if not matches:
                raise self.fail(c.pos, f'missing FROM-clause entry for table "{c.table}"')
        else:
            matches = self.scope
        found = [(t, i) for t in matches for i, (n, _) in enumerate(t.shape.columns) if n == c.name]
        shown = c.name if c.table is None else f"{c.table}.{c.name}"
        if not found:
            raise self.fail(c.pos, f"column {shown} does not exist")
        if len(found) > 1:
            raise self.fail(c.pos, f'column reference "{c.name}" is ambiguous')
        t, i = found[0]
        return Col(t.alias, c.name, t.offset + i, pos=c.pos, type=t.shape.columns[i][1])

    def join_pair(self, a: Col, b: Col, right: ResolvedTable) -> tuple[Col, Col]:
        ra, rb = self.column(a), self.column(b)
        if ra.table == right.alias and rb.table != right.alias:
            ra, rb = rb, ra
        if rb.table != right.alias or ra.table == right.alias:
            raise self.fail(
                a.pos,
                f"join condition {a.name} = {b.name} must compare a column of {right.alias} "
                "with a column of an earlier table",
            )
        self.comparable(ra, rb, a.pos)
        if BPCHAR in (ra.type, rb.type):
            # Postgres compares character(n) without its trailing spaces, but the engine joins
            # by exact value (join indexes, key gets), and without the columns' lengths it
            # cannot tell whether two padded values may differ only in padding.
            raise self.fail(
                a.pos,
                f"join condition {a.name} = {b.name}: joins on character(n) columns are not "
                "supported (Postgres ignores their trailing spaces)",
                "join on text or varchar columns",
            )
        if _join_class(ra.type) != _join_class(rb.type):  # type: ignore[arg-type]
            # The engine matches join values by their key encoding and Python's ==, which
            # agree with Postgres's = only within one class: a date is never equal to a
            # timestamp there, an integer's encoding is not a float's, and a float4 read
            # from Postgres is its shortest decimal, not the exact value float48eq compares.
            raise self.fail(
                a.pos,
                f"join condition {a.name} = {b.name} compares {type_sql(ra.type)} with "  # type: ignore[arg-type]
                f"{type_sql(rb.type)}: joins need columns of one type (integer types and "  # type: ignore[arg-type]
                "numeric may mix, and so may text and varchar)",
                "join on columns of the same type",
            )
        return ra, rb

    def using(self, j: Join, right: ResolvedTable) -> tuple[tuple[Col, Col], ...]:
        """JOIN ... USING (names) or NATURAL JOIN: an equality per name between the one earlier
        table that has the column and `right`."""
        earlier = self.scope[:-1]
        names = j.using
        if j.natural:
            mine = [n for n, _ in right.shape.columns]
            seen = {n for t in earlier for n, _ in t.shape.columns}
            names = tuple(n for n in mine if n in seen)
            if not names:
                raise self.fail(
                    j.table.pos,
                    f"NATURAL JOIN {right.alias}: no column name in common, a cross join",
                    "name the join columns: JOIN ... ON a.x = b.y",
                )
        pairs = []
        for name in names:
            if name in self.merged:
                left = self.merged[name]
            else:
                having = [t for t in earlier if any(n == name for n, _ in t.shape.columns)]
                if len(having) != 1:
                    what = "is ambiguous" if having else "does not exist"
                    raise self.fail(
                        j.table.pos, f'column "{name}" in the join\'s USING {what} on the left'
                    )
                left = self.column(Col(having[0].alias, name, pos=j.table.pos))
            if not any(n == name for n, _ in right.shape.columns):
                raise self.fail(
                    j.table.pos, f'column "{name}" in the join\'s USING is not in {right.alias}'
                )
            pair = self.join_pair(left, Col(right.alias, name, pos=j.table.pos), right)
            pairs.append(pair)
            self.merged.setdefault(name, pair[0])
        return tuple(pairs)

    def where_equalities(
        self, where: Expr | None, right: ResolvedTable
    ) -> tuple[tuple[tuple[Col, Col], ...], tuple[tuple[Col, str, Col], ...], Expr | None]:
        """A comma join of `right`: the AND-ed `col = col` terms of WHERE that compare one of
        its columns with an earlier table's become its join condition, and so do comparisons
        (`<`, `<=`, `>`, `>=`, BETWEEN) a sort index can bound when there is no equality;
        WHERE keeps the rest. With neither, it is a cross join filtered by WHERE."""
        if where is None:
            return (), (), None
        terms = list(where.args) if isinstance(where, BoolOp) and where.op == "and" else [where]
        pairs, rest = [], []
        for term in terms:
            pair = None
            if isinstance(term, Op) and term.op == "=" and len(term.args) == 2:
                a, b = term.args
                if isinstance(a, Col) and isinstance(b, Col):
                    pair = self.try_pair(a, b, right)
            if pair is None:
                rest.append(term)
            else:
                pairs.append(pair)
        ranges: list[tuple[Col, str, Col]] = []
        if not pairs:
            kept = []
            for term in rest:
                found = self.range_terms(term, right, refuse=False)
                if found:
                    ranges += found
                else:
                    kept.append(term)
            rest = kept
        if not rest:
            return tuple(pairs), tuple(ranges), None
        left = rest[0] if len(rest) == 1 else BoolOp("and", tuple(rest))
        return tuple(pairs), tuple(ranges), left

    def range_terms(
        self, e: Expr, right: ResolvedTable, *, refuse: bool
    ) -> list[tuple[Col, str, Col]]:
        """A join condition term other than an equality, as `earlier <op> own` comparisons
        between a column of an earlier table and one of `right`, which a range scan of a sort
        index bounds: `x < y` (and <=, >, >=) and `x BETWEEN lo AND hi`. Anything else is
        refused with its position (`refuse`), or gives [] (a WHERE term of a comma join)."""
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
        out: list[tuple[Col, str, Col]] = []

        def term(x: Expr, op: str, y: Expr) -> bool:
            if not (isinstance(x, Col) and isinstance(y, Col)):
                return False
            try:
                rx, ry = self.column(x), self.column(y)
            except ConfigError:
                if refuse:
                    raise
                return False
            if (rx.table == right.alias) == (ry.table == right.alias):
                return False
            if rx.table == right.alias:
                rx, ry, op = ry, rx, flip[op]
            self.comparable(rx, ry, e.pos)
            if BPCHAR in (rx.type, ry.type) or _join_class(rx.type) != _join_class(ry.type):  # type: ignore[arg-type]
                raise self.fail(
                    e.pos,
                    f"join condition {x.name} {op} {y.name} compares {type_sql(rx.type)} with "  # type: ignore[arg-type]
                    f"{type_sql(ry.type)}: a range join needs columns of one type (integer "  # type: ignore[arg-type]
                    "types and numeric may mix, and so may text and varchar)",
                    "compare columns of the same type",
                )
            out.append((rx, op, ry))
            return True

        ok = False
        if isinstance(e, Op) and e.op in flip and len(e.args) == 2:
            ok = term(e.args[0], e.op, e.args[1])
        elif isinstance(e, Between) and not e.negated:
            ok = term(e.arg, ">=", e.low) and term(e.arg, "<=", e.high)
        if ok:
            return out
        if refuse:
            raise self.fail(
                e.pos,
                "this join condition cannot be bounded by a sort index: a join condition is "
                "AND-ed column equalities, or comparisons (<, <=, >, >=, BETWEEN) between a "
                f"column of {right.alias} and a column of an earlier table",
                "compute the expression in a view of its own, or move the term to WHERE",
            )
        return []

    def try_pair(self, a: Col, b: Col, right: ResolvedTable) -> tuple[Col, Col] | None:
        """`a = b` as a join pair of `right`, or None when it is not one (a column of a later
        table, or both on one side)."""
        try:
            ra, rb = self.column(a), self.column(b)
        except ConfigError:
            return None  # names a table joined later: an ordinary WHERE term for now
        if (ra.table == right.alias) == (rb.table == right.alias):
            return None
        return self.join_pair(a, b, right)

    # ---- expressions

    def condition(self, e: Expr, clause: str) -> Expr:
        r = self.expr(e)
        if r.type == UNKNOWN:
            return self.coerce(r, BOOL)
        if r.type != BOOL:
            raise self.fail(
                e.pos, f"argument of {clause} must be type boolean, not type {type_sql(r.type)}"
            )  # type: ignore[arg-type]
        return r

    def coerce(self, e: Expr, target: int) -> Expr:
        """An unknown-typed literal read as `target` (folded now, so a bad literal fails at
        start-up as in Postgres); any other expression unchanged."""
        if e.type != UNKNOWN:
            return e
        assert isinstance(e, Const)
        if e.value is None:
            return Const(None, pos=e.pos, type=target)
        cast = Cast(Const(e.value, pos=e.pos, type=TEXT), target, pos=e.pos, type=target)
        try:
            value = expr_mod.compile_expr(cast)(())
        except expr_mod.EvalError as exc:
            raise self.fail(e.pos, str(exc)) from None
        return Const(value, pos=e.pos, type=target)

    def exact(self, e: Expr, use: str, pos: int) -> None:
        """Refuse `use` of a value the engine would compare as text (issue 18, item 3)."""
        if e.type is None or e.type == UNKNOWN or e.type in COMPARED_EXACTLY:
            return
        if isinstance(e, Const):
            return  # a literal: the column it is compared with is checked
        what = (
            f"column {e.table}.{e.name}"
            if isinstance(e, Col) and e.table
            else (f"column {e.name}" if isinstance(e, Col) else "an expression")
        )
        raise self.fail(
            pos,
            f"{what} is of type {describe_type(e.type)}, which viewstore cannot compare as "
            f"Postgres does (it holds only its text, and text orders and matches differently): "
            f"{use} is not supported",
            "pass such a column through unchanged (SELECT it, without comparing, grouping, "
            "joining or MIN/MAX/COUNT(DISTINCT) on it), or compare a column of a supported type",
        )

    def comparable(self, a: Expr, b: Expr, pos: int) -> tuple[Expr, Expr]:
        self.exact(a, "comparing it", pos)
        self.exact(b, "comparing it", pos)
        ta, tb = a.type, b.type
        if ta == UNKNOWN and tb == UNKNOWN:
            return self.coerce(a, TEXT), self.coerce(b, TEXT)
        if ta == UNKNOWN:
            return self.coerce(a, tb), b  # type: ignore[arg-type]
        if tb == UNKNOWN:
            return a, self.coerce(b, ta)  # type: ignore[arg-type]
        ca, cb = category(ta), category(tb)  # type: ignore[arg-type]
        if ca != cb or (ca == "datetime" and TIMESTAMPTZ in (ta, tb) and ta != tb):
            # timestamptz against date/timestamp depends on the session's TimeZone.
            raise self.fail(pos, f"operator does not exist: {type_sql(ta)} = {type_sql(tb)}")  # type: ignore[arg-type]
        return a, b

    def common_type(self, items: Sequence[Expr], what: str, pos: int) -> int:
        """Postgres's select_common_type for the supported types."""
        known = [e.type for e in items if e.type != UNKNOWN]
        if not known:
            return TEXT
        cats = {category(t) for t in known}  # type: ignore[arg-type]
        if len(cats) > 1:
            a, b = sorted(cats)[:2]
            raise self.fail(pos, f"{what} types {a} and {b} cannot be matched")
        cat = cats.pop()
        if cat == "numeric":
            return FLOAT8 if FLOAT8 in known else max(known, key=NUM_RANK.__getitem__)  # type: ignore[arg-type]
        if cat == "text":
            # The first type wins unless it casts to a later one implicitly and not back (as
            # select_common_type decides): among the string types only char(n) and varchar
            # give way, to name. COALESCE(char_col, text_col) is char(n), keeping the padding.
            t = known[0]
            for n in known[1:]:
                if n == NAME and t in (BPCHAR, VARCHAR):
                    t = NAME
            return t  # type: ignore[return-value]
        if cat == "datetime":
            if TIMESTAMPTZ in known and len(set(known)) > 1:
                raise self.fail(
                    pos, f"{what} mixes timestamptz with date/timestamp (TimeZone-dependent)"
                )
            return max(known, key=[DATE, TIMESTAMP, TIMESTAMPTZ].index)  # type: ignore[arg-type]
        return known[0]  # type: ignore[return-value]

    def expr(self, e: Expr) -> Expr:
        method = getattr(self, "r_" + type(e).__name__)
        return method(e)

    def r_Col(self, e: Col) -> Expr:
        pair = self.full_merged.get(e.name) if e.table is None else None
        if pair is not None:
            a, b = (Col(x.table, x.name, pos=e.pos) for x in pair)
            return self.r_Func(Func("coalesce", (a, b), pos=e.pos))
        return self.column(e)

    def r_Const(self, e: Const) -> Expr:
        v = e.value
        if isinstance(v, bool):
            t = BOOL
        elif isinstance(v, int):
            t = INT4 if -(2**31) <= v < 2**31 else INT8 if -(2**63) <= v < 2**63 else NUMERIC
            v = Decimal(v) if t == NUMERIC else v
        elif isinstance(v, Decimal):
            t = NUMERIC
        else:
            t = UNKNOWN
        return Const(v, pos=e.pos, type=t)

    def r_Op(self, e: Op) -> Expr:
        args = [self.expr(a) for a in e.args]
        if e.op == "neg":
            (a,) = args
            if a.type == UNKNOWN:
                raise self.fail(e.pos, "operator is not unique: - unknown")
            if a.type not in NUM_RANK:
                raise self.fail(e.pos, f"operator does not exist: - {type_sql(a.type)}")  # type: ignore[arg-type]
            return Op("neg", (a,), pos=e.pos, type=a.type)
        a, b = args
        if e.op == "||":
            if a.type in TEXTS or a.type == UNKNOWN or b.type in TEXTS or b.type == UNKNOWN:
                a = self.coerce(a, TEXT)
                b = self.coerce(b, TEXT)
                return Op("||", (a, b), pos=e.pos, type=TEXT)
            raise self.fail(
                e.pos, f"operator does not exist: {type_sql(a.type)} || {type_sql(b.type)}"
            )  # type: ignore[arg-type]
        if e.op in ("=", "<>", "<", "<=", ">", ">="):
            a, b = self.comparable(a, b, e.pos)
            return Op(e.op, (a, b), pos=e.pos, type=BOOL)
        # Arithmetic. An unknown literal takes the other side's type.
        if a.type == UNKNOWN and b.type != UNKNOWN:
            a = self.coerce(a, b.type)  # type: ignore[arg-type]
        elif b.type == UNKNOWN and a.type != UNKNOWN:
            b = self.coerce(b, a.type)  # type: ignore[arg-type]
        ta, tb = a.type, b.type
        bad = self.fail(e.pos, f"operator does not exist: {type_sql(ta)} {e.op} {type_sql(tb)}")  # type: ignore[arg-type]
        if ta in NUM_RANK and tb in NUM_RANK:
            t = arith_type(ta, tb)  # type: ignore[arg-type]
            if e.op == "%" and t in (FLOAT4, FLOAT8):
                raise bad
            return Op(e.op, (a, b), pos=e.pos, type=t)
        ints = (INT2, INT4)
        if e.op == "+" and ((ta == DATE and tb in ints) or (ta in ints and tb == DATE)):
            return Op("+", (a, b), pos=e.pos, type=DATE)
        if e.op == "-" and ta == DATE and tb in ints:
            return Op("-", (a, b), pos=e.pos, type=DATE)
        if e.op == "-" and ta == DATE and tb == DATE:
            return Op("-", (a, b), pos=e.pos, type=INT4)
        raise bad

    def r_BoolOp(self, e: BoolOp) -> Expr:
        what = e.op.upper()
        return BoolOp(e.op, tuple(self.condition(a, what) for a in e.args), pos=e.pos, type=BOOL)

    def r_NullTest(self, e: NullTest) -> Expr:
        a = self.expr(e.arg)
        return NullTest(self.coerce(a, TEXT), e.negated, pos=e.pos, type=BOOL)

    def r_InList(self, e: InList) -> Expr:
        items = [self.expr(x) for x in (e.arg, *e.items)]
        t = self.common_type(items, "IN", e.pos)
        for x in items:
            self.comparable(Const(None, type=t), x, x.pos if x.pos >= 0 else e.pos)
        items = [self.coerce(x, t) for x in items]
        return InList(items[0], tuple(items[1:]), e.negated, pos=e.pos, type=BOOL)

    def r_Between(self, e: Between) -> Expr:
        a, lo, hi = self.expr(e.arg), self.expr(e.low), self.expr(e.high)
        a1, lo = self.comparable(a, lo, e.pos)
        a2, hi = self.comparable(a, hi, e.pos)
        arg = a1 if a1.type != UNKNOWN else a2
        return Between(arg, lo, hi, e.negated, pos=e.pos, type=BOOL)

    def r_Like(self, e: Like) -> Expr:
        a, p = self.coerce(self.expr(e.arg), TEXT), self.coerce(self.expr(e.pattern), TEXT)
        for x in (a, p):
            if x.type not in TEXTS:
                op = "~~*" if e.insensitive else "~~"
                raise self.fail(
                    e.pos, f"operator does not exist: {type_sql(a.type)} {op} {type_sql(p.type)}"
                )  # type: ignore[arg-type]
        return Like(a, p, e.insensitive, e.negated, pos=e.pos, type=BOOL)

    def r_Case(self, e: Case) -> Expr:
        operand = None if e.operand is None else self.expr(e.operand)
        whens = []
        for cond, res in e.whens:
            if operand is None:
                c = self.condition(cond, "CASE/WHEN")
            else:
                _, c = self.comparable(operand, self.expr(cond), cond.pos)
            whens.append((c, self.expr(res)))
        default = None if e.default is None else self.expr(e.default)
        results = [r for _, r in whens] + ([default] if default is not None else [])
        t = self.common_type(results, "CASE", e.pos)
        if operand is not None and operand.type == UNKNOWN:
            operand = self.coerce(
                operand, self.common_type([c for c, _ in whens], "CASE/WHEN", e.pos)
            )
            whens = [(self.comparable(operand, c, e.pos)[1], r) for c, r in whens]
        whens = [(c, self.coerce(r, t)) for c, r in whens]
        default = None if default is None else self.coerce(default, t)
        return Case(operand, tuple(whens), default, pos=e.pos, type=t)

    def r_Func(self, e: Func) -> Expr:
        args = [self.expr(a) for a in e.args]
        name = e.name
        if name in ("coalesce", "greatest", "least"):
            if name != "coalesce":
                for a in args:
                    self.exact(a, f"{name.upper()} of it", e.pos)
            t = self.common_type(args, name.upper(), e.pos)
            if name != "coalesce" and t == BOOL:
                pass  # greatest/least over booleans works in Postgres (bool has btree ops)
            return Func(name, tuple(self.coerce(a, t) for a in args), pos=e.pos, type=t)
        if name == "nullif":
            a, b = self.comparable(args[0], args[1], e.pos)
            return Func(name, (a, b), pos=e.pos, type=a.type)
        if name in ("lower", "upper", "length"):
            (a,) = args
            a = self.coerce(a, TEXT)
            if a.type not in TEXTS:
                raise self.fail(e.pos, f"function {name}({type_sql(a.type)}) does not exist")  # type: ignore[arg-type]
            return Func(name, (a,), pos=e.pos, type=INT4 if name == "length" else TEXT)
        # date_trunc(unit, timestamp): the unit must be a constant, checked now.
        unit, ts = args
        if not (isinstance(unit, Const) and isinstance(unit.value, str)):
            raise self.fail(e.pos, "date_trunc needs a constant unit such as 'day'")
        if unit.value.lower() not in DATE_TRUNC_UNITS:
            raise self.fail(e.pos, f'unit "{unit.value}" not recognized for date_trunc')
        if ts.type not in (TIMESTAMP, TIMESTAMPTZ):
            raise self.fail(
                e.pos,
                f"date_trunc on {type_sql(ts.type)} is not supported",  # type: ignore[arg-type]
                "cast the argument to timestamp: date_trunc('day', x::timestamp)",
            )
        unit = Const(unit.value.lower(), pos=unit.pos, type=TEXT)
        return Func(name, (unit, ts), pos=e.pos, type=ts.type)

    def r_Cast(self, e: Cast) -> Expr:
        a = self.expr(e.arg)
        if a.type == UNKNOWN:
            a = Const(a.value, pos=a.pos, type=TEXT) if isinstance(a, Const) else a
            if isinstance(a, Const) and a.value is None:
                return Const(None, pos=e.pos, type=e.target)
        src, dst = a.type, e.target
        ok = (
            src == dst
            or (src in NUM_RANK and dst in NUM_RANK)
            or src in TEXTS
            or dst in TEXTS
            or {src, dst} == {BOOL, INT4}
            or {src, dst} == {DATE, TIMESTAMP}
        )
        if not ok:
            raise self.fail(e.pos, f"cannot cast type {type_sql(src)} to {type_sql(dst)}")  # type: ignore[arg-type]
        cast = Cast(a, dst, e.typmod, pos=e.pos, type=dst)
        if isinstance(a, Const):
            # Fold constants now: a bad literal fails at start-up, as in Postgres.
            try:
                return Const(expr_mod.compile_expr(cast)(()), pos=e.pos, type=dst)
            except expr_mod.EvalError as exc:
                raise self.fail(e.pos, str(exc)) from None
        return cast

    def r_Agg(self, e: Agg) -> Expr:
        arg = None if e.arg is None else self.expr(e.arg)
        filt = None if e.filter is None else self.condition(e.filter, "FILTER")
        name = e.name
        t: int | None = INT8
        if arg is not None and (name in ("min", "max") or e.distinct):
            self.exact(arg, f"{name.upper()}({'DISTINCT ' if e.distinct else ''}...) of it", e.pos)
        if arg is not None and name != "count":
            if arg.type == UNKNOWN and name in ("min", "max"):
                arg = self.coerce(arg, TEXT)
            if arg.type == UNKNOWN and name in ("bool_and", "bool_or"):
                arg = self.coerce(arg, BOOL)
            at = arg.type
            if name == "sum":
                t = {INT2: INT8, INT4: INT8, INT8: NUMERIC, NUMERIC: NUMERIC}.get(at, at)  # type: ignore[arg-type]
                t = t if at in NUM_RANK else None
            elif name == "avg":
                t = FLOAT8 if at in (FLOAT4, FLOAT8) else NUMERIC if at in NUM_RANK else None
            elif name in ("min", "max"):
                # Postgres has min/max(text) and min/max(bpchar) but none for varchar or
                # name, which resolve to the text version; none at all for bool.
                t = None if at == BOOL else TEXT if at in (VARCHAR, NAME) else at
            else:
                t = BOOL if at == BOOL else None
            if t is None:
                raise self.fail(e.pos, f"function {name}({type_sql(at)}) does not exist")  # type: ignore[arg-type]
        elif arg is not None:
            arg = self.coerce(arg, TEXT)
        return Agg(name, arg, e.distinct, filt, pos=e.pos, type=t)

    def r_Window(self, e: Window) -> Expr:
        partition = []
        for p in e.partition:
            p = self.expr(p)
            if p.type == UNKNOWN:
                p = self.coerce(p, TEXT)
            self.exact(p, "partitioning by it", e.pos)
            partition.append(p)
        order = []
        for item in e.order:
            x = self.expr(item.expr)
            if x.type == UNKNOWN:
                x = self.coerce(x, TEXT)
            self.exact(x, "ordering by it", e.pos)
            order.append(SortItem(x, item.desc, item.nulls_first))
        return Window(e.name, tuple(partition), tuple(order), pos=e.pos, type=INT8)

    # ---- GROUP BY

    def check_grouping(self, rv: ResolvedView) -> None:
        """Postgres's rule: outside aggregates, only grouped expressions, or columns of a table
        whose whole primary key is grouped (functional dependency), may appear."""
        for g in rv.group_by:
            self.exact(g, "grouping by it", g.pos)
        groups = set(rv.group_by)
        grouped_cols = {(g.table, g.name) for g in rv.group_by if isinstance(g, Col)}
        dependent = {
            t.alias
            for t in rv.tables
            if t.shape.key and all((t.alias, k) in grouped_cols for k in t.shape.key)
        }

        def check(e: Expr) -> None:
            if e in groups or isinstance(e, Agg):
                return
            if isinstance(e, Col):
                if e.table not in dependent:
                    raise self.fail(
                        e.pos,
                        f'column "{e.table}.{e.name}" must appear in the GROUP BY clause or '
                        "be used in an aggregate function",
                        "add the column to GROUP BY, or group by its table's primary key",
                    )
                return
            for c in children(e):
                check(c)

        for c in rv.columns:
            check(c.expr)
        if rv.having is not None:
            check(rv.having)
