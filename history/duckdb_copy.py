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

Checkpoints (issue 15): the store's checkpoints of each view (`history.checkpoint`: every row as
of an LSN) are copied too, into `viewstore_checkpoints.<view>` (checkpoint_lsn, row_key and the
view's columns), one each time the copy has `_COPY_SPACING` times its rows in changes since the
last one it took, so that `<view>_as_of` reads the newest checkpoint at or before its LSN and
the changes after it, not every change before it (top 10 as of an LSN of a 10M-entry history:
8.9 s before). A copy made before them holds none for the LSNs it had synced; as-of reads
there read the changes from the start, as before.

Exactly once, across kills: rows are appended in bulk (one Arrow table per chunk of about
`batch_rows` changes, cut at transaction boundaries), and the LSN a view is synced to is updated
in the same DuckDB transaction as the rows and the checkpoints up to it (table `viewstore_sync`).
A sync killed midway leaves the copy at the end of its last committed chunk, and the next sync
reads on from there.

Macros make the common questions one line:

    lsn('0/16B3748') -> UBIGINT            lsn_text(lsn) -> '0/16B3748'
    <view>_as_of(lsn('0/16B3748'))         the view after the last transaction committed at or
                                           before that LSN (an error outside the history)
    <view>_at(TIMESTAMPTZ '2026-11-21 17:00+00')   the same, as of a time: after the last
                                           transaction whose commit time is at or before it
                                           (commit times follow commit order, except when
                                           clocks step or concurrent commits race)

Numbers are exact. A numeric column whose type the view's SQL declares with a cast that fits
DuckDB's 38 digits (`SUM(score)::numeric(12,2)`: precision up to 38, scale 0 to precision) is a
DECIMAL(p,s); its NaN, which DECIMAL cannot hold, is NULL there. Any other numeric column
(plain `numeric`, as SUM returns) is two columns: `<column>` DOUBLE, to compute with (NaN and
±Infinity included), and `<column>_text` VARCHAR, the exact value in plain notation (cast it:
`total_score_text::DECIMAL(38,2)`, or compare it as text). Dates and timestamps keep ±infinity;
JSON, UUID, arrays and other types are their text.

Sync speed (issue 15): the log is read in key order a piece at a time and decoded a column at a
time (`history.changecolumns`), and DuckDB casts the piece's text columns itself. The reading
and decoding run up to two pieces ahead of the append: in a thread for a small sync, in a child
process for one of millions of changes (`history.logprocess`: the GIL, which a thread shares
with DuckDB's append, slows the append by a third). The first pieces are small, so that the
append starts early. What a change costs (leaderboard history, CPU): ~0.75 µs reading, ~0.75
µs decoding, ~1.1-1.7 µs in DuckDB, ~0.4 µs of which is its string compression (dict_fsst;
without it the copy is 2.5 times larger). An incremental sync also pays DuckDB's checkpoint
when the copy closes, which rewrites the table's last, partly filled row group (0.1-0.45 s).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from viewstore.codecs.key import prefix_end
from viewstore.errors import ConfigError, StoreError
from viewstore.history import changecolumns, checkpoint, logprocess
from viewstore.history.access import HistoryStore, ViewRecord
from viewstore.history.changecolumns import Wire
from viewstore.history.keys import change_key, change_lsn_prefix
from viewstore.ingest.lsn import Lsn
from viewstore.progress import Progress

log = logging.getLogger("viewstore")

FILE_NAME = "history.duckdb"
SYNC_TABLE = "viewstore_sync"
CHECKPOINTS = "viewstore_checkpoints"  # the schema of the checkpoint tables, one per view
# The copy takes a store checkpoint once it holds this many times the checkpoint's rows in
# changes since the last one it took: an as-of read then windows at most about as many
# changes, and the checkpoint table stays a fraction of the change table.
_COPY_SPACING = 4
_LOCK_WAIT = 30.0  # seconds to wait for another process to close the copy

# DuckDB type, wire form (history.changecolumns) and the value tags the columnar decode takes,
# of each Postgres type OID; numeric (1700) is decided per column (`_layout`); other types are
# kept as their text (VARCHAR).
_DUCK_TYPES = {
    16: ("BOOLEAN", "bool", b"TF"),
    17: ("BLOB", "blob", b"y"),
    20: ("BIGINT", "text", b"i"),
    21: ("SMALLINT", "text", b"i"),
    23: ("INTEGER", "text", b"i"),
    26: ("BIGINT", "text", b"i"),
    700: ("FLOAT", "float", b"f"),
    701: ("DOUBLE", "float", b"f"),
    1082: ("DATE", "text", b"tDs"),  # ±infinity stays text ('s') in the view
    1114: ("TIMESTAMP", "text", b"tDs"),
    1184: ("TIMESTAMPTZ", "text", b"tDs"),
}
_NUMERIC = 1700
_DECIMAL_DIGITS = 38  # DuckDB's widest DECIMAL
# Part of the fingerprint the copy records per view: a copy made with another layout (before
# exact numerics) is rebuilt by the next sync rather than appended to.
_LAYOUT = "copy2"


def _no_crash(_: str) -> None:
    pass


@dataclass(frozen=True)
class _Column:
    """A view column in the copy: its DuckDB type, how it travels, and whether an exact text
    column (`<name>_text`) goes beside it."""

    name: str
    duck: str
    wire: Wire
    exact_text: bool = False

    def table_columns(self, prefix: str = "") -> list[tuple[str, str]]:
        """(name, DuckDB type) of the table columns it becomes."""
        out = [(prefix + self.name, self.duck)]
        if self.exact_text:
            out.append((prefix + self.name + "_text", "VARCHAR"))
        return out

    def select(self, prefix: str = "") -> list[str]:
        """The INSERT's select expressions for it, from the chunk's wire column."""
        col = _ident(prefix + self.name)
        if self.duck.startswith("DECIMAL"):
            return [f"CASE WHEN {col} = 'NaN' THEN NULL ELSE CAST({col} AS {self.duck}) END"]
        if self.exact_text:
            return [f"CAST({col} AS DOUBLE)", col]
        if (self.wire.form == "text" and self.duck != "VARCHAR") or self.duck == "FLOAT":
            return [f"CAST({col} AS {self.duck})"]
        return [col]


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
    crash: Callable[[str], None] = _no_crash,
    open_store: logprocess.Opener | None = None,
) -> SyncResult:
    """Bring the DuckDB copy of the history up to the store's applied LSN, for its ready
    `views` (the store, opened read-only, and its views are the caller's). `crash` is called
    at the points a test kills the sync at: 'history-copy-appended' (a chunk's rows and
    checkpoints are in, its DuckDB transaction not committed) and 'history-copy-committed'.
    `open_store` opens the store again, read-only, in a child process that reads a large sync's
    log (`history.logprocess`); without it the log is read in a thread."""
    started = time.monotonic()
    applied = store.applied_lsn()
    path = copy_path(data_dir)
    con = _connect(path, read_only=False, wait=wait)
    try:
        _create_sync_table(con)
        _drop_removed(con, views)
        result = SyncResult(applied)
        for name in sorted(views):
            result.appended[name] = _sync_view(
                con, store, views[name], applied, batch_rows, crash, open_store
            )
    except duckdb.Error as exc:
        # A full or failing disk: the chunk being appended is rolled back with its sync LSN,
        # so the next sync starts where the copy stands, and every change lands once.
        text = str(exc)
        if not ("No space left" in text or "Could not write" in text or "I/O" in text):
            raise
        fix = "free space on" if "No space left" in text else "check"
        raise StoreError(
            f"cannot write the history copy {path}: {text}",
            hint=f"{fix} the disk that holds {Path(data_dir)}, then sync again (the copy is "
            "consistent at its last synced LSN)",
        ) from None
    finally:
        with suppress(duckdb.Error):  # closing after a failed write may fail the same way
            con.close()
    result.seconds = time.monotonic() - started
    return result


# The connection `connect` hands out runs its user's SQL, which a service may take from its own
# users (issue 19.3): without these, `COPY (...) TO 'file'` writes wherever the process can and
# read_text('/etc/...') reads any file. External access off refuses every file but the copy
# (COPY TO, read_*, glob, ATTACH, EXPORT, INSTALL), no extension is fetched or loaded behind
# the user's back, and the lock makes SET/RESET unable to undo any of it.
SANDBOX: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "lock_configuration": True,
}


