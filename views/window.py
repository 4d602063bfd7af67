"""Window plans: what a ranking view computes per row, for the ranking operator.

A window view is a projection (FROM, joins and WHERE as any view without GROUP BY) whose rows
go through a ranking instead of straight to the output:

    SELECT ..., RANK() OVER (PARTITION BY p ORDER BY o DESC) AS rank FROM ...
    SELECT cols FROM (SELECT ..., ROW_NUMBER() OVER (...) AS rn FROM ...) t WHERE rn <= K
    SELECT ... FROM ... ORDER BY o DESC, id LIMIT K      (a hidden ROW_NUMBER, rn <= K)

The view's generated `project` (views.codegen) turns a joined row into its *base* values: the
SELECT list's columns that are not window functions, then the PARTITION BY values, then the
ORDER BY values. `store.ranking` keeps those rows in SQL order per partition and numbers them;
this plan says where each value sits and how an output row is assembled from a base row and
its window values.

Nothing here touches RocksDB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any

from viewstore.views.tree import Expr, OutputColumn, Select, SortItem, Window

HIDDEN_RN = "?row_number?"  # ORDER BY ... LIMIT's row number (views.sql), never output


@dataclass(frozen=True)
class WindowPlan:
    """The ranking of one view.

    `funcs` are the window functions (row_number, rank, dense_rank), all over one window.
    A base row holds `nvalues` values: the non-window SELECT-list columns, then the
    `partition` values, then the `order` values (`desc`, `nulls_first` per ORDER BY item).
    `layout` gives, per SELECT-list column, its base value (>= 0) or window function (-1 - j).
    `shown` lists the SELECT-list columns output; `top` is (window function, K): output only
    the rows whose value of that function is at most K (Top-K), None for every row."""

    funcs: tuple[str, ...]
    layout: tuple[int, ...]
    partition: tuple[int, ...]
    order: tuple[int, ...]
    desc: tuple[bool, ...]
    nulls_first: tuple[bool, ...]
    shown: tuple[int, ...]
    top: tuple[int, int] | None

    @cached_property
    def assemble(self) -> Callable[[list[Any]], tuple[Any, ...]]:
        """The output row from a base row (a list) extended by its [row number, rank, dense
        rank]: one itemgetter, as this runs for every row a change renumbers."""
        nbase = sum(1 for x in self.layout if x >= 0) + len(self.partition) + len(self.order)
        slot = {"row_number": 0, "rank": 1, "dense_rank": 2}
        idx = [
            self.layout[i] if self.layout[i] >= 0 else nbase + slot[self.funcs[-1 - self.layout[i]]]
            for i in self.shown
        ]
        if len(idx) == 1:
            one = idx[0]
            return lambda row: (row[one],)
        return itemgetter(*idx)  # type: ignore[return-value]

    @property
    def top_slot(self) -> tuple[int, int] | None:
        """`top` as (0: row number, 1: rank, 2: dense rank; K), in `assemble`'s order."""
        if self.top is None:
            return None
        slot = {"row_number": 0, "rank": 1, "dense_rank": 2}
        return slot[self.funcs[self.top[0]]], self.top[1]

    @property
    def window_outputs(self) -> tuple[int, ...]:
        """Where each window function's value is in the output row (a full ranking outputs
        every SELECT-list column, so each is there)."""
        return tuple(self.shown.index(self.layout.index(-1 - j)) for j in range(len(self.funcs)))


def window_plan(
    select: Select, columns: Sequence[OutputColumn]
) -> tuple[WindowPlan, list[Expr], list[str]]:
    """The window plan of a resolved view (`columns` its resolved SELECT list, `select` the
    parsed query that says what is shown and kept), the base values' expressions, which the
    view's `project` computes, and the output column names. ValueError says what is wrong
    with what `select` names."""
    base: list[Expr] = []
    layout: list[int] = []
    funcs: list[str] = []
    window: Window | None = None
    for c in columns:
        if isinstance(c.expr, Window):
            window = c.expr
            layout.append(-1 - len(funcs))
            funcs.append(c.expr.name)
        else:
            layout.append(len(base))
            base.append(c.expr)
    assert window is not None
    partition = tuple(range(len(base), len(base) + len(window.partition)))
    base += window.partition
    items: tuple[SortItem, ...] = window.order
    order = tuple(range(len(base), len(base) + len(items)))
    base += [o.expr for o in items]
    names = [c.name for c in columns]
    shown: list[int] = []
    out_names: list[str] = []
    for name, out in select.shown or (("*", "*"),):
        if name == "*":
            every = [i for i, n in enumerate(names) if n != HIDDEN_RN]
            shown += every
            out_names += [names[i] for i in every]
        elif name in names:
            shown.append(names.index(name))
            out_names.append(out)
        else:
            raise ValueError(f'the Top-K subquery has no column "{name}"')
    for i, n in enumerate(out_names):
        if n in out_names[:i]:
            raise ValueError(f'column "{n}" specified more than once')
    top = None
    if select.top is not None:
        name, k = select.top
        if name not in names or layout[names.index(name)] >= 0:
            raise ValueError(
                f"Top-K needs WHERE on a window column of the subquery; {name} is not one"
            )
        top = (-1 - layout[names.index(name)], k)
    plan = WindowPlan(
        funcs=tuple(funcs),
        layout=tuple(layout),
        partition=partition,
        order=order,
        desc=tuple(o.desc for o in items),
        nulls_first=tuple(o.nulls_first for o in items),
        shown=tuple(shown),
        top=top,
    )
    return plan, base, out_names
