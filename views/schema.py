"""Schema: the shape of a mirrored source table, as the compiler and the store both see it.

A table's columns as replicated (attnum order, with their type OIDs) and the key that names a
row. The pipeline records one per published table in the store's metadata (`store.db`); the
compiler (`views.plan`) compiles views against them.
"""

from __future__ import annotations

from pydantic import BaseModel

# The types `TableInfo.of` understands, by Postgres's internal names.
_TYPE_OIDS = {
    "bool": 16, "int2": 21, "int4": 23, "int8": 20, "text": 25, "numeric": 1700,
    "float8": 701, "date": 1082, "timestamptz": 1184,
}  # fmt: skip


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

    @classmethod
    def of(cls, table_id: int, qualified: str, columns: str, key: str = "id") -> TableInfo:
        """A table from text, for tests and benchmarks that make a store without Postgres:
        `TableInfo.of(2, "public.scores", "id int4, score numeric, player_id int4")`."""
        schema, name = qualified.split(".")
        cols = [c.split() for c in columns.split(",")]
        return cls(
            table_id=table_id,
            schema_name=schema,
            name=name,
            columns=[ColumnInfo(name=n, type_oid=_TYPE_OIDS[t]) for n, t in cols],
            key=key.split(","),
        )

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
