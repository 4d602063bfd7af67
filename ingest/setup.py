"""Set-up: preflight checks, the publication, the published tables and the slot's state.

Everything here runs on an ordinary connection before streaming starts and either returns facts
or raises an error that says what was found, what is required, and the command that fixes it.
What viewstore creates in your database: one publication (only if it is missing) and one
logical replication slot. `viewstore` never alters tables.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from viewstore.errors import PreflightError, SlotError, SourceError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import qualified, query, quote_ident

# The way out when the store has missed changes: a new snapshot (store.sourcecheck says more).
log = logging.getLogger("viewstore")

RESNAPSHOT = "viewstore run --resnapshot ... (a new snapshot of what Postgres holds now)"


@dataclass(frozen=True)
class PublishedTable:
    """A table in the publication, with the columns pgoutput sends and the key of a row."""

    schema: str
    name: str
    columns: tuple[tuple[str, int], ...]  # (name, type oid), attnum order, generated excluded
    key: tuple[str, ...]
    oid: int = 0
    replica_identity: str = "d"  # pg_class.relreplident
    # (typmod, attnum, xmin of the pg_attribute row) per column, in the order of `columns`.
    attributes: tuple[tuple[int, int, int], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active_pid: int | None
    confirmed_flush_lsn: Lsn | None
    restart_lsn: Lsn | None
    wal_status: str | None


def check_server(conn: Any) -> None:
    """wal_level must be logical and the role must be allowed to replicate."""
    (wal_level,) = query(conn, "SHOW wal_level")[0]
    if wal_level != "logical":
        raise PreflightError(
            f"wal_level is {wal_level!r}, logical replication requires 'logical'",
            hint="ALTER SYSTEM SET wal_level = logical; then restart Postgres",
        )
    role, can_replicate = query(
        conn,
        "SELECT current_user, rolreplication OR rolsuper FROM pg_roles "
        "WHERE rolname = current_user",
    )[0]
    if not can_replicate:
        raise PreflightError(
            f"role {role!r} has no REPLICATION attribute, which logical replication requires",
            hint=f"ALTER ROLE {quote_ident(role)} REPLICATION;",
        )


def ensure_publication(
    conn: Any, publication: str, tables: list[str], *, resume: bool = False
) -> bool:
    """Create the publication if missing (for `tables`, or FOR ALL TABLES when none are named).

    If it exists, check that it publishes every change kind and each named table (`resume`:
    a store copied from it exists, so a table put back needs a new snapshot).
    Returns True when it was created here.
    """
    if not query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)):
        target = (
            "FOR TABLE " + ", ".join(_quote_table(t) for t in tables)
            if tables
            else "FOR ALL TABLES"
        )
        query(conn, f"CREATE PUBLICATION {quote_ident(publication)} {target}")
        return True
    check_publication(conn, publication)
    published = {t.qualified for t in published_tables(conn, publication)}
    for table in tables:
        name = _normalise(table)
        if name not in published:
            raise PreflightError(
                f"publication {publication!r} does not include table {name}",
                hint=f"ALTER PUBLICATION {quote_ident(publication)} ADD TABLE "
                f"{_quote_table(table)};" + (f" then {RESNAPSHOT}" if resume else ""),
                # A store that mirrors it missed the changes made while it was out.
            )
    return False


def check_publication(conn: Any, publication: str) -> None:
    """The publication must send every change of every row and column: all four change kinds,
    no row filter, no column list (Postgres 15+). Checked at start and while running: a change
    it stopped sending is lost to the store, so the way out ends with a new snapshot."""
    rows = query(
        conn,
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
        "WHERE pubname = %s",
        (publication,),
    )
    if not rows:
        check_publication_exists(conn, publication)
        return
    missing_kinds = [
        kind
        for kind, on in zip(("insert", "update", "delete", "truncate"), rows[0], strict=True)
        if not on
    ]
    if missing_kinds:
        raise PreflightError(
            f"publication {publication!r} does not publish {', '.join(missing_kinds)}; "
            "viewstore needs every change to keep an exact mirror",
            hint=f"ALTER PUBLICATION {quote_ident(publication)} SET (publish = "
            f"'insert, update, delete, truncate'); then {RESNAPSHOT}",
        )
    if int(query(conn, "SHOW server_version_num")[0][0]) < 150000:
        return  # row filters and column lists came with Postgres 15
    filtered = query(
        conn,
        "SELECT n.nspname, c.relname, r.prqual IS NOT NULL, r.prattrs IS NOT NULL "
        "FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
        "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.pubname = %s AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL) "
        "ORDER BY 1, 2",
        (publication,),
    )
    if filtered:
        what = [
            f"{schema}.{name} ({'a row filter' if qual else ''}"
            f"{' and ' if qual and attrs else ''}{'a column list' if attrs else ''})"
            for schema, name, qual, attrs in filtered
        ]
        tables = query(
            conn,
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
            "ORDER BY 1, 2",
            (publication,),
        )
        raise PreflightError(
            f"publication {publication!r} filters what it sends: {', '.join(what)}; the "
            "mirror must hold every row and column, and the snapshot would copy them unfiltered",
            hint=f"ALTER PUBLICATION {quote_ident(publication)} SET TABLE "
            + ", ".join(qualified(sch, tab) for sch, tab in tables)
            + f"; then {RESNAPSHOT}",
        )


def check_publication_exists(conn: Any, publication: str) -> None:
    """Raise if the publication is gone (checked again on every reconnect)."""
    if not query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)):
        raise PreflightError(
            f"publication {publication!r} no longer exists; changes to its tables since the "
            "last applied transaction cannot be read without it",
            hint=f"recreate it (CREATE PUBLICATION {quote_ident(publication)} FOR TABLE ...) "
            "and rebuild the store with --resnapshot",
        )


def _normalise(table: str) -> str:
    return table if "." in table else f"public.{table}"


def _quote_table(table: str) -> str:
    schema, _, name = _normalise(table).partition(".")
    return qualified(schema, name)


def published_tables(conn: Any, publication: str) -> list[PublishedTable]:
    """Every table the publication publishes, with its usable key; PreflightError if none."""
    rows = query(
        conn,
        """
        SELECT c.oid, n.nspname, c.relname, c.relreplident
        FROM pg_publication_tables pt
        JOIN pg_namespace n ON n.nspname = pt.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
        WHERE pt.pubname = %s
        ORDER BY n.nspname, c.relname
        """,
        (publication,),
    )
    return [_describe(conn, *row) for row in rows]


def _describe(conn: Any, oid: int, schema: str, name: str, replident: str) -> PublishedTable:
    rows = query(
        conn,
        "SELECT attname, atttypid::int, atttypmod, attnum, xmin::text::bigint "
        "FROM pg_attribute WHERE attrelid = %s "
        "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        (oid,),
    )
    columns = tuple((col, typ) for col, typ, *_ in rows)
    attributes = tuple((typmod, attnum, xmin) for _, _, typmod, attnum, xmin in rows)
    primary = _index_columns(conn, oid, "indisprimary")
    identity = _index_columns(conn, oid, "indisreplident")
    table = f"{schema}.{name}"
    # The key must be what a DELETE's old tuple carries: the replica identity index under
    # REPLICA IDENTITY USING INDEX, the primary key under DEFAULT; under FULL the whole old row
    # arrives and the primary key names it.
    if replident == "i" and identity:
        key = identity
    elif replident in ("d", "f") and primary:
        key = primary
    elif replident == "n":
        raise PreflightError(
            f"table {table} has REPLICA IDENTITY NOTHING: its updates and deletes arrive "
            "without a key, so viewstore cannot follow them",
            hint=f"ALTER TABLE {qualified(schema, name)} REPLICA IDENTITY DEFAULT; "
            "(with a primary key)",
        )
    else:
        raise PreflightError(
            f"table {table} has no primary key or replica identity index, so its updates "
            "and deletes cannot be matched to rows",
            hint=f"ALTER TABLE {qualified(schema, name)} ADD PRIMARY KEY (...); or remove "
            "it from the publication",
        )
    return PublishedTable(schema, name, columns, key, oid, replident, attributes)


def _index_columns(conn: Any, oid: int, flag: str) -> tuple[str, ...]:
    rows = query(
        conn,
        f"""
        SELECT a.attname FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.{flag}
        ORDER BY k.pos
        """,
        (oid,),
    )
    return tuple(r[0] for r in rows)


def slot_info(conn: Any, slot: str) -> SlotInfo | None:
    rows = query(
        conn,
        """
        SELECT slot_name, plugin, slot_type, database, active_pid,
               confirmed_flush_lsn::text, restart_lsn::text, wal_status
        FROM pg_replication_slots WHERE slot_name = %s
        """,
        (slot,),
    )
    if not rows:
        return None
    name, plugin, slot_type, database, pid, confirmed, restart, wal_status = rows[0]
    return SlotInfo(
        name,
        plugin,
        slot_type,
        database,
        pid,
        Lsn.parse(confirmed) if confirmed else None,
        Lsn.parse(restart) if restart else None,
        wal_status,
    )


def transactions_with_xids(conn: Any, exclude_pid: int) -> list[tuple[int, str]]:
    """The transactions that hold a transaction id now, in every database, oldest first, as
    (pid, description): a new logical slot waits for all of them to end."""
    rows = query(
        conn,
        """
        SELECT pid, usename, datname, application_name, state,
               to_char(xact_start, 'YYYY-MM-DD HH24:MI:SS TZ'), left(query, 120)
        FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND pid <> %s
        ORDER BY xact_start
        """,
        (exclude_pid,),
    )
    return [
        (
            pid,
            f"pid {pid} (user {user}, database {db}, application {app!r}, {state} since "
            f"{started}, last query: {text!r})",
        )
        for pid, user, db, app, state, started, text in rows
    ]


def terminate_backend(conn: Any, pid: int) -> None:
    """End backend `pid` (one of viewstore's own walsenders); a refusal is logged, not raised:
    the server ends that walsender itself after wal_sender_timeout."""
    try:
        query(conn, "SELECT pg_terminate_backend(%s)", (pid,))
    except SourceError as exc:
        log.warning(
            "could not end backend pid %d (%s): the server will, at wal_sender_timeout", pid, exc
        )


def check_slot_usable(info: SlotInfo, database: str) -> None:
    """The slot must be a pgoutput slot of this database, not lost and not in use."""
    if info.slot_type != "logical" or info.plugin != "pgoutput":
        raise SlotError(
            f"slot {info.name!r} is a {info.slot_type} slot with plugin {info.plugin!r}, "
            "viewstore needs a logical slot with plugin 'pgoutput'",
            hint="choose another --slot",
        )
    if info.database != database:
        raise SlotError(
            f"slot {info.name!r} belongs to database {info.database!r}, not {database!r}",
            hint="choose another --slot, or point --dsn at that database",
        )
    if info.wal_status == "lost":
        raise SlotError(
            f"slot {info.name!r} has been invalidated (wal_status 'lost'): the WAL it needed "
            "was removed, so changes are gone",
            hint="rebuild the store from a new snapshot: viewstore run --resnapshot ...",
        )
    if info.active_pid is not None:
        raise SlotError(
            f"slot {info.name!r} is in use by another consumer (walsender pid {info.active_pid})",
            hint=f"stop the other consumer, or run SELECT pg_terminate_backend({info.active_pid});",
        )


def drop_slot(conn: Any, slot: str) -> None:
    """Drop a slot if it exists, ending its walsender first (used before a fresh snapshot)."""
    query(
        conn,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = %s AND active_pid IS NOT NULL",
        (slot,),
    )
    for _ in range(50):
        rows = query(conn, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not rows:
            return
        if not rows[0][0]:
            query(conn, "SELECT pg_drop_replication_slot(%s)", (slot,))
            return
        time.sleep(0.1)
    raise SlotError(
        f"cannot drop slot {slot!r}: it stays in use",
        hint=f"SELECT pg_drop_replication_slot('{slot}'); once its consumer is gone",
    )
