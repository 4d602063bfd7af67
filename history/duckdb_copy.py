"""The DuckDB copy of the history: each view's change log as a table, for analytics.

`sync_store(store, views, data_dir)` brings `DATA/history.duckdb` up to the store's applied LSN
(`viewstore.store.historycopy.sync(data_dir)` opens the store for it). It is a derived copy:
deleting the file and syncing again rebuilds it, and it can be synced from another process while
`viewstore run` writes the store (it reads a read-only open of RocksDB, a consistent snapshot up
to one applied LSN).

Each ready view gets a table named after it:

    lsn          UBIGINT      commit LSN of the transaction (lsn_text(lsn) prints 0/16B3748)
    seq          UINTEGER     order of the change within the transaction
    commit_time  TIMESTAMPTZ  NULL for the rows a view started with
    xid          BIGINT       NULL for the rows a view started with
    op           VARCHAR      'initial' | 'insert' | 'update' | 'delete'
    row_key      BLOB         the row's identity in the view (its encoded key)
    <column>...               the row after the change (NULL for a delete)
    before_<column>...        the row before it (NULL for an insert)

'initial' rows are the view's rows when it was built from the mirror (at its build LSN). Once
`--history-retention` has compacted the older history (history.retention), what is left up to
its cutoff is each row's last change by then. Either way, folding a table's rows in (lsn, seq)
order gives the view.

Exactly once, across kills: rows are appended in bulk (one Arrow table per chunk of about
`batch_rows` changes, cut at transaction boundaries), and the LSN a view is synced to is updated
in the same DuckDB transaction as the rows (table `viewstore_sync`). A sync killed midway
leaves the copy at the end of its last committed chunk, and the next sync reads on from there.

Macros make the common questions one line:

    lsn('0/16B3748') -> UBIGINT            lsn_text(lsn) -> '0/16B3748'
    <view>_as_of(lsn('0/16B3748'))         the view after the last transaction committed at or
                                           before that LSN (an error outside the history)
    <view>_at(TIMESTAMPTZ '2026-11-21 17:00+00')   the same, as of a time: after the last
                                           transaction whose commit time is at or before it
                                           (commit times follow commit order, except when
                                           clocks step or concurrent commits race)

Numeric columns become DOUBLE (NaN and ±Infinity included): exact values are in `viewstore
query`. Dates and timestamps keep ±infinity; JSON, UUID, arrays and other types are their text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from viewstore.codecs.key import prefix_end
from viewstore.codecs.value import unpack_fields
from viewstore.errors import ConfigError, StoreError
from viewstore.history.access import HistoryStore, ViewRecord
from viewstore.history.changelog import change_op
from viewstore.history.keys import change_key, change_key_parts, change_lsn_prefix
from viewstore.ingest.lsn import Lsn
from viewstore.progress import Progress

log = logging.getLogger("viewstore")

FILE_NAME = "history.duckdb"
SYNC_TABLE = "viewstore_sync"
_LOCK_WAIT = 30.0  # seconds to wait for another process to close the copy

# DuckDB type of each Postgres type OID; other types are kept as their text (VARCHAR).
_DUCK_TYPES = {
    16: "BOOLEAN",
    17: "BLOB",
    20: "BIGINT",
    21: "SMALLINT",
    23: "INTEGER",
    26: "BIGINT",
    700: "FLOAT",
    701: "DOUBLE",
    1082: "DATE",
    1114: "TIMESTAMP",
    1184: "TIMESTAMPTZ",
    1700: "DOUBLE",
}
# How the Python values of each DuckDB type travel in Arrow; dates and timestamps go as ISO
# text, which DuckDB casts, so that ±infinity (kept as text by ingest) arrive intact.
_ARROW_TYPES = {
    "BOOLEAN": pa.bool_(),
    "BLOB": pa.binary(),
    "BIGINT": pa.int64(),
    "SMALLINT": pa.int64(),
    "INTEGER": pa.int64(),
    "FLOAT": pa.float64(),
    "DOUBLE": pa.float64(),
}


_TIME = pa.timestamp("us", tz="UTC")  # commit times: µs since the Unix epoch


def copy_path(data_dir: str | Path) -> Path:
    """Where the DuckDB copy of a data directory's history lives."""
    return Path(data_dir) / FILE_NAME


@dataclass
class SyncResult:
    """What one sync did: changes appended per view, and the LSN every view is synced to."""

    synced_lsn: Lsn
    appended: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.appended.values())


