"""Errors: one base class, each error says what failed and how to get out of it.

    ViewstoreError                  every error viewstore raises on purpose
    ├── ConfigError                 bad command-line input, views file, data dir
    │   ├── NotFound                no such view in the store
    │   └── NotReady                the view is still being built
    ├── SourceError                 talking to Postgres failed (`transient`: worth a retry)
    ├── PreflightError              Postgres is not set up the way replication needs
    ├── SlotError                   the slot is missing, lost, busy, or ahead of the store
    ├── DecodeError                 bytes from Postgres that the decoder cannot read
    ├── UnsupportedError            a table, type or schema change viewstore cannot follow
    └── StoreError                  the RocksDB store is missing, locked or inconsistent

Messages are lowercase "what failed: detail"; `hint` is the way out, printed by the CLI as
`Try: ...`. Neither ever contains a password (see `viewstore.dsn.redact`).
"""

from __future__ import annotations


class ViewstoreError(Exception):
    """Base of every error viewstore raises on purpose."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        return self.args[0]


class ConfigError(ViewstoreError):
    """Bad input from the user: options, views file, data directory."""


class NotFound(ConfigError):
    """The store has no view of that name."""


class NotReady(ConfigError):
    """The view exists but is still being built from the mirror."""


class SourceError(ViewstoreError):
    """Talking to Postgres failed. `transient` errors (a dropped connection, a server that is
    restarting) are retried with backoff; the others stop the pipeline."""

    def __init__(self, message: str, hint: str | None = None, *, transient: bool = False) -> None:
        super().__init__(message, hint)
        self.transient = transient


class PreflightError(ViewstoreError):
    """Postgres is not configured the way logical replication needs."""


class SlotError(ViewstoreError):
    """The replication slot is missing, invalidated, in use, or ahead of the store."""


class DecodeError(ViewstoreError):
    """Bytes from the replication stream or COPY that cannot be decoded."""


class UnsupportedError(ViewstoreError):
    """Something viewstore cannot follow exactly: it stops rather than guess."""


class StoreError(ViewstoreError):
    """The RocksDB store is missing, locked by another process, or inconsistent."""
