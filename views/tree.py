"""View tree: the typed form of a view's SELECT, shared by parsing, resolution and compiling.

`views.sql` builds these nodes from Postgres's parse tree, `views.resolve` binds their column
references and types, `expr` compiles scalar ones into closures. No pglast node appears here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Type OIDs (pg_type.oid), the vocabulary shared with viewstore.ingest.values.
BOOL, INT8, INT2, INT4, TEXT, FLOAT4, FLOAT8 = 16, 20, 21, 23, 25, 700, 701
UNKNOWN, BPCHAR, VARCHAR, DATE, TIMESTAMP, TIMESTAMPTZ, NUMERIC = (
    705,
    1042,
    1043,
    1082,
    1114,
    1184,
    1700,
)
NAME = 19

# --------------------------------------------------------------------------- the typed tree


@dataclass(frozen=True)
class Expr:
    """Base of expression nodes. `pos` is the character offset in the views file (for
    messages; ignored by ==), `type` the result type OID once `resolve` has run."""

    pos: int = field(default=-1, compare=False, kw_only=True)
    type: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Col(Expr):
    """A column reference; `index` is its position in the joined row once resolved."""

    table: str | None
    name: str
    index: int | None = None


@dataclass(frozen=True)
class Const(Expr):
    """A literal: int, Decimal, str (type unknown until resolved), bool or None (NULL)."""

    value: Any


@dataclass(frozen=True)
class Op(Expr):
    """An operator: + - * / % || = <> < <= > >= (two args) or unary '-' (one arg)."""

    op: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str  # "and", "or", "not"
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class NullTest(Expr):
    arg: Expr
    negated: bool  # IS NOT NULL


@dataclass(frozen=True)
class InList(Expr):
    arg: Expr
    items: tuple[Expr, ...]
    negated: bool


@dataclass(frozen=True)
class Between(Expr):
    arg: Expr
    low: Expr
    high: Expr
    negated: bool


@dataclass(frozen=True)
class Like(Expr):
    arg: Expr
    pattern: Expr
    insensitive: bool  # ILIKE
    negated: bool


@dataclass(frozen=True)
class Case(Expr):
    """CASE [operand] WHEN .. THEN .. [ELSE ..] END; `operand` is None for a searched CASE."""

    operand: Expr | None
    whens: tuple[tuple[Expr, Expr], ...]
    default: Expr | None


@dataclass(frozen=True)
class Func(Expr):
    """coalesce, nullif, greatest, least, lower, upper, length, date_trunc."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Cast(Expr):
    """A cast to `target` (a type OID); `typmod` is (precision, scale) for numeric, (length,)
    for varchar, None otherwise."""

    arg: Expr
    target: int
    typmod: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Agg(Expr):
    """An aggregate call; `arg` is None for COUNT(*)."""

    name: str
    arg: Expr | None
    distinct: bool = False
    filter: Expr | None = None


@dataclass(frozen=True)
class Star(Expr):
    """`*` or `alias.*` in a SELECT list, until `resolve` expands it into the columns."""

    table: str | None


@dataclass(frozen=True)
class SortItem:
    """One ORDER BY item: `expr` [DESC] [NULLS FIRST|LAST]; `nulls_first` is Postgres's
    default when not written (NULLS LAST for ASC, FIRST for DESC)."""

    expr: Expr
    desc: bool = False
    nulls_first: bool = False


@dataclass(frozen=True)
class Window(Expr):
    """A ranking window function as a whole SELECT-list item: row_number, rank or dense_rank
    OVER (PARTITION BY `partition` ORDER BY `order`). Its type is int8 (bigint)."""

    name: str
    partition: tuple[Expr, ...]
    order: tuple[SortItem, ...]