def connect(data_dir: str | Path, *, wait: float = _LOCK_WAIT, allow_files: bool = False) -> Any:
    """A read-only DuckDB connection to the history tables, as last synced.

    The copy is opened read-only so queries cannot damage it; while the connection is open
    other processes can read it too, but cannot sync it (close it when done). Its SQL cannot
    touch any other file (`SANDBOX`: no COPY TO, read_csv/read_text, ATTACH, INSTALL/LOAD) and
    cannot change its settings, unless `allow_files` is True (for exporting: trust the SQL)."""
    path = copy_path(data_dir)
    if not path.exists():
        raise ConfigError(
            f"no history copy in {data_dir}",
            hint="run `viewstore history --data DIR` once to create it",
        )
    return _connect(path, read_only=True, wait=wait, config=None if allow_files else SANDBOX)


def _connect(
    path: Path, *, read_only: bool, wait: float, config: dict[str, Any] | None = None
) -> Any:
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=dict(config or {}))
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
    con.execute(f"DROP TABLE IF EXISTS {CHECKPOINTS}.{_ident(name)}")
    for suffix in ("_as_of", "_at"):
        con.execute(f"DROP MACRO TABLE IF EXISTS {_ident(name + suffix)}")
    con.execute(f"DELETE FROM {SYNC_TABLE} WHERE view = ?", [name])


