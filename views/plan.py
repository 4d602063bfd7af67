"""View plans: a resolved view compiled into what the incremental engine runs per row.

A plan says, for one view,

- how to walk the join from any of its FROM items (`Position`): which column pair finds the
  matching rows of the next item, and of the previous one, and whether that lookup is a mirror
  get by primary key or needs a join index (`IndexSpec`) on the looked-up column;
- whether the aggregate can be kept below the join (`Pushdown`), and which columns of each
  table the view reads (only those are converted);
- the WHERE filter, the GROUP BY key, the aggregates with their FILTERs and the output columns,
  as expressions, from which `views.codegen` generates the view's per-row code (`plan.code`);
- the output schema: column names and types, which columns form the view's key, and which get a
  sort index (those CREATE INDEX declares and the aggregate columns; not a single-column key,
  whose order the rows already have).

Nothing here touches RocksDB; `store.engine` runs plans against the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from viewstore.errors import ConfigError
from viewstore.ingest.values import converter
from viewstore.views.aggregates import state_factory
from viewstore.views.codegen import generate
from viewstore.views.expr import Fn, compile_expr
from viewstore.views.pgvalues import TEXTS, type_sql
from viewstore.views.resolve import ResolvedView, TableShape, resolve
from viewstore.views.schema import TableInfo
from viewstore.views.sql import where
from viewstore.views.stack import is_view_table
from viewstore.views.tree import (
    BOOL,
    DATE,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    NUMERIC,
    TIMESTAMP,
    TIMESTAMPTZ,
    Agg,
    Cast,
    Col,
    Expr,
    ViewDef,
    children,
    walk,
)
from viewstore.views.window import WindowPlan, window_plan

INTS = frozenset({INT2, INT4, INT8})
UUID, BYTEA, OID = 2950, 17, 26
# Types whose values codecs.key orders as SQL does: they can be view keys and sort columns.
ORDERABLE = frozenset(
    {BOOL, INT2, INT4, INT8, OID, NUMERIC, FLOAT4, FLOAT8, DATE, TIMESTAMP, TIMESTAMPTZ, UUID,
     BYTEA} | TEXTS
)  # fmt: skip
# Primary key types whose Postgres text form is `str(value)`: a join value of such a column
# gives the mirror key directly, without a join index.
_TEXT_OF = {**{t: lambda v: str(v).encode() for t in (*INTS, OID, UUID)},
            **{t: lambda v: v.encode() for t in TEXTS - {1042}}}  # fmt: skip


# Part of every view's fingerprint: a store whose views were kept in another layout of the
# engine's state rebuilds them from the mirror at start-up instead of misreading them.
ENGINE_LAYOUT = "3"


@dataclass(frozen=True)
class IndexSpec:
    """A join index: every row of `table_id`, keyed by the value of column `column`."""

    table_id: int
    column: int


@dataclass(frozen=True)
class Lookup:
    """How to find the rows of one FROM item whose column `column` equals a value taken from
    the joined row at `source` (an index into the joined row)."""

    source: int  # forward: index into the joined row; backward: a column of the own row
    column: int
    by_key: Callable[[Any], bytes] | None  # the value's text, when `column` is the whole key


# The column number of the "every row" index a cross join scans (no table has 65535 columns).
ALL_ROWS = 0xFFFF


@dataclass(frozen=True)
class RangeLookup:
    """How to find the rows of one FROM item whose column `column` lies within bounds taken
    from another row: a range scan of the join index on `column`, whose keys are in SQL order
    (`codecs.key`). `lower` and `upper` list (index into the other row, inclusive); with
    neither, and `column` ALL_ROWS, it is a scan of every row (a cross join)."""

    column: int
    lower: tuple[tuple[int, bool], ...]
    upper: tuple[tuple[int, bool], ...]
    by_key: None = None  # never a get by primary key

    @property
    def everything(self) -> bool:
        return self.column == ALL_ROWS


@dataclass(frozen=True)
class Position:
    """One FROM item, in FROM order."""

    index: int
    alias: str
    table: TableInfo
    offset: int  # first column in the joined row
    kind: str  # "base", "inner", "left" or "full"
    on: tuple[tuple[int, int], ...]  # (joined-row index of an earlier column, own column)
    forward: Lookup | RangeLookup | None  # find this item's rows from the joined row before it
    # (earlier position, lookup of its rows from ours)
    backward: tuple[int, Lookup | RangeLookup] | None
    converters: tuple[Callable[[bytes], Any], ...]
    # (joined-row index of an earlier column, operator, own column): `earlier <op> own`
    ranges: tuple[tuple[int, str, int], ...] = ()

    @property
    def outer(self) -> bool:
        """Whether a joined row with no match here is kept null-extended (LEFT, FULL)."""
        return self.kind in ("left", "full")

    @property
    def width(self) -> int:
        return len(self.table.columns)

    @property
    def nulls(self) -> tuple[None, ...]:
        return (None,) * len(self.table.columns)


@dataclass(frozen=True)
class AggPlan:
    name: str
    arg_type: int | None
    distinct: bool
    arg: Fn | None  # None for COUNT(*)
    filter: Fn | None
    # The expressions behind `arg` and `filter` (views.codegen inlines plain columns).
    expr: Agg | None = field(default=None, compare=False)

    @property
    def arg_expr(self) -> Expr | None:
        return None if self.expr is None else self.expr.arg

    @property
    def filter_expr(self) -> Expr | None:
        return None if self.expr is None else self.expr.filter

    @cached_property
    def new_state(self) -> Callable[[], Any]:
        """Makes a fresh state of this aggregate: `agg.new_state()`."""
        return state_factory(self.name, self.arg_type, self.distinct)


@dataclass(frozen=True)
class OutputColumnInfo:
    name: str
    type_oid: int
    # (precision, scale) when the column is a cast to numeric(p, s): the DuckDB copy of the
    # history keeps such a column as an exact DECIMAL (history.duckdb_copy).
    typmod: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Pushdown:
    """The aggregate below the join: `base [LEFT] JOIN child ON child.fk = base.pk GROUP BY
    base.pk` (or `child JOIN base ON ...`, an inner join in the other order), with aggregates
    over child columns only and WHERE over base columns only.

    Then a group is the base row with the child rows whose `fk` names it, so the engine keeps
    the aggregate per `fk` value (one dict lookup per child row: no join index, no seek) and
    joins the base row (a get by primary key) once per changed group, when it computes the
    output row. Under LEFT JOIN a group with no child rows is the base row null-extended: the
    aggregates then see one row of NULLs, as Postgres's do (COUNT(*) is 1, SUM is NULL).
    """

    child: int  # table id of the aggregated FROM item
    child_pos: int  # its position in FROM
    fk: int  # its column that names the base row
    base: int  # table id of the grouped FROM item
    base_pos: int  # its position in FROM
    base_pk: int  # its primary key column
    base_key: Callable[[Any], bytes]  # a fk value -> the base row's key text
    left: bool


@dataclass
class ViewPlan:
    name: str
    sql: str
    fingerprint: str
    positions: tuple[Position, ...]
    where: Fn | None
    aggregate: bool
    global_aggregate: bool  # aggregates without GROUP BY: always exactly one row
    aggs: tuple[AggPlan, ...]
    columns: tuple[OutputColumnInfo, ...]
    key_columns: tuple[int, ...]  # output columns that are the view's key (in key order)
    sort_columns: tuple[int, ...]
    indexes: frozenset[IndexSpec]
    used: Mapping[int, frozenset[int]]  # table id -> the columns the view reads
    pushdown: Pushdown | None = None
    declared: tuple[tuple[str, int], ...] = ()  # CREATE INDEX ON the view: (column, offset)
    # The expressions behind the closures above, for views.codegen (which inlines columns):
    where_expr: Expr | None = None
    group_exprs: tuple[Expr, ...] = ()
    carried_exprs: tuple[Expr, ...] = ()
    having_expr: Expr | None = None
    output_exprs: tuple[tuple[str, Expr], ...] = ()
    slots: Mapping[Expr, int] = field(default_factory=dict)  # output expressions' inputs
    # A ranking (views.window): `output_exprs` are then the base values the ranking keeps.
    window: WindowPlan | None = None

    @cached_property
    def code(self) -> Any:
        """This view's generated functions (`views.codegen.Generated`), made on first use."""
        return generate(self)

    @property
    def tables(self) -> frozenset[int]:
        return frozenset(p.table.table_id for p in self.positions)


