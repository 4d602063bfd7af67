"""Codecs for whole columns: `codecs.value` fields and `codecs.key` numbers, a pyarrow array at a
time, for the bulk view build (`store.columnbuild`).

Every function here gives, element by element, exactly the bytes of its scalar counterpart
(tests/codecs/test_vector.py compares them on random and edge-case values). The inputs are
Postgres's text forms as the mirror holds them: integers as `-?[0-9]+`, numerics as
`-?[0-9]+(\\.[0-9]+)?` (the caller sends NaN and infinities down the scalar path).

Arrays are pyarrow `binary`/`large_binary` (values) or numpy int64 (numbers); nulls are
pyarrow nulls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from viewstore.codecs.value import FORMAT

_EXP_BIAS = 1 << 31
NULL_FIELD = b"N"


def binary(values: Any) -> Any:
    """`values` (a pyarrow array, or a list of bytes) as a pyarrow large_binary array."""
    if isinstance(values, list):
        return pa.array(values, pa.large_binary())
    return values.cast(pa.large_binary())


def fixed(data: np.ndarray, width: int) -> Any:
    """Rows of a C-contiguous uint8 array of `width` bytes each, as a large_binary array."""
    n = len(data) // width
    offsets = np.arange(0, n * width + 1, width, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def be(values: np.ndarray, dtype: str) -> Any:
    """Each of `values` as a big-endian integer of `dtype` ('>u2', '>u4', '>u8'), a binary
    array of fixed-width values (as `struct.pack` gives them)."""
    data = np.ascontiguousarray(values.astype(dtype)).view(np.uint8)
    return fixed(data, np.dtype(dtype).itemsize)


def join(*parts: Any) -> Any:
    """Element-wise concatenation of binary arrays and bytes scalars (a scalar repeats)."""
    args = [pa.scalar(p, pa.large_binary()) if isinstance(p, bytes) else binary(p) for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar(b"", pa.large_binary()))


def lengths(values: Any) -> np.ndarray:
    """The byte length of each value (no nulls), as int64."""
    return pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)


def pack(fields: Sequence[Any]) -> Any:
    """Per row, `codecs.value.pack_fields` of already encoded fields: `FORMAT`, then each field
    as its 4-byte big-endian length and its bytes. Each of `fields` is a binary array of
    encoded fields (`field_*` below), without nulls."""
    parts: list[Any] = [FORMAT]
    for f in fields:
        parts += [be(lengths(f), ">u4"), f]
    return join(*parts)


def with_length(values: Any) -> Any:
    """Each value prefixed by its 4-byte big-endian length (a field inside `pack`)."""
    return join(be(lengths(values), ">u4"), values)


def field_text(tag: bytes, texts: Any) -> Any:
    """`tag + text` per value, `N` for NULL: a field of `pack_fields` for an int (`i`), a
    finite numeric in plain notation (`d`) or UTF-8 text (`s`)."""
    return join(tag, binary(texts)).fill_null(NULL_FIELD)


def int_texts(values: np.ndarray) -> Any:
    """Decimal text of each int64, as `str(int)` prints it."""
    return pc.cast(pa.array(values, pa.int64()), pa.large_string()).cast(pa.large_binary())


def numeric_texts(mantissas: np.ndarray, scales: np.ndarray) -> Any:
    """`str(Decimal(m).scaleb(-s))` for int64 mantissas `m` and scales `s` >= 0, where that is
    in plain notation (the caller checks `plain_notation`): '-12.50', '0.05', '7'."""
    negative = mantissas < 0
    digits = pc.cast(pa.array(np.abs(mantissas), pa.int64()), pa.large_string())
    result = pa.nulls(len(mantissas), pa.large_string())
    for s in np.unique(scales):
        s = int(s)
        mask = pa.array(scales == s)
        some = pc.filter(digits, mask)
        if s:
            padded = pc.utf8_lpad(some, s + 1, "0")  # at least one digit before the point
            whole = pc.utf8_slice_codeunits(padded, 0, -s)
            fraction = pc.utf8_slice_codeunits(padded, -s, 2**31 - 1)
            some = pc.binary_join_element_wise(whole, fraction, pa.scalar(".", pa.large_string()))
        result = pc.replace_with_mask(result, mask, some)
    minus, empty = pa.scalar("-", pa.large_string()), pa.scalar("", pa.large_string())
    signed = pc.if_else(
        pa.array(negative), pc.binary_join_element_wise(minus, result, empty), result
    )
    return signed.cast(pa.large_binary())


def plain_notation(mantissas: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Where `str(Decimal)` of mantissa × 10^-scale is plain, not scientific: its adjusted
    exponent (digits - 1 - scale) is at least -6 (`decimal`'s rule for exponents <= 0)."""
    digits = np.ones(len(mantissas), np.int64)
    a = np.abs(mantissas)
    for k in range(1, 19):
        digits += a >= 10**k
    return digits - 1 - scales >= -6


def key_numbers(texts: Any) -> Any:
    """`codecs.key.encode_value` of each number given as Postgres text (`-?digits[.digits]`):
    0x02 for zero; else 0x03, the biased exponent, the significant digits and 0x00, or for a
    negative number 0x01, the inverted exponent, the digits inverted (0↔9) and 0xff."""
    texts = binary(texts).cast(pa.large_string())
    negative = pc.starts_with(texts, "-")
    body = pc.utf8_ltrim(texts, "-")
    point = pc.find_substring(body, ".").to_numpy(zero_copy_only=False)
    total = pc.utf8_length(body).to_numpy(zero_copy_only=False).astype(np.int64)
    whole = np.where(point < 0, total, point).astype(np.int64)
    digits = pc.replace_substring(body, ".", "")
    lead = (
        pc.utf8_length(digits).to_numpy(zero_copy_only=False)
        - pc.utf8_length(pc.utf8_ltrim(digits, "0")).to_numpy(zero_copy_only=False)
    ).astype(np.int64)
    significant = pc.utf8_trim(digits, "0")
    zero = pc.utf8_length(significant).to_numpy(zero_copy_only=False) == 0
    exponent = whole - lead
    neg = negative.to_numpy(zero_copy_only=False) & ~zero
    sig = significant.cast(pa.large_binary())
    # Inverted digits for the negatives: '0'+'9' = 0x69, so 0x69 - d swaps them.
    data = np.frombuffer(sig.buffers()[2], np.uint8) if len(sig) and sig.buffers()[2] else None
    if data is not None and neg.any():
        inverted = (0x69 - data.astype(np.int16)).astype(np.uint8)
        offsets = np.frombuffer(sig.buffers()[1], np.int64)[: len(sig) + 1]
        flipped = pa.Array.from_buffers(
            pa.large_binary(),
            len(sig),
            [None, pa.py_buffer(offsets.copy()), pa.py_buffer(inverted)],
        )
        sig = pc.if_else(pa.array(neg), flipped, sig)
    biased = np.where(neg, _EXP_BIAS - exponent, exponent + _EXP_BIAS)
    encoded = join(
        pc.if_else(
            pa.array(neg),
            pa.scalar(b"\x01", pa.large_binary()),
            pa.scalar(b"\x03", pa.large_binary()),
        ),
        be(biased, ">u4"),
        sig,
        pc.if_else(
            pa.array(neg),
            pa.scalar(b"\xff", pa.large_binary()),
            pa.scalar(b"\x00", pa.large_binary()),
        ),
    )
    return pc.if_else(pa.array(zero), pa.scalar(b"\x02", pa.large_binary()), encoded)
