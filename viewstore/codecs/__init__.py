"""codecs: the byte encodings shared by the compiler, the store and history, no RocksDB.

`row` encodes mirrored rows (Postgres text values), `value` typed values and field lists (view
output, aggregate state, history entries), `key` order-preserving keys.
"""
