"""Tests for COPY text rows: what COPY sends must parse to what pgoutput sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from viewstore.ingest.copytext import parse_copy_row
from viewstore.ingest.pgoutput import Insert, decode

DATA = Path(__file__).parent / "data" / "typed"
ROWS = range(1, 8)


@pytest.mark.parametrize("n", ROWS)
def test_recorded_copy_rows_equal_pgoutput(n: int) -> None:
    # The same row of table `typed`, once from COPY TO STDOUT and once as a pgoutput Insert.
    copied = parse_copy_row((DATA / f"copy_{n}.bin").read_bytes())
    msg = decode((DATA / f"insert_{n}.bin").read_bytes())
    assert isinstance(msg, Insert)
    assert copied == msg.new
    assert all(v is None or type(v) is bytes for v in copied)


def test_recorded_escapes() -> None:
    row2 = parse_copy_row((DATA / "copy_2.bin").read_bytes())
    assert row2[8:13] == (b"tab\there", b"line\nbreak", b"a\\b  ", b"cr\rlf", b"\\")
    row3 = parse_copy_row((DATA / "copy_3.bin").read_bytes())
    assert row3[7] is None and row3[8] == b"\\N" and row3[9] == b""
    row4_raw = (DATA / "copy_4.bin").read_bytes()
    assert b"\x01\x1c" in row4_raw  # control characters other than \b\f\n\r\t\v are sent raw
    assert parse_copy_row(row4_raw)[8] == b"ctl\x01\x1c\b\f\v\x7f end"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"\\b\\f\\n\\r\\t\\v", b"\b\f\n\r\t\v"),
        (b"\\\\", b"\\"),
        (b"\\\\N", b"\\N"),
        (b"a\\\\\\tb", b"a\\\tb"),
        (b"\\101\\0\\12", b"A\x00\n"),
        (b"\\1011", b"A1"),  # at most three octal digits
        (b"\\777", b"\xff"),  # like Postgres, keep the low 8 bits
        (b"\\x41\\x4\\x4g", b"A\x04\x04g"),
        (b"\\xZ", b"xZ"),  # no hex digit: an escaped 'x'
        (b"\\.\\q\\N2", b".qN2"),  # any other character stands for itself
        ("é\\t☃".encode(), "é\t☃".encode()),
    ],
)
def test_unescape(field: bytes, value: bytes) -> None:
    assert parse_copy_row(b"1\t" + field + b"\t3\n") == (b"1", value, b"3")


def test_null_only_as_the_whole_field() -> None:
    assert parse_copy_row(b"\\N\t\\N\n") == (None, None)
    assert parse_copy_row(b"\\Nx\tx\\N\n") == (b"Nx", b"xN")


def test_newline_optional_and_buffers() -> None:
    assert parse_copy_row(b"a\tb") == (b"a", b"b")
    assert parse_copy_row(memoryview(b"a\t\\tb\n")) == (b"a", b"\tb")
    assert parse_copy_row(bytearray(b"a\t\n")) == (b"a", b"")
    assert parse_copy_row(b"\n") == (b"",)


def copy_escape(value: bytes) -> bytes:
    """COPY TO's escaping, as in Postgres's CopyAttributeOutText with a tab delimiter."""
    out = value.replace(b"\\", b"\\\\")
    for raw, esc in [
        (b"\b", b"\\b"),
        (b"\f", b"\\f"),
        (b"\n", b"\\n"),
        (b"\r", b"\\r"),
        (b"\t", b"\\t"),
        (b"\v", b"\\v"),
    ]:
        out = out.replace(raw, esc)
    return out


@given(
    st.lists(
        st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\0")).map(str.encode),
        min_size=1,
        max_size=8,
    )
)
def test_round_trip(values: list[bytes | None]) -> None:
    line = b"\t".join(b"\\N" if v is None else copy_escape(v) for v in values) + b"\n"
    assert parse_copy_row(line) == tuple(values)
