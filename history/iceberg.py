"""Iceberg export: each view's history as an Apache Iceberg table, for engines past one machine.

`export_store(store, views, target)` appends each ready view's changes up to the store's applied
LSN to the Iceberg table `<namespace>.<view>` of a SQL catalog (pyiceberg's SqlCatalog: a SQLite
file, or a Postgres database), its Parquet files in a warehouse on a local directory or
S3-compatible object storage (`viewstore.store.lakeexport.export` opens the store and builds the
target). Spark, Trino, Flink or DuckDB then read the tables; viewstore only writes them.

A table has the columns of the DuckDB copy (`history.duckdb_copy`), in Iceberg's types:

    lsn          long         commit LSN of the transaction
    seq          long         order of the change within the transaction
    commit_time  timestamptz  NULL for the rows a view started with
    xid          long         NULL for the rows a view started with
    op           string       'initial' | 'insert' | 'update' | 'delete'
    row_key      binary       the row's identity in the view
    <column>...               the row after the change (NULL for a delete)
    before_<column>...        the row before it (NULL for an insert)

Numbers are exact, as in the DuckDB copy: a numeric column the view declares with a precision up
to 38 is `decimal(p,s)` (its NaN, which a decimal cannot hold, is NULL); any other numeric is
`double` plus `<column>_text`, the exact value as a string. A date or timestamp of ±infinity,
which Iceberg cannot hold, is NULL. The table is partitioned by day(commit_time), so a scan
over a time range reads only the files of its days (and within a day, Parquet's and Iceberg's
min/max statistics on lsn and commit_time prune further).

Exactly once, across kills: the rows of one export commit are written as Parquet files first,
then made visible by one Iceberg commit (the catalog's compare-and-swap of the table's metadata
pointer) whose snapshot summary records the LSN range it covers, `viewstore.lsn-from`
(exclusive) and `viewstore.lsn-to` (inclusive). The next export reads `viewstore.lsn-to` of the
newest snapshot that has one and goes on after it. A kill before the commit leaves Parquet files
that no snapshot references (unread by every engine; `remove_orphan_files` in Spark deletes
them), and the rows are written again; a kill after it, nothing to redo. Two exports of the same
table at once cannot both commit from the same snapshot: the loser's commit fails and nothing of
it is visible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from viewstore.errors import StoreError
from viewstore.history.access import HistoryStore, ViewRecord
from viewstore.history.duckdb_copy import _ahead, _chunks, _layout
from viewstore.ingest.lsn import Lsn
from viewstore.progress import Progress

log = logging.getLogger("viewstore")

LSN_FROM = "viewstore.lsn-from"  # snapshot summary: the commit covers LSNs after this one ...
LSN_TO = "viewstore.lsn-to"  # ... up to and including this one (also a table property)
# Table properties: which view (and which build of it) the table holds.
VIEW_ID = "viewstore.view-id"
FINGERPRINT = "viewstore.fingerprint"
BUILT_AT = "viewstore.built-at"
_LAYOUT = "iceberg1"  # part of the fingerprint: a table of another layout is replaced
# Every metadata file lists every snapshot: with `run --export` committing every 30 s they would
# grow without end. Once a table has _EXPIRE_AT snapshots, the export expires all but the
# newest _KEEP_SNAPSHOTS (the data stays: an append-only table's files are all still in the
# current snapshot), and old metadata files are deleted after each commit.
_EXPIRE_AT = 200
_KEEP_SNAPSHOTS = 100
_TABLE_PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true"}

Hook = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where the tables go: a SQL catalog (a SQLAlchemy URL), a warehouse (file:// or s3://),
    the namespace, and the FileIO properties (s3.endpoint, credentials). `secrets` are scrubbed
    from every error message."""

    catalog_uri: str
    warehouse: str
    namespace: str = "viewstore"
    properties: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    name: str = "viewstore"  # the catalog's name (Spark's and Trino's JDBC catalog filter on it)

    def catalog(self) -> Any:
        """pyiceberg's SqlCatalog of this target (its tables are created if missing)."""
        from pyiceberg.catalog.sql import SqlCatalog

        return SqlCatalog(
            self.name, uri=self.catalog_uri, warehouse=self.warehouse, **dict(self.properties)
        )


@dataclass
class ExportResult:
    """What one export did: rows appended and commits made per view, and the LSN it reached."""

    exported_lsn: Lsn
    appended: dict[str, int] = field(default_factory=dict)
    commits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.appended.values())


