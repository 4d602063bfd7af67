"""Verify: compare each view with Postgres evaluating the view's own SQL, as of one LSN.

Postgres is the oracle, and the comparison must be as of the same point in the commit order.
A temporary logical slot gives one: creating it exports a snapshot that holds exactly the
transactions committed before its consistent point L. The views' SELECTs run inside that
snapshot; then we wait until the store has applied L and read each view as of L (its current
rows with the later history undone, `history.changelog.rows_as_of`), so a pipeline that keeps
running under load does not make the comparison race. (TRUNCATE, which is not MVCC-safe, is
kept out of the snapshot's way: see `_postgres_rows`.)
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from viewstore.errors import ConfigError, SourceError, StoreError
from viewstore.history.changelog import rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import (
    ReplicationConnection,
    connect,
    qualified,
    quote_literal,
    read_text_as,
    translated_errors,
)
from viewstore.store.db import Store
from viewstore.store.viewcatalog import ViewInfo, stored_views
from viewstore.store.viewread import current_rows_as_of, find_view
from viewstore.views.stack import postgres_sql

_ATTEMPTS = 10


@dataclass
class ViewCheck:
    """The outcome for one view: rows only Postgres has, rows only the store has."""

    view: str
    lsn: Lsn
    rows: int  # rows Postgres returned
    missing: list[tuple[Any, ...]] = field(default_factory=list)  # in Postgres, not the store
    extra: list[tuple[Any, ...]] = field(default_factory=list)  # in the store, not Postgres

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def normalise(value: Any) -> Any:
    """A form in which a store value and a psycopg value compare equal exactly when Postgres
    would print them the same (numeric keeps its scale, timestamps compare in UTC)."""
    if isinstance(value, Decimal):
        return ("numeric", "NaN" if value.is_nan() else str(value))
    if isinstance(value, float):
        return ("float", "NaN" if math.isnan(value) else repr(value))
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _norm_row(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(normalise(v) for v in row)


def _postgres_rows(
    dsn: str,
    views: list[ViewInfo],
    tables: list[str],
    sqls: dict[str, str],
    text_encoding: str | None = None,
) -> tuple[Lsn, dict[str, list[tuple]]] | None:
    """Each view's SELECT in Postgres, all in one exported snapshot, and that snapshot's LSN;
    None when a TRUNCATE may have slipped in (try again).

    TRUNCATE is not MVCC-safe: a snapshot taken before it sees the table empty once it has
    committed. So the tables are locked (ACCESS SHARE: no TRUNCATE from then on) first thing
    in the snapshot's transaction, and their file nodes, which TRUNCATE replaces, compared with
    those read before the slot existed: if one changed, a TRUNCATE committed in between and
    this snapshot may not show the tables as of its LSN.

    `sqls`: every view's SQL by name (for views over views). `text_encoding`: the encoding
    the store read a SQL_ASCII database's text in; Postgres passes such text on unconverted,
    and it is decoded in that encoding here too.
    """
    quoted = [qualified(*t.split(".", 1)) for t in tables]
    names = ", ".join(quoted)
    nodes_sql = (
        "SELECT array_agg(pg_relation_filenode(t::regclass) ORDER BY t) FROM unnest(%s::text[]) t"
    )
    conn = connect(dsn, application_name="viewstore verify")
    try:
        if text_encoding is not None:
            read_text_as(conn, text_encoding)
        with translated_errors(dsn, "verify: cannot read the tables"):
            before = conn.execute(nodes_sql, (quoted,)).fetchone()
        repl = ReplicationConnection(dsn)
        try:
            slot = f"viewstore_verify_{os.getpid()}_{time.monotonic_ns() % 10**9}"
            lsn, snapshot = repl.create_slot(slot, temporary=True)
            with translated_errors(dsn, "verify: cannot read the snapshot"):
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot)}")
                conn.execute(f"LOCK TABLE {names} IN ACCESS SHARE MODE")
                after = conn.execute(nodes_sql, (quoted,)).fetchone()
        finally:
            repl.close()  # drops the temporary slot; the snapshot lives on in our transaction
        if after != before:
            conn.execute("ROLLBACK")
            return None
        out = {}
        for info in views:
            query = postgres_sql(info.sql, sqls)  # a view over views reads their SQL
            with translated_errors(dsn, f"verify: view {info.name}: its SQL failed in Postgres"):
                out[info.name] = conn.execute(query).fetchall()  # type: ignore[call-overload]
        conn.execute("COMMIT")
        return lsn, out
    finally:
        conn.close()


def _wait_applied(
    data_dir: Path, lsn: Lsn, timeout: float, progress: Callable[[str], None]
) -> None:
    deadline = time.monotonic() + timeout
    told = False
    while True:
        with Store.open(data_dir, readonly=True) as store:
            applied = store.applied_lsn()
        if applied >= lsn:
            return
        if not told:
            progress(f"waiting for the store to apply {lsn} (it is at {applied})")
            told = True
        if time.monotonic() > deadline:
            raise StoreError(
                f"the store in {data_dir} has not applied {lsn} within {timeout:.0f}s "
                f"(it is at {applied})",
                hint="is `viewstore run` running on this data dir? Start it, then verify again",
            )
        time.sleep(0.1)


def verify(
    dsn: str,
    data_dir: str | Path,
    views: Sequence[str] = (),
    *,
    timeout: float = 60.0,
    progress: Callable[[str], None] = lambda _: None,
) -> list[ViewCheck]:
    """Compare the named views (default: all) with Postgres as of one LSN; see the module doc."""
    data_dir = Path(data_dir)
    with Store.open(data_dir, readonly=True) as store:
        infos = (
            [find_view(store, v) for v in views] if views else list(stored_views(store).values())
        )
    if not infos:
        raise ConfigError(
            f"the store in {data_dir} keeps no views", hint="start `viewstore run --views FILE`"
        )
    with Store.open(data_dir, readonly=True) as store:
        tables = sorted(store.tables())
        source = store.source()
        sqls = {name: info.sql for name, info in stored_views(store).items()}
    encoding = source.text_encoding if source is not None else None
    for _ in range(_ATTEMPTS):
        got = _postgres_rows(dsn, infos, tables, sqls, encoding)
        if got is not None:
            break
        progress("a TRUNCATE raced the snapshot; taking another")
    else:
        raise SourceError(
            f"verify: a TRUNCATE raced each of {_ATTEMPTS} snapshots", hint="verify again"
        )
    lsn, pg_rows = got
    progress(f"Postgres evaluated {len(infos)} view(s) as of {lsn}")
    _wait_applied(data_dir, lsn, timeout, progress)
    checks = []
    with Store.open(data_dir, readonly=True) as store:
        current = stored_views(store)
        for info in infos:
            now = current.get(info.name)
            if now is None or now.view_id != info.view_id:
                raise StoreError(f"view {info.name} was dropped or rebuilt while verifying")
            start = now.history_start
            if start is not None and start > lsn:
                raise StoreError(
                    f"view {info.name}'s history starts at {start}, after {lsn} (its build, or "
                    "--history-retention shorter than the time verify took)",
                    hint="verify again: the next snapshot will be later",
                )
            theirs = pg_rows[info.name]
            want = Counter(map(_norm_row, theirs))
            check = ViewCheck(info.name, lsn, len(theirs))
            # Both ways to the view as of L: from the per-row history, and from the current
            # rows with later changes undone. Damage to either shows as a difference.
            for read in (rows_as_of, current_rows_as_of):
                ours = list(read(store, info.view_id, lsn).values())
                shown = {_norm_row(r): tuple(r) for r in [*ours, *theirs]}  # to print as given
                have = Counter(map(_norm_row, ours))
                for r in sorted((want - have).elements(), key=repr):
                    if shown[r] not in check.missing:
                        check.missing.append(shown[r])
                for r in sorted((have - want).elements(), key=repr):
                    if shown[r] not in check.extra:
                        check.extra.append(shown[r])
            checks.append(check)
    return checks
