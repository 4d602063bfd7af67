"""history: the LSN-keyed change log of every view.

`keys` owns the history key layout (view id, commit LSN, sequence); `changelog` writes entries
and reads them back (changes since an LSN, rows as of an LSN); `retention` drops what is older
than a view keeps; `duckdb_copy` copies the log into DuckDB for analysis. History reads and
writes the store through the small typed interface in `access`, never through store's modules.
"""