def export_store(
    store: HistoryStore,
    views: Mapping[str, ViewRecord],
    target: Target,
    *,
    batch_rows: int = 200_000,
    commit_rows: int = 1_000_000,
    hook: Hook | None = None,
) -> ExportResult:
    """Append the history of each of `views` up to the store's applied LSN to its Iceberg
    table, resuming after the last LSN range a commit recorded. The store (opened read-only)
    and the views are the caller's. Errors are StoreErrors with `target.secrets` scrubbed."""
    started = time.monotonic()
    applied = store.applied_lsn()
    result = ExportResult(applied)
    try:
        catalog = target.catalog()
        catalog.create_namespace_if_not_exists(target.namespace)
        for name in sorted(views):
            rows, commits = _export_view(
                catalog, target, store, views[name], int(applied), batch_rows, commit_rows, hook
            )
            result.appended[name], result.commits[name] = rows, commits
    except StoreError:
        raise
    except Exception as exc:
        raise _scrubbed(exc, target) from None
    result.seconds = time.monotonic() - started
    return result


def _scrubbed(exc: Exception, target: Target) -> StoreError:
    """The error as a StoreError whose text carries none of the target's secrets."""
    from pyiceberg.exceptions import CommitFailedException

    from viewstore.dsn import redact_text

    text = redact_text(f"{type(exc).__name__}: {exc}", *target.secrets)
    if isinstance(exc, CommitFailedException):
        return StoreError(
            f"iceberg export: another writer committed to the table first ({text})",
            hint="nothing of this export's last commit is visible; run the export again "
            "(and run one export per table at a time)",
        )
    return StoreError(
        f"iceberg export to {target.warehouse}: {text}",
        hint="check the warehouse, the catalog and the credentials; what was committed stays, "
        "and the next export resumes after it",
    )


def exported_lsn(table: Any) -> int | None:
    """The last LSN a commit of viewstore's recorded in the table: `viewstore.lsn-to` of the
    newest snapshot in the current snapshot's ancestry that has one; once the lake's
    maintenance has rewritten the files and expired those snapshots, the table property each
    of viewstore's commits sets with the summary. None if no commit of viewstore's is there."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        value = summary[LSN_TO] if summary is not None else None
        if value is not None:
            return int(value)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    held = table.properties.get(LSN_TO)
    return int(held) if held is not None else None


def _export_view(
    catalog: Any,
    target: Target,
    store: HistoryStore,
    info: ViewRecord,
    applied: int,
    batch_rows: int,
    commit_rows: int,
    hook: Hook | None,
) -> tuple[int, int]:
    """Append the view's changes up to `applied`; (rows appended, commits made)."""
    table = _table(catalog, target, info)
    done = exported_lsn(table)
    if done is None and table.current_snapshot() is not None:
        raise StoreError(
            f"iceberg table {target.namespace}.{info.name} has data no viewstore export wrote",
            hint="export to another namespace (--namespace), or drop that table",
        )
    synced = done or 0
    start = int(info.history_start or 0)
    if done is not None and start > synced:
        # Retention compacted changes the export had not reached: what is left of them is each
        # row's last change by `start`, so the table misses the ones compaction dropped.
        log.warning(
            "iceberg export: the store compacted the history of %s up to %s before the export "
            "reached it (%s): changes in between that compaction dropped are not in the table; "
            "export more often than --history-retention",
            info.name, Lsn(start), Lsn(synced),
        )  # fmt: skip
    if synced >= applied:
        return 0, 0
    convert = _Converter(info, table.schema().as_arrow())
    progress = Progress(info.name, 0, task="iceberg export")
    pending: list[pa.Table] = []
    held, commits, last = 0, 0, synced
    try:
        # Read ahead far enough that the reader keeps going while a commit writes its files.
        for chunk in _ahead(_chunks(store, info, synced, applied, batch_rows), depth=6):
            if held >= commit_rows:  # committed once more follows, so the last one is never
                upto = int(pending[-1].column("lsn")[-1].as_py())  # cut short of `applied`
                _commit(table, pending, last, upto, hook)
                commits, last, pending = commits + 1, upto, []
                progress.add(held)
                held = 0
            pending.append(convert(chunk))
            held += chunk.num_rows
        if pending:  # the last commit covers up to the applied LSN
            _commit(table, pending, last, applied, hook)
            commits += 1
            progress.add(held)
    finally:
        convert.close()
    _expire(table)
    if progress.rows >= batch_rows:
        progress.done()
    return progress.rows, commits


def _commit(table: Any, tables: list[pa.Table], after: int, upto: int, hook: Hook | None) -> None:
    """One Iceberg commit: the rows' Parquet files, then the snapshot that makes them visible
    with the LSN range (after, upto] in its summary; all of it or none."""
    data = pa.concat_tables(tables)
    props = {LSN_FROM: str(after), LSN_TO: str(upto)}
    with table.transaction() as tx:
        tx.append(data, snapshot_properties=props)  # writes the Parquet files
        # The same LSN as a table property, in the same commit: it outlives the snapshot once
        # the lake's maintenance expires it (exported_lsn falls back to it).
        tx.set_properties({LSN_TO: str(upto)})
        if hook is not None:
            hook("export-before-commit")  # files written, nothing committed
    if hook is not None:
        hook("export-after-commit")


