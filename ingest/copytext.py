r"""Copytext: parse one row of COPY ... TO STDOUT in text format.

The initial snapshot of a table is read with COPY, whose text format escapes what would break
its framing; pgoutput sends the same values unescaped. `parse_copy_row` undoes the escaping, so
that a value read from COPY is byte for byte the text pgoutput sends for it, and one converter
(`viewstore.ingest.values`) serves both.

The format, as Postgres writes it (see the COPY docs, "Text Format"): one row per line, ended
by a newline; columns separated by a tab; `\N` alone is NULL; a backslash escapes `\b \f \n
\r \t \v` and itself. Other control characters are sent raw. COPY TO writes no other escapes,
but the reader accepts everything COPY FROM does: `\NNN` octal (1 to 3 digits) and `\xHH` hex
(1 or 2 digits) byte values, and a backslash before any other character stands for that
character. Rows are split on tabs before unescaping: a backslash before a raw tab, which COPY
TO never writes (it writes `\t`), is not read as an escaped delimiter. Postgres sends each row
as one CopyData message; the caller passes one message per call.
"""

from __future__ import annotations

import re

__all__ = ["parse_copy_row", "unescape_field"]

_SIMPLE = {
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("v"): b"\v",
}

_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.DOTALL)


def _unescape_one(m: re.Match[bytes]) -> bytes:
    octal, hexa, char = m.groups()
    if octal is not None:
        # As in Postgres's CopyReadAttributesText: \777 keeps the low 8 bits.
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    return _SIMPLE.get(char[0], char)


def unescape_field(field: bytes) -> bytes | None:
    """One raw COPY text field as its value: `\\N` alone is NULL, else escapes undone.

    The exact text path for one field: `parse_copy_row` applies it to every field holding a
    backslash, and the columnar snapshot (`copychunks`) to the few values that hold one.
    """
    if field == b"\\N":
        return None
    return _ESCAPE.sub(_unescape_one, field) if b"\\" in field else field


def parse_copy_row(data: bytes | memoryview) -> tuple[bytes | None, ...]:
    """Split one COPY text row into its column values: bytes, or None for NULL.

    The trailing newline is optional. A field without a backslash is returned as is; only the
    others go through unescaping.
    """
    row = bytes(data)
    if row.endswith(b"\n"):
        row = row[:-1]
    if b"\\" not in row:
        return tuple(row.split(b"\t"))
    fields: list[bytes | None] = row.split(b"\t")
    for i, field in enumerate(fields):
        # `\N` is NULL only as the whole raw field; an escaped `\\N` is the text "\N".
        if field is not None and b"\\" in field:
            fields[i] = unescape_field(field)
    return tuple(fields)
