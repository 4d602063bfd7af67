"""Tests for text-to-Python value conversion, on rows recorded from Postgres 15."""

from __future__ import annotations

import decimal
import math
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from viewstore.errors import DecodeError
from viewstore.ingest.pgoutput import UNCHANGED, Insert, Relation, decode
from viewstore.ingest.values import TYPE_NAMES, convert_row, converter, type_name

DATA = Path(__file__).parent / "data" / "typed"

NUMERIC, FLOAT8, DATE, TIMESTAMP, TIMESTAMPTZ = 1700, 701, 1082, 1114, 1184


def relation() -> Relation:
    rel = decode((DATA / "relation.bin").read_bytes())
    assert isinstance(rel, Relation)
    return rel


def recorded_row(n: int) -> tuple[Any, ...]:
    msg = decode((DATA / f"insert_{n}.bin").read_bytes())
    assert isinstance(msg, Insert)
    return msg.new


def converted_row(n: int) -> tuple[Any, ...]:
    converters = [converter(c.type_oid) for c in relation().columns]
    return convert_row(converters, recorded_row(n))


def same(got: Any, expected: Any) -> bool:
    """Equal, of the same type, and NaN equal to NaN."""
    if type(got) is not type(expected):
        return False
    if isinstance(got, float) and math.isnan(expected):
        return math.isnan(got)
    if isinstance(got, Decimal) and expected.is_nan():
        return got.is_nan()
    if isinstance(got, datetime):
        return got == expected and got.utcoffset() == expected.utcoffset()
    return bool(got == expected)


UTC_ROWS: dict[int, tuple[Any, ...]] = {
    1: (
        1,
        -32768,
        9223372036854775807,
        4294967295,
        Decimal("1234567890123456789012345678901234567890"),
        1.5,
        0.1,
        True,
        "plain",
        "vc",
        "ab   ",  # char(5) keeps its padding
        "nm",
        "x",
        date(2024, 1, 2),
        datetime(2024, 1, 2, 3, 4, 5, 123456),
        datetime(2024, 6, 1, 6, 30, 0, 500000, tzinfo=UTC),
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        {"a": [1, 2.5, None]},
        {"a": 1, "b": "c"},
        b"\x00\x01\x02\xff",
        "{1,2,3}",  # int[]: no converter, the text as sent
        "happy",  # enum
        "1 day 02:03:04",  # interval
    ),
    2: (
        2,
        32767,
        -9223372036854775808,
        0,
        Decimal("0.000000000000000000000000000001"),
        math.nan,
        math.nan,
        False,
        "tab\there",
        "line\nbreak",
        "a\\b  ",
        "cr\rlf",
        "\\",
        "infinity",
        "infinity",
        "-infinity",
        None,
        "str",
        [],
        b"",
        "{}",
        "sad",
        "-1 years",
    ),
    3: (
        3,
        0,
        0,
        1,
        Decimal("Infinity"),
        math.inf,
        -math.inf,
        None,
        "\\N",
        "",
        "x    ",
        "é☃",
        "\t",
        "0044-03-15 BC",
        "4713-01-01 00:00:00 BC",
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        None,
        None,  # json 'null'
        {"k": "tab\tand\nnl"},
        b"\\\t",
        None,
        None,
        None,
    ),
    4: (
        4,
        None,
        None,
        None,
        Decimal("-Infinity"),
        float("1.1754944e-38"),
        0.0,
        None,
        "ctl\x01\x1c\b\f\v\x7f end",
        None,
        None,
        None,
        None,
        "10000-01-01",
        "10000-01-01 00:00:00",
        datetime(1, 1, 1, tzinfo=UTC),
        *[None] * 7,
    ),
    5: (
        5,
        None,
        None,
        None,
        Decimal("-12345.678900"),
        3.4028235e38,
        1e308,
        None,
        "\\\\N",
        None,
        None,
        None,
        None,
        "-infinity",
        "-infinity",
        "infinity",
        *[None] * 7,
    ),
    6: (
        6,
        None,
        None,
        None,
        Decimal("1234567890.123456789012345678901234567890"),
        None,
        5e-324,
        None,
        "\\.",
        *[None] * 14,
    ),
    7: (7, None, None, None, Decimal("-0.000000000000000000000000000001"), *[None] * 18),
}


@pytest.mark.parametrize("n", sorted(UTC_ROWS))
def test_recorded_rows(n: int) -> None:
    got = converted_row(n)
    expected = UTC_ROWS[n]
    assert len(got) == len(expected) == 23
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert same(g, e), f"column {i} ({relation().columns[i].name}): {g!r} != {e!r}"


# -- numeric: exact, whatever the context ------------------------------------------------------


def recorded_numerics() -> list[bytes]:
    values = [recorded_row(n)[4] for n in sorted(UTC_ROWS)]
    return [v for v in values if isinstance(v, bytes)]


def test_recorded_numerics_round_trip_exactly() -> None:
    texts = recorded_numerics()
    assert len(texts) == 7
    for text in texts:
        value = converter(NUMERIC)(text)
        assert type(value) is Decimal
        # format 'f' prints the digits and scale back as Postgres did, trailing zeros included.
        assert format(value, "f").encode() == text


@pytest.mark.parametrize(
    "text",
    [
        b"1234567890123456789012345678901234567890",
        b"-1234567890123456789012345678901234567890",
        b"1234567890.123456789012345678901234567890",
        b"0.000000000000000000000000000001",
        b"-0.000000000000000000000000000001",
        b"-12345.678900",
        b"0",
        b"0.00",
        b"NaN",
        b"Infinity",
        b"-Infinity",
    ],
)
def test_numeric_ignores_decimal_context(text: bytes) -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        value = converter(NUMERIC)(text)
    assert format(value, "f").encode() == text
    assert str(value) == str(Decimal(text.decode()))


