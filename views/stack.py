"""Views over views: the order a views file is kept in, and a view seen as a table.

A view may read other views of the same file (`FROM player_total_scores`, or a subquery in
FROM, which the parser turns into a view of its own). The engine keeps a stack of views in one
pass per transaction: the views that read only tables first, then each view once every view it
reads has its rows for the transaction, in the same WriteBatch, so the whole stack moves
together (readers never see a view ahead of the views below it).

To the view compiler and the engine, a view that another view reads is a table: its "view
table" (`view_table`) has the view's output columns plus a hidden last column, `$key`, the
view's row key (the bytes `v <view id> r <key>` of the views column family end with), which is
the view table's primary key. The engine feeds each row the upstream view changes by to the
views above it as a removal of the old row and an addition of the new one, exactly as the
applier feeds a source table's changes; the rows themselves are not copied (a lookup reads the
upstream view's own row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pglast import ast, parse_sql
from pglast.stream import RawStream
from pglast.visitors import Visitor

from viewstore.errors import ConfigError
from viewstore.views.schema import ColumnInfo, TableInfo
from viewstore.views.sql import where
from viewstore.views.tree import ViewDef

# View tables have table ids from here up (+ the view id, 16 bits); a source table's id is its
# position in the publication, from 1.
VIEW_TABLE_BASE = 0xFFFF0000
KEY_COLUMN = "$key"
BYTEA = 17


def is_view_table(table_id: int) -> bool:
    return table_id >= VIEW_TABLE_BASE


def view_id_of(table_id: int) -> int:
    """The view id behind a view table's id."""
    return table_id - VIEW_TABLE_BASE


def view_table(name: str, view_id: int, columns: Sequence[tuple[str, int]]) -> TableInfo:
    """The table a view is to the views that read it: `columns` (name, type oid) and `$key`."""
    return TableInfo(
        table_id=VIEW_TABLE_BASE + view_id,
        schema_name="public",
        name=name,
        columns=[ColumnInfo(name=n, type_oid=t) for n, t in columns]
        + [ColumnInfo(name=KEY_COLUMN, type_oid=BYTEA)],
        key=[KEY_COLUMN],
    )


def order_views(defs: Sequence[ViewDef]) -> list[ViewDef]:
    """`defs` with every view after the views it reads (otherwise in file order). A name in
    FROM that is a view of the file is read from it, even if a published table has the same
    name (as Postgres would read the view when both are in `public` and the view came later:
    the file defines what the names mean). Refuses a cycle, naming where it closes."""
    by_name = {d.name: d for d in defs}
    out: list[ViewDef] = []
    state: dict[str, str] = {}  # name -> "visiting" | "done"

    def visit(d: ViewDef, path: list[str]) -> None:
        state[d.name] = "visiting"
        for ref in d.select.tables:
            up = by_name.get(ref.table)
            if up is None:
                continue
            if state.get(up.name) == "visiting":
                cycle = " -> ".join([*path, d.name, up.name][[*path, d.name].index(up.name) :])
                raise ConfigError(
                    f"{where(d.file_text, d.source, ref.pos)}: view {d.name} reads view "
                    f"{up.name}: a cycle ({cycle})",
                    "a view can read only views that do not read it; break the cycle",
                )
            if state.get(up.name) != "done":
                visit(up, [*path, d.name])
        state[d.name] = "done"
        out.append(d)

    for d in defs:
        if d.name not in state:
            visit(d, [])
    return out


def upstream(d: ViewDef, names: Sequence[str] | set[str]) -> list[str]:
    """The views of `names` that `d` reads, each once, in FROM order."""
    return list(dict.fromkeys(t.table for t in d.select.tables if t.table in names))


def postgres_sql(sql: str, views: Mapping[str, str]) -> str:
    """`sql` as Postgres can run it without the views of the file: each view of `views`
    (name -> its SELECT) it reads becomes a subquery of that view's own SQL, recursively
    (`viewstore verify` compares a view over views with this)."""
    stmt = parse_sql(sql)[0].stmt
    inline = _Inline(views)
    stmt = inline(stmt) or stmt
    return RawStream()(stmt) if inline.changed else sql


class _Inline(Visitor):  # type: ignore[misc]
    def __init__(self, views: Mapping[str, str]) -> None:
        self.views = views
        self.changed = False

    def visit_RangeVar(self, ancestors: Any, node: Any) -> Any:
        if node.schemaname not in (None, "public") or node.relname not in self.views:
            return None
        self.changed = True
        inner = parse_sql(postgres_sql(self.views[node.relname], self.views))[0].stmt
        alias = node.alias if node.alias is not None else ast.Alias(aliasname=node.relname)
        return ast.RangeSubselect(lateral=False, subquery=inner, alias=alias)