def _layout(info: ViewRecord) -> list[_Column]:
    """The view's columns in the copy; ConfigError if one would clash with another."""
    cols = []
    typmods = getattr(info, "typmods", None) or {}
    for c in info.columns:
        if c.type_oid == _NUMERIC:
            p, s = [*typmods.get(c.name, ()), 0, 0][:2]
            wire = Wire(c.name, "text", b"di")
            if 1 <= p <= _DECIMAL_DIGITS and 0 <= s <= p:
                cols.append(_Column(c.name, f"DECIMAL({p},{s})", wire))
            else:
                cols.append(_Column(c.name, "DOUBLE", wire, exact_text=True))
        else:
            duck, form, tags = _DUCK_TYPES.get(c.type_oid, ("VARCHAR", "text", b"s"))
            cols.append(_Column(c.name, duck, Wire(c.name, form, tags)))
    fixed = {"lsn", "seq", "commit_time", "xid", "op", "row_key"}
    seen: set[str] = set()
    names = [n for prefix in ("", "before_") for c in cols for n, _ in c.table_columns(prefix)]
    for name in names:
        if name in fixed or name in seen:
            raise ConfigError(
                f"view {info.name}: column {name!r} clashes with a history column",
                hint="rename the column in the view (the history table needs lsn, seq, "
                "commit_time, xid, op, row_key, before_<column> and, for a numeric, "
                "<column>_text)",
            )
        seen.add(name)
    return cols


def _create_view_table(con: Any, info: ViewRecord) -> None:
    cols = _layout(info)
    table = _ident(info.name)
    after = ", ".join(f"{_ident(n)} {t}" for c in cols for n, t in c.table_columns())
    before = ", ".join(f"{_ident(n)} {t}" for c in cols for n, t in c.table_columns("before_"))
    con.execute(
        f"CREATE TABLE {table} (lsn UBIGINT NOT NULL, seq UINTEGER NOT NULL, "
        f"commit_time TIMESTAMPTZ, xid BIGINT, op VARCHAR NOT NULL, row_key BLOB NOT NULL, "
        f"{after}, {before})"
    )


def _create_checkpoint_table(con: Any, info: ViewRecord) -> None:
    after = ", ".join(f"{_ident(n)} {t}" for c in _layout(info) for n, t in c.table_columns())
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {CHECKPOINTS}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS}.{_ident(info.name)} "
        f"(checkpoint_lsn UBIGINT NOT NULL, row_key BLOB NOT NULL, {after})"
    )


