"""Source text: the text of a SQL_ASCII database, read in the encoding its clients write.

Postgres converts text from the database's encoding to the client's (UTF8 on viewstore's
connections) for every server encoding but SQL_ASCII, which declares none: its bytes are
whatever clients stored, and Postgres sends them as UTF8 only if they happen to be valid UTF-8
(otherwise the COPY fails and the walsender stops with "invalid byte sequence"). So in a
SQL_ASCII database viewstore reads the COPY and the stream raw (client_encoding SQL_ASCII) and
decodes them here, in the encoding `--source-encoding` names (UTF8 unless told otherwise), into
the UTF-8 the mirror holds. A value that is not valid in that encoding raises `BadText`, which
`bad_text` turns into an error naming the table, the column and where it was read: never a
value guessed at.

Only encodings in which every byte below 0x80 is its ASCII character and never part of a longer
one are accepted: COPY's escapes (backslash, tab, newline) are then the same bytes before and
after, so a whole chunk of COPY text is decoded before it is parsed. No I/O here.
"""

from __future__ import annotations

from viewstore.errors import ConfigError, UnsupportedError

__all__ = ["ENCODINGS", "BadText", "SourceText", "bad_text", "normalise"]

# Postgres's names for the encodings a SQL_ASCII database's text may be read in -> Python codecs.
_LATIN = (1, 2, 3, 4, 9, 10, 13, 14, 15, 16)  # LATINn is ISO 8859-_LATIN[n - 1]
_WIN = (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)
ENCODINGS: dict[str, str] = {
    "UTF8": "utf-8",
    **{f"LATIN{n}": f"iso8859-{part}" for n, part in enumerate(_LATIN, start=1)},
    **{f"ISO_8859_{n}": f"iso8859-{n}" for n in (5, 6, 7, 8)},
    **{f"WIN{n}": f"cp{n}" for n in _WIN},
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
}

# What every byte reads as one character, as Postgres itself counts and compares SQL_ASCII text.
BYTEWISE = "LATIN1"


def normalise(name: str) -> str:
    """Postgres's name for an encoding given as `latin1`, `UTF-8`, `win1252`...; ConfigError
    for one a SQL_ASCII database's text cannot be read in."""
    key = name.upper().replace("-", "").replace("_", "")
    for known in ENCODINGS:
        if known.replace("_", "") == key:
            return known
    raise ConfigError(
        f"unknown source encoding {name!r}",
        hint="name one of Postgres's encodings: " + ", ".join(ENCODINGS),
    )


class BadText(Exception):
    """A value that is not valid in the source encoding: the column's position and the value."""

    def __init__(self, column: int, value: bytes, encoding: str) -> None:
        super().__init__(column, value, encoding)
        self.column, self.value, self.encoding = column, value, encoding


class SourceText:
    """Decodes a SQL_ASCII database's text from `encoding` (a key of ENCODINGS) into UTF-8."""

    def __init__(self, encoding: str) -> None:
        self.encoding = normalise(encoding)
        self._codec = ENCODINGS[self.encoding]
        self._utf8 = self.encoding == "UTF8"  # only checked: the bytes stay as they are

    def chunk(self, data: bytearray) -> bytes | bytearray:
        """Whole rows of COPY text, in UTF-8 (BadText names the column of a bad value)."""
        if data.isascii():
            return data
        try:
            text = data.decode(self._codec)
        except UnicodeDecodeError as exc:
            start = data.rfind(b"\n", 0, exc.start) + 1
            column = data.count(b"\t", start, exc.start)
            field_start = data.rfind(b"\t", start, exc.start) + 1 or start
            ends = [i for i in (data.find(b"\t", exc.start), data.find(b"\n", exc.start)) if i >= 0]
            raise BadText(column, bytes(data[field_start : min(ends)]), self.encoding) from None
        return data if self._utf8 else text.encode()

    def values(self, values: tuple) -> tuple:  # type: ignore[type-arg]
        """A pgoutput tuple with every text value in UTF-8 (None and 'unchanged' kept)."""
        out = None
        for i, v in enumerate(values):
            if type(v) is bytes and not v.isascii():
                try:
                    text = v.decode(self._codec)
                except UnicodeDecodeError:
                    raise BadText(i, v, self.encoding) from None
                if not self._utf8:
                    if out is None:
                        out = list(values)
                    out[i] = text.encode()
        return values if out is None else tuple(out)


def bad_text(table: str, column: str, where: str, exc: BadText) -> UnsupportedError:
    """The error for a value `exc` found in `table`.`column`, read `where` (an LSN phrase). Its
    hint, followed, rebuilds the store reading every byte as one character, as Postgres does."""
    return UnsupportedError(
        f"table {table}, column {column}: {exc.value[:60]!r} is not {exc.encoding} text ({where}); "
        f"the database's encoding is SQL_ASCII, which lets clients store any bytes, and viewstore "
        f"reads its text as {exc.encoding}",
        hint=f"viewstore run --resnapshot --source-encoding {BYTEWISE} ... (every byte one "
        "character, as Postgres counts and compares SQL_ASCII text; or the encoding your "
        "clients write, e.g. WIN1252)",
    )