def shapes_of(tables: Mapping[str, TableInfo]) -> dict[str, TableShape]:
    """The table shapes `resolve` binds against, by the names views use: `name` for tables in
    schema public, `schema.name` for all."""
    out: dict[str, TableShape] = {}
    for info in tables.values():
        shape = TableShape([(c.name, c.type_oid) for c in info.columns], list(info.key))
        out[info.qualified] = shape
        if info.schema_name == "public":
            out[info.name] = shape
    return out


def _table_for(name: str, tables: Mapping[str, TableInfo]) -> TableInfo:
    return tables[name if "." in name else f"public.{name}"]


def compile_view(
    view: ViewDef, tables: Mapping[str, TableInfo], upstream: Mapping[str, str] | None = None
) -> ViewPlan:
    """Resolve `view` against the mirrored `tables` (qualified name → info; the views it
    reads are among them as view tables, `views.stack`) and compile it. `upstream` maps each
    view it reads to that view's fingerprint, which is part of this one's: a view over a view
    that changed is stale too. ConfigError names what cannot be kept incrementally and where
    it is in views.sql."""
    rv = resolve(view, shapes_of(tables))
    plan = _Compiler(rv, tables, upstream or {}).run()
    plan.code  # noqa: B018 - generate the view's code now, so that start-up fails, not a row
    return plan


