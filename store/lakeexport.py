"""Lake export: write a data directory's history to Iceberg tables, once or alongside `run`.

The export itself is `viewstore.history.iceberg`; this builds its target from what the user
names (a warehouse directory or s3:// URL, a catalog: a SQLite file by default, or a Postgres
database), opens the store read-only (so it runs while `viewstore run` writes it) and hands it
the store's ready views. `Alongside` repeats the export in a thread of `viewstore run --export`.

Secrets never reach a log or an error: the catalog's password and the S3 credentials (taken
from the environment only, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, never
from the command line) are scrubbed from every message the export raises.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from viewstore.errors import ConfigError, ViewstoreError
from viewstore.history import iceberg
from viewstore.history.iceberg import ExportResult, Hook, Target
from viewstore.store.db import Store
from viewstore.store.viewcatalog import stored_views

log = logging.getLogger("viewstore")

CATALOG_FILE = "iceberg-catalog.db"  # the default catalog, in the data directory


def target(
    data_dir: str | Path,
    warehouse: str,
    *,
    catalog: str | None = None,
    namespace: str = "viewstore",
    s3_endpoint: str | None = None,
) -> Target:
    """The export target: `warehouse` a local directory or an s3://bucket/prefix URL;
    `catalog` None (a SQLite file in the data directory), a SQLite file's path or sqlite:///
    URL, or a Postgres connection string (URI or key=value; read with psycopg)."""
    if "://" in warehouse and not warehouse.startswith(("s3://", "s3a://", "file://")):
        raise ConfigError(
            f"--export {warehouse!r}: only a local directory or s3://bucket/prefix is supported",
            hint="--export /path/to/warehouse or --export s3://bucket/viewstore",
        )
    if "://" not in warehouse:
        local = Path(warehouse).resolve()
        local.mkdir(parents=True, exist_ok=True)
        warehouse = local.as_uri()
    uri, secrets = _catalog_uri(data_dir, catalog)
    props: dict[str, str] = {}
    env = os.environ
    endpoint = s3_endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        props["s3.endpoint"] = endpoint
    for prop, var in (
        ("s3.access-key-id", "AWS_ACCESS_KEY_ID"),
        ("s3.secret-access-key", "AWS_SECRET_ACCESS_KEY"),
        ("s3.session-token", "AWS_SESSION_TOKEN"),
    ):
        if env.get(var):
            props[prop] = env[var]
            if var != "AWS_ACCESS_KEY_ID":
                secrets.append(env[var])
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        props["s3.region"] = region or "us-east-1"  # an S3-compatible server takes any
    return Target(uri, warehouse, namespace, props, tuple(secrets))


def _catalog_uri(data_dir: str | Path, catalog: str | None) -> tuple[str, list[str]]:
    """(SQLAlchemy URL, secrets in it) of the catalog the user named."""
    if catalog is None:
        return f"sqlite:///{Path(data_dir).resolve() / CATALOG_FILE}", []
    if catalog.startswith("sqlite:"):
        return catalog, []
    if catalog.startswith(("postgres://", "postgresql://")) or "=" in catalog:
        from sqlalchemy.engine import URL

        from viewstore.dsn import params as dsn_params
        from viewstore.dsn import secrets_of

        try:
            params = dsn_params(catalog)
        except ValueError:
            raise ConfigError(
                "--export-catalog: not a Postgres connection string",
                hint="postgresql://user@host:5432/db or 'host=... dbname=...' "
                "(the password: PGPASSWORD or ~/.pgpass work too)",
            ) from None
        url = URL.create(
            "postgresql+psycopg",  # psycopg 3, which viewstore uses already
            username=params.pop("user", None),
            password=params.pop("password", None),
            host=params.pop("host", None),
            port=int(params.pop("port")) if "port" in params else None,
            database=params.pop("dbname", None),
            query=params,
        )
        return url.render_as_string(hide_password=False), secrets_of(catalog)
    return f"sqlite:///{Path(catalog).resolve()}", []


def export(
    data_dir: str | Path,
    to: Target,
    *,
    batch_rows: int = 200_000,
    commit_rows: int = 1_000_000,
    hook: Hook | None = None,
) -> ExportResult:
    """Append each ready view's history up to the store's applied LSN to its Iceberg table."""
    store = Store.open(data_dir, readonly=True)
    try:
        views = {name: info for name, info in stored_views(store).items() if info.state == "ready"}
        return iceberg.export_store(
            store, views, to, batch_rows=batch_rows, commit_rows=commit_rows, hook=hook
        )
    finally:
        store.close()


class Alongside:
    """`run --export`: export every `interval` seconds in a thread, and once more when
    stopped, so the tables follow ingest. A failed round is logged and retried next time."""

    def __init__(self, data_dir: str | Path, to: Target, interval: float) -> None:
        self.data_dir, self.to, self.interval = Path(data_dir), to, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iceberg-export", daemon=True)
        self._thread.start()

    def _round(self) -> None:
        if not (self.data_dir / "CURRENT").exists():
            return  # the store is not created yet
        try:
            done = export(self.data_dir, self.to)
        except ViewstoreError as exc:
            log.warning("iceberg export: %s (retrying in %.0f s)", exc, self.interval)
            return
        if done.rows:
            log.info(
                "iceberg export: %s rows up to %s in %.1f s", done.rows, done.exported_lsn,
                done.seconds,
            )  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._round()

    def stop(self) -> None:
        """Stop the thread, then export what the store holds now."""
        self._stop.set()
        self._thread.join()
        self._round()
