"""Columnar COPY parsing and row encoding equal the row path, value for value, byte for byte.

`copychunks.parse_chunk` + `codecs.rowcolumns.encode_rows` (the snapshot's columnar path) against
`copytext.parse_copy_row` + `codecs.row.encode_row` (the row path), on generated COPY text. The
same comparison against a real Postgres, every type included: tests/store/test_snapshot_columnar.py.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_copytext import copy_escape

from viewstore.codecs.row import encode_row
from viewstore.codecs.rowcolumns import encode_rows
from viewstore.ingest.copychunks import parse_chunk
from viewstore.ingest.copytext import parse_copy_row

# What COPY escapes, what a CSV reader treats specially, a byte order mark, multi-byte text.
TRICKY = st.sampled_from(
    ["\\", "\t", "\n", "\r", "\\N", "N", '"', "'", "#", ",", "\ufeff", "\x01", "é", "☃", "a", ""]
)
VALUE = st.none() | st.lists(TRICKY, max_size=6).map(lambda parts: "".join(parts).encode())


def _both_paths(lines: list[bytes], ncols: int) -> None:
    chunk = bytearray(b"".join(lines))
    rows = [parse_copy_row(line) for line in lines]
    columns = parse_chunk(chunk, ncols)
    assert [tuple(c[i].as_py() for c in columns) for i in range(len(rows))] == rows
    assert encode_rows(columns).to_pylist() == [encode_row(r) for r in rows]
    keys = encode_rows([columns[-1], columns[0]], prefix=b"\x00\x00\x00\x07").to_pylist()
    assert keys == [b"\x00\x00\x00\x07" + encode_row((r[-1], r[0])) for r in rows]


@settings(max_examples=300, deadline=None)  # a loaded CI machine is slow, not wrong
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(VALUE, min_size=n, max_size=n))))
def test_columnar_equals_row_path(rows: list[list[bytes | None]]) -> None:
    ncols = len(rows[0]) if rows else 1
    lines = [b"\t".join(b"\\N" if v is None else copy_escape(v) for v in r) + b"\n" for r in rows]
    _both_paths(lines, ncols)


def test_edge_chunks() -> None:
    _both_paths([b"\n", b"\n", b"x\n", b"\\N\n"], 1)  # empty lines are rows of one empty value
    _both_paths([b"\xef\xbb\xbfbom\t1\n", b"b\t\\N\n"], 2)  # a leading BOM stays
    _both_paths([b"a\\\\b\t\\\\N\t\\N\n"], 3)  # backslashes: the exact path; `\N` only whole
    _both_paths([b"raw\rcr\t1\n"], 2)  # never from COPY, still read as Postgres would
    assert [c.to_pylist() for c in parse_chunk(bytearray(), 2)] == [[], []]