def _cross_join_after_outer_join(positions: tuple[Position, ...]) -> bool:
    """Whether a cross join comes after an outer join (`a LEFT JOIN b ... CROSS JOIN c`)."""
    return any(
        p.backward is not None
        and isinstance(p.backward[1], RangeLookup)
        and p.backward[1].column == ALL_ROWS
        and any(q.outer for q in positions[1 : p.index])
        for p in positions[2:]
    )


def _cols_outside_aggs(e: Expr) -> set[int]:
    """Joined-row columns `e` reads outside of aggregate calls."""
    if isinstance(e, Agg):
        return set()
    if isinstance(e, Col):
        return {e.index} if e.index is not None else set()
    out: set[int] = set()
    for c in children(e):
        out |= _cols_outside_aggs(c)
    return out


class _Compiler:
    def __init__(
        self, rv: ResolvedView, tables: Mapping[str, TableInfo], upstream: Mapping[str, str]
    ) -> None:
        self.rv, self.view, self.upstream = rv, rv.view, upstream
        self.infos = [_table_for(t.table, tables) for t in rv.tables]

    def fail(self, pos: int, what: str, hint: str) -> ConfigError:
        at = where(self.view.file_text, self.view.source, pos)
        return ConfigError(f"{at}: view {self.view.name}: {what}", hint)

    def run(self) -> ViewPlan:
        rv = self.rv
        positions = self.positions()
        aggregate = rv.view.select.is_aggregate
        for g in rv.group_by:
            self.need_orderable(g, "GROUP BY expression")
        where_fn = None if rv.where is None else compile_expr(rv.where)
        columns = tuple(
            OutputColumnInfo(
                c.name, c.expr.type or 25, c.expr.typmod if isinstance(c.expr, Cast) else None
            )
            for c in rv.columns
        )
        if aggregate:
            aggs = self.grouping()
            key_columns = self.key_columns_of_groups()
        else:
            aggs = ()
            key_columns = ()
        window = None
        output_exprs = tuple((c.name, c.expr) for c in rv.columns)
        if rv.view.select.window:
            try:
                window, base, names = window_plan(rv.view.select, rv.columns)
            except ValueError as exc:
                raise self.fail(rv.view.pos, str(exc), "name the subquery's columns") from None
            for i in (*window.partition, *window.order):
                self.need_orderable(base[i], "PARTITION BY/ORDER BY expression")
            columns = tuple(replace(columns[i], name=names[k]) for k, i in enumerate(window.shown))
            # The view's `project` computes the base values the ranking keeps (views.window).
            output_exprs = tuple((f"base {i}", e) for i, e in enumerate(base))
        sort_columns = self.sort_columns(columns, key_columns)
        pushdown = self.pushdown(positions) if aggregate else None
        indexes = frozenset(
            IndexSpec(self.infos[p].table_id, lk.column)
            for p, lk in self.lookups(positions)
            if lk.by_key is None and pushdown is None
        )
        self.check_ranges(positions)
        return ViewPlan(
            name=self.view.name,
            sql=self.view.sql,
            fingerprint=self.fingerprint(positions),
            positions=positions,
            where=where_fn,
            aggregate=aggregate,
            global_aggregate=aggregate and not rv.group_by,
            aggs=aggs,
            columns=columns,
            key_columns=key_columns,
            sort_columns=sort_columns,
            indexes=indexes,
            used=self.used(positions),
            pushdown=pushdown,
            declared=self.view.indexes,
            where_expr=rv.where,
            group_exprs=tuple(rv.group_by),
            carried_exprs=getattr(self, "carried_exprs", ()),
            having_expr=rv.having,
            output_exprs=output_exprs,
            slots=getattr(self, "slots", {}),
            window=window,
        )

    def sort_columns(
        self, columns: Sequence[OutputColumnInfo], key_columns: Sequence[int]
    ) -> tuple[int, ...]:
        """The output columns kept in a sort index: those views.sql declares with CREATE INDEX
        ON view (column), and by default, in an aggregate view, every orderable column computed
        from aggregates (what leaderboards rank by). A single-column key needs none: the rows
        are stored in its order. Orderings on other columns read the whole view."""
        rv = self.rv
        names = [c.name for c in columns]
        wanted = set()
        for name, pos in self.view.indexes:
            if name not in names:
                raise self.fail(
                    pos,
                    f"CREATE INDEX names column {name}, which the view does not have",
                    f"index one of its columns: {', '.join(names)}",
                )
            i = names.index(name)
            if columns[i].type_oid not in ORDERABLE:
                raise self.fail(
                    pos,
                    f"column {name} of type {type_sql(columns[i].type_oid)} cannot be indexed",
                    "index a column of number, text, bool, date, time or uuid type",
                )
            wanted.add(i)
        for i, c in enumerate(rv.columns):
            if any(isinstance(x, Agg) for x in walk(c.expr)) and columns[i].type_oid in ORDERABLE:
                wanted.add(i)
        single_key = set(key_columns) if len(key_columns) == 1 else set()
        return tuple(sorted(wanted - single_key))

    def roots(self) -> list[Expr]:
        rv = self.rv
        out = [c.expr for c in rv.columns]
        out += [e for e in (rv.where, rv.having) if e is not None]
        return out + list(rv.group_by)

    def used(self, positions: Sequence[Position]) -> dict[int, frozenset[int]]:
        """The columns of each table that the view reads: only those are converted from
        Postgres's text (a timestamp nobody selects is never parsed)."""
        joined = {c.index for r in self.roots() for c in walk(r) if isinstance(c, Col)}
        for p in positions:
            joined |= {a for a, _ in p.on} | {p.offset + b for _, b in p.on}
            joined |= {a for a, _, _ in p.ranges} | {p.offset + b for _, _, b in p.ranges}
        out: dict[int, set[int]] = {}
        for p in positions:
            own = {j - p.offset for j in joined if j is not None and 0 <= j - p.offset < p.width}
            if not self.rv.view.select.is_aggregate:
                own |= set(p.table.key_positions)  # the output key: the source rows' keys
            out.setdefault(p.table.table_id, set()).update(own)
        return {t: frozenset(cols) for t, cols in out.items()}

    def pushdown(self, positions: Sequence[Position]) -> Pushdown | None:
        """The aggregate-below-join shape (see `Pushdown`), or None. The grouped ("base") table
        is either the first FROM item (`base [LEFT] JOIN child ON child.fk = base.pk`) or, for
        an inner join, the second (`child JOIN base ON base.pk = child.fk`)."""
        rv = self.rv
        if len(positions) != 2 or len(rv.group_by) != 1 or len(positions[1].on) != 1:
            return None
        first, second = positions
        if second.kind == "full" or second.ranges:
            return None
        if is_view_table(first.table.table_id) or is_view_table(second.table.table_id):
            return None  # build_pushed reads both tables from the mirror
        group = rv.group_by[0]
        if first.table.table_id == second.table.table_id or not isinstance(group, Col):
            return None
        (a, b) = second.on[0]  # first's column (joined index = own index), second's column
        if group.index == a and second.backward is not None:
            base, child, base_pk, fk, lookup = first, second, a, b, second.backward[1]
        elif group.index == second.offset + b and second.kind == "inner" and second.forward:
            base, child, base_pk, fk, lookup = second, first, b, a, second.forward
        else:
            return None
        if lookup.by_key is None or base.table.key_positions != (base_pk,):
            return None

        def cols(e: Expr | None) -> set[int]:
            return {c.index for c in walk(e) if isinstance(c, Col)} if e is not None else set()  # type: ignore[misc]

        def within(p: Position, indexes: set[int]) -> bool:
            return all(p.offset <= i < p.offset + p.width for i in indexes)

        aggs = [x for r in self.roots() for x in walk(r) if isinstance(x, Agg)]
        inside = set().union(*(cols(x.arg) | cols(x.filter) for x in aggs)) if aggs else set()
        outside = cols(rv.where)
        for c in rv.columns:
            outside |= _cols_outside_aggs(c.expr)
        if not within(child, inside) or not within(base, outside):
            return None
        return Pushdown(
            child=child.table.table_id,
            child_pos=child.index,
            fk=fk,
            base=base.table.table_id,
            base_pos=base.index,
            base_pk=base_pk,
            base_key=lookup.by_key,
            left=child.kind == "left",
        )

    def fingerprint(self, positions: tuple[Position, ...]) -> str:
        """Changes when the SQL or the schema of a table it reads changes, or a view it reads
        changes: the state is stale."""
        h = hashlib.sha256(ENGINE_LAYOUT.encode() + self.view.sql.encode())
        if _cross_join_after_outer_join(positions):
            # Views of this shape kept before 296aba9 walked a cross join back to the item
            # before it only, and missed rows an outer join before had null-extended: their
            # state may be wrong, so they are rebuilt (not every view, as a new ENGINE_LAYOUT
            # would do).
            h.update(b"cross join walks back from the first item")
        h.update(repr(sorted(name for name, _ in self.view.indexes)).encode())
        for info in self.infos:
            h.update(info.model_dump_json().encode())
        for name, fingerprint in sorted(self.upstream.items()):
            h.update(f"{name}={fingerprint}".encode())
        return h.hexdigest()[:16]

    # ---- joins

    def positions(self) -> tuple[Position, ...]:
        rv, out = self.rv, []
        for i, t in enumerate(rv.tables):
            info = self.infos[i]
            join = rv.joins[i - 1] if i else None
            on: tuple[tuple[int, int], ...] = ()
            ranges: tuple[tuple[int, str, int], ...] = ()
            forward: Lookup | RangeLookup | None = None
            backward: tuple[int, Lookup | RangeLookup] | None = None
            if join is not None:
                on = tuple((a.index, b.index - t.offset) for a, b in join.on)  # type: ignore[operator]
                ranges = tuple((a.index, op, b.index - t.offset) for a, op, b in join.ranges)  # type: ignore[operator]
                if on:
                    forward, backward = self.forward(i, on), self.backward(i, on)
                elif ranges:
                    forward, backward = self.range_forward(ranges), self.range_backward(ranges)
                else:  # a cross join: every row of this item, every row before it
                    forward = RangeLookup(ALL_ROWS, (), ())
                    # Back to the first item, then forward: a prefix null-extended by an
                    # outer join before this one has no row at the item just before.
                    backward = (0, RangeLookup(ALL_ROWS, (), ()))
            out.append(
                Position(
                    index=i,
                    alias=t.alias,
                    table=info,
                    offset=t.offset,
                    kind="base" if join is None else join.kind,
                    on=on,
                    forward=forward,
                    backward=backward,
                    converters=tuple(converter(c.type_oid) for c in info.columns),
                    ranges=ranges,
                )
            )
        return tuple(out)

    def range_forward(self, ranges: Sequence[tuple[int, str, int]]) -> RangeLookup:
        """Find this item's rows from the row before: a range scan of its column with the most
        bounds (`earlier < own` bounds own from below, `earlier > own` from above)."""
        by_col: dict[int, RangeLookup] = {}
        for a, op, b in ranges:
            lk = by_col.get(b, RangeLookup(b, (), ()))
            if op in ("<", "<="):
                lk = RangeLookup(b, (*lk.lower, (a, op == "<=")), lk.upper)
            else:
                lk = RangeLookup(b, lk.lower, (*lk.upper, (a, op == ">=")))
            by_col[b] = lk
        return max(by_col.values(), key=lambda lk: (bool(lk.lower) + bool(lk.upper), -lk.column))

    def range_backward(self, ranges: Sequence[tuple[int, str, int]]) -> tuple[int, RangeLookup]:
        """Find the earlier rows from a row of this item: a range scan of an earlier item's
        column, the one with the most bounds (`earlier < own`: own bounds it from above)."""
        by_col: dict[int, RangeLookup] = {}
        for a, op, b in ranges:
            j = self.owner(a)
            col = a - self.rv.tables[j].offset
            lk = by_col.get(a, RangeLookup(col, (), ()))
            if op in ("<", "<="):
                lk = RangeLookup(col, lk.lower, (*lk.upper, (b, op == "<=")))
            else:
                lk = RangeLookup(col, (*lk.lower, (b, op == ">=")), lk.upper)
            by_col[a] = lk
        a = max(by_col, key=lambda a: (bool(by_col[a].lower) + bool(by_col[a].upper), -a))
        return self.owner(a), by_col[a]

    def check_ranges(self, positions: Sequence[Position]) -> None:
        """A range join's columns must be kept in SQL order by the key encoding."""
        join_pos = {
            p.index: j for p, j in zip(positions[1:], self.rv.view.select.joins, strict=True)
        }
        for p in positions:
            for a, _, b in p.ranges:
                for t in (self.type_at(a), p.table.columns[b].type_oid):
                    if t not in ORDERABLE:
                        raise self.fail(
                            join_pos[p.index].table.pos,
                            f"a range join on a column of type {type_sql(t)} is not supported",
                            "compare columns of number, text, date, time or uuid type",
                        )

    def owner(self, joined_index: int) -> int:
        """The FROM item a joined-row column belongs to."""
        for i, t in reversed(list(enumerate(self.rv.tables))):
            if joined_index >= t.offset:
                return i
        raise AssertionError(joined_index)

    def by_key(self, pos: int, column: int, value_type: int) -> Callable[[Any], bytes] | None:
        info = self.infos[pos]
        own_type = info.columns[column].type_oid
        if info.key != [info.columns[column].name] or is_view_table(info.table_id):
            return None  # a view table's rows are found through a join index
        to_text = _TEXT_OF.get(own_type)
        same_kind = (own_type in INTS and value_type in INTS) or own_type == value_type
        return to_text if to_text is not None and same_kind else None

    def type_at(self, joined_index: int) -> int:
        pos = self.owner(joined_index)
        return self.infos[pos].columns[joined_index - self.rv.tables[pos].offset].type_oid

    def forward(self, i: int, on: Sequence[tuple[int, int]]) -> Lookup:
        # Prefer the pair that hits this item's primary key: a mirror get, no index to keep.
        options = [Lookup(a, b, self.by_key(i, b, self.type_at(a))) for a, b in on]
        return min(options, key=lambda lk: lk.by_key is None)

    def backward(self, i: int, on: Sequence[tuple[int, int]]) -> tuple[int, Lookup]:
        offset = self.rv.tables[i].offset
        options = []
        for a, b in on:
            j = self.owner(a)
            col = a - self.rv.tables[j].offset
            by_key = self.by_key(j, col, self.type_at(offset + b))
            options.append((j, Lookup(b, col, by_key)))
        return min(options, key=lambda o: o[1].by_key is None)

    def lookups(self, positions: Sequence[Position]) -> list[tuple[int, Lookup]]:
        out = []
        for p in positions:
            if p.forward is not None:
                out.append((p.index, p.forward))
            if p.backward is not None:
                out.append(p.backward)
        return out

    # ---- grouping

    def need_orderable(self, e: Expr, what: str) -> None:
        if e.type not in ORDERABLE:
            raise self.fail(
                e.pos,
                f"{what} of type {type_sql(e.type or 0)} cannot be kept as a view key",
                "group by columns of number, text, bool, date, time or uuid type",
            )

    def grouping(self) -> tuple[AggPlan, ...]:
        """The aggregates; sets `slots` (where output expressions find group key values,
        aggregates and carried columns) and `carried_exprs`."""
        rv = self.rv
        slots: dict[Expr, int] = {g: i for i, g in enumerate(rv.group_by)}
        agg_exprs: list[Agg] = []
        carried_exprs: list[Col] = []
        roots = [c.expr for c in rv.columns] + ([rv.having] if rv.having is not None else [])

        def collect(e: Expr) -> None:
            if e in slots:
                return
            if isinstance(e, Agg):
                if e not in agg_exprs:
                    agg_exprs.append(e)
                return
            if isinstance(e, Col):  # functionally dependent on a grouped primary key
                if e not in carried_exprs:
                    carried_exprs.append(e)
                return
            for c in children(e):
                collect(c)

        for r in roots:
            collect(r)
        n = len(slots)
        for j, a in enumerate(agg_exprs):
            slots[a] = n + j
        n += len(agg_exprs)
        for j, c in enumerate(carried_exprs):
            slots[c] = n + j
        aggs = tuple(
            AggPlan(
                name=a.name.lower(),
                arg_type=None if a.arg is None else a.arg.type,
                distinct=a.distinct,
                arg=None if a.arg is None else compile_expr(a.arg),
                filter=None if a.filter is None else compile_expr(a.filter),
                expr=a,
            )
            for a in agg_exprs
        )
        for a in agg_exprs:
            nested = [x for x in walk(a)[1:] if isinstance(x, Agg)]
            if nested:
                raise self.fail(
                    nested[0].pos,
                    "aggregate function calls cannot be nested",
                    "compute the inner aggregate in a view of its own",
                )
        self.slots = slots
        self.carried_exprs = tuple(carried_exprs)
        return aggs

    def key_columns_of_groups(self) -> tuple[int, ...]:
        """Output columns that show the GROUP BY expressions, in GROUP BY order; () when some
        grouped expression is not in the output (the view then has no key columns to look up)."""
        out = []
        for g in self.rv.group_by:
            found = [i for i, c in enumerate(self.rv.columns) if c.expr == g]
            if not found:
                return ()
            out.append(found[0])
        return tuple(out)
