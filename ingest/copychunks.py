r"""Copychunks: a chunk of COPY text rows parsed column by column (issue 14).

The snapshot reads COPY in chunks of whole rows (`pgconn.copy_chunks`) and parses each chunk at
once with pyarrow's CSV reader: tab as the delimiter, no quoting, no escaping, `\N` as NULL, no
header, every column as `binary`. The values it returns are byte for byte those
`copytext.parse_copy_row` returns row by row, because:

- COPY TO escapes every tab, newline and carriage return inside a value (`\t \n \r`), so a raw
  tab always ends a field and a raw newline a row, as both parsers read them;
- a field that holds a backslash, the only escape character, is passed through the exact text
  path (`copytext.unescape_field`); a field that is `\N` alone is NULL, as there;
- what the CSV reader would read differently from Postgres's format is checked for and such a
  chunk goes through the row path whole: a UTF-8 byte order mark at the start of the chunk
  (the reader drops it) and a raw carriage return (the reader ends a row there; COPY never
  writes one raw). The number of rows parsed is checked against the newlines in the chunk.

pyarrow is imported on first use, so that `import viewstore` stays cheap.
"""

from __future__ import annotations

from typing import Any

from viewstore.ingest.copytext import parse_copy_row, unescape_field

__all__ = ["parse_chunk"]

_BOM = b"\xef\xbb\xbf"


def parse_chunk(data: bytes | bytearray, ncols: int) -> list[Any]:
    """The columns (pyarrow `binary` arrays, NULL as null) of whole COPY text rows.

    `data` holds whole rows, each ended by a newline; `ncols` is the number of columns.
    """
    import pyarrow as pa

    if not data:
        return [pa.array([], pa.binary()) for _ in range(ncols)]
    if data.startswith(_BOM) or b"\r" in data:
        return _row_path(data, ncols)
    table = _read(data, ncols)
    rows = data.count(b"\n")
    if table.num_rows != rows:
        raise ValueError(f"COPY chunk parsed into {table.num_rows} rows, but it holds {rows}")
    columns = [table.column(i).combine_chunks() for i in range(ncols)]
    if b"\\" not in data:  # most chunks: nothing to unescape, no column to search
        return columns
    return [_unescaped(column) for column in columns]


def _read(data: bytes | bytearray, ncols: int) -> Any:
    import pyarrow as pa
    import pyarrow.csv as csv

    names = [f"c{i}" for i in range(ncols)]
    return csv.read_csv(
        pa.py_buffer(data),
        # One block: a row must not straddle two blocks (the reader fails on a value longer
        # than a block, TOASTed values are). The snapshot runs several chunks at once instead.
        read_options=csv.ReadOptions(column_names=names, block_size=len(data) + 1),
        parse_options=csv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,  # an empty line is a row: one empty text value
        ),
        convert_options=csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.binary()),
            null_values=["\\N"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            check_utf8=False,
        ),
    )


def _unescaped(column: Any) -> Any:
    """`column` with every value that holds a backslash through the exact text path."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.match_substring(column, "\\")
    if not pc.any(mask).as_py():
        return column
    mask = mask.fill_null(False)
    raw = column.filter(mask).to_pylist()
    exact = pa.array([unescape_field(v) for v in raw], pa.binary())
    return pc.replace_with_mask(column, mask, exact)


def _row_path(data: bytes | bytearray, ncols: int) -> list[Any]:
    import pyarrow as pa

    rows = [parse_copy_row(line) for line in bytes(data).split(b"\n")[:-1]]
    for row in rows:
        if len(row) != ncols:
            raise ValueError(f"COPY row has {len(row)} columns, expected {ncols}: {row!r:.200}")
    return [pa.array([row[i] for row in rows], pa.binary()) for i in range(ncols)]