def _create_macros(con: Any, info: ViewRecord) -> None:
    """<view>_as_of(lsn) and <view>_at(time); replaced on every sync, so that a copy made by
    an older viewstore gets the current definitions."""
    table = _ident(info.name)
    names = ", ".join(_ident(n) for c in _layout(info) for n, _ in c.table_columns())
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
    # The newest checkpoint at or before the LSN, then each row's last change after it: the
    # rows changed are taken from the log (a delete removes one), the others from the
    # checkpoint. Both read `base`, whose `ok` raises the range error, so that it is raised
    # even where no row of the table falls in the range.
    checkpoints = f"{CHECKPOINTS}.{_ident(info.name)}"
    con.execute(
        f"CREATE OR REPLACE MACRO {_ident(info.name + '_as_of')}(at_lsn) AS TABLE "
        f"WITH base AS (SELECT (SELECT max(checkpoint_lsn) FROM {checkpoints} "
        f"WHERE checkpoint_lsn <= at_lsn) AS c, {check} AS ok), "
        f"changed AS (SELECT * FROM {table} WHERE lsn <= at_lsn "
        f"AND lsn > coalesce((SELECT c FROM base WHERE ok), 0) "
        f"QUALIFY row_number() OVER (PARTITION BY row_key ORDER BY lsn DESC, seq DESC) = 1) "
        f"SELECT {names} FROM changed WHERE op <> 'delete' "
        f"UNION ALL SELECT {names} FROM {checkpoints} "
        f"WHERE checkpoint_lsn = (SELECT c FROM base WHERE ok) "
        f"AND row_key NOT IN (SELECT row_key FROM changed)"
    )
    con.execute(
        f"CREATE OR REPLACE MACRO {_ident(info.name + '_at')}(at_time) AS TABLE "
        f"SELECT * FROM {_ident(info.name + '_as_of')}(("
        f"SELECT coalesce(max(lsn), (SELECT history_from FROM {SYNC_TABLE} WHERE view = {view})) "
        f"FROM {table} WHERE coalesce(commit_time, '-infinity'::TIMESTAMPTZ) <= at_time))"
    )


def _sync_view(
    con: Any,
    store: HistoryStore,
    info: ViewRecord,
    applied: Lsn,
    batch_rows: int,
    crash: Callable[[str], None],
    open_store: logprocess.Opener | None,
) -> int:
    """Append the view's changes up to `applied`; the number of changes appended."""
    start = int(info.history_start or 0)
    row = con.execute(
        f"SELECT view_id, fingerprint, built_at, history_from, synced_lsn FROM {SYNC_TABLE} "
        "WHERE view = ?",
        [info.name],
    ).fetchone()
    built = int(Lsn.parse(info.built_at)) if info.built_at else 0
    fingerprint = f"{info.fingerprint}/{_LAYOUT}"
    if row is None or (row[0], row[1], row[2]) != (info.view_id, fingerprint, built):
        if row is not None:
            log.info("history copy: view %s was rebuilt; rebuilding its table", info.name)
        con.execute("BEGIN")
        _drop_view(con, info.name)
        _create_view_table(con, info)
        con.execute(
            f"INSERT INTO {SYNC_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
            [info.name, info.view_id, fingerprint, built, start, 0],
        )
        con.execute("COMMIT")
        synced = 0
    else:
        synced = row[4]
        if row[3] != start:
            synced = _apply_retention(con, store, info, start, synced)
    _create_checkpoint_table(con, info)
    _create_macros(con, info)
    if synced >= applied:
        return 0
    return _append(con, store, info, synced, int(applied), batch_rows, crash, open_store)


def _apply_retention(
    con: Any, store: HistoryStore, info: ViewRecord, start: int, synced: int
) -> int:
    """The store compacted the view's history up to `start` (what it kept there is each row's
    last change by then): replace the copy's rows up to `start` by those, in one transaction."""
    table = _ident(info.name)
    con.execute("BEGIN")
    con.execute(f"DELETE FROM {table} WHERE lsn <= ?", [start])
    _create_checkpoint_table(con, info)
    con.execute(f"DELETE FROM {CHECKPOINTS}.{_ident(info.name)} WHERE checkpoint_lsn < ?", [start])
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
    con: Any,
    store: HistoryStore,
    info: ViewRecord,
    synced: int,
    until: int,
    batch: int,
    crash: Callable[[str], None],
    open_store: logprocess.Opener | None,
) -> int:
    table = _ident(info.name)
    select = _select(info)
    checkpoint_select = _checkpoint_select(info)
    progress = Progress(info.name, 0, task="history copy")
    # The log is read and decoded ahead of the append: in a child process for a large sync
    # (`history.logprocess`: the GIL, shared, slows the append by a third), else in a thread.
    # Two threads reading and decoding were slower on a loaded machine (10M entries: 165k
    # rows/s against 201k): each of the decode's numpy steps gives the GIL up and then waits up
    # to the switch interval (5 ms) for the reading thread, which holds it, to give it back.
    make = functools.partial(
        _pieces,
        info=info,
        picker=_CheckpointPicker.start(con, store, info, synced, until),
        synced=synced,
        until=until,
        rows=batch,
    )
    low = change_key(info.view_id, synced + 1, 0)
    high = prefix_end(change_lsn_prefix(info.view_id, until))
    if open_store is not None and logprocess.enough_changes(store, low, high):
        log.info("history copy %s: a large sync, the log read in a separate process", info.name)
        source = _from_process(open_store, info, until, make, store)
    else:
        source = _ahead(make(store))
    in_transaction = False
    pending = 0  # changes appended in the open DuckDB transaction
    for piece in source:
        if not in_transaction:
            con.execute("BEGIN")
            in_transaction = True
        if piece.changes is not None:
            con.register("chunk", piece.changes)
            con.execute(f"INSERT INTO {table} SELECT {select} FROM chunk")
            con.unregister("chunk")
            pending += piece.changes.num_rows
        _insert_checkpoints(con, info, checkpoint_select, piece.checkpoints)
        if piece.whole or pending >= batch or piece.last:
            crash("history-copy-appended")
            con.execute(
                f"UPDATE {SYNC_TABLE} SET synced_lsn = ? WHERE view = ?", [piece.lsn, info.name]
            )
            con.execute("COMMIT")
            crash("history-copy-committed")
            progress.add(pending)
            in_transaction, pending = False, 0
    if progress.rows >= batch:
        progress.done()
    return progress.rows


