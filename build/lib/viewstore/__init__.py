"""viewstore: durable SQL views over Postgres logical replication, with history by LSN.

The Python API mirrors the CLI: `viewstore.open(DIR)` reads what `viewstore run` wrote.
"""

from __future__ import annotations

from viewstore.errors import ViewstoreError
from viewstore.store.reader import Reader, open

__all__ = ["Reader", "ViewstoreError", "open"]
