"""views: the SQL compiler, no RocksDB.

A view's `CREATE MATERIALIZED VIEW` text is parsed by Postgres's grammar (`sql`, into the tree of
`tree`), bound to its tables' columns and typed with Postgres's rules (`resolve`, against the
table shapes of `schema`), and planned into what the store's engine runs (`plan`). `pgvalues`
holds Postgres value semantics (types, casts, exact arithmetic, comparisons); `expr` compiles
expressions into closures over rows on top of it; `aggregates` folds weighted values per group.
"""
