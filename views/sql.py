"""View SQL: parse a views file into typed view definitions, and resolve them against tables.

A views file holds the `CREATE [MATERIALIZED] VIEW name AS SELECT ...;` statements users run in
Postgres today. `parse_views` reads it with Postgres's own grammar (pglast) and turns each SELECT
into a small typed tree (`Expr` nodes, `Select`) that the incremental operators and the
expression compiler (`viewstore.views.expr`) work from; no pglast node leaves this module.
Whatever the view compiler cannot maintain exactly is refused here, with the construct quoted
and its line:column in the file (issue 3: "rejected at start-up with an error that quotes the
construct and its position").

The tree lives in `views.tree`; binding it to tables and types is `views.resolve`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import (
    A_Expr_Kind,
    BoolExprType,
    JoinType,
    LimitOption,
    MinMaxOp,
    NullTestType,
    ObjectType,
    SortByDir,
    SortByNulls,
    SubLinkType,
)
from pglast.parser import ParseError, scan
from pglast.stream import RawStream

from viewstore.errors import ConfigError
from viewstore.views.tree import (
    BOOL,
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
    Select,
    SortItem,
    Star,
    TableRef,
    ViewDef,
    Window,
    walk,
)
from viewstore.views.window import HIDDEN_RN

SUPPORTED_HINT = (
    "views support SELECT with column references, constants, arithmetic, ||, comparisons, "
    "AND/OR/NOT, IS [NOT] NULL, IN (list), BETWEEN, [I]LIKE, CASE, COALESCE, NULLIF, "
    "GREATEST/LEAST, casts, lower/upper/length/date_trunc; FROM a table or a chain of INNER/LEFT "
    "JOINs on equalities or comparisons, CROSS JOIN, one FULL JOIN; WHERE; GROUP BY; HAVING; "
    "COUNT/SUM/AVG/MIN/MAX/BOOL_AND/BOOL_OR with "
    "optional DISTINCT (COUNT) and FILTER"
)

AGGREGATES = frozenset({"count", "sum", "avg", "min", "max", "bool_and", "bool_or"})
SCALAR_FUNCTIONS = frozenset({"lower", "upper", "length", "date_trunc"})
# Named so the message says why, not just "not supported".
VOLATILE_FUNCTIONS = frozenset(
    {
        "now", "random", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
        "timeofday", "nextval", "currval", "lastval", "setval", "gen_random_uuid",
        "uuid_generate_v4", "txid_current", "pg_current_xact_id", "random_normal",
    }
)  # fmt: skip
RANKING = frozenset({"row_number", "rank", "dense_rank"})
WINDOW_ONLY = frozenset(
    {"rank", "dense_rank", "row_number", "percent_rank", "cume_dist", "ntile", "lag", "lead",
     "first_value", "last_value", "nth_value"}
)  # fmt: skip

# Cast targets: pglast names (after pg_catalog normalisation) and SQL spellings → type OID.
CAST_TYPES: dict[str, int] = {
    "int2": INT2, "smallint": INT2, "int4": INT4, "int": INT4, "integer": INT4,
    "int8": INT8, "bigint": INT8, "numeric": NUMERIC, "decimal": NUMERIC,
    "float4": FLOAT4, "real": FLOAT4, "float8": FLOAT8, "double precision": FLOAT8,
    "text": TEXT, "varchar": VARCHAR, "bool": BOOL, "boolean": BOOL, "date": DATE,
    "timestamp": TIMESTAMP, "timestamptz": TIMESTAMPTZ,
}  # fmt: skip


# --------------------------------------------------------------------------- parsing


class _Parser:
    """Turns one statement's pglast tree into the typed tree, refusing what is unsupported."""

    def __init__(
        self, text: str, source: str, view: str, tokens: list[tuple[int, str]], start: int
    ) -> None:
        self.text, self.source, self.view = text, source, view
        self.tokens, self.start = tokens, start
        # The views its subqueries become, each before the views that read it.
        self.hidden: list[ViewDef] = []
        self.counter = 0

    def fail(self, pos: int, what: str, hint: str = SUPPORTED_HINT) -> ConfigError:
        return ConfigError(f"{where(self.text, self.source, pos)}: view {self.view}: {what}", hint)

    def snippet(self, node: Any, length: int = 60) -> str:
        """The construct as SQL (deparsed by pglast), one line, shortened."""
        try:
            s = RawStream()(node)
        except Exception:  # deparsing is only for the message; never hide the real error
            s = type(node).__name__
        return s if len(s) <= length else s[: length - 3] + "..."

    def token(self, names: set[str], *, after: int = -1, before: int | None = None) -> int:
        """Offset of the first token named in `names` after `after`, or of the last one before
        `before`; the statement start when there is none."""
        hits = [p for p, n in self.tokens if n in names and p > after]
        if before is not None:
            hits = [p for p in hits if p < before][-1:]
        return hits[0] if hits else self.start

    # ---- SELECT

    def select(self, q: Any, pos: int) -> Select:
        if not isinstance(q, ast.SelectStmt):
            raise self.fail(pos, "only SELECT queries are supported")
        if q.op is not None and q.op.name != "SETOP_NONE":
            op = q.op.name.removeprefix("SETOP_")
            at = self.token({op}, after=pos)
            if op != "UNION":
                raise self.fail(at, f"{op} is not supported", "UNION [ALL] is")
            if q.sortClause or q.limitCount is not None or q.limitOffset is not None:
                raise self.fail(
                    at,
                    "ORDER BY/LIMIT over a UNION is not supported",
                    "put the UNION in a subquery: SELECT * FROM (... UNION ALL ...) u ORDER BY",
                )
            return self.union(q, at)
        if q.withClause is not None:
            raise self.fail(
                q.withClause.location, "WITH (common table expressions) is not supported"
            )
        topk = self.topk_subquery(q, pos)
        if topk is not None:
            return topk
        limit = self.limit(q, pos)
        distinct = bool(q.distinctClause)
        if distinct and q.distinctClause != (None,):  # (None,) is plain DISTINCT
            raise self.fail(
                self.token({"DISTINCT"}, after=pos),
                "SELECT DISTINCT ON is not supported",
                "rank the rows with ROW_NUMBER() OVER (PARTITION BY ...) in a subquery and "
                "keep rn = 1",
            )
        if q.valuesLists:
            raise self.fail(pos, "VALUES is not supported")
        if q.windowClause:
            raise self.fail(
                self.token({"WINDOW"}, after=pos),
                "named windows (a WINDOW clause) are not supported",
                "write the window in the call: RANK() OVER (PARTITION BY ... ORDER BY ...)",
            )
        if q.lockingClause:
            raise self.fail(pos, "FOR UPDATE/SHARE is not supported")
        if q.intoClause is not None:
            raise self.fail(pos, "SELECT INTO is not supported")
        if not q.fromClause:
            raise self.fail(pos, "a view needs a FROM clause over published tables")
        base, joins = self.from_item(q.fromClause[0], pos)
        for item in q.fromClause[1:]:
            # FROM a, b WHERE a.x = b.y: an inner join whose equalities are in WHERE.
            if isinstance(item, ast.RangeSubselect):
                joins.append(Join("inner", self.derived(item, pos), (), from_where=True))
                continue
            if not isinstance(item, ast.RangeVar):
                raise self.fail(
                    self.first_pos(item, pos),
                    "after a comma, FROM takes a table or a subquery; write a JOIN chain instead",
                )
            joins.append(Join("inner", self.table_ref(item), (), from_where=True))
        columns = []
        for t in q.targetList:
            if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.A_Star):
                names = [f.sval for f in t.val.fields[:-1]]
                if len(names) > 1:
                    raise self.fail(t.location, f"{self.snippet(t.val)} is not supported")
                star = Star(names[0] if names else None, pos=t.location)
                columns.append(OutputColumn("*", star))
                continue
            if isinstance(t.val, ast.FuncCall) and t.val.over is not None:
                expr = self.window(t.val, self.first_pos(t.val, t.location))
            else:
                expr = self.expr(t.val, t.location, aggs=True)
            columns.append(OutputColumn(t.name or column_name(t.val), expr))
        seen: set[str] = set()
        for c, t in zip(columns, q.targetList, strict=True):
            if c.name in seen and c.name != "*":
                raise self.fail(t.location, f'column "{c.name}" specified more than once')
            seen.add(c.name)
        where_ = None
        if q.whereClause is not None:
            where_, semi = self.where_clause(q.whereClause, pos)
            joins += semi
        group: list[Expr] = []
        for g in q.groupClause or ():
            if isinstance(g, ast.A_Const) and isinstance(g.val, ast.Integer):
                # GROUP BY 1: the first output column, as Postgres reads it.
                if not 1 <= g.val.ival <= len(columns):
                    raise self.fail(pos, f"GROUP BY position {g.val.ival} is not in select list")
                group.append(columns[g.val.ival - 1].expr)
            elif isinstance(g, ast.GroupingSet):
                raise self.fail(g.location, "GROUPING SETS/ROLLUP/CUBE are not supported")
            else:
                group.append(self.expr(g, pos, where="GROUP BY"))
        if q.groupDistinct:
            raise self.fail(pos, "GROUP BY DISTINCT is not supported")
        having = None if q.havingClause is None else self.expr(q.havingClause, pos, aggs=True)
        if distinct:
            # SELECT DISTINCT is GROUP BY every output column (NULLs equal, as in Postgres).
            at = self.token({"DISTINCT"}, after=pos)
            if (
                group
                or having is not None
                or any(isinstance(x, Agg) for c in columns for x in walk(c.expr))
            ):
                raise self.fail(
                    at,
                    "SELECT DISTINCT with GROUP BY or aggregates is not supported",
                    "compute the groups in a subquery or a view, and SELECT DISTINCT over it",
                )
            group = (
                [Star(None, pos=at)]
                if any(isinstance(c.expr, Star) for c in columns)
                else [c.expr for c in columns]
            )
        select = Select(tuple(columns), base, tuple(joins), where_, tuple(group), having)
        if limit is not None:
            select = self.order_limit(select, q, limit, pos)
        self.check_windows(select)
        return select

    # ---- window functions and Top-K (views.window keeps them)

    def window(self, node: Any, pos: int) -> Window:
        """A ranking window function as a whole SELECT-list item."""
        names = [n.sval for n in node.funcname]
        name = names[-1].lower() if names[:-1] in ([], ["pg_catalog"]) else ".".join(names)
        if name not in RANKING:
            raise self.fail(
                pos,
                f"window function {name}() is not supported ({self.snippet(node)})",
                "ROW_NUMBER(), RANK() and DENSE_RANK() OVER (PARTITION BY ... ORDER BY ...) "
                "are; PERCENT_RANK, CUME_DIST and NTILE depend on the partition's size, so "
                "every change would rewrite the whole partition",
            )
        if node.args or node.agg_star or node.agg_distinct or node.agg_filter is not None:
            raise self.fail(pos, f"{name}() takes no arguments")
        over = node.over
        if over.name or over.refname:
            raise self.fail(
                pos, "named windows (WINDOW w AS ...) are not supported; write OVER (...)"
            )
        partition = tuple(
            self.expr(p, pos, where="PARTITION BY") for p in over.partitionClause or ()
        )
        return Window(
            name, partition, self.sort_items(over.orderClause or (), pos, ()), pos=pos, type=INT8
        )

    def sort_items(
        self, items: Any, pos: int, columns: tuple[OutputColumn, ...]
    ) -> tuple[SortItem, ...]:
        """ORDER BY items; with `columns` (a query's ORDER BY) a bare name of an output column
        or a position names that column, as in Postgres."""
        out = []
        for item in items:
            if item.useOp:
                raise self.fail(pos, "ORDER BY ... USING is not supported")
            desc = item.sortby_dir == SortByDir.SORTBY_DESC
            if item.sortby_nulls == SortByNulls.SORTBY_NULLS_DEFAULT:
                nulls_first = desc
            else:
                nulls_first = item.sortby_nulls == SortByNulls.SORTBY_NULLS_FIRST
            node = item.node
            expr: Expr | None = None
            if columns and isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
                if not 1 <= node.val.ival <= len(columns):
                    raise self.fail(pos, f"ORDER BY position {node.val.ival} is not in select list")
                expr = columns[node.val.ival - 1].expr
            elif columns and isinstance(node, ast.ColumnRef) and len(node.fields) == 1:
                name = node.fields[0].sval if isinstance(node.fields[0], ast.String) else None
                found = [c.expr for c in columns if c.name == name]
                expr = found[0] if found else None
            if expr is None:
                expr = self.expr(node, pos, where="ORDER BY")
            out.append(SortItem(expr, desc, nulls_first))
        return tuple(out)

    def limit(self, q: Any, pos: int) -> int | None:
        """A query's `LIMIT K` (with its ORDER BY), or None; refuses what Top-K cannot keep."""
        at = self.token({"LIMIT", "OFFSET", "FETCH"}, after=pos)
        if q.limitOffset is not None:
            raise self.fail(
                at,
                "OFFSET inside a view is not supported: the rows after it would need every "
                "row's rank kept",
                "keep the ranking in a view with ROW_NUMBER() and read the page with WHERE",
            )
        if q.limitCount is None:
            if q.sortClause:
                raise self.fail(
                    self.token({"ORDER"}, after=pos),
                    "ORDER BY inside a view without LIMIT is not supported (a view's rows have "
                    "no order)",
                    "order reads instead (viewstore query --order-by), with CREATE INDEX ON "
                    "view (column)",
                )
            return None
        if q.limitOption != LimitOption.LIMIT_OPTION_COUNT:
            raise self.fail(at, "FETCH ... WITH TIES is not supported")
        k = q.limitCount
        if isinstance(k, ast.A_Const) and k.isnull:
            raise self.fail(at, "LIMIT ALL/NULL inside a view is not supported; drop the LIMIT")
        if not (isinstance(k, ast.A_Const) and isinstance(k.val, ast.Integer)) or k.val.ival < 0:
            raise self.fail(at, "LIMIT takes a non-negative integer constant here")
        if not q.sortClause:
            raise self.fail(
                at,
                "LIMIT without ORDER BY picks arbitrary rows",
                "write ORDER BY ... LIMIT K, ending the ORDER BY with a unique column",
            )
        return int(k.val.ival)

    def order_limit(self, select: Select, q: Any, k: int, pos: int) -> Select:
        """`ORDER BY ... LIMIT K`: a hidden ROW_NUMBER() OVER (ORDER BY ...) kept at most K."""
        at = self.token({"ORDER"}, after=pos)
        order = self.sort_items(q.sortClause, at, select.columns)
        if select.window:
            raise self.fail(
                at, "ORDER BY ... LIMIT with window functions in the same SELECT is not supported"
            )
        hidden = OutputColumn(HIDDEN_RN, Window("row_number", (), order, pos=at, type=INT8))
        return replace(select, columns=(*select.columns, hidden), top=(HIDDEN_RN, k))

    def check_windows(self, select: Select) -> None:
        windows = [c.expr for c in select.columns if isinstance(c.expr, Window)]
        if not windows:
            return
        first = windows[0]
        if select.is_aggregate:
            raise self.fail(
                first.pos,
                "window functions over GROUP BY or aggregates in the same SELECT are not supported",
                "aggregate in a view of its own, and rank its rows in another view over it",
            )
        for w in windows[1:]:
            if (w.partition, w.order) != (first.partition, first.order):
                raise self.fail(
                    w.pos,
                    "window functions of one view must share one window (the same PARTITION "
                    "BY and ORDER BY)",
                    "put the other ranking in a view of its own",
                )

    def topk_subquery(self, q: Any, pos: int) -> Select | None:
        """`SELECT cols FROM (SELECT ..., ROW_NUMBER() OVER (...) AS rn FROM ...) t WHERE rn
        <= K` (or < K, = 1, K >= rn): Top-K over a ranking subquery, or None for another
        query. The outer SELECT may name the subquery's columns (or *), nothing else."""
        if not (
            q.fromClause
            and len(q.fromClause) == 1
            and isinstance(q.fromClause[0], ast.RangeSubselect)
            and q.whereClause is not None
            and not (q.groupClause or q.havingClause or q.sortClause or q.distinctClause)
            and q.limitCount is None
            and q.limitOffset is None
        ):
            return None
        sub = q.fromClause[0]
        inner_q = sub.subquery
        if not isinstance(inner_q, ast.SelectStmt) or not any(
            isinstance(t.val, ast.FuncCall) and t.val.over is not None
            for t in inner_q.targetList or ()
        ):
            return None
        alias = sub.alias.aliasname if sub.alias is not None else None
        if sub.alias is not None and sub.alias.colnames:
            return None
        bound = self.top_bound(q.whereClause, alias)
        if bound is None:
            return None
        name, k, wpos = bound
        inner = self.select(inner_q, self.token({"SELECT"}, after=pos))
        names = [c.name for c in inner.columns]
        # With * in the subquery its columns are known once resolved (views.window checks).
        known = not any(isinstance(c.expr, Star) for c in inner.columns)
        if known and (
            names.count(name) != 1 or not isinstance(inner.columns[names.index(name)].expr, Window)
        ):
            raise self.fail(
                wpos,
                f"Top-K needs WHERE on a window column of the subquery; {name} is not one",
                "filter on the ROW_NUMBER()/RANK()/DENSE_RANK() column: WHERE rn <= K",
            )
        shown: list[tuple[str, str]] = []
        for t in q.targetList:
            v = t.val
            if isinstance(v, ast.ColumnRef) and isinstance(v.fields[-1], ast.A_Star):
                shown.append(("*", "*"))
                continue
            col = self.column(v) if isinstance(v, ast.ColumnRef) else None
            if (
                col is None
                or (col.table is not None and col.table != alias)
                or (known and col.name not in names)
            ):
                raise self.fail(
                    self.first_pos(v, t.location),
                    "over a Top-K subquery the SELECT list names the subquery's columns only",
                    "compute expressions inside the subquery",
                )
            shown.append((col.name, t.name or col.name))
        return replace(inner, top=(name, k), shown=tuple(shown))

    def top_bound(self, cond: Any, alias: str | None) -> tuple[str, int, int] | None:
        """(column, K, position) for `col <= K`, `col < K`, `col = 1`, `K >= col`, `K > col`
        with an integer constant K: the rows kept have col at most K."""
        if not (isinstance(cond, ast.A_Expr) and cond.kind == A_Expr_Kind.AEXPR_OP):
            return None
        op = cond.name[-1].sval
        a, b = cond.lexpr, cond.rexpr
        flip = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "=": "="}
        if isinstance(a, ast.A_Const) and isinstance(b, ast.ColumnRef):
            a, b, op = b, a, flip.get(op, op)
        if not (
            isinstance(a, ast.ColumnRef)
            and isinstance(b, ast.A_Const)
            and isinstance(b.val, ast.Integer)
        ):
            return None
        col = self.column(a)
        if col.table not in (None, alias):
            return None
        k = b.val.ival
        if op == "<":
            k -= 1
        elif op == "=" and k != 1:
            return None  # rn = 1 is rn <= 1 (ranks start at 1); other values are not a top
        elif op not in ("<=", "="):
            return None
        return col.name, max(k, 0), a.location

    def from_item(self, node: Any, pos: int) -> tuple[TableRef, list[Join]]:
        if isinstance(node, ast.RangeVar):
            return self.table_ref(node), []
        if isinstance(node, ast.RangeSubselect):
            return self.derived(node, pos), []
        if isinstance(node, ast.JoinExpr):
            rpos = self.first_pos(node.rarg, pos)
            jpos = self.join_keywords(rpos)
            simple = (ast.RangeVar, ast.RangeSubselect)
            if node.jointype == JoinType.JOIN_RIGHT and isinstance(node.larg, simple):
                # a RIGHT JOIN b is b LEFT JOIN a (columns are named, so order is free).
                if not isinstance(node.rarg, simple):
                    raise self.fail(rpos, "a RIGHT JOIN's right side must be a table")
                swapped = self.item_ref(node.rarg, rpos)
                left = self.item_ref(node.larg, pos)
                return swapped, [self.join(node, "left", left, jpos, rpos)]
            base, joins = self.from_item(node.larg, pos)
            if node.jointype == JoinType.JOIN_RIGHT:
                raise self.fail(
                    jpos,
                    "RIGHT JOIN is supported as the first join only (a RIGHT JOIN b ...)",
                    "write it as a LEFT JOIN from the other side",
                )
            kind = {
                JoinType.JOIN_INNER: "inner",
                JoinType.JOIN_LEFT: "left",
                JoinType.JOIN_FULL: "full",
            }.get(node.jointype)
            if kind is None:
                name = node.jointype.name.removeprefix("JOIN_")
                raise self.fail(
                    jpos, f"{name} JOIN is not supported (INNER, LEFT, RIGHT and FULL are)"
                )
            if not isinstance(node.rarg, (ast.RangeVar, ast.RangeSubselect)):
                raise self.fail(
                    rpos,
                    "a join's right side must be a table or a subquery (a left-deep chain)",
                    "write the inner join as a subquery: JOIN (SELECT ... FROM a JOIN b ...) x",
                )
            right = self.item_ref(node.rarg, rpos)
            return base, [*joins, self.join(node, kind, right, jpos, rpos)]
        raise self.fail(
            self.first_pos(node, pos),
            f"FROM item {self.snippet(node)!r} is not supported",
        )

    def join_keywords(self, rpos: int) -> int:
        """Where the keywords of the join whose right side starts at `rpos` begin:
        [NATURAL] [RIGHT|FULL|CROSS|...] [OUTER] JOIN."""
        jpos = self.token({"JOIN"}, before=rpos)
        kw = {"RIGHT", "FULL", "CROSS", "LEFT", "INNER", "NATURAL", "OUTER"}
        while (i := [p for p, _ in self.tokens].index(jpos)) > 0 and self.tokens[i - 1][1] in kw:
            jpos = self.tokens[i - 1][0]
        return jpos

    def join(self, node: Any, kind: str, right: TableRef, jpos: int, rpos: int) -> Join:
        """The join `node` (a JoinExpr) of `right` to what precedes it: ON equalities, USING
        names or NATURAL (resolved against the tables' columns later)."""
        if getattr(node, "join_using_alias", None) is not None:
            raise self.fail(jpos, "an alias for a JOIN's USING columns is not supported")
        if node.usingClause:
            return Join(kind, right, (), using=tuple(n.sval for n in node.usingClause))
        if node.isNatural:
            return Join(kind, right, (), natural=True)
        if node.quals is None:  # CROSS JOIN: every row with every row
            return Join(kind, right, ())
        pairs, cond = self.join_condition(node.quals, right, rpos)
        return Join(kind, right, tuple(pairs), cond=tuple(cond))

    def item_ref(self, node: Any, pos: int) -> TableRef:
        """A FROM item that is a table or a subquery."""
        if isinstance(node, ast.RangeSubselect):
            return self.derived(node, pos)
        return self.table_ref(node)

    def derived(self, node: Any, pos: int) -> TableRef:
        """A subquery in FROM: a view of its own (named `<view>$<n>`, kept like any view the
        file defines: `views.stack`), read by this one as a table."""
        at = self.token({"SELECT"}, before=self.first_pos(node, pos))
        if node.lateral:
            raise self.fail(at, "LATERAL subqueries are not supported")
        if node.alias is not None and node.alias.colnames:
            raise self.fail(at, "column aliases on a subquery are not supported; alias them inside")
        name = self.hidden_view(node.subquery, at)
        alias = node.alias.aliasname if node.alias is not None else name
        return TableRef(name, alias, at)

    def hidden_view(self, query: Any, pos: int) -> str:
        """Parse `query` as a view of its own; returns its name."""
        return self.add_view(self.select(query, pos), RawStream()(query), pos)

    def add_view(self, select: Select, sql: str, pos: int) -> str:
        """Add a view this one reads (`select`, which Postgres runs as `sql`), named
        `<view>$<n>`; returns its name."""
        self.counter += 1
        name = f"{self.view}${self.counter}"
        self.hidden.append(ViewDef(name, sql, select, self.source, pos, self.text))
        return name

    def table_ref(self, rv: Any) -> TableRef:
        name = rv.relname if rv.schemaname in (None, "public") else f"{rv.schemaname}.{rv.relname}"
        alias = rv.alias.aliasname if rv.alias is not None else rv.relname
        if rv.alias is not None and rv.alias.colnames:
            raise self.fail(rv.location, "column aliases on a table are not supported")
        return TableRef(name, alias, rv.location)

    def join_condition(
        self, quals: Any, right: TableRef, pos: int
    ) -> tuple[list[tuple[Col, Col]], list[Expr]]:
        """The AND-ed terms of an ON clause: column equalities as pairs, and the other terms
        as expressions (the resolver keeps those a sort index can bound, and refuses the rest
        with their position)."""
        conds = (
            quals.args
            if isinstance(quals, ast.BoolExpr) and quals.boolop == BoolExprType.AND_EXPR
            else (quals,)
        )
        out, other = [], []
        for c in conds:
            cpos = self.first_pos(c, pos)
            if not (
                isinstance(c, ast.A_Expr)
                and c.kind == A_Expr_Kind.AEXPR_OP
                and c.name[-1].sval == "="
                and isinstance(c.lexpr, ast.ColumnRef)
                and isinstance(c.rexpr, ast.ColumnRef)
            ):
                other.append(self.expr(c, cpos, where="JOIN conditions"))
                continue
            a, b = self.column(c.lexpr), self.column(c.rexpr)
            # Put the joined table's column on the right when the qualifiers say which it is.
            if a.table == right.alias and b.table != right.alias:
                a, b = b, a
            out.append((a, b))
        return out, other

    # ---- UNION [ALL]

    def union(self, q: Any, at: int) -> Select:
        """`a UNION ALL b`: each side a view of its own with its columns renamed $c1..$cn and
        a constant `$branch` (1, 2), the two FULL JOINed on `$branch` (which never matches:
        every row of each side shows once, null-extended) and each column the COALESCE of the
        two sides' (the one that is not null-extended; COALESCE's type rules are UNION's).
        UNION without ALL is that, GROUP BY every column."""
        names = _set_names(q)
        width = len(names)
        sides = []
        for k, branch in ((1, q.larg), (2, q.rarg)):
            if len(_set_names(branch)) != width:
                raise self.fail(at, "each UNION query must have the same number of columns")
            sides.append(self.branch_view(branch, k, at))
        left, right = sides
        columns = tuple(
            OutputColumn(
                name,
                Func(
                    "coalesce",
                    (Col(left, f"$c{i}", pos=at), Col(right, f"$c{i}", pos=at)),
                    pos=at,
                ),
            )
            for i, name in enumerate(names, start=1)
        )
        on = ((Col(left, "$branch", pos=at), Col(right, "$branch", pos=at)),)
        join = Join("full", TableRef(right, right, at), on)
        group = () if q.all else tuple(c.expr for c in columns)
        return Select(columns, TableRef(left, left, at), (join,), None, group, None)

    def branch_view(self, node: Any, k: int, at: int) -> str:
        """One side of a UNION as a view: columns $c1..$cn, then `$branch` = k."""
        branch = ast.ResTarget(name="$branch", val=ast.A_Const(isnull=False, val=ast.Integer(k)))
        if node.op is None or node.op.name == "SETOP_NONE":
            targets = []
            for i, t in enumerate(node.targetList, start=1):
                if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.A_Star):
                    raise self.fail(t.location, "* in a UNION is not supported; name the columns")
                targets.append(ast.ResTarget(name=f"$c{i}", val=t.val, location=t.location))
            copy = ast.SelectStmt(**{f: getattr(node, f) for f in node})
            copy.targetList = (*targets, branch)
            return self.hidden_view(copy, at)
        inner = self.hidden_view(node, at)  # a UNION itself
        names = _set_names(node)
        cols = [OutputColumn(f"$c{i}", Col(inner, n, pos=at)) for i, n in enumerate(names, 1)]
        cols.append(OutputColumn("$branch", Const(k, pos=at)))
        select = Select(tuple(cols), TableRef(inner, inner, at), (), None, (), None)
        listed = ", ".join(f'{quote(n)} AS "$c{i}"' for i, n in enumerate(names, 1))
        return self.add_view(select, f'SELECT {listed}, {k} AS "$branch" FROM {quote(inner)}', at)

    # ---- subqueries in WHERE: semi-joins and anti-joins

    def where_clause(self, node: Any, pos: int) -> tuple[Expr | None, list[Join]]:
        """WHERE, with each top-level `[NOT] IN (SELECT ...)` and `[NOT] EXISTS (SELECT ...)`
        term turned into a join with a view of the subquery (and the condition that join
        leaves); returns the condition and the joins to add."""
        terms = (
            list(node.args)
            if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR
            else [node]
        )
        conds: list[Expr] = []
        joins: list[Join] = []
        for t in terms:
            negated = False
            inner = t
            if (
                isinstance(t, ast.BoolExpr)
                and t.boolop == BoolExprType.NOT_EXPR
                and isinstance(t.args[0], ast.SubLink)
            ):
                negated, inner = True, t.args[0]
            if isinstance(inner, ast.SubLink) and inner.subLinkType in (
                SubLinkType.ANY_SUBLINK,
                SubLinkType.EXISTS_SUBLINK,
            ):
                at = self.first_pos(inner, pos)
                if inner.subLinkType == SubLinkType.ANY_SUBLINK:
                    cond = self.in_subquery(inner, negated, at, joins)
                else:
                    cond = self.exists(inner, negated, at, joins)
                if cond is not None:
                    conds.append(cond)
                continue
            conds.append(self.expr(t, pos, where="WHERE"))
        if not conds:
            return None, joins
        return (conds[0] if len(conds) == 1 else BoolOp("and", tuple(conds), pos=pos)), joins

    def _sub_select(self, link: Any, at: int) -> Any:
        q = link.subselect
        if not isinstance(q, ast.SelectStmt) or (q.op is not None and q.op.name != "SETOP_NONE"):
            raise self.fail(at, "a subquery in WHERE must be one SELECT here")
        return q

    def in_subquery(self, link: Any, negated: bool, at: int, joins: list[Join]) -> Expr | None:
        """`x [NOT] IN (SELECT y ...)`: a join with the view `SELECT DISTINCT y ...`, on
        x = y. For NOT IN, a LEFT JOIN that must find nothing, and Postgres's NULL rules: with
        a NULL among the y, or x NULL, NOT IN is NULL (the row is left out) unless there is
        no y at all (then it is true)."""
        op = [n.sval for n in link.operName or ()]
        if op not in ([], ["="]):
            raise self.fail(at, f"{op[-1]} ANY/ALL (SELECT ...) is not supported; use IN")
        if not isinstance(link.testexpr, ast.ColumnRef):
            raise self.fail(
                at,
                "IN (SELECT ...) is supported on a column, not on an expression",
                "compute the expression in a subquery in FROM and test its column",
            )
        x = self.column(link.testexpr)
        q = self._sub_select(link, at)
        if len(q.targetList) != 1:
            raise self.fail(at, "subquery has too many columns")
        name = self.hidden_view(self._distinct_of(q, [(q.targetList[0].val, "$in")]), at)
        y = Col(name, "$in", pos=at)
        if not negated:
            joins.append(Join("inner", TableRef(name, name, at), ((x, y),)))
            return None
        joins.append(Join("left", TableRef(name, name, at), ((x, y),)))
        count = self.count_view(name, "$in", at)
        joins.append(Join("inner", TableRef(count, count, at), ()))
        n, nulls = Col(count, "$n", pos=at), Col(count, "$nulls", pos=at)
        zero = Const(0, pos=at)
        return BoolOp(
            "or",
            (
                Op("=", (n, zero), pos=at),
                BoolOp(
                    "and",
                    (
                        NullTest(x, True, pos=at),
                        Op("=", (nulls, zero), pos=at),
                        NullTest(y, False, pos=at),
                    ),
                    pos=at,
                ),
            ),
            pos=at,
        )

    def exists(self, link: Any, negated: bool, at: int, joins: list[Join]) -> Expr | None:
        """`[NOT] EXISTS (SELECT ... FROM t WHERE t.a = outer.b AND ...)`: the equalities
        with outer columns correlate it; a join with the view `SELECT DISTINCT t.a ... WHERE
        <the other terms>` on a = b (NOT: a LEFT JOIN that finds nothing). Without such an
        equality, a count of the subquery's rows, which must not be (must be) zero."""
        q = self._sub_select(link, at)
        if q.groupClause or q.havingClause:
            raise self.fail(at, "EXISTS over a grouped subquery is not supported")
        own = self._from_names(q.fromClause or (), at)
        pairs: list[tuple[Any, Col]] = []
        local: list[Any] = []
        w = q.whereClause
        terms = (
            list(w.args)
            if isinstance(w, ast.BoolExpr) and w.boolop == BoolExprType.AND_EXPR
            else ([] if w is None else [w])
        )
        for t in terms:
            outer = [r for r in _nodes(t) if isinstance(r, ast.ColumnRef) and self._outer(r, own)]
            if not outer:
                local.append(t)
                continue
            if not (
                isinstance(t, ast.A_Expr)
                and t.kind == A_Expr_Kind.AEXPR_OP
                and t.name[-1].sval == "="
                and isinstance(t.lexpr, ast.ColumnRef)
                and isinstance(t.rexpr, ast.ColumnRef)
                and len(outer) == 1
            ):
                raise self.fail(
                    self.first_pos(t, at),
                    "an EXISTS subquery may refer to the outer query only in equalities "
                    "`inner column = outer column`",
                )
            inner_col, outer_col = (
                (t.rexpr, t.lexpr) if self._outer(t.lexpr, own) else (t.lexpr, t.rexpr)
            )
            pairs.append((inner_col, self.column(outer_col)))
        if not pairs:
            sub = self.hidden_view(q, at)
            count = self.count_view(sub, None, at)
            joins.append(Join("inner", TableRef(count, count, at), ()))
            return Op("<>" if not negated else "=", (Col(count, "$n"), Const(0)), pos=at)
        stmt = ast.SelectStmt(
            fromClause=q.fromClause,
            whereClause=(
                None
                if not local
                else local[0]
                if len(local) == 1
                else ast.BoolExpr(boolop=BoolExprType.AND_EXPR, args=tuple(local))
            ),
            op=q.op,
        )
        names = [(c, f"$e{i}") for i, (c, _) in enumerate(pairs, start=1)]
        name = self.hidden_view(self._distinct_of(stmt, names), at)
        on = tuple((outer, Col(name, f"$e{i}", pos=at)) for i, (_, outer) in enumerate(pairs, 1))
        joins.append(Join("left" if negated else "inner", TableRef(name, name, at), on))
        return NullTest(Col(name, "$e1", pos=at), False, pos=at) if negated else None

    def _distinct_of(self, q: Any, columns: list[tuple[Any, str]]) -> Any:
        """`SELECT DISTINCT <columns> <the rest of q>` (q grouped: over q as a subquery)."""
        targets = tuple(ast.ResTarget(name=n, val=v) for v, n in columns)
        if q.groupClause or q.havingClause or q.distinctClause:
            return ast.SelectStmt(
                targetList=tuple(
                    ast.ResTarget(name=n, val=ast.ColumnRef(fields=(ast.String(sval=n),)))
                    for _, n in columns
                ),
                fromClause=(
                    ast.RangeSubselect(
                        lateral=False,
                        subquery=ast.SelectStmt(
                            targetList=targets,
                            fromClause=q.fromClause,
                            whereClause=q.whereClause,
                            groupClause=q.groupClause,
                            havingClause=q.havingClause,
                            distinctClause=q.distinctClause,
                            op=q.op,
                        ),
                        alias=ast.Alias(aliasname="s"),
                    ),
                ),
                distinctClause=(None,),
                op=q.op,
            )
        return ast.SelectStmt(
            targetList=targets,
            fromClause=q.fromClause,
            whereClause=q.whereClause,
            distinctClause=(None,),
            op=q.op,
        )

    def count_view(self, over: str, column: str | None, at: int) -> str:
        """A one-row view of how many rows `over` has (`$n`) and, given a column, how many of
        them are NULL there (`$nulls`)."""
        cols = [OutputColumn("$n", Agg("count", None, pos=at))]
        sql = 'SELECT count(*) AS "$n"'
        if column is not None:
            null = NullTest(Col(None, column, pos=at), False, pos=at)
            cols.append(OutputColumn("$nulls", Agg("count", None, filter=null, pos=at)))
            sql += f' , count(*) FILTER (WHERE {quote(column)} IS NULL) AS "$nulls"'
        select = Select(tuple(cols), TableRef(over, over, at), (), None, (), None)
        return self.add_view(select, f"{sql} FROM {quote(over)}", at)

    def _from_names(self, items: Any, at: int) -> set[str]:
        """The names a FROM list's items go by (aliases, or table names)."""
        out: set[str] = set()
        for n in (n for item in items for n in _nodes(item)):
            if isinstance(n, ast.RangeVar):
                out.add(n.alias.aliasname if n.alias is not None else n.relname)
            elif isinstance(n, ast.RangeSubselect) and n.alias is not None:
                out.add(n.alias.aliasname)
        return out

    def _outer(self, ref: Any, own: set[str]) -> bool:
        """Whether a column reference names a FROM item of the outer query (it is qualified
        with a name the subquery's FROM does not have)."""
        names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
        return len(names) == 2 and names[0] not in own

    # ---- expressions

    def first_pos(self, node: Any, default: int) -> int:
        """Where `node`'s text starts: the smallest location in its subtree (an operator's
        own location is the operator, not its left operand)."""
        found = [
            loc
            for n in _nodes(node)
            if isinstance(loc := getattr(n, "location", None), int) and loc >= 0
        ]
        return min(found) if found else default

    def column(self, node: Any) -> Col:
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if len(names) != len(node.fields) or not 1 <= len(names) <= 2:
            raise self.fail(
                node.location, f"column reference {self.snippet(node)!r} is not supported"
            )
        return Col(names[0] if len(names) == 2 else None, names[-1], pos=node.location)

    def expr(self, node: Any, pos: int, *, aggs: bool = False, where: str = "") -> Expr:
        """Convert an expression. `aggs`: aggregates allowed here (SELECT list, HAVING);
        `where` names the clause that forbids them, for the message."""
        pos = self.first_pos(node, pos)
        method: Callable[..., Expr] | None = getattr(self, "x_" + type(node).__name__, None)
        if method is None:
            raise self.fail(pos, f"{self.describe(node)} is not supported")
        return method(node, pos, aggs, where)

    def describe(self, node: Any) -> str:
        names = {
            "SubLink": "subqueries", "A_ArrayExpr": "arrays", "RowExpr": "row constructors",
            "CollateClause": "COLLATE", "ParamRef": "parameters", "A_Indirection": "subscripts",
            "BooleanTest": "IS [NOT] TRUE/FALSE/UNKNOWN", "XmlExpr": "XML functions",
        }  # fmt: skip
        return f"{names.get(type(node).__name__, 'the construct')} ({self.snippet(node)})"

    def sub(self, nodes: Any, pos: int, aggs: bool, where: str) -> tuple[Expr, ...]:
        return tuple(self.expr(n, pos, aggs=aggs, where=where) for n in nodes)

    def x_ColumnRef(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        if isinstance(node.fields[-1], ast.A_Star):
            raise self.fail(pos, "* is only allowed in COUNT(*)")
        return self.column(node)

    def x_A_Const(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        if node.isnull:
            return Const(None, pos=pos)
        v = node.val
        if isinstance(v, ast.Integer):
            return Const(v.ival, pos=pos)
        if isinstance(v, ast.Float):
            # pglast gives integers beyond int4 as Float too; Postgres makes them int8 if
            # they fit, numeric otherwise (resolve() does the typing).
            text = v.fval
            if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):
                return Const(int(text), pos=pos)
            d = Decimal(text)
            if d.as_tuple().exponent > 0:  # type: ignore[operator]  # 1e3 is 1000, scale 0
                d = d.quantize(Decimal(1))
            return Const(d, pos=pos)
        if isinstance(v, ast.Boolean):
            return Const(bool(v.boolval), pos=pos)
        if isinstance(v, ast.String):
            return Const(v.sval, pos=pos)
        raise self.fail(pos, f"constant {self.snippet(node)!r} is not supported")

    def x_TypeCast(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        tn = node.typeName
        names = [n.sval for n in tn.names]
        if names[0] == "pg_catalog":
            names = names[1:]
        name = ".".join(names)
        target = CAST_TYPES.get(name)
        if target is None or tn.arrayBounds:
            raise self.fail(pos, f"cast to {name}{'[]' if tn.arrayBounds else ''} is not supported")
        mods: list[int] = []
        for m in tn.typmods or ():
            if not (isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer)):
                raise self.fail(pos, "type modifiers must be integer constants")
            mods.append(m.val.ival)
        typmod = None
        if target == NUMERIC and mods:
            p, s = mods[0], mods[1] if len(mods) > 1 else 0
            if not 1 <= p <= 1000 or not -1000 <= s <= 1000:
                raise self.fail(pos, f"NUMERIC precision {p} / scale {s} out of range")
            typmod = (p, s)
        elif target == VARCHAR and mods:
            typmod = (mods[0],)
        elif mods:
            raise self.fail(pos, f"type modifiers on {name} are not supported")
        return Cast(self.expr(node.arg, pos, aggs=aggs, where=where), target, typmod, pos=pos)

    def x_A_Expr(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        kind = node.kind
        op = node.name[-1].sval if node.name else ""

        def one(n: Any) -> Expr:
            return self.expr(n, pos, aggs=aggs, where=where)

        if kind == A_Expr_Kind.AEXPR_OP:
            if op not in ("+", "-", "*", "/", "%", "||", "=", "<>", "!=", "<", "<=", ">", ">="):
                raise self.fail(pos, f"operator {op} is not supported")
            op = "<>" if op == "!=" else op
            if node.lexpr is None:
                if op != "-":
                    raise self.fail(pos, f"prefix operator {op} is not supported")
                return Op("neg", (one(node.rexpr),), pos=pos)
            return Op(op, (one(node.lexpr), one(node.rexpr)), pos=pos)
        if kind == A_Expr_Kind.AEXPR_IN:
            if not isinstance(node.rexpr, tuple):
                raise self.fail(pos, "IN needs a list of values")
            items = tuple(one(n) for n in node.rexpr)
            return InList(one(node.lexpr), items, op == "<>", pos=pos)
        if kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN):
            low, high = node.rexpr
            neg = kind == A_Expr_Kind.AEXPR_NOT_BETWEEN
            return Between(one(node.lexpr), one(low), one(high), neg, pos=pos)
        if kind in (A_Expr_Kind.AEXPR_LIKE, A_Expr_Kind.AEXPR_ILIKE):
            if isinstance(node.rexpr, ast.FuncCall):  # LIKE ... ESCAPE '...'
                raise self.fail(pos, "LIKE ... ESCAPE is not supported (backslash is the escape)")
            ins = kind == A_Expr_Kind.AEXPR_ILIKE
            return Like(one(node.lexpr), one(node.rexpr), ins, op.startswith("!"), pos=pos)
        if kind == A_Expr_Kind.AEXPR_NULLIF:
            return Func("nullif", (one(node.lexpr), one(node.rexpr)), pos=pos)
        raise self.fail(
            pos,
            f"{kind.name.removeprefix('AEXPR_')} expressions are not supported "
            f"({self.snippet(node)})",
        )

    def x_BoolExpr(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        op = {BoolExprType.AND_EXPR: "and", BoolExprType.OR_EXPR: "or"}.get(node.boolop, "not")
        return BoolOp(op, self.sub(node.args, pos, aggs, where), pos=pos)

    def x_NullTest(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        neg = node.nulltesttype == NullTestType.IS_NOT_NULL
        return NullTest(self.expr(node.arg, pos, aggs=aggs, where=where), neg, pos=pos)

    def x_CaseExpr(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        operand = None if node.arg is None else self.expr(node.arg, pos, aggs=aggs, where=where)
        whens = tuple(
            (
                self.expr(w.expr, pos, aggs=aggs, where=where),
                self.expr(w.result, pos, aggs=aggs, where=where),
            )
            for w in node.args
        )
        default = (
            None
            if node.defresult is None
            else self.expr(node.defresult, pos, aggs=aggs, where=where)
        )
        return Case(operand, whens, default, pos=pos)

    def x_CoalesceExpr(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        return Func("coalesce", self.sub(node.args, pos, aggs, where), pos=pos)

    def x_MinMaxExpr(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        name = "greatest" if node.op == MinMaxOp.IS_GREATEST else "least"
        return Func(name, self.sub(node.args, pos, aggs, where), pos=pos)

    def x_SQLValueFunction(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        name = node.op.name.removeprefix("SVFOP_").lower()
        raise self.fail(
            pos,
            f"non-deterministic function {name} is not supported: a view must depend only on "
            "its tables' rows",
        )

    def x_SubLink(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        raise self.fail(
            pos,
            f"this subquery is not supported ({self.snippet(node)})",
            "[NOT] IN (SELECT ...) and [NOT] EXISTS (SELECT ...) are supported as terms of "
            "WHERE joined by AND; for a scalar subquery, join a subquery in FROM",
        )

    def x_FuncCall(self, node: Any, pos: int, aggs: bool, where: str) -> Expr:
        names = [n.sval for n in node.funcname]
        name = names[-1].lower() if names[:-1] in ([], ["pg_catalog"]) else ".".join(names)
        if node.over is not None:
            raise self.fail(
                pos,
                f"window functions are supported only as a whole SELECT-list item "
                f"({self.snippet(node)})",
                "select ROW_NUMBER()/RANK()/DENSE_RANK() OVER (...) AS a column of its own",
            )
        if name in VOLATILE_FUNCTIONS:
            raise self.fail(
                pos,
                f"non-deterministic function {name}() is not supported: a view must depend "
                "only on its tables' rows",
            )
        if name in WINDOW_ONLY:
            raise self.fail(
                pos, f"window function {name}() needs OVER (...) ({self.snippet(node)})"
            )
        if node.agg_order or node.agg_within_group or node.func_variadic:
            raise self.fail(
                pos, f"ordered or variadic calls are not supported ({self.snippet(node)})"
            )
        args = node.args or ()
        if name in AGGREGATES:
            if not aggs:
                raise self.fail(pos, f"aggregate functions are not allowed in {where}")
            inner = dict(aggs=False, where="aggregate arguments (nested aggregates)")
            if node.agg_star:
                if name != "count":
                    raise self.fail(pos, f"{name}(*) is not supported")
                arg = None
            else:
                if len(args) != 1:
                    raise self.fail(pos, f"{name}() takes one argument")
                arg = self.expr(args[0], pos, **inner)  # type: ignore[arg-type]
            if node.agg_distinct and name != "count":
                raise self.fail(pos, f"DISTINCT is supported in COUNT only, not in {name}()")
            filt = None
            if node.agg_filter is not None:
                filt = self.expr(node.agg_filter, pos, aggs=False, where="FILTER")
            return Agg(name, arg, bool(node.agg_distinct), filt, pos=pos)
        if node.agg_filter is not None or node.agg_distinct or node.agg_star:
            raise self.fail(pos, f"{name}() is not an aggregate function")
        if name not in SCALAR_FUNCTIONS:
            raise self.fail(pos, f"function {name}() is not supported")
        want = 2 if name == "date_trunc" else 1
        if len(args) != want:
            raise self.fail(pos, f"{name}() takes {want} argument{'s' * (want > 1)} here")
        return Func(name, self.sub(args, pos, aggs, where), pos=pos)


def _nodes(node: Any) -> list[Any]:
    """`node` and every pglast node below it."""
    out = [node]
    if isinstance(node, ast.Node):
        for name in node:
            v = getattr(node, name)
            for item in v if isinstance(v, tuple) else (v,):
                if isinstance(item, ast.Node):
                    out += _nodes(item)
    return out


def _set_names(q: Any) -> list[str]:
    """The column names of a SELECT, or of a UNION (its first SELECT's)."""
    while q.op is not None and q.op.name != "SETOP_NONE":
        q = q.larg
    return [t.name or column_name(t.val) for t in q.targetList]


def quote(name: str) -> str:
    """`name` as a SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def column_name(node: Any) -> str:
    """The output column name Postgres gives an unaliased expression (FigureColname)."""
    if isinstance(node, ast.ColumnRef):
        last = node.fields[-1]
        return last.sval if isinstance(last, ast.String) else "?column?"
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval
    if isinstance(node, ast.TypeCast):
        inner = column_name(node.arg)
        return inner if inner != "?column?" else node.typeName.names[-1].sval
    if isinstance(node, ast.CaseExpr):
        return "case"
    if isinstance(node, ast.CoalesceExpr):
        return "coalesce"
    if isinstance(node, ast.MinMaxExpr):
        return "greatest" if node.op == MinMaxOp.IS_GREATEST else "least"
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_NULLIF:
        return "nullif"
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Boolean):
        return "bool"
    return "?column?"


def where(text: str, source: str, pos: int | None) -> str:
    """`source:line:column` (both 1-based) of character offset `pos` in `text`."""
    pos = max(0, min(pos if pos is not None else 0, len(text)))
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{source}:{line}:{col}"


def _token_starts(text: str, start: int, end: int) -> list[tuple[int, str]]:
    """(character offset, token name) of each token in text[start:end], comments skipped."""
    chunk = text[start:end]
    raw = chunk.encode("utf-8")
    # scan() reports byte offsets; map them back to characters for line:column.
    return [
        (start + len(raw[: tok.start].decode("utf-8", "ignore")), tok.name)
        for tok in scan(chunk)
        if tok.name not in ("SQL_COMMENT", "C_COMMENT")
    ]


def _index(stmt: ast.IndexStmt, views: list[ViewDef], text: str, source: str, start: int) -> None:
    """CREATE [UNIQUE] INDEX [name] ON view (column [ASC|DESC]): a sort index on one column of
    a view defined above it (both directions read it; UNIQUE is accepted and not enforced)."""
    at = where(text, source, start)
    name = stmt.relation.relname
    found = [i for i, v in enumerate(views) if v.name == name]
    if not found:
        raise ConfigError(
            f"{at}: CREATE INDEX names {name}, which is not a view defined above it",
            "put CREATE INDEX ON view (column) after the view's CREATE MATERIALIZED VIEW",
        )
    params = stmt.indexParams or ()
    if len(params) != 1 or params[0].name is None or stmt.whereClause is not None:
        raise ConfigError(
            f"{at}: index on {name}: only a sort index on one plain column is supported "
            "(no expressions, several columns or WHERE)",
            "write one CREATE INDEX ON view (column) per column that reads are ordered by",
        )
    view = views[found[0]]
    views[found[0]] = replace(view, indexes=(*view.indexes, (params[0].name, start)))


def parse_views(text: str, source: str = "views.sql") -> list[ViewDef]:
    """Parse a views file: one or more CREATE [MATERIALIZED] VIEW name AS SELECT ...;.

    Raise ConfigError, with the file's line:column, for a syntax error, any other statement,
    a view defined twice, or a construct the view compiler cannot maintain.
    """
    try:
        stmts = parse_sql(text)
    except ParseError as exc:
        pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        raise ConfigError(
            f"{where(text, source, pos)}: {exc.args[0]}",
            "views.sql holds CREATE MATERIALIZED VIEW name AS SELECT ...; statements",
        ) from None
    views: list[ViewDef] = []
    names: set[str] = set()
    for raw in stmts:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        tokens = _token_starts(text, start, end)
        start = tokens[0][0] if tokens else start
        stmt = raw.stmt
        if isinstance(stmt, ast.CreateTableAsStmt) and stmt.objtype == ObjectType.OBJECT_MATVIEW:
            rel, query = stmt.into.rel, stmt.query
            if stmt.into.colNames:
                raise ConfigError(
                    f"{where(text, source, start)}: view {rel.relname}: column name lists are "
                    "not supported; alias the columns in the SELECT",
                    SUPPORTED_HINT,
                )
        elif isinstance(stmt, ast.IndexStmt):
            _index(stmt, views, text, source, start)
            continue
        elif isinstance(stmt, ast.ViewStmt):
            rel, query = stmt.view, stmt.query
            if stmt.aliases:
                raise ConfigError(
                    f"{where(text, source, start)}: view {rel.relname}: column name lists are "
                    "not supported; alias the columns in the SELECT",
                    SUPPORTED_HINT,
                )
        else:
            quoted = " ".join(text[start:end].split())
            quoted = quoted if len(quoted) <= 60 else quoted[:57] + "..."
            raise ConfigError(
                f"{where(text, source, start)}: only CREATE [MATERIALIZED] VIEW and CREATE "
                f"INDEX statements are allowed, not {quoted!r}",
                "views.sql holds CREATE MATERIALIZED VIEW name AS SELECT ...; statements",
            )
        name = rel.relname
        if name in names:
            raise ConfigError(f"{where(text, source, start)}: view {name} is defined twice")
        names.add(name)
        # The query starts at the token after the first AS (CREATE ... VIEW name AS SELECT).
        as_at = next((i for i, (_, t) in enumerate(tokens) if t == "AS"), len(tokens) - 1)
        qpos = tokens[as_at + 1][0] if as_at + 1 < len(tokens) else start
        parser = _Parser(text, source, name, tokens, start)
        select = parser.select(query, qpos)
        sql = text[qpos:end].strip()
        views += parser.hidden
        views.append(ViewDef(name, sql, select, source, start, text))
    return views
