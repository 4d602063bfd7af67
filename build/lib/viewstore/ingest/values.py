"""Values: turn the text form of a Postgres value into a Python value, by type OID.

pgoutput (in text mode) and COPY ... TO STDOUT both send each value as the text of the type's
output function; `converter(type_oid)` returns the function that parses that text. It is
looked up once per column, when a Relation arrives, and then called per value.

What each type becomes:

    int2, int4, int8, oid                   int
    numeric                                 decimal.Decimal, exact (NaN, ±Infinity too)
    float4, float8                          float (NaN, ±Infinity too)
    bool                                    bool
    text, varchar, bpchar, name, "char"     str (bpchar keeps its padding)
    date                                    datetime.date
    timestamp                               datetime.datetime, naive
    timestamptz                             datetime.datetime, aware, with the offset sent
    uuid                                    uuid.UUID
    json, jsonb                             the result of json.loads
    bytea                                   bytes
    anything else (arrays, enums, ...)      str, the text as sent

Values Python cannot represent stay the text `str` Postgres sent, unchanged: 'infinity' and
'-infinity' dates and timestamps, dates before year 1 ('0044-03-15 BC') and after 9999
('10000-01-01'). A numeric is never rounded and never goes through float: `Decimal` built from
a string keeps every digit whatever the decimal context.

The parsers assume the session settings the replication and COPY connections pin: client
encoding UTF8, DateStyle ISO, bytea_output hex, and (for tidiness only) TimeZone UTC; any UTC
offset is parsed correctly. Text in another form raises DecodeError.
"""

from __future__ import annotations

import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from viewstore.errors import DecodeError

__all__ = ["TYPE_NAMES", "convert_row", "converter", "type_name"]

TYPE_NAMES: dict[int, str] = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "name",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}

_SETTINGS_HINT = (
    "viewstore expects client_encoding UTF8, DateStyle ISO and bytea_output hex on its "
    "connections; check that nothing (a role or database setting) overrides them"
)


def type_name(oid: int) -> str:
    """The name of a type viewstore converts, e.g. 'int4' for 23; 'oid <n>' for any other."""
    return TYPE_NAMES.get(oid) or f"oid {oid}"


def _numeric(text: bytes) -> Decimal:
    # From the string, so that 40 digits stay 40 digits: no float, no context rounding.
    return Decimal(text.decode("ascii"))


def _bool(text: bytes) -> bool:
    if text == b"t":
        return True
    if text == b"f":
        return False
    raise DecodeError(f"cannot convert bool: {text!r} is neither 't' nor 'f'")


def _beyond_python(text: str) -> bool:
    """Whether a date or timestamp is valid in Postgres but has no datetime equivalent."""
    return (
        text == "infinity"
        or text == "-infinity"
        or text.endswith(" BC")
        or text.find("-") > 4  # a year of five digits or more
    )


def _date(text: bytes) -> date | str:
    s = text.decode("ascii")
    try:
        return date.fromisoformat(s)
    except ValueError:
        if _beyond_python(s):
            return s
        raise DecodeError(
            f"cannot convert date: {s!r} is not an ISO date", _SETTINGS_HINT
        ) from None


def _timestamp(text: bytes) -> datetime | str:
    # The same parser serves timestamptz: fromisoformat reads '+00', '+05:30', '-04:56:02'.
    s = text.decode("ascii")
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        if _beyond_python(s):
            return s
        raise DecodeError(
            f"cannot convert timestamp: {s!r} is not an ISO timestamp", _SETTINGS_HINT
        ) from None


def _uuid(text: bytes) -> uuid.UUID:
    return uuid.UUID(text.decode("ascii"))


def _bytea(text: bytes) -> bytes:
    if text[:2] != b"\\x":
        raise DecodeError(
            f"cannot convert bytea: {text[:20]!r} is not in hex format", _SETTINGS_HINT
        )
    return binascii.a2b_hex(text[2:])


_CONVERTERS: dict[int, Callable[[bytes], Any]] = {
    16: _bool,
    17: _bytea,
    20: int,  # int() and float() parse ASCII bytes directly, no decode needed
    21: int,
    23: int,
    26: int,
    114: json.loads,
    700: float,  # float() reads 'NaN', 'Infinity', '-Infinity' as Postgres writes them
    701: float,
    1082: _date,
    1114: _timestamp,
    1184: _timestamp,
    1700: _numeric,
    2950: _uuid,
    3802: json.loads,
}


def converter(type_oid: int) -> Callable[[bytes], Any]:
    """The function that turns the text bytes of a value of type `type_oid` into Python.

    Types without a converter of their own (text types included) give `str`. The functions
    raise DecodeError or, for int, float, numeric, uuid and json text that Postgres would
    never send, ValueError or decimal.InvalidOperation; `convert_row` turns those into
    DecodeError too.
    """
    return _CONVERTERS.get(type_oid, bytes.decode)


def convert_row(
    converters: Sequence[Callable[[bytes], Any]], values: Sequence[bytes | None]
) -> tuple[Any, ...]:
    """Convert one row, column by column; None (SQL NULL) stays None.

    An UNCHANGED TOAST marker is not a value: the caller replaces it with the stored value
    before converting. Raise DecodeError naming the column when a value cannot be converted.
    """
    if len(converters) != len(values):
        raise DecodeError(
            f"cannot convert row: {len(values)} values for {len(converters)} columns",
            "the Relation message for this table was not applied; this is a bug",
        )
    out: list[Any] = []
    i = 0
    try:
        for i, v in enumerate(values):
            out.append(None if v is None else converters[i](v))
    except (ValueError, ArithmeticError, TypeError, AttributeError) as exc:
        conv = converters[i]
        raise DecodeError(
            f"cannot convert column {i}: {getattr(conv, '__name__', conv)} failed on "
            f"{values[i]!r}: {exc}",
            _SETTINGS_HINT,
        ) from exc
    return tuple(out)