def _from_process(
    open_store: logprocess.Opener,
    info: ViewRecord,
    until: int,
    make: logprocess.PieceMaker,
    store: HistoryStore,
) -> Iterator[_Piece]:
    """The pieces read by a child process; read in a thread instead if the child fails before
    its first piece (it cannot start, or sees the view otherwise than this process: this
    process's own read-only snapshot is still right). A failure after that is raised: the
    pieces appended so far are in the copy's open transaction."""
    pieces = logprocess.pieces(open_store, info, until, make)
    try:
        first = next(pieces)
    except (StoreError, OSError) as exc:
        log.warning("history copy %s: %s; reading the log in a thread instead", info.name, exc)
        yield from _ahead(make(store))
        return
    yield first
    yield from pieces


# The first piece of a sync holds this many changes, each next one twice as many up to
# `batch_rows`: the append starts early (a sync of 100k changes would otherwise wait for all of
# them to be decoded), and a long sync appends pieces of `batch_rows` (DuckDB appends 50k-row
# pieces 20% slower than 200k-row ones).
_FIRST_PIECE_ROWS = 8_192


@dataclass
class _Piece:
    """A piece of the log for the append: its changes as an Arrow table (None in the last,
    empty piece), the checkpoints to copy with it, and the LSN the copy is synced to once they
    are in; `whole` when it was read at the sync's batch size (it is committed on its own),
    `last` for the final piece, after which the copy is at the sync's LSN."""

    changes: pa.Table | None
    checkpoints: list[pa.Table]
    lsn: int
    whole: bool = False
    last: bool = False


def _pieces(
    store: HistoryStore,
    *,
    info: ViewRecord,
    picker: _CheckpointPicker,
    synced: int,
    until: int,
    rows: int,
) -> Iterator[_Piece]:
    """The pieces of the view's log in (synced, until], each ending at a transaction boundary
    and holding about `rows` changes (the first ones fewer: `_FIRST_PIECE_ROWS`); then a last
    one without changes (the checkpoints after the last change, and `until`)."""
    wires = [c.wire for c in _layout(info)]
    size = min(rows, _FIRST_PIECE_ROWS)
    while True:
        raw = next(changecolumns.raw_chunks(store, info.view_id, synced, until, size), None)
        if raw is None:
            break
        synced = int(raw.lsn[-1])
        marks = picker.pick(store, info.view_id, raw.lsn, synced)
        changes = changecolumns.decode(raw, wires)
        checkpoints = _checkpoint_tables(store, info.view_id, wires, marks)
        yield _Piece(changes, checkpoints, synced, size == rows)
        size = min(rows, 2 * size)
    marks = picker.pick(store, info.view_id, None, until)
    yield _Piece(None, _checkpoint_tables(store, info.view_id, wires, marks), until, last=True)


