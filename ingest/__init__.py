"""ingest: the Postgres side, no RocksDB.

Bytes from the replication connection become committed transactions, in commit order:
`lsn` (the `Lsn` value type), `values` (Postgres text to Python values), `copytext`, `walproto`
(the CopyData frames of the replication protocol), `pgoutput` (bytes in, frozen messages out),
`transactions` (messages in, committed transactions out, no I/O), `pgconn` (the only psycopg
import), `setup` (preflight, slot and publication), `snapshot` (the initial COPY). Imports none
of store/, history/, views/ or serve/.
"""
