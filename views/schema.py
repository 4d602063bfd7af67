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
    # Catalog facts the store checks the source against (store.sourcecheck); None in stores
    # made before they were recorded, and in tables made without Postgres.
    typmod: int | None = None
    attnum: int | None = None
    version: int | None = None  # xmin of its pg_attribute row: any ALTER of the column moves it


class TableInfo(BaseModel):
    """A mirrored table: its columns as replicated (attnum order) and the key that names a row."""

    table_id: int
    schema_name: str
    name: str
    columns: list[ColumnInfo]
    key: list[str]
    # The relation's OID and replica identity when the snapshot copied it: a table dropped and
    # created again under the same name is another table (store.sourcecheck).
    oid: int | None = None
    replica_identity: str | None = None

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
