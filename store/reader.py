"""Reader: the Python API for reading a store, also while `viewstore run` writes it.

    import viewstore
    vs = viewstore.open("./data")
    vs.applied_lsn()                # Lsn('0/1532260')
    vs.rows("public.players")       # [{'id': 1, 'name': 'alice'}, ...]
    vs.query("player_total_scores", order_by="total_score", desc=True, limit=10)
    vs.query("player_total_scores", as_of="0/1532260")   # as it stood then
    vs.changes("player_total_scores", since="0/1532260")  # what changed after
    vs.history().sql("SELECT ...")  # DuckDB over every view's history
    vs.close()                      # or: with viewstore.open("./data") as vs: ...

The handle keeps the store open as a RocksDB secondary instance (`store.sources.FollowerSource`,
what `viewstore serve` reads): it opens on the first read and stays open until `close()` (or the
end of a `with` block, or the handle being garbage collected). Each read first catches the
secondary up with the writer when the writer's log or manifest has moved since the last read,
so it sees every group that `run` has synced by then, never blocks it, and costs a directory
listing rather than a RocksDB open (issue 15: 12-34 ms per call before). A read sees one state:
the secondary only moves in a catch-up, and reads and catch-ups of one handle take turns.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from viewstore.codecs.row import decode_row
from viewstore.errors import ConfigError, StoreError
from viewstore.history.changelog import changes
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.values import converter
from viewstore.ingest.walproto import unix_us_to_datetime
from viewstore.store.db import Store
from viewstore.store.feed import Feed
from viewstore.store.sources import FollowerSource
from viewstore.store.status import StatusReport, read_status
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import find_view, query_rows
from viewstore.views.schema import TableInfo


class Reader:
    """Read access to the store in one data directory; a context manager that closes it."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._source: FollowerSource | None = None
        self._closer: weakref.finalize | None = None
        self._closed = False
        # One read or catch-up at a time: a catch-up in the middle of another thread's read
        # would show that read two states.
        self._lock = threading.RLock()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store (a no-op if it was never read); later reads raise StoreError."""
        with self._lock:
            self._closed = True
            if self._closer is not None:
                self._closer()  # closes the secondary once, and removes its scratch directory
            self._source = self._closer = None

    @contextmanager
    def _store(self) -> Iterator[Store]:
        with self._lock:
            if self._closed:
                raise StoreError(
                    f"this reader of {self.data_dir} is closed",
                    hint=f"open it again: viewstore.open({str(self.data_dir)!r})",
                )
            source = self._source
            if source is None:
                source = FollowerSource(self.data_dir)
                # A handle dropped without close() (`viewstore.open(d).query(...)`) still
                # releases RocksDB and its scratch directory.
                self._closer = weakref.finalize(self, source.close)
                self._source = source
            else:
                source.refresh()
            yield source.read()

    def applied_lsn(self) -> Lsn:
        """End LSN of the last transaction (or idle position) the store has made durable."""
        with self._store() as store:
            return store.applied_lsn()

    def tables(self) -> list[str]:
        """Qualified names (`schema.table`) of the mirrored tables."""
        with self._store() as store:
            return sorted(store.tables())

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every mirrored row of `table` as a dict of Python values (see ingest.values)."""
        with self._store() as store:
            info = _find_table(store, table)
            names = [c.name for c in info.columns]
            convs = [converter(c.type_oid) for c in info.columns]
            out = []
            for _, data in store.rows(info):
                values = decode_row(data)
                out.append(
                    {
                        n: None if v is None else conv(v)
                        for n, conv, v in zip(names, convs, values, strict=True)
                    }
                )
            return out

    def views(self) -> list[str]:
        """Names of the views the store keeps."""
        with self._store() as store:
            return sorted(stored_views(store))

    def view_columns(self, view: str) -> list[str]:
        """Output column names of `view`, in order."""
        with self._store() as store:
            return [c.name for c in find_view(store, view).columns]

    def query(
        self,
        view: str,
        where: Mapping[str, Any] | None = None,
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = None,
        as_of: Lsn | str | None = None,
    ) -> list[dict[str, Any]]:
        """Current rows of `view` as dicts: `where` maps columns to values (equality; text is
        parsed as the column's type), `order_by` a column (`desc` for descending), `limit` a
        row count. Lookups by the view's key, and ordering by any column, use an index:

            vs.query("player_total_scores", order_by="total_score", desc=True, limit=10)
            vs.query("player_total_scores", where={"player_id": 3})

        `as_of` (an Lsn or Postgres's text form, '0/1532260') reads the view as it stood after
        the last transaction committed at or before that LSN, from the history: a key lookup
        is one seek, a whole view its newest checkpoint by then and the changes after it; with
        `order_by` and `limit`, only the rows that may be among the first are decoded.
        """
        with self._store() as store:
            info = find_view(store, view)
            names = [c.name for c in info.columns]
            lsn = Lsn.parse(as_of) if isinstance(as_of, str) else as_of
            rows = query_rows(store, info, where, order_by, desc, limit, lsn)
            return [dict(zip(names, r, strict=True)) for r in rows]

    def changes(
        self,
        view: str,
        since: Lsn | str | None = None,
        until: Lsn | str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Changes of `view` committed after `since` (exclusive; default: its whole history) and
        at or before `until` (inclusive), oldest first: dicts with lsn, commit_time (datetime,
        UTC; None for the rows the view started with), xid, op ('initial', 'insert', 'update',
        'delete'), before and after (the row as a dict, or None)."""
        low, high = (Lsn.parse(x) if isinstance(x, str) else x for x in (since, until))
        with self._store() as store:
            info = find_view(store, view)
            names = [c.name for c in info.columns]
            out: list[dict[str, Any]] = []
            start = 0 if low is None else low + 1
            for c in islice(changes(store, info.view_id, start, high), limit):
                out.append(
                    {
                        "lsn": c.lsn,
                        "commit_time": None
                        if c.commit_time is None
                        else unix_us_to_datetime(c.commit_time),
                        "xid": c.xid,
                        "op": c.op,
                        "before": _as_dict(names, c.before),
                        "after": _as_dict(names, c.after),
                    }
                )
            return out

    def subscribe(
        self,
        view: str,
        since: Lsn | str | None = None,
        *,
        snapshot: bool = False,
        until: Lsn | str | None = None,
        poll_interval: float = 0.02,
    ) -> Iterator[dict[str, Any]]:
        """The view's changes after `since` (exclusive; default: now), then each one as it
        commits, as the JSON-ready events of `viewstore subscribe` (store.feed); endless
        unless `until` is given. Follows the store while another process writes it."""
        low, high = (Lsn.parse(x) if isinstance(x, str) else x for x in (since, until))
        source = FollowerSource(self.data_dir)
        try:
            feed = Feed(view, low, snapshot=snapshot, until=high)
            yield from feed.start(source.read())
            while not feed.done:
                events = feed.step(source.read())
                yield from events
                if not feed.more:
                    time.sleep(poll_interval)
                    source.refresh()
        finally:
            source.close()

    def history(self, sync: bool = True, *, allow_files: bool = False) -> Any:
        """A read-only DuckDB connection to the views' history (history.duckdb_copy), caught up
        with the store first unless `sync` is False:

            con = vs.history()
            con.sql("SELECT * FROM player_total_scores_as_of(lsn('0/1532260'))")

        Its SQL can read the history and nothing else: COPY ... TO, read_csv/read_text of
        other files, ATTACH, INSTALL/LOAD and SET of those settings are refused (safe for SQL
        that comes from a service's users). `allow_files=True` lifts that, for exports.
        Close it when done: while it is open no other process can sync the copy."""
        from viewstore.store import historycopy

        return historycopy.connect(self.data_dir, sync_first=sync, allow_files=allow_files)

    def status(self, dsn: str | None = None) -> StatusReport:
        """The same report as `viewstore status` (lag only when a DSN is given)."""
        return read_status(self.data_dir, dsn)


def _as_dict(names: list[str], row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if row is None else dict(zip(names, row, strict=True))


def _find_table(store: Store, table: str) -> TableInfo:
    tables = store.tables()
    name = table if "." in table else f"public.{table}"
    if name not in tables:
        raise ConfigError(
            f"unknown table: {table!r}",
            hint="mirrored tables are: " + (", ".join(sorted(tables)) or "(none)"),
        )
    return tables[name]


def open(data_dir: str | Path) -> Reader:
    """A reader of the store in `data_dir`; it opens the store on its first read and keeps it
    open until `close()` (use it as a context manager)."""
    return Reader(data_dir)