def sync_store(
    store: HistoryStore,
    views: Mapping[str, ViewRecord],
    data_dir: str | Path,
    *,
    batch_rows: int = 200_000,
    wait: float = _LOCK_WAIT,
) -> SyncResult:
    """Bring the DuckDB copy of the history up to the store's applied LSN, for its ready
    `views` (the store, opened read-only, and its views are the caller's)."""
    started = time.monotonic()
    applied = store.applied_lsn()
    con = _connect(copy_path(data_dir), read_only=False, wait=wait)
    try:
        _create_sync_table(con)
        _drop_removed(con, views)
        result = SyncResult(applied)
        for name in sorted(views):
            result.appended[name] = _sync_view(con, store, views[name], applied, batch_rows)
    finally:
        con.close()
    result.seconds = time.monotonic() - started
    return result


def connect(data_dir: str | Path, *, wait: float = _LOCK_WAIT) -> Any:
    """A read-only DuckDB connection to the history tables, as last synced.

    The copy is opened read-only so queries cannot damage it; while the connection is open
    other processes can read it too, but cannot sync it (close it when done)."""
    path = copy_path(data_dir)
    if not path.exists():
        raise ConfigError(
            f"no history copy in {data_dir}",
            hint="run `viewstore history --data DIR` once to create it",
        )
    return _connect(path, read_only=True, wait=wait)


def _connect(path: Path, *, read_only: bool, wait: float) -> Any:
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.ConnectionException as exc:
            raise ConfigError(
                f"the history copy {path} is already open in this process ({exc})",
                hint="close the other connection to it first (or use that one)",
            ) from None
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise StoreError(f"cannot open the history copy {path}: {exc}") from None
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"the history copy {path} is open in another process",
                    hint="close the other `viewstore history` or DuckDB connection, then retry",
                ) from None
            time.sleep(0.2)


def _create_sync_table(con: Any) -> None:
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {SYNC_TABLE} (
            view VARCHAR PRIMARY KEY,
            view_id INTEGER NOT NULL,
            fingerprint VARCHAR NOT NULL,
            built_at UBIGINT NOT NULL,
            history_from UBIGINT NOT NULL,  -- the first LSN as-of reads may ask for
            synced_lsn UBIGINT NOT NULL     -- every change committed at or before it is here
        )"""
    )
    con.execute(
        "CREATE OR REPLACE MACRO lsn(t) AS (('0x' || split_part(t, '/', 1))::UBIGINT << 32)"
        " + ('0x' || split_part(t, '/', 2))::UBIGINT"
    )
    con.execute(
        "CREATE OR REPLACE MACRO lsn_text(x) AS "
        "printf('%X/%X', (x::UBIGINT >> 32), (x::UBIGINT & 4294967295))"
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _drop_removed(con: Any, views: Mapping[str, ViewRecord]) -> None:
    for (name,) in con.execute(f"SELECT view FROM {SYNC_TABLE}").fetchall():
        if name not in views:
            log.info("history copy: view %s is no longer in the store; dropping its table", name)
            con.execute("BEGIN")
            _drop_view(con, name)
            con.execute("COMMIT")


def _drop_view(con: Any, name: str) -> None:
    con.execute(f"DROP TABLE IF EXISTS {_ident(name)}")
    for suffix in ("_as_of", "_at"):
        con.execute(f"DROP MACRO TABLE IF EXISTS {_ident(name + suffix)}")
    con.execute(f"DELETE FROM {SYNC_TABLE} WHERE view = ?", [name])


def _columns(info: ViewRecord) -> list[tuple[str, str]]:
    """(name, DuckDB type) of the view's columns; ConfigError if one would clash."""
    cols = [(c.name, _DUCK_TYPES.get(c.type_oid, "VARCHAR")) for c in info.columns]
    fixed = {"lsn", "seq", "commit_time", "xid", "op", "row_key"}
    names = {n for n, _ in cols}
    for n, _ in cols:
        if n in fixed or f"before_{n}" in names:
            raise ConfigError(
                f"view {info.name}: column {n!r} clashes with a history column",
                hint="rename the column in the view (the history table needs lsn, seq, "
                "commit_time, xid, op, row_key and before_<column>)",
            )
    return cols


