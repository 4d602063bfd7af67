"""View reads: the current rows of a view, by key, by an indexed value, or in a column's order.

Every output column but a single-column key has a sort index (`store.engine`), so

- `col = value` on the key is one get; on any other indexed column a prefix scan;
- `ORDER BY col [DESC] LIMIT n` walks that column's index and stops after n rows, which is
  what makes a top-10 of a million-row leaderboard take milliseconds;
- anything else scans the view's rows.

Ordering follows Postgres's defaults (ASC NULLS LAST, DESC NULLS FIRST; text by code point,
Postgres's "C" collation); ties are broken by the view's key, ascending, also under DESC.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from viewstore.codecs.key import encode_key, encode_value
from viewstore.errors import ConfigError, NotFound, NotReady, StoreError
from viewstore.history.changelog import changes, images_as_of, row_as_of, rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.values import converter
from viewstore.store.db import LARGE_TXN, UNDO_VIEWS, Store, decode_undo
from viewstore.store.engine import (
    count_key,
    decode_output,
    row_count_of,
    row_key,
    sort_entry_key,
    sort_prefix,
    view_prefix,
)
from viewstore.store.toprows import top_images
from viewstore.store.viewcatalog import ViewInfo, stored_views


def find_view(store: Store, name: str) -> ViewInfo:
    """The ready view called `name`. NotReady, saying how far `run` is, while it is built (or
    the snapshot it is built from is copied); NotFound naming the views there are otherwise."""
    views = stored_views(store)
    info = views.get(name)
    if info is not None and info.state == "ready":
        return info
    progress = store.progress()  # only now: reads of ready views skip parsing it
    running = progress is not None and progress.phase != "streaming" and progress.alive()
    wait = "read it again once it is built; `viewstore status` shows how far it is"
    if info is None and running and progress is not None and name in progress.views:
        if progress.phase == "snapshot":
            now = f"the initial snapshot comes first: {progress.snapshot_summary()}"
        else:
            now = f"after {progress.describe()}"
        raise NotReady(f"view {name} is being built, {now}", hint=wait)
    if info is None:
        raise NotFound(
            f"unknown view: {name!r}",
            hint="views in this store: " + (", ".join(sorted(views)) or "(none; run with --views)"),
        )
    if progress is not None and not running:
        raise NotReady(
            f"view {name} is being built from the mirror, but no `viewstore run` builds it now",
            hint="start `viewstore run` again: it builds the view anew",
        )
    task = progress.task("view", name) if progress is not None else None
    if task is not None:
        far = f": {task.describe()}"
    elif progress is not None:
        far = f", after {progress.describe()}"
    else:
        far = ""
    raise NotReady(f"view {name} is being built from the mirror{far}", hint=wait)


def column_index(info: ViewInfo, name: str) -> int:
    for i, c in enumerate(info.columns):
        if c.name == name:
            return i
    raise ConfigError(
        f"view {info.name} has no column {name!r}",
        hint="its columns are: " + ", ".join(c.name for c in info.columns),
    )


def parse_filters(info: ViewInfo, where: Mapping[str, Any]) -> dict[int, Any]:
    """Column index -> typed value; text values are parsed as the column's type."""
    out = {}
    for name, value in where.items():
        i = column_index(info, name)
        if isinstance(value, str) and info.columns[i].type_oid not in (25, 1043, 1042, 19):
            try:
                value = converter(info.columns[i].type_oid)(value.encode())
            except Exception:
                raise ConfigError(
                    f"{name}={value!r}: not a value of the column's type",
                    hint=f"give {name} a value Postgres would accept for it",
                ) from None
        out[i] = value
    return out


def _cursor(store: Store, info: ViewInfo, prefix: bytes, reverse: bool) -> Iterator[bytes]:
    """Output keys under a sort-index `prefix`, in index order."""
    n = len(sort_prefix(info.view_id, 0))
    for key, _ in store.committed(store.views, UNDO_VIEWS, prefix, reverse=reverse):
        yield sort_entry_key(key, n)


def row_count(store: Store, view_id: int) -> int:
    """The number of rows of a view, as of the last committed transaction (the engine keeps
    it, so nothing is scanned)."""
    return row_count_of(_get(store, count_key(view_id)))


def _row(store: Store, info: ViewInfo, okey: bytes) -> tuple[Any, ...] | None:
    data = _get(store, row_key(info.view_id, okey))
    return None if data is None else decode_output(data)


def _get(store: Store, key: bytes) -> bytes | None:
    if store.meta.get(LARGE_TXN) is not None:
        undo = store.undo.get(UNDO_VIEWS + key)
        if undo is not None:
            return decode_undo(undo)  # a large transaction is half written: its before-image
    return store.views.get(key)


def _all_rows(store: Store, info: ViewInfo, reverse: bool = False) -> Iterator[tuple[Any, ...]]:
    prefix = view_prefix(info.view_id) + b"r"
    for _, data in store.committed(store.views, UNDO_VIEWS, prefix, reverse=reverse):
        yield decode_output(data)