@dataclass
class _CheckpointPicker:
    """Which of the store's checkpoints the copy takes: each one that has `_COPY_SPACING` times
    its rows in changes since the last one the copy holds (the copy would otherwise hold about
    one checkpoint row per change). It counts the changes as the log is read, so that the
    choice costs no query per checkpoint."""

    marks: list[int]  # the store's checkpoints still to consider, oldest first
    since: int  # changes in the copy after the last checkpoint it holds

    @classmethod
    def start(
        cls, con: Any, store: HistoryStore, info: ViewRecord, synced: int, until: int
    ) -> _CheckpointPicker:
        """The picker for a sync of the view from `synced` to `until`."""
        target = f"{CHECKPOINTS}.{_ident(info.name)}"
        [(held,)] = con.execute(f"SELECT coalesce(max(checkpoint_lsn), 0) FROM {target}").fetchall()
        [(since,)] = con.execute(
            f"SELECT count(*) FROM {_ident(info.name)} WHERE lsn > ?", [held]
        ).fetchall()
        marks = [c for c in checkpoint.lsns(store, info.view_id) if synced < c <= until]
        return cls(marks, int(since))

    def pick(self, store: HistoryStore, view_id: int, lsns: Any, upto: int) -> list[int]:
        """The checkpoints at or before `upto` to copy, given the commit LSNs (ascending) of the
        changes read since the last call (None: none)."""
        picked = []
        counted = 0  # of `lsns`, those already in `since`
        while self.marks and self.marks[0] <= upto:
            mark = self.marks.pop(0)
            if lsns is not None:
                through = int(np.searchsorted(lsns, mark, side="right"))
                self.since += through - counted
                counted = through
            if self.since >= _COPY_SPACING * max(1, checkpoint.row_count(store, view_id, mark)):
                picked.append(mark)
                self.since = 0
        if lsns is not None:
            self.since += len(lsns) - counted
        return picked


def _checkpoint_tables(
    store: HistoryStore, view_id: int, wires: list[Wire], marks: list[int]
) -> list[pa.Table]:
    """The checkpoints at `marks` as Arrow tables: checkpoint_lsn, row_key, each wire column."""
    names = ["checkpoint_lsn", "row_key", *(w.name for w in wires)]
    out = []
    for lsn in marks:
        keys, rows = checkpoint.arrays(store, view_id, lsn)
        columns = changecolumns.row_columns(rows, wires)
        lsns = pa.array(np.full(len(keys), lsn, dtype=np.uint64))
        out.append(pa.table([lsns, keys, *columns], names=names))
    return out


def _checkpoint_select(info: ViewRecord) -> str:
    """The select list that casts a checkpoint table's wire columns to the copy's types."""
    cols = _layout(info)
    return ", ".join(["checkpoint_lsn", "row_key", *(e for c in cols for e in c.select())])


def _insert_checkpoints(con: Any, info: ViewRecord, select: str, tables: list[pa.Table]) -> None:
    """Insert checkpoint tables (`_checkpoint_tables`) with `select` (`_checkpoint_select`), in
    the caller's DuckDB transaction."""
    target = f"{CHECKPOINTS}.{_ident(info.name)}"
    for rows in tables:
        con.register("checkpoint_rows", rows)
        con.execute(f"INSERT INTO {target} SELECT {select} FROM checkpoint_rows")
        con.unregister("checkpoint_rows")


def _ahead(items: Iterator[Any], depth: int = 2, name: str = "history-copy-read") -> Iterator[Any]:
    """The same items, made in a thread (`name`) up to `depth` ahead: the consumer works on
    one while the next is made (the Iceberg export uses it too). Stops the thread, and closes
    `items` (a generator), when the consumer stops early; raises what the thread raised."""
    queue: Queue[tuple[str, Any]] = Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(("item", item), timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with suppress(Empty):
                queue.get_nowait()
            thread.join(0.05)


def _select(info: ViewRecord) -> str:
    """The INSERT's select list: casts from the chunk's wire columns to the table's types."""
    parts = ["lsn", "seq", "commit_time", "xid", "op", "row_key"]
    for prefix in ("", "before_"):
        for col in _layout(info):
            parts += col.select(prefix)
    return ", ".join(parts)


def _chunks(
    store: HistoryStore, info: ViewRecord, after: int, until: int, batch_rows: int
) -> Iterator[pa.Table]:
    """Arrow tables of the view's changes with after < commit LSN <= until, each ending at a
    transaction boundary and holding about `batch_rows` changes."""
    wires = [c.wire for c in _layout(info)]
    return changecolumns.chunks(store, info.view_id, wires, after, until, batch_rows)
