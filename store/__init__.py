"""store: the RocksDB side.

`db` owns the RocksDB handle and what its metadata means; `engine` applies compiled views
(`viewstore.views`) to batches of changed rows; `apply` writes a group of committed transactions
(mirror, view state, history, applied LSN) in one atomic write; `viewcatalog` keeps the views a
store maintains; `pipeline` supervises ingest -> apply; `viewread`, `reader`, `sources`, `status`
and `feed` read the current state; `verify` checks it against Postgres.
"""