def _expire(table: Any) -> None:
    """Expire all but the newest _KEEP_SNAPSHOTS snapshots once there are _EXPIRE_AT (never
    a branch's or tag's head). Exactly-once does not need them: `exported_lsn` falls back to
    the table property."""
    snapshots = table.snapshots()
    if len(snapshots) < _EXPIRE_AT:
        return
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    old = sorted(snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number))[:-_KEEP_SNAPSHOTS]
    ids = [s.snapshot_id for s in old if s.snapshot_id not in protected]
    if ids:
        table.maintenance.expire_snapshots().by_ids(ids).commit()


def _table(catalog: Any, target: Target, info: ViewRecord) -> Any:
    """The view's table, created if missing; replaced (with a warning) if it holds another
    build of the view."""
    ident = (target.namespace, info.name)
    build = {
        VIEW_ID: str(info.view_id),
        FINGERPRINT: f"{info.fingerprint}/{_LAYOUT}",
        BUILT_AT: str(info.built_at or ""),
    }
    if catalog.table_exists(ident):
        table = catalog.load_table(ident)
        held = {k: table.properties.get(k) for k in build}
        if held == build:
            return table
        log.warning(
            "iceberg export: %s.%s holds another build of view %s (%s); replacing it",
            target.namespace, info.name, info.name, held,
        )  # fmt: skip
        catalog.drop_table(ident)
    schema, spec = _schema(info)
    props = {**_TABLE_PROPERTIES, **build}
    return catalog.create_table(ident, schema=schema, partition_spec=spec, properties=props)


def _iceberg_type(duck: str) -> Any:
    from pyiceberg import types as t

    if duck.startswith("DECIMAL("):
        p, s = (int(x) for x in duck[len("DECIMAL(") : -1].split(","))
        return t.DecimalType(p, s)
    return {
        "BOOLEAN": t.BooleanType(),
        "BLOB": t.BinaryType(),
        "BIGINT": t.LongType(),
        "SMALLINT": t.IntegerType(),
        "INTEGER": t.IntegerType(),
        "FLOAT": t.FloatType(),
        "DOUBLE": t.DoubleType(),
        "DATE": t.DateType(),
        "TIMESTAMP": t.TimestampType(),
        "TIMESTAMPTZ": t.TimestamptzType(),
        "VARCHAR": t.StringType(),
    }[duck]


def _schema(info: ViewRecord) -> tuple[Any, Any]:
    """The table's Iceberg schema and its partition spec (day of commit_time)."""
    from pyiceberg import types as t
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform

    head = [
        ("lsn", t.LongType(), True),
        ("seq", t.LongType(), True),
        ("commit_time", t.TimestamptzType(), False),
        ("xid", t.LongType(), False),
        ("op", t.StringType(), True),
        ("row_key", t.BinaryType(), True),
    ]
    cols = _layout(info)
    for prefix in ("", "before_"):
        for c in cols:
            head += [(n, _iceberg_type(d), False) for n, d in c.table_columns(prefix)]
    fields = [
        t.NestedField(i, name, kind, required=required)
        for i, (name, kind, required) in enumerate(head, 1)
    ]
    spec = PartitionSpec(
        PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name="commit_day")
    )
    return Schema(*fields), spec


class _Converter:
    """Turns a chunk of change columns (`history.changecolumns`, wire forms) into an Arrow
    table of the Iceberg schema, with the DuckDB copy's own casts (`duckdb_copy._Column`), run
    by an in-memory DuckDB."""

    def __init__(self, info: ViewRecord, schema: pa.Schema) -> None:
        self.schema = schema
        parts = [
            "lsn::BIGINT AS lsn", "seq::BIGINT AS seq", "commit_time", "xid",
            "op::VARCHAR AS op", "row_key",
        ]  # fmt: skip
        for prefix in ("", "before_"):
            for c in _layout(info):
                pairs = zip(c.table_columns(prefix), c.select(prefix), strict=True)
                for (name, duck), expr in pairs:
                    if duck in ("DATE", "TIMESTAMP", "TIMESTAMPTZ"):
                        expr = f"CASE WHEN isinf({expr}) THEN NULL ELSE {expr} END"
                    parts.append(f"{expr} AS {_ident(name)}")
        self.select = "SELECT " + ", ".join(parts) + " FROM chunk"
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")  # timestamptz arrive in UTC, as Iceberg has them

    def __call__(self, chunk: pa.Table) -> pa.Table:
        self.con.register("chunk", chunk)
        try:
            out = self.con.sql(self.select).to_arrow_table()
        finally:
            self.con.unregister("chunk")
        return out.cast(self.schema)

    def close(self) -> None:
        self.con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
