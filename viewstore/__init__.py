"""viewstore: durable SQL views over Postgres logical replication, with history by LSN.

The Python API mirrors the CLI: `viewstore.open(DIR)` reads what `viewstore run` wrote.
Importing `viewstore` is cheap: the reader (and with it RocksDB) loads on first use of
`viewstore.open` or `viewstore.Reader`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from viewstore.errors import ViewstoreError

if TYPE_CHECKING:
    from viewstore.store.reader import Reader, open

__all__ = ["Reader", "ViewstoreError", "open"]


def __getattr__(name: str) -> Any:
    if name in ("Reader", "open"):
        from viewstore.store import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'viewstore' has no attribute {name!r}")