def _create_view_table(con: Any, info: ViewRecord) -> None:
    cols = _columns(info)
    table = _ident(info.name)
    after = ", ".join(f"{_ident(n)} {t}" for n, t in cols)
    before = ", ".join(f"{_ident('before_' + n)} {t}" for n, t in cols)
    con.execute(
        f"CREATE TABLE {table} (lsn UBIGINT NOT NULL, seq UINTEGER NOT NULL, "
        f"commit_time TIMESTAMPTZ, xid BIGINT, op VARCHAR NOT NULL, row_key BLOB NOT NULL, "
        f"{after}, {before})"
    )


def _create_macros(con: Any, info: ViewRecord) -> None:
    """<view>_as_of(lsn) and <view>_at(time); replaced on every sync, so that a copy made by
    an older viewstore gets the current definitions."""
    table = _ident(info.name)
    names = ", ".join(_ident(n) for n, _ in _columns(info))
    view = _literal(info.name)
    check = (
        f"(SELECT CASE "
        f"WHEN at_lsn IS NULL OR at_lsn < history_from THEN error('as of ' || "
        f"coalesce(lsn_text(at_lsn), 'NULL') || ': the history of ' || {view} || "
        f"' starts at ' || lsn_text(history_from)) "
        f"WHEN at_lsn > synced_lsn THEN error('as of ' || lsn_text(at_lsn) || "
        f"': the history copy of ' || {view} || ' reaches only ' || lsn_text(synced_lsn)) "
        f"ELSE true END FROM {SYNC_TABLE} WHERE view = {view})"
    )
    con.execute(
        f"CREATE OR REPLACE MACRO {_ident(info.name + '_as_of')}(at_lsn) AS TABLE "
        f"SELECT {names} FROM {table} WHERE lsn <= at_lsn AND {check} "
        f"QUALIFY row_number() OVER (PARTITION BY row_key ORDER BY lsn DESC, seq DESC) = 1 "
        f"AND op <> 'delete'"
    )
    con.execute(
        f"CREATE OR REPLACE MACRO {_ident(info.name + '_at')}(at_time) AS TABLE "
        f"SELECT * FROM {_ident(info.name + '_as_of')}(("
        f"SELECT coalesce(max(lsn), (SELECT history_from FROM {SYNC_TABLE} WHERE view = {view})) "
        f"FROM {table} WHERE coalesce(commit_time, '-infinity'::TIMESTAMPTZ) <= at_time))"
    )


def _sync_view(
    con: Any, store: HistoryStore, info: ViewRecord, applied: Lsn, batch_rows: int
) -> int:
    """Append the view's changes up to `applied`; the number of changes appended."""
    start = int(info.history_start or 0)
    row = con.execute(
        f"SELECT view_id, fingerprint, built_at, history_from, synced_lsn FROM {SYNC_TABLE} "
        "WHERE view = ?",
        [info.name],
    ).fetchone()
    built = int(Lsn.parse(info.built_at)) if info.built_at else 0
    if row is None or (row[0], row[1], row[2]) != (info.view_id, info.fingerprint, built):
        if row is not None:
            log.info("history copy: view %s was rebuilt; rebuilding its table", info.name)
        con.execute("BEGIN")
        _drop_view(con, info.name)
        _create_view_table(con, info)
        con.execute(
            f"INSERT INTO {SYNC_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
            [info.name, info.view_id, info.fingerprint, built, start, 0],
        )
        con.execute("COMMIT")
        synced = 0
    else:
        synced = row[4]
        if row[3] != start:
            synced = _apply_retention(con, store, info, start, synced)
    _create_macros(con, info)
    if synced >= applied:
        return 0
    return _append(con, store, info, synced, int(applied), batch_rows)


def _apply_retention(
    con: Any, store: HistoryStore, info: ViewRecord, start: int, synced: int
) -> int:
    """The store compacted the view's history up to `start` (what it kept there is each row's
    last change by then): replace the copy's rows up to `start` by those, in one transaction."""
    table = _ident(info.name)
    con.execute("BEGIN")
    con.execute(f"DELETE FROM {table} WHERE lsn <= ?", [start])
    for chunk in _chunks(store, info, -1, start, 1 << 62):
        con.register("chunk", chunk)
        con.execute(f"INSERT INTO {table} SELECT {_select(info)} FROM chunk")
        con.unregister("chunk")
    synced = max(synced, start)
    con.execute(
        f"UPDATE {SYNC_TABLE} SET history_from = ?, synced_lsn = ? WHERE view = ?",
        [start, synced, info.name],
    )
    con.execute("COMMIT")
    return synced