def children(e: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `e`, in evaluation order."""
    if isinstance(e, (Op, BoolOp, Func)):
        return e.args
    if isinstance(e, (NullTest, Cast)):
        return (e.arg,)
    if isinstance(e, InList):
        return (e.arg, *e.items)
    if isinstance(e, Between):
        return (e.arg, e.low, e.high)
    if isinstance(e, Like):
        return (e.arg, e.pattern)
    if isinstance(e, Case):
        out = [] if e.operand is None else [e.operand]
        for cond, res in e.whens:
            out += [cond, res]
        return tuple(out) + (() if e.default is None else (e.default,))
    if isinstance(e, Agg):
        return tuple(x for x in (e.arg, e.filter) if x is not None)
    if isinstance(e, Window):
        return (*e.partition, *(o.expr for o in e.order))
    return ()


def walk(e: Expr) -> list[Expr]:
    """`e` and all its sub-expressions, pre-order."""
    out = [e]
    for c in children(e):
        out += walk(c)
    return out


@dataclass(frozen=True)
class TableRef:
    table: str
    alias: str  # the table name when no alias is given, as in Postgres
    pos: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class Join:
    """`kind` is "inner", "left" or "full"; `on` pairs (column of an earlier table, column of
    `table`) once resolved; before resolution an unqualified pair keeps its written order. An
    inner join with neither `on` nor `ranges` is a cross join."""

    kind: str
    table: TableRef
    on: tuple[tuple[Col, Col], ...]
    # Before resolution, the other ways to write the equalities (the resolver turns them into
    # `on`): JOIN ... USING (names), NATURAL JOIN (the names both sides have), and a comma
    # join, whose equalities are in WHERE.
    using: tuple[str, ...] = ()
    natural: bool = False
    from_where: bool = False
    # The ON terms that are not column equalities, as written (the resolver turns the ones a
    # sort index can bound into `ranges` and refuses the rest).
    cond: tuple[Expr, ...] = ()
    # Once resolved: (column of an earlier table, operator, column of `table`), each meaning
    # `earlier <op> own` with op one of < <= > >=.
    ranges: tuple[tuple[Col, str, Col], ...] = ()


@dataclass(frozen=True)
class OutputColumn:
    name: str
    expr: Expr


@dataclass(frozen=True)
class Select:
    columns: tuple[OutputColumn, ...]
    base: TableRef
    joins: tuple[Join, ...]
    where: Expr | None
    group_by: tuple[Expr, ...]
    having: Expr | None
    # Top-K (views.window): only the rows whose window column named `top[0]` is at most
    # `top[1]` are output; `shown` lists the columns output as (column of this SELECT, or "*"
    # for all of them; output name), None for all. `ORDER BY ... LIMIT K` is a hidden
    # ROW_NUMBER column with `top` on it.
    top: tuple[str, int] | None = None
    shown: tuple[tuple[str, str], ...] | None = None

    @property
    def window(self) -> bool:
        """Whether the view has window functions (a ranking, views.window)."""
        return any(isinstance(c.expr, Window) for c in self.columns)

    @property
    def tables(self) -> tuple[TableRef, ...]:
        """Every FROM item in order: the base table, then each joined table."""
        return (self.base, *(j.table for j in self.joins))

    @property
    def is_aggregate(self) -> bool:
        """Whether the view groups rows (GROUP BY, HAVING, or an aggregate in the SELECT list)."""
        return (
            bool(self.group_by)
            or self.having is not None
            or any(isinstance(x, Agg) for c in self.columns for x in walk(c.expr))
        )


@dataclass(frozen=True)
class ViewDef:
    """One view from the views file. `sql` is the SELECT as written (run it in Postgres to
    verify); `pos` the statement's offset in `source`."""

    name: str
    sql: str
    select: Select
    source: str = "views.sql"
    pos: int = 0
    # The whole file, shared by its views: positions in the tree are offsets into it.
    file_text: str = field(default="", repr=False, compare=False)
    # Columns a `CREATE INDEX ON view (column)` of the file asks a sort index for, with the
    # offset of each in the file.
    indexes: tuple[tuple[str, int], ...] = ()

    @property
    def base_tables(self) -> tuple[str, ...]:
        """Referenced base tables, each once, in FROM order."""
        return tuple(dict.fromkeys(t.table for t in self.select.tables))
