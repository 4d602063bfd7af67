"""The `viewstore` command: thin wrappers over the Python API, one verb per command."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from viewstore.dsn import redact_text, secrets_of
from viewstore.errors import ConfigError, ViewstoreError
from viewstore.render import json_value, text

log = logging.getLogger("viewstore")


def _setup_logging(verbose: bool, default: int = logging.INFO) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else default,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _fail(exc: ViewstoreError) -> None:
    click.echo(f"Error: {exc}", err=True)
    if exc.hint:
        click.echo(f"Try: {exc.hint}", err=True)
    sys.exit(1)


def _crash_hook_from_env() -> Any:
    """VIEWSTORE_CRASH_AT=point[:n] kills this process with SIGKILL at the n-th time the
    pipeline passes that point (tests use it to crash at exact moments)."""
    spec = os.environ.get("VIEWSTORE_CRASH_AT")
    if not spec:
        return None
    point, _, count = spec.partition(":")
    remaining = [int(count or 1)]

    def hook(name: str) -> None:
        if name == point:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _checkpoint_interval_from_env() -> dict[str, int]:
    """VIEWSTORE_CHECKPOINT_INTERVAL=n writes a view's history checkpoints every max(n, rows)
    changes instead of max(10,000, rows) (tests use it to write many while killed -9)."""
    spec = os.environ.get("VIEWSTORE_CHECKPOINT_INTERVAL")
    return {"history_checkpoint_interval": int(spec)} if spec else {}


@click.group()
@click.version_option(package_name="viewstore")
def main() -> None:
    """viewstore: durable SQL views over Postgres logical replication."""


@main.command()
@click.option(
    "--dsn",
    required=True,
    envvar="VIEWSTORE_DSN",
    help="Postgres connection string (or $VIEWSTORE_DSN). Passwords are never printed.",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Data directory of the store (created if missing).",
)
@click.option(
    "--publication",
    help="Publication to read (created if missing). Default: derived from the data directory.",
)
@click.option(
    "--slot",
    help="Replication slot (created if missing). Default: derived from the data directory.",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="Table to publish when the publication is created (repeatable). Default: FOR ALL TABLES.",
)
@click.option(
    "--views",
    "views_file",
    type=click.Path(exists=True, path_type=Path),
    help="SQL file of CREATE MATERIALIZED VIEW statements.",
)
@click.option(
    "--resnapshot",
    is_flag=True,
    help="Drop the store's contents and the slot, and take a new snapshot.",
)
@click.option(
    "--source-encoding",
    metavar="ENCODING",
    help="A SQL_ASCII database only, whose text Postgres does not check: the encoding its "
    "clients write (LATIN1: every byte one character, as Postgres counts SQL_ASCII text; "
    "WIN1252, ...). Default: what the store read before, UTF8 at first. A change needs "
    "--resnapshot.",
)
@click.option(
    "--snapshot-workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Connections that copy the first snapshot at once, each in the slot's exported "
    "snapshot; a large table is split into ranges of pages. Default: one per core (at most 8).",
)
@click.option(
    "--large-txn-rows",
    default=250_000,
    show_default=True,
    help="Transactions larger than this are applied in chunks with an undo log, so "
    "memory stays bounded.",
)
@click.option(
    "--chunk-rows", default=50_000, show_default=True, help="Rows per chunk of a large transaction."
)
@click.option(
    "--history-retention",
    metavar="AGE",
    help="Keep the views' history this far back: a duration of commit time (90s, 30m, 12h, 7d, "
    "2w) or bytes of WAL (500MB, 10GB). Older history is compacted; as-of reads before it are "
    "refused. Default: keep it all.",
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Also serve the HTTP API and the leaderboard page here (:8080 means 127.0.0.1:8080).",
)
@click.option(
    "--http-token",
    envvar="VIEWSTORE_HTTP_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz "
    "(or $VIEWSTORE_HTTP_TOKEN).",
)
@click.option(
    "--http-insecure",
    is_flag=True,
    help="Serve a non-loopback --http address without --http-token (refused otherwise): "
    "anyone who can reach it reads every view.",
)
@click.option(
    "--export",
    "export_to",
    metavar="WAREHOUSE",
    help="Also keep each view's history in Apache Iceberg tables here (a directory or "
    "s3://bucket/prefix), exported every --export-interval seconds (see `viewstore export`).",
)
@click.option(
    "--export-catalog",
    metavar="CATALOG",
    help="The Iceberg SQL catalog: a SQLite file (default DATA/iceberg-catalog.db) or a "
    "Postgres connection string.",
)
@click.option("--export-namespace", default="viewstore", show_default=True, metavar="NS")
@click.option(
    "--export-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="An S3-compatible server for an s3:// warehouse (or $AWS_ENDPOINT_URL); credentials "
    "come from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY only.",
)
@click.option("-v", "--verbose", is_flag=True)
def run(
    dsn: str,
    data_dir: Path,
    publication: str | None,
    slot: str | None,
    tables: tuple[str, ...],
    views_file: Path | None,
    resnapshot: bool,
    source_encoding: str | None,
    snapshot_workers: int | None,
    large_txn_rows: int,
    chunk_rows: int,
    history_retention: str | None,
    http: str | None,
    http_token: str | None,
    http_insecure: bool,
    export_to: str | None,
    export_catalog: str | None,
    export_namespace: str,
    export_interval: float,
    s3_endpoint: str | None,
    verbose: bool,
) -> None:
    """Run the pipeline until SIGINT/SIGTERM, then flush and print the final LSN."""
    from viewstore.store.pipeline import Pipeline, RunConfig

    _setup_logging(verbose)
    config = RunConfig(
        dsn=dsn,
        data_dir=data_dir,
        publication=publication,
        slot=slot,
        tables=list(tables),
        views_file=views_file,
        resnapshot=resnapshot,
        source_encoding=source_encoding,
        snapshot_workers=snapshot_workers,
        large_txn_rows=large_txn_rows,
        chunk_rows=chunk_rows,
        history_retention=history_retention,
        **_checkpoint_interval_from_env(),
    )
    hook = _crash_hook_from_env()
    pipeline = Pipeline(config, hook) if hook else Pipeline(config)
    bars = None
    if sys.stderr.isatty():  # else progress comes as log lines every few seconds
        from viewstore.progressbar import TerminalBar

        bars = TerminalBar(sys.stderr)
        bars.attach(pipeline.board)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s, finishing the current transaction", signal.Signals(signum).name)
        pipeline.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    web = exporter = None
    try:
        if export_to is not None:
            from viewstore.store import lakeexport

            target = lakeexport.target(
                data_dir, export_to, catalog=export_catalog, namespace=export_namespace,
                s3_endpoint=s3_endpoint,
            )  # fmt: skip
            exporter = lakeexport.Alongside(data_dir, target, export_interval)
        if http is not None:
            from viewstore.serve.hosting import HttpAlongside

            web = HttpAlongside(pipeline, http, http_token, insecure=http_insecure)
        final = pipeline.run()
    except ViewstoreError as exc:
        if web is not None:
            web.stop()
        if exporter is not None:
            exporter.stop()
        if bars is not None:
            bars.clear()
        _fail(exc)
    except Exception as exc:  # unexpected: still never print a password
        if bars is not None:
            bars.clear()
        log.error("unexpected error: %s", redact_text(repr(exc), *secrets_of(dsn)))
        log.debug("where", exc_info=True)  # -v: the traceback, for a bug report
        raise SystemExit(2) from None
    if web is not None:
        web.stop()
    if exporter is not None:
        exporter.stop()  # one last export, up to the final LSN
    click.echo(f"stopped at {final}")


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    default="127.0.0.1:8080",
    show_default=True,
    help="Address to serve on (:8080 means 127.0.0.1:8080).",
)
@click.option(
    "--http-token",
    envvar="VIEWSTORE_HTTP_TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on every endpoint but /healthz.",
)
@click.option(
    "--http-insecure",
    is_flag=True,
    help="Serve a non-loopback --http address without --http-token (refused otherwise): "
    "anyone who can reach it reads every view.",
)
@click.option("-v", "--verbose", is_flag=True)
def serve(
    data_dir: Path, http: str, http_token: str | None, http_insecure: bool, verbose: bool
) -> None:
    """Serve the HTTP API of a store that another process (`viewstore run`) writes: reads,
    as-of reads, change streams and the leaderboard page, read-only."""
    from viewstore.serve.app import ServerConfig, create_app
    from viewstore.serve.hosting import allowed_hosts, check_exposure, http_server, parse_address
    from viewstore.store.sources import FollowerSource

    _setup_logging(verbose)
    try:
        host, port = parse_address(http)
        check_exposure(host, http_token, http_insecure)
        source = FollowerSource(data_dir)
    except ViewstoreError as exc:
        _fail(exc)
    try:
        # A follower catches up with a ~10 ms read of the writer's log: look every 20 ms.
        config = ServerConfig(
            source, http_token, poll_interval=0.02, allowed_hosts=allowed_hosts(host)
        )
        log.info("serving http://%s:%d/ from %s", host, port, data_dir)
        http_server(create_app(config), host, port).run()
    finally:
        source.close()


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.argument("view")
@click.option("--since", metavar="LSN", help="Changes committed after this LSN (default: now).")
@click.option("--snapshot", is_flag=True, help="First the view's rows as of --since (or now).")
@click.option("--until", metavar="LSN", help="Stop after the changes up to this LSN.")
def subscribe(
    data_dir: Path, view: str, since: str | None, snapshot: bool, until: str | None
) -> None:
    """Print VIEW's changes as they commit, one JSON object per line (the same stream as
    GET /views/{name}/changes): {"lsn", "commit_time", "diff": 1|-1, "row"}, and
    {"progress": LSN} once everything up to LSN was printed. Resume with --since LSN."""
    import viewstore

    try:
        for event in viewstore.open(data_dir).subscribe(
            view, since, snapshot=snapshot, until=until
        ):
            click.echo(json.dumps(event, separators=(",", ":")))
    except ViewstoreError as exc:
        _fail(exc)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): not an error


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option("--dsn", envvar="VIEWSTORE_DSN", help="Also report lag behind this server.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data_dir: Path, dsn: str | None, as_json: bool) -> None:
    """Applied LSN, mirrored tables and views with row counts, slot, and lag (with --dsn)."""
    from viewstore.store.status import read_status

    try:
        report = read_status(data_dir, dsn)
    except ViewstoreError as exc:
        _fail(exc)
    if as_json:
        click.echo(report.model_dump_json())
        return
    if report.state is not None:
        click.echo(f"state         {report.state}")
    applied = report.applied_lsn
    if report.snapshot == "in_progress":
        applied += " (nothing yet: the snapshot is not complete)"
    elif not report.views_live:
        applied += " (the mirror's; views are not live until they are built)"
    click.echo(f"applied LSN   {applied}")
    if report.applied_time:
        click.echo(f"applied at    {report.applied_time}")
    click.echo(f"snapshot      {report.snapshot}")
    click.echo(f"slot          {report.slot}")
    click.echo(f"publication   {report.publication}")
    if report.lag_bytes is not None:
        click.echo(f"lag           {report.lag_bytes:,} bytes behind {report.server_lsn}")
    click.echo(f"transactions  {report.transactions:,} applied ({report.rows:,} row changes)")
    click.echo("tables:")
    for t in report.tables:
        copying = ""
        if t.progress is not None:
            copying = "  " + ("" if t.progress.waiting else "copying: ") + t.progress.describe()
        click.echo(f"  {t.name:<40} {t.rows:>12,} rows{copying}")
    if report.views:
        click.echo("views:")
    for v in report.views:
        state = "" if v.state == "ready" else f" ({v.state})"
        if v.progress is not None:
            state = f"  building: {v.progress.describe()}"
        elif v.state == "pending":
            state = "  (waiting: built after the snapshot and the views before it)"
        click.echo(f"  {v.name:<40} {v.rows:>12,} rows{state}")


def _print_rows(columns: list[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps({c: json_value(v) for c, v in zip(columns, r, strict=True)}))
    elif fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        for r in rows:
            out.writerow([text(v) for v in r])
    else:
        cells = [[text(v) for v in r] for r in rows]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        click.echo(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        click.echo("-+-".join("-" * w for w in widths))
        for row in cells:
            click.echo(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.argument("view")
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="COL=VALUE",
    help="Only rows whose column equals the value (repeatable; uses an index).",
)
@click.option("--order-by", metavar="COL", help="Order by this column (uses its sort index).")
@click.option("--desc", is_flag=True, help="Descending order (NULLs first, as in Postgres).")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option(
    "--as-of",
    "as_of",
    metavar="LSN",
    help="The view as of this LSN (Postgres's form, 0/1532260): after the last transaction "
    "committed at or before it.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="json: one object per line, numeric values as exact decimal text.",
)
def query(
    data_dir: Path,
    view: str,
    where: tuple[str, ...],
    order_by: str | None,
    desc: bool,
    limit: int | None,
    as_of: str | None,
    fmt: str,
) -> None:
    """Print the current rows of VIEW, or its rows as of an LSN (also while `viewstore run`
    writes the store)."""
    import viewstore

    filters = {}
    for item in where:
        col, sep, value = item.partition("=")
        if not sep:
            _fail(
                ViewstoreError(f"--where {item!r}: expected COL=VALUE", hint="--where player_id=3")
            )
        filters[col.strip()] = value
    try:
        with viewstore.open(data_dir) as reader:
            columns = reader.view_columns(view)
            rows = reader.query(
                view, where=filters, order_by=order_by, desc=desc, limit=limit, as_of=as_of
            )
    except ViewstoreError as exc:
        _fail(exc)
    _print_rows(columns, [tuple(r[c] for c in columns) for r in rows], fmt)


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.argument("sql", required=False)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run this SQL file first, e.g. scripts/leaderboard.sql's macros (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.option("--no-sync", is_flag=True, help="Query the copy as it is, without catching up.")
@click.option(
    "--allow-files",
    is_flag=True,
    help="Let the SQL read and write other files (COPY ... TO 'out.csv', read_csv, ATTACH, "
    "INSTALL/LOAD). Without it, the SQL sees the history and nothing else.",
)
@click.option("--batch-rows", type=click.IntRange(min=1), default=200_000, hidden=True)
def history(
    data_dir: Path,
    sql: str | None,
    files: tuple[Path, ...],
    fmt: str,
    no_sync: bool,
    allow_files: bool,
    batch_rows: int,
) -> None:
    """Run DuckDB SQL over the history of every view (also while `viewstore run` writes the
    store). Each view is a table named after it, with lsn, seq, commit_time, xid, op, row_key,
    its columns after each change and before_<column> before it; <view>_as_of(lsn('0/16B3748'))
    and <view>_at(TIMESTAMPTZ '...') give the view at a past point. The DuckDB copy
    (DATA/history.duckdb) catches up from the store first. Without SQL, it only catches up."""
    import duckdb

    from viewstore.store import historycopy

    _setup_logging(False)
    try:
        if not no_sync:
            try:
                result = historycopy.sync(
                    data_dir, batch_rows=batch_rows, crash=_crash_hook_from_env()
                )
            except (KeyboardInterrupt, duckdb.InterruptException, RuntimeError) as exc:
                # Ctrl-C inside DuckDB's append comes out as its interrupt (a RuntimeError).
                if isinstance(exc, RuntimeError) and "interrupted" not in str(exc):
                    raise
                click.echo(
                    "interrupted: the history copy stands at its last synced LSN; run "
                    "`viewstore history` again to go on",
                    err=True,
                )
                sys.exit(130)
            if sql is None:
                for view, n in sorted(result.appended.items()):
                    click.echo(f"{view}: {n:,} new changes")
                click.echo(f"history copy synced to {result.synced_lsn} in {result.seconds:.1f} s")
        if sql is None and not files:
            return
        con = historycopy.connect(data_dir, sync_first=False, allow_files=allow_files)
    except ViewstoreError as exc:
        _fail(exc)
    try:
        for path in files:
            con.execute(path.read_text())
        if sql is None:
            return
        cursor = con.execute(sql)
        if cursor.description is None:
            return
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        locked = "configuration has been locked" in str(exc)
        sandboxed = not allow_files and (isinstance(exc, duckdb.PermissionException) or locked)
        _fail(
            ViewstoreError(
                f"DuckDB: {exc}",
                hint="the SQL may read the history only; to export to or read from files, "
                "add --allow-files (trusted SQL only)"
                if sandboxed
                else "the tables are the views' names; viewstore history --data DIR "
                '"SHOW TABLES" lists them',
            )
        )
    finally:
        con.close()
    _print_rows(columns, rows, fmt)


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--to",
    "warehouse",
    required=True,
    metavar="WAREHOUSE",
    help="Where the Parquet files go: a directory, or s3://bucket/prefix.",
)
@click.option(
    "--catalog",
    metavar="CATALOG",
    help="The Iceberg SQL catalog: a SQLite file (default DATA/iceberg-catalog.db) or a "
    "Postgres connection string (its password is never printed).",
)
@click.option("--namespace", default="viewstore", show_default=True, metavar="NS")
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="An S3-compatible server (or $AWS_ENDPOINT_URL); credentials come from "
    "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY only.",
)
@click.option(
    "--commit-rows",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Changes per Iceberg commit (each commit's snapshot records its LSN range).",
)
@click.option("--batch-rows", type=click.IntRange(min=1), default=200_000, hidden=True)
def export(
    data_dir: Path,
    warehouse: str,
    catalog: str | None,
    namespace: str,
    s3_endpoint: str | None,
    commit_rows: int,
    batch_rows: int,
) -> None:
    """Append each view's history to an Apache Iceberg table NAMESPACE.VIEW (Parquet files
    partitioned by day of commit time, in a SQL catalog), up to the store's applied LSN, also
    while `viewstore run` writes the store. Exactly once: each commit records the LSN range it
    covers, and a killed export resumes after the last one committed. Spark, Trino and DuckDB
    read the tables (README: History past one machine)."""
    from viewstore.store import lakeexport

    _setup_logging(False)
    try:
        target = lakeexport.target(
            data_dir, warehouse, catalog=catalog, namespace=namespace, s3_endpoint=s3_endpoint
        )
        result = lakeexport.export(
            data_dir,
            target,
            batch_rows=batch_rows,
            commit_rows=commit_rows,
            hook=_crash_hook_from_env(),
        )
    except ViewstoreError as exc:
        _fail(exc)
    for view, n in sorted(result.appended.items()):
        click.echo(f"{view}: {n:,} new changes in {result.commits[view]} commit(s)")
    rate = f" ({result.rows / result.seconds:,.0f} rows/s)" if result.rows else ""
    click.echo(f"exported up to {result.exported_lsn} in {result.seconds:.1f} s{rate}")


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--views",
    "views_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Explain a view of this file (default: the views the store keeps).",
)
@click.argument("view")
def explain(data_dir: Path, views_file: Path | None, view: str) -> None:
    """How the engine keeps VIEW current: its joins, pushdown, group key, aggregates and sort
    indexes, then the Python it generates for it. Compiled against the tables the store in
    --data mirrors (also while `run` writes it)."""
    from viewstore.store.db import Store
    from viewstore.store.viewcatalog import (
        compile_views,
        read_views_file,
        stored_views,
        views_from_store,
    )
    from viewstore.views.explain import explain as explain_plan

    try:
        with Store.open(data_dir, readonly=True) as store:
            tables = store.tables()
            defs = read_views_file(views_file) if views_file else views_from_store(store)
            stored = stored_views(store)
        found = [d for d in defs if d.name == view]
        if not found:
            where = views_file or "the store"
            raise ConfigError(
                f"no view {view} in {where}",
                hint="views there: " + (", ".join(d.name for d in defs) or "none"),
            )
        plans = [plan for plan, _ in compile_views(defs, tables, stored)]
        click.echo(explain_plan(next(p for p in plans if p.name == view)), nl=False)
    except ViewstoreError as exc:
        _fail(exc)


@main.command()
@click.option(
    "--dsn",
    required=True,
    envvar="VIEWSTORE_DSN",
    help="Postgres connection string (or $VIEWSTORE_DSN). Passwords are never printed.",
)
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path))
@click.argument("views", nargs=-1)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for the store to apply the snapshot's LSN.",
)
def verify(dsn: str, data_dir: Path, views: tuple[str, ...], timeout: float) -> None:
    """Compare VIEWS (default: all) with Postgres running their SQL, as of one LSN.

    Exit status 1 when a view differs; the differing rows are printed.
    """
    from viewstore.store.verify import verify as run_verify

    try:
        checks = run_verify(dsn, data_dir, views, timeout=timeout, progress=click.echo)
    except ViewstoreError as exc:
        _fail(exc)
    failed = False
    for c in checks:
        if c.ok:
            click.echo(f"{c.view}: OK, {c.rows:,} rows equal Postgres as of {c.lsn}")
            continue
        failed = True
        click.echo(
            f"{c.view}: DIFFERS as of {c.lsn}: {len(c.missing)} row(s) only in Postgres, "
            f"{len(c.extra)} only in the store"
        )
        for r in c.missing[:20]:
            click.echo("  only in Postgres: " + " | ".join(text(v) for v in r))
        for r in c.extra[:20]:
            click.echo("  only in store:    " + " | ".join(text(v) for v in r))
    sys.exit(1 if failed else 0)


@main.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop after this many seconds. Default: at Ctrl-C.",
)
@click.option(
    "--transactions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after the workload has committed N transactions. Default: at Ctrl-C.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=20,
    show_default=True,
    metavar="TX_PER_S",
    help="Transactions per second the workload commits.",
)
@click.option(
    "--players",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    metavar="N",
    help="Players added to the seed's five before the snapshot, with a few scores each.",
)
@click.option(
    "--dsn",
    # No envvar on purpose: $VIEWSTORE_DSN names the user's real database, and the demo
    # creates tables; it must be asked for explicitly.
    help="Use this empty database instead of a throwaway Postgres. The demo's tables stay "
    "there; its slot and publication are dropped at the end.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the store in this new or empty directory. Default: a temporary one, removed.",
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    default="127.0.0.1:8080",
    show_default=True,
    help="Also serve the HTTP API and the live leaderboard page here (a free port instead "
    "when this one is taken; the URL is printed).",
)
@click.option("--no-http", is_flag=True, help="Do not serve the HTTP API and the page.")
@click.option(
    "--http-insecure",
    is_flag=True,
    help="Allow a non-loopback --http address (the demo serves without a token).",
)
def demo(
    duration: float | None,
    transactions: int | None,
    rate: float,
    players: int,
    dsn: str | None,
    data_dir: Path | None,
    http: str,
    no_http: bool,
    http_insecure: bool,
) -> None:
    """Keep the seed's leaderboard view current under a live workload, showing its top 10 in
    the terminal and on a live page in the browser, then check it against Postgres."""
    from viewstore.demo import run_demo
    from viewstore.serve.hosting import HttpAlongside, check_exposure, parse_address

    _setup_logging(False, default=logging.WARNING)  # warnings only: the screen is the output
    try:
        if not no_http:  # a typo or an open address fails now, not after Postgres has started
            check_exposure(parse_address(http)[0], None, http_insecure)
        run_demo(
            duration,
            rate,
            players,
            sys.stdout,
            transactions=transactions,
            dsn=dsn,
            data_dir=data_dir,
            http=None if no_http else http,
            serve_http=lambda pipeline, address: HttpAlongside(
                pipeline, address, any_port_if_busy=True, insecure=http_insecure
            ),
        )
    except ViewstoreError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # a second Ctrl-C: the clean-up has run, the checks did not
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