def _append(
    con: Any, store: HistoryStore, info: ViewRecord, synced: int, until: int, batch: int
) -> int:
    table = _ident(info.name)
    select = _select(info)
    progress = Progress(info.name, 0, task="history copy")
    for chunk in _chunks(store, info, synced, until, batch):
        last = chunk.column("lsn")[-1].as_py()
        con.execute("BEGIN")
        con.register("chunk", chunk)
        con.execute(f"INSERT INTO {table} SELECT {select} FROM chunk")
        con.unregister("chunk")
        con.execute(f"UPDATE {SYNC_TABLE} SET synced_lsn = ? WHERE view = ?", [last, info.name])
        con.execute("COMMIT")
        progress.add(chunk.num_rows)
    # No change between the last chunk and `until`: the copy is synced to `until` all the same.
    con.execute(f"UPDATE {SYNC_TABLE} SET synced_lsn = ? WHERE view = ?", [until, info.name])
    if progress.rows >= batch:
        progress.done()
    return progress.rows


def _select(info: ViewRecord) -> str:
    """The INSERT's select list: casts from the Arrow columns to the table's types."""
    parts = ["lsn", "seq", "commit_time", "xid", "op", "row_key"]
    for prefix in ("", "before_"):
        for name, duck in _columns(info):
            col = _ident(prefix + name)
            parts.append(col if duck in _ARROW_TYPES else f"CAST({col} AS {duck})")
    return ", ".join(parts)


def _chunks(
    store: HistoryStore, info: ViewRecord, after: int, until: int, batch_rows: int
) -> Iterator[pa.Table]:
    """Arrow tables of the view's changes with after < commit LSN <= until, each ending at a
    transaction boundary and holding about `batch_rows` changes."""
    cols = _columns(info)
    convert = [_to_arrow_value(t) for _, t in cols]
    arrow = [_ARROW_TYPES.get(t, pa.string()) for _, t in cols]
    width = len(cols)
    vid = info.view_id
    low = change_key(vid, after + 1, 0) if after + 1 < 1 << 64 else None
    high = prefix_end(change_lsn_prefix(vid, until))
    if low is None:
        return

    def empty() -> tuple[list[Any], ...]:
        return tuple([] for _ in range(6 + 2 * width))

    out = empty()
    lsns, seqs, times, xids, ops, keys = out[:6]
    values = out[6:]
    n = 0
    last_lsn = -1
    it = store.history.iter()
    it.seek(low)
    while it.valid():
        key = it.key()
        if key >= high:
            break
        _, lsn, seq = change_key_parts(key)
        if n >= batch_rows and lsn != last_lsn:
            yield _table(out, cols, arrow)
            out = empty()
            lsns, seqs, times, xids, ops, keys = out[:6]
            values = out[6:]
            n = 0
        okey, before, after_, commit_time, xid = unpack_fields(it.value())
        lsns.append(lsn)
        seqs.append(seq)
        times.append(commit_time)
        xids.append(xid)
        keys.append(okey)
        ops.append(change_op(before is None, after_ is None, xid))
        for offset, image in ((0, after_), (width, before)):
            if image is None:
                for i in range(width):
                    values[offset + i].append(None)
            else:
                for i, v in enumerate(unpack_fields(image)):
                    values[offset + i].append(None if v is None else convert[i](v))
        n += 1
        last_lsn = lsn
        it.next()
    if n:
        yield _table(out, cols, arrow)


def _table(out: tuple[list[Any], ...], cols: list[tuple[str, str]], arrow: list[Any]) -> pa.Table:
    names = ["lsn", "seq", "commit_time", "xid", "op", "row_key"]
    types = [pa.uint64(), pa.uint32(), _TIME, pa.int64(), pa.string(), pa.binary()]
    for prefix in ("", "before_"):
        names += [prefix + n for n, _ in cols]
        types += arrow
    return pa.table([pa.array(v, t) for v, t in zip(out, types, strict=True)], names=names)


def _to_arrow_value(duck: str) -> Any:
    """The function that turns a view value into what its Arrow column holds."""
    if duck in ("DOUBLE", "FLOAT"):
        return float  # Decimal too, NaN and ±Infinity included
    if duck in ("DATE", "TIMESTAMP", "TIMESTAMPTZ"):
        return _time_text
    if duck in _ARROW_TYPES:
        return _same
    return _text


def _same(v: Any) -> Any:
    return v


def _time_text(v: Any) -> str:
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return str(v)  # 'infinity', '-infinity', and dates Python cannot hold, as Postgres wrote them


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)