def test_numeric_is_not_float() -> None:
    assert converter(NUMERIC)(b"0.1").as_tuple() == (0, (1,), -1)
    forty = converter(NUMERIC)(b"-12345678901234567890.12345678901234567891")
    assert forty.as_tuple().digits == tuple(int(d) for d in "1234567890" * 3 + "1234567891")
    assert forty.as_tuple().exponent == -20 and forty.is_signed()
    assert converter(NUMERIC)(b"1e-30") == Decimal("1E-30")


# -- floats, dates and times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(b"NaN", math.nan), (b"Infinity", math.inf), (b"-Infinity", -math.inf), (b"-0", -0.0)],
)
def test_float_specials(text: bytes, expected: float) -> None:
    assert same(converter(FLOAT8)(text), expected)
    assert same(converter(700)(text), expected)


def test_negative_zero_keeps_its_sign() -> None:
    assert math.copysign(1, converter(FLOAT8)(b"-0")) == -1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"2024-01-02 03:04:05.123456+00", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        (
            b"2024-01-02 03:04:05+05:30",
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        (
            b"1850-01-01 00:00:00-04:56:02",
            datetime(1850, 1, 1, tzinfo=timezone(-timedelta(hours=4, minutes=56, seconds=2))),
        ),
        (
            b"2024-01-02 03:04:05.12-07",
            datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone(timedelta(hours=-7))),
        ),
    ],
)
def test_timestamptz_offsets(text: bytes, expected: datetime) -> None:
    got = converter(TIMESTAMPTZ)(text)
    assert same(got, expected)
    assert got.tzinfo is not None


@pytest.mark.parametrize(
    ("oid", "text"),
    [
        (DATE, b"infinity"),
        (DATE, b"-infinity"),
        (DATE, b"0044-03-15 BC"),
        (DATE, b"10000-01-01"),
        (DATE, b"5874897-12-31"),
        (TIMESTAMP, b"4713-01-01 00:00:00 BC"),
        (TIMESTAMP, b"294276-12-31 23:59:59.999999"),
        (TIMESTAMPTZ, b"0001-12-31 23:59:59+00 BC"),
        (TIMESTAMPTZ, b"infinity"),
    ],
)
def test_beyond_python_stays_text(oid: int, text: bytes) -> None:
    assert converter(oid)(text) == text.decode()


def test_timestamp_is_naive() -> None:
    got = converter(TIMESTAMP)(b"2024-01-02 03:04:05")
    assert got == datetime(2024, 1, 2, 3, 4, 5) and got.tzinfo is None


@pytest.mark.parametrize(
    ("oid", "text"),
    [(DATE, b"01/02/2024"), (TIMESTAMP, b"Tue Jan 02 03:04:05 2024"), (DATE, b"2024-13-01")],
)
def test_non_iso_dates_raise(oid: int, text: bytes) -> None:
    with pytest.raises(DecodeError, match="is not an ISO") as info:
        converter(oid)(text)
    assert info.value.hint and "DateStyle" in info.value.hint


# -- other types -------------------------------------------------------------------------------


def test_bool() -> None:
    assert converter(16)(b"t") is True
    assert converter(16)(b"f") is False
    with pytest.raises(DecodeError, match="cannot convert bool"):
        converter(16)(b"true")


def test_bytea() -> None:
    assert converter(17)(b"\\x0a0B") == b"\n\x0b"
    assert converter(17)(b"\\x") == b""
    with pytest.raises(DecodeError, match="not in hex format") as info:
        converter(17)(b"abc\\000")
    assert info.value.hint and "bytea_output" in info.value.hint


def test_json_keeps_structure() -> None:
    assert converter(114)(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}
    assert converter(3802)(b"12") == 12


def test_text_types_are_utf8_str() -> None:
    for oid in (25, 1043, 1042, 19, 18):
        assert converter(oid)("é☃".encode()) == "é☃"


def test_unknown_types_are_text() -> None:
    for oid in (1007, 1186, 16385, 0, 3904):
        assert converter(oid)(b"[1,5)") == "[1,5)"


def test_type_names() -> None:
    assert TYPE_NAMES[23] == "int4"
    assert type_name(23) == "int4"
    assert type_name(1700) == "numeric"
    assert type_name(3802) == "jsonb"
    assert type_name(1007) == "oid 1007"
    assert len(TYPE_NAMES) == 20
    # Every named type has a converter of its own or is a text type.
    text_like = {"text", "varchar", "bpchar", "name", "char"}
    for oid, name in TYPE_NAMES.items():
        assert (converter(oid) is bytes.decode) == (name in text_like), name


# -- convert_row -------------------------------------------------------------------------------


def test_convert_row_keeps_nulls() -> None:
    convs: list[Callable[[bytes], Any]] = [converter(23), converter(25), converter(NUMERIC)]
    assert convert_row(convs, [b"1", None, b"2.50"]) == (1, None, Decimal("2.50"))
    assert convert_row([], []) == ()


def test_convert_row_names_the_failing_column() -> None:
    convs = [converter(23), converter(23), converter(NUMERIC)]
    with pytest.raises(DecodeError, match=r"cannot convert column 1: int failed on b'x'"):
        convert_row(convs, [b"1", b"x", b"1"])
    with pytest.raises(DecodeError, match="cannot convert column 2"):
        convert_row(convs, [b"1", b"2", b"1.2.3"])


def test_convert_row_refuses_unchanged_and_wrong_width() -> None:
    with pytest.raises(DecodeError, match="cannot convert column 0"):
        convert_row([converter(25)], [UNCHANGED])  # type: ignore[list-item]
    with pytest.raises(DecodeError, match="2 values for 1 columns"):
        convert_row([converter(25)], [b"a", b"b"])
