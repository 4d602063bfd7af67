"""View catalog: which views a data directory keeps, and bringing it in line with views.sql.

At start-up `prepare_views` compares the compiled views with the ones the store holds:

- a view no longer in views.sql, or whose SQL (or a table it reads) changed, or whose build a
  crash interrupted, has its state dropped, after a log line that says so;
- join indexes no view needs any more are dropped, missing ones are built from the mirror;
- a new view is backfilled from the mirror at the store's applied LSN (no new snapshot of
  Postgres), and marked ready in a synced write at the end. Until then readers refuse it.

Each step ends in a synced write, and a step interrupted by a crash is redone from scratch on
the next start, so the catalog never describes state that is not there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from rocksdict import WriteBatch

from viewstore.codecs.key import encode_value, prefix_end
from viewstore.codecs.row import decode_row
from viewstore.errors import ConfigError
from viewstore.history.changelog import entries
from viewstore.history.keys import view_prefixes
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import quote_ident
from viewstore.ingest.values import converter
from viewstore.progress import Progress
from viewstore.store import db as meta
from viewstore.store.db import Store
from viewstore.store.engine import (
    ActiveView,
    ViewEngine,
    count_key,
    decode_output,
    index_prefix,
    row_count_of,
    view_prefix,
)
from viewstore.store.viewbuild import build_pushed
from viewstore.views.plan import ALL_ROWS, IndexSpec, ViewPlan, compile_view
from viewstore.views.schema import ColumnInfo, TableInfo
from viewstore.views.sql import parse_views
from viewstore.views.stack import (
    VIEW_TABLE_BASE,
    is_view_table,
    order_views,
    upstream,
    view_id_of,
    view_table,
)
from viewstore.views.tree import NUMERIC, ViewDef

log = logging.getLogger("viewstore")

_CHUNK = 50_000


class RankingInfo(BaseModel):
    """What a window view ranks, for readers that show it (the leaderboard page)."""

    function: str  # row_number, rank or dense_rank (the first of the view's)
    column: str | None  # the output column holding it (None: ORDER BY ... LIMIT's, hidden)
    top: int | None  # Top-K: the view holds the rows numbered up to this
    partitioned: bool  # PARTITION BY: numbered within each partition


class ViewInfo(BaseModel):
    """A view as the store keeps it (meta key `view/<name>`)."""

    name: str
    view_id: int
    sql: str
    fingerprint: str
    state: Literal["building", "ready"]
    columns: list[ColumnInfo]
    key_columns: list[int]
    sort_columns: list[int]
    indexes: list[str] = []  # columns views.sql declared CREATE INDEX ON the view for
    aggregate: bool
    built_at: str | None = None  # applied LSN the backfill read the mirror at
    history_from: str | None = None  # --history-retention compacted the history up to here
    # Output column -> [precision, scale], for the columns the view's SQL casts to numeric(p, s):
    # the DuckDB copy keeps those as DECIMAL (history.duckdb_copy). Not in the fingerprint.
    typmods: dict[str, list[int]] = {}
    ranking: RankingInfo | None = None  # a window view (views.window)

    @property
    def history_start(self) -> Lsn | None:
        """The first LSN the view's history answers for: its build, or the retention cutoff."""
        starts = [Lsn.parse(t) for t in (self.built_at, self.history_from) if t]
        return max(starts) if starts else None


