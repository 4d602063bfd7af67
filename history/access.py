"""Access: what history needs of the store, as a small typed interface.

History imports no store module. The store hands history objects that have these shapes:
`store.db.Store` is a `HistoryStore`, `store.viewcatalog.ViewInfo` a `ViewRecord`, and
`store.viewcatalog.CATALOG` the `ViewCatalog` (the views a store keeps, and how a changed view
record is written in the same batch as the history it describes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from viewstore.ingest.lsn import Lsn


class HistoryStore(Protocol):
    """The store's side of the history: its column family, batches and how far it has got."""

    @property
    def history(self) -> Any:
        """The `history` column family (iter(), get())."""

    @property
    def cf(self) -> Mapping[str, Any]:
        """Column family handles by name, for batch writes."""

    @property
    def large_txn_pending(self) -> bool:
        """A large transaction is partly written: its entries are not history yet."""

    def pending_history(self, key: bytes) -> bool:
        """Whether the history entry `key` belongs to a large transaction still being written."""

    def history_range(
        self, low: bytes, high: bytes, limit: int | None = None, *, values: bool = False
    ) -> list[bytes]:
        """Keys (or values) of the column family in [low, high), in key order, at most `limit`."""

    def history_entries_at_least(self, low: bytes, high: bytes) -> int:
        """A lower bound of the entries in [low, high), without reading them."""

    def applied_lsn(self) -> Lsn: ...

    def new_batch(self) -> Any: ...

    def write(self, batch: Any, *, sync: bool) -> None: ...


class ViewRecord(Protocol):
    """A stored view as history sees it."""

    name: str
    view_id: int
    state: str
    fingerprint: str
    columns: Any
    typmods: Mapping[str, Any]  # column -> [precision, scale] of a numeric(p, s) column

    @property
    def built_at(self) -> Any: ...

    @property
    def history_start(self) -> Lsn | None: ...

    def model_copy(self, *, update: Mapping[str, Any]) -> Any: ...


class ViewCatalog(Protocol):
    """The views a store keeps."""

    def views(self, store: Any) -> Mapping[str, Any]:
        """View name -> its record (a `ViewRecord`)."""

    def put(self, batch: Any, store: Any, info: Any) -> None:
        """Write a changed view record into `batch`."""