def query_rows(
    store: Store,
    info: ViewInfo,
    where: Mapping[str, Any] | None = None,
    order_by: str | None = None,
    desc: bool = False,
    limit: int | None = None,
    as_of: Lsn | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of a view (tuples in column order); see the module docstring for the plan.
    With `as_of`, the rows as they stood after the last transaction committed at or before
    that LSN, read from the history."""
    filters = parse_filters(info, where or {})
    order = None if order_by is None else column_index(info, order_by)
    rows: Iterator[tuple[Any, ...]]
    key_cols = info.key_columns
    if as_of is not None:
        check_as_of(store, info, as_of)
        if filters and key_cols and all(c in filters for c in key_cols):
            row = row_as_of(store, info.view_id, encode_key([filters[c] for c in key_cols]), as_of)
            found = [] if row is None else [row]
        elif order is not None and limit is not None and not filters:
            # The first rows in an order: only the candidates are decoded (a top 10 of a 1M-row
            # view as of an LSN does not turn every row into Python).
            keys, images = images_as_of(store, info.view_id, as_of)
            found = [r for _, r in top_images(keys, images, order, desc, limit)]
        else:
            by_key = sorted(rows_as_of(store, info.view_id, as_of).items())
            found = [r for _, r in by_key]
            if order is not None:
                found = sorted_rows(found, order, desc)
        rows = iter(found)
    elif filters and key_cols and all(c in filters for c in key_cols):
        row = _row(store, info, encode_key([filters[c] for c in key_cols]))
        rows = iter([] if row is None else [row])
    elif any(c in info.sort_columns for c in filters):
        c = next(c for c in filters if c in info.sort_columns)
        prefix = sort_prefix(info.view_id, c) + encode_value(filters[c])
        rows = (
            r
            for r in (_row(store, info, k) for k in _cursor(store, info, prefix, False))
            if r is not None
        )
        if order is not None:
            rows = iter(sorted_rows(list(rows), order, desc))
    elif order is not None and order in info.sort_columns:
        prefix = sort_prefix(info.view_id, order)
        rows = _by_index(store, info, prefix, desc)
    elif order is not None and key_cols[:1] == [order]:
        rows = _all_rows(store, info, reverse=desc)
    else:
        rows = _all_rows(store, info)
        if order is not None:
            rows = iter(sorted_rows(list(rows), order, desc))
    if filters:
        rows = (r for r in rows if all(_equal(r[c], v) for c, v in filters.items()))
    return list(islice(rows, limit))


def check_as_of(store: Store, info: ViewInfo, lsn: Lsn) -> None:
    """ConfigError unless the view's history covers `lsn`: from its build to the applied LSN."""
    applied = store.applied_lsn()
    if lsn > applied:
        raise ConfigError(
            f"as of {lsn}: the store has applied only up to {applied}",
            hint="give an LSN at or before the applied LSN (viewstore status shows it)",
        )
    start = info.history_start or applied
    if lsn < start:
        if info.history_from and start == Lsn.parse(info.history_from):
            why = "--history-retention compacted what came before"
        else:
            why = "when it was built from the mirror"
        raise ConfigError(
            f"as of {lsn}: view {info.name}'s history starts at {start}, {why}",
            hint=f"give an LSN between {start} and {applied}",
        )


def _by_index(store: Store, info: ViewInfo, prefix: bytes, desc: bool) -> Iterator[tuple[Any, ...]]:
    """Rows in index order; under DESC, ties (one value) come back in ascending key order."""
    group: list[bytes] = []
    n = len(prefix)
    current = None
    for key, _ in store.committed(store.views, UNDO_VIEWS, prefix, reverse=desc):
        okey = sort_entry_key(key, n)
        value = key[n : len(key) - len(okey)]
        if value != current and group:
            yield from _rows_of(store, info, reversed(group) if desc else group)
            group = []
        current = value
        group.append(okey)
    yield from _rows_of(store, info, reversed(group) if desc else group)


def _rows_of(store: Store, info: ViewInfo, okeys: Any) -> Iterator[tuple[Any, ...]]:
    for okey in okeys:
        row = _row(store, info, okey)
        if row is None:
            raise StoreError(f"view {info.name}: its sort index names a row it lacks")
        yield row


def _equal(a: Any, b: Any) -> bool:
    return encode_value(a) == encode_value(b)


def sorted_rows(rows: list[tuple[Any, ...]], column: int, desc: bool) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda r: encode_value(r[column]), reverse=desc)


def current_rows_as_of(store: Store, view_id: int, lsn: int) -> dict[bytes, tuple[Any, ...]]:
    """The same as `rows_as_of`, computed the other way: the view's current rows (what readers
    see) with every change committed after `lsn` undone from its before-image, newest first.
    `verify` checks both, so damage to either the rows or the history shows."""
    rows: dict[bytes, tuple[Any, ...]] = {}
    prefix = view_prefix(view_id) + b"r"
    for key, data in store.committed(store.views, UNDO_VIEWS, prefix):
        rows[key[len(prefix) :]] = decode_output(data)
    for change in changes(store, view_id, lsn + 1, reverse=True):
        if change.before is None:
            rows.pop(change.key, None)
        else:
            rows[change.key] = change.before
    return rows