def read_views_file(path: Path) -> list[ViewDef]:
    """Parse a views file; ConfigError (with file:line:column) for anything unsupported."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read views file {path}: {exc.strerror}",
            hint="pass --views with the path of a file of CREATE MATERIALIZED VIEW statements",
        ) from None
    views = parse_views(text, source=str(path))
    if not views:
        raise ConfigError(
            f"{path} holds no view", hint="write CREATE MATERIALIZED VIEW name AS SELECT ...;"
        )
    return views


def stored_views(store: Store) -> dict[str, ViewInfo]:
    """Every view the store holds, by name."""
    out = {}
    for _, value in meta.scan(store.meta, meta.VIEW_PREFIX):
        info = ViewInfo.model_validate_json(value)
        out[info.name] = info
    return out


def views_from_store(store: Store) -> list[ViewDef]:
    """The definitions of the views the store holds, for a restart without --views."""
    # The name quoted (it is kept as Postgres folded it), the `;` on a line of its own (the
    # SQL may end in a -- comment).
    text = "".join(
        f"CREATE MATERIALIZED VIEW {quote_ident(info.name)} AS {info.sql}\n;\n"
        + "".join(
            f"CREATE INDEX ON {quote_ident(info.name)} ({quote_ident(c)});\n" for c in info.indexes
        )
        for info in stored_views(store).values()
        if "$" not in info.name  # a subquery's view: its parent's SQL makes it again
    )
    return parse_views(text, source="(views stored in the data dir)") if text else []


def _stored_indexes(store: Store) -> set[IndexSpec]:
    out = set()
    for key, _ in meta.scan(store.meta, meta.JOIN_INDEX_PREFIX):
        raw = key[len(meta.JOIN_INDEX_PREFIX) :]
        out.add(IndexSpec(int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:6], "big")))
    return out


def _index_meta_key(spec: IndexSpec) -> bytes:
    return meta.JOIN_INDEX_PREFIX + index_prefix(spec)[1:]


def prepare_views(store: Store, defs: Sequence[ViewDef]) -> list[ActiveView]:
    """Compile `defs` against the mirrored tables and bring the store's view state in line
    (see the module docstring). Returns the views to keep current while streaming, each after
    the views it reads (`views.stack`)."""
    tables = store.tables()
    seen: set[str] = set()
    for d in defs:
        if d.name in seen:
            raise ConfigError(
                f"{d.source}: view {d.name} is defined twice", hint="give each view its own name"
            )
        seen.add(d.name)
    stored = stored_views(store)
    compiled = compile_views(defs, tables, stored)
    plans = [plan for plan, _ in compiled]
    ids = {plan.name: view_id for plan, view_id in compiled}

    by_name = {p.name: p for p in plans}
    for name, info in sorted(stored.items()):
        plan = by_name.get(name)
        if plan is None:
            why = "is no longer in the views file: dropping its state"
        elif plan.fingerprint != info.fingerprint:
            why = "changed (its SQL, a table it reads, or a view it reads): rebuilding it"
        elif info.state != "ready":
            why = "was being built when the last run stopped: rebuilding it"
        else:
            continue
        log.warning("view %s %s", name, why)
        _drop_view(store, info)
        del stored[name]

    _reconcile_indexes(store, {spec for p in plans for spec in p.indexes})

    active = []
    for plan in plans:
        info = stored.get(plan.name)
        if info is None:
            # The views it reads are built (they come first): index their rows if it joins
            # them by a column.
            have = _stored_indexes(store)
            for spec in sorted(plan.indexes - have, key=lambda s: (s.table_id, s.column)):
                table = next(p.table for p in plan.positions if p.table.table_id == spec.table_id)
                _build_index(store, spec, table)
            info = _backfill(store, plan, ids[plan.name])
        active.append(ActiveView(plan, info.view_id))
    return active


def compile_views(
    defs: Sequence[ViewDef], tables: dict[str, TableInfo], stored: dict[str, ViewInfo]
) -> list[tuple[ViewPlan, int]]:
    """Compile `defs` in dependency order (`views.stack`), each with its view id: the stored
    one if the view is kept as it is, else a new one. Ids come first because a view's view
    table (what the views over it read) is named by its id."""
    names = {d.name for d in defs}
    next_id = max((i.view_id for i in stored.values()), default=0) + 1
    out: list[tuple[ViewPlan, int]] = []
    fingerprints: dict[str, str] = {}
    for d in order_views(defs):
        ups = upstream(d, names)
        plan = compile_view(d, tables, {u: fingerprints[u] for u in ups})
        info = stored.get(d.name)
        if info is not None and info.fingerprint == plan.fingerprint and info.state == "ready":
            view_id = info.view_id
        else:
            view_id, next_id = next_id, next_id + 1
        fingerprints[d.name] = plan.fingerprint
        columns = [(c.name, c.type_oid) for c in plan.columns]
        tables = {**tables, f"public.{d.name}": view_table(d.name, view_id, columns)}
        out.append((plan, view_id))
    return out


def _drop_view(store: Store, info: ViewInfo) -> None:
    batch = store.new_batch()
    prefix = view_prefix(info.view_id)
    batch.delete_range(prefix, prefix_end(prefix), store.cf["views"])
    for h in view_prefixes(info.view_id):
        batch.delete_range(h, prefix_end(h), store.cf["history"])
    # The join indexes of its view table (the views that read it are dropped too: their
    # fingerprints name this one's).
    tid = VIEW_TABLE_BASE + info.view_id
    for spec in _stored_indexes(store):
        if spec.table_id == tid:
            ip = index_prefix(spec)
            batch.delete_range(ip, prefix_end(ip), store.cf["views"])
            batch.delete(_index_meta_key(spec), store.cf["meta"])
    batch.delete(meta.VIEW_PREFIX + info.name.encode(), store.cf["meta"])
    store.write(batch, sync=True)


def _reconcile_indexes(store: Store, wanted: set[IndexSpec]) -> None:
    """Drop the join indexes no view needs; build the missing ones of source tables (a view
    table's is built after its view, before the view that reads it: `prepare_views`)."""
    have = _stored_indexes(store)
    for spec in sorted(have - wanted, key=lambda s: (s.table_id, s.column)):
        batch = store.new_batch()
        prefix = index_prefix(spec)
        batch.delete_range(prefix, prefix_end(prefix), store.cf["views"])
        batch.delete(_index_meta_key(spec), store.cf["meta"])
        store.write(batch, sync=True)
    for spec in sorted(wanted - have, key=lambda s: (s.table_id, s.column)):
        if not is_view_table(spec.table_id):
            _build_index(store, spec)


def _table_rows(store: Store, table: TableInfo) -> Iterator[tuple[bytes, bytes]]:
    """(key, stored row) of every row of a source table (its mirror rows) or of a view table
    (its view's output rows, keyed as the engine keys them: `ViewEngine.stored`)."""
    if not is_view_table(table.table_id):
        return store.rows(table)
    prefix = view_prefix(view_id_of(table.table_id)) + b"r"
    return ((table.prefix + k[len(prefix) :], v) for k, v in meta.scan(store.views, prefix))


def _table_row_count(store: Store, table: TableInfo) -> int:
    if not is_view_table(table.table_id):
        return store.row_count(table)
    return row_count_of(store.views.get(count_key(view_id_of(table.table_id))))


def _build_index(store: Store, spec: IndexSpec, table: TableInfo | None = None) -> None:
    if table is None:
        table = next(t for t in store.tables().values() if t.table_id == spec.table_id)
    every = spec.column == ALL_ROWS  # a cross join's index of every row, under one value
    column = None if every else table.columns[spec.column]
    conv = converter(column.type_oid) if column is not None else None
    prefix = index_prefix(spec)
    views_cf = store.cf["views"]
    batch = store.new_batch()
    batch.delete_range(prefix, prefix_end(prefix), views_cf)  # leftovers of a crashed build
    name = "(every row)" if column is None else column.name
    total = _table_row_count(store, table)
    progress = Progress(f"{table.qualified}.{name}", total, task="join index")
    n = 0
    every_value = encode_value(True)
    view = is_view_table(table.table_id)
    for key, data in _table_rows(store, table):
        if conv is None:
            batch.put(prefix + every_value + key[4:], b"", views_cf)
        elif view:
            if (value := decode_output(data)[spec.column]) is not None:
                batch.put(prefix + encode_value(value) + key[4:], b"", views_cf)
        elif (raw := decode_row(data)[spec.column]) is not None:
            batch.put(prefix + encode_value(conv(raw)) + key[4:], b"", views_cf)
        n += 1
        if n % _CHUNK == 0:
            store.write(batch, sync=False)
            batch = store.new_batch()
            progress.add(_CHUNK)
    batch.put(_index_meta_key(spec), b"ready", store.cf["meta"])
    store.write(batch, sync=True)
    progress.add(n % _CHUNK)
    progress.done()


class _BackfillWriter:
    """The engine's Writer for a backfill: reads the mirror, writes an unsynced batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.views_cf = store.cf["views"]
        self.batch = store.new_batch()
        self.get_row = store.mirror.get

    def view_write(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.batch.delete(key, self.views_cf)
        else:
            self.batch.put(key, value, self.views_cf)

    def flush(self) -> None:
        self.store.write(self.batch, sync=False)
        self.batch = self.store.new_batch()


def _backfill(store: Store, plan: ViewPlan, view_id: int) -> ViewInfo:
    lsn = store.applied_lsn()
    info = ViewInfo(
        name=plan.name,
        view_id=view_id,
        sql=plan.sql,
        fingerprint=plan.fingerprint,
        state="building",
        columns=[ColumnInfo(name=c.name, type_oid=c.type_oid) for c in plan.columns],
        key_columns=list(plan.key_columns),
        sort_columns=list(plan.sort_columns),
        indexes=[name for name, _ in plan.declared],
        aggregate=plan.aggregate,
        typmods={
            c.name: list(c.typmod)
            for c in plan.columns
            if c.typmod is not None and c.type_oid == NUMERIC
        },
        ranking=_ranking_info(plan),
    )
    _put_info(store, info)
    log.info("view %s: building from the mirror at %s", plan.name, lsn)
    view = ActiveView(plan, view_id)
    pd = plan.pushdown
    if pd is not None:
        tables = (plan.positions[pd.child_pos].table, plan.positions[pd.base_pos].table)
        progress = Progress(plan.name, sum(store.row_count(t) for t in tables), task="view")
        build_pushed(store, view, lsn, progress)
        progress.done()
    else:
        base = plan.positions[0].table
        writer = _BackfillWriter(store)
        engine = ViewEngine([view], store.views, writer)
        progress = Progress(plan.name, _table_row_count(store, base), task="view")
        done = 0
        for n in engine.backfill_rows(view, _table_rows(store, base)):
            writer.flush()
            engine.reset()
            progress.add(n - done)
            done = n
        if len(plan.positions) == 2 and plan.positions[1].kind == "full":
            right = plan.positions[1].table
            for _ in engine.backfill_unmatched(view, _table_rows(store, right)):
                writer.flush()
                engine.reset()
        if plan.window is not None:
            for _ in engine.backfill_window(view):
                writer.flush()
                engine.reset()
        progress.done()
        _record_initial_rows(store, view_id, lsn)
    info = info.model_copy(update={"state": "ready", "built_at": str(lsn)})
    _put_info(store, info)
    return info


def _ranking_info(plan: ViewPlan) -> RankingInfo | None:
    window = plan.window
    if window is None:
        return None
    first = -1  # the first window function's entry in the SELECT-list layout
    shown = [i for i in window.shown if window.layout[i] == first]
    return RankingInfo(
        function=window.funcs[0],
        column=plan.columns[window.shown.index(shown[0])].name if shown else None,
        top=None if window.top is None else window.top[1],
        partitioned=bool(window.partition),
    )


def _record_initial_rows(store: Store, view_id: int, lsn: Lsn) -> None:
    """Write every row the view starts with to its history, at the LSN it was built at, so that
    each row's history is complete from there (as-of reads seek it, history.changelog)."""
    prefix = view_prefix(view_id) + b"r"
    history_cf = store.cf["history"]
    batch = store.new_batch()
    for seq, (key, row) in enumerate(meta.scan(store.views, prefix)):
        for hkey, value in entries(view_id, lsn, seq, key[len(prefix) :], None, row, None, None):
            batch.put(hkey, value, history_cf)
        if seq % _CHUNK == 0:
            store.write(batch, sync=False)
            batch = store.new_batch()
    store.write(batch, sync=False)  # the synced "ready" marker follows


def _put_info(store: Store, info: ViewInfo) -> None:
    batch = store.new_batch()
    put_info(batch, store, info)
    store.write(batch, sync=True)


def put_info(batch: WriteBatch, store: Store, info: ViewInfo) -> None:
    """Add the view's catalog entry to `batch` (with the state change it describes)."""
    meta.put_json(batch, store, meta.VIEW_PREFIX + info.name.encode(), info)


class _Catalog:
    """The views a store keeps, for history (a `history.access.ViewCatalog`)."""

    def views(self, store: Store) -> dict[str, ViewInfo]:
        return stored_views(store)

    def put(self, batch: WriteBatch, store: Store, info: ViewInfo) -> None:
        put_info(batch, store, info)


CATALOG = _Catalog()
