"""Schema: the shape of a mirrored source table, as the compiler and the store both see it.

A table's columns as replicated (attnum order, with their type OIDs) and the key that names a
row. The pipeline records one per published table in the store's metadata (`store.db`); the
compiler (`views.plan`) compiles views against them.
"""

from __future__ import annotations

from pydantic import BaseModel


class ColumnInfo(BaseModel):
    name: str
    type_oid: int


class TableInfo(BaseModel):
    """A mirrored table: its columns as replicated (attnum order) and the key that names a row."""

    table_id: int
    schema_name: str
    name: str
    columns: list[ColumnInfo]
    key: list[str]

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"

    @property
    def key_positions(self) -> tuple[int, ...]:
        names = [c.name for c in self.columns]
        return tuple(names.index(k) for k in self.key)

    @property
    def prefix(self) -> bytes:
        return self.table_id.to_bytes(4, "big")
