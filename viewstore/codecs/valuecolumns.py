"""Codec, columnar: `codecs.value`'s field lists for a whole chunk of values at once (issue 15).

The DuckDB copy of the history reads its log a chunk of a few hundred thousand entries at a
time; one `unpack_fields` call per entry and per row image cost about 15 µs an entry. Here a
chunk's values are one numpy byte buffer, and each field of every value a vector of spans
(tag, start, length), found in a few numpy passes per field. A field's body is never parsed
here: it is gathered as it is into an Arrow array (text, bytes), or for the fixed-size tags
(floats, booleans) reinterpreted, and the caller casts from there.

Format reminder (`pack_fields`): a version byte, then per field a 4-byte big-endian length, a
one-byte tag and the body (length - 1 bytes). pyarrow and numpy are imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from viewstore.codecs.value import CORRUPT_HINT, FORMAT
from viewstore.errors import StoreError

NULL_TAG = ord("N")
_COUNTING: Any = None  # `_counting`'s array
_COUNTING_KEPT = 1 << 23  # elements (64 MiB) at most
# Five bytes past the end of a chunk's buffer, so that the head of an absent field (read at 0)
# or of the last one never reads outside it.
_PAD = bytes(5)


@dataclass(frozen=True)
class Field:
    """One field of every value of a chunk: where `valid` (not NULL, and the value present),
    its tag, and its body at buf[start : start + length]."""

    tag: Any  # uint8 per value; 0 where the value is absent
    start: Any  # int64
    length: Any  # int64
    valid: Any  # bool

    def tags(self) -> set[int]:
        """The tags of the valid values."""
        import numpy as np

        return {int(t) for t in np.flatnonzero(np.bincount(self.tag[self.valid], minlength=256))}


class ValueChunk:
    """A list of `pack_fields` values, as one buffer that fields are read from by vector."""

    def __init__(self, values: list[bytes]) -> None:
        import numpy as np

        lengths = np.fromiter(map(len, values), np.int64, len(values))
        self._setup(b"".join([*values, _PAD]), lengths)

    @classmethod
    def from_arrow(cls, array: Any) -> ValueChunk:
        """The values of an Arrow binary array without nulls, read from its buffers (no Python
        object per value)."""
        import numpy as np

        n = len(array)
        import pyarrow as pa

        large = pa.types.is_large_binary(array.type) or pa.types.is_large_string(array.type)
        width = np.int64 if large else np.int32
        offsets = np.frombuffer(array.buffers()[1], width)[array.offset : array.offset + n + 1]
        data = array.buffers()[2]
        first, last = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
        body = _PAD if data is None else b"".join((memoryview(data)[first:last], _PAD))
        chunk = cls.__new__(cls)
        chunk._setup(body, np.diff(offsets).astype(np.int64))
        return chunk

    def _setup(self, padded: bytes, lengths: Any) -> None:
        """`padded`: the values one after the other, then `_PAD`."""
        import numpy as np

        self.n = len(lengths)
        self._padded = np.frombuffer(padded, np.uint8)
        self.buf = self._padded[: -len(_PAD)]
        self.starts = np.zeros(self.n, np.int64)
        np.cumsum(lengths[:-1], out=self.starts[1:])
        self.ends = self.starts + lengths
        # A big-endian u32 at every byte offset (a view, no copy): a field's length is one
        # gather.
        self._u32 = np.ndarray((len(self.buf) + 1,), np.dtype(">u4"), self._padded.data, 0, (1,))

    def fields(self, at: Any, present: Any, count: int) -> list[Field]:
        """The first `count` fields of the values that begin at `at` (their version byte)
        where `present` (None: everywhere). `last_pos` is then where each one's next field
        would begin."""
        import numpy as np

        buf, u32 = self._padded, self._u32
        tags = buf[4:]  # the tag of the field whose head is at p is tags[p]
        if present is not None and present.all():
            present = None  # the masks cost a third of the decode: none where none is absent
        try:
            first = at if present is None else at[present]
            if (buf[first] != FORMAT[0]).any():
                raise StoreError("history: a value of unknown format", CORRUPT_HINT)
            pos = at + 1 if present is None else np.where(present, at + 1, 0)
            out = []
            for _ in range(count):
                body = u32[pos].astype(np.int64)
                body -= 1
                tag = tags[pos]
                if present is None:
                    valid = tag != NULL_TAG
                else:
                    tag = np.where(present, tag, 0)
                    valid = present & (tag != NULL_TAG)
                start = pos + 5
                out.append(Field(tag, start, body, valid))
                pos = start + body
                if present is not None:
                    pos = np.where(present, pos, 0)
        except IndexError:
            raise StoreError("history: a value runs past its end", CORRUPT_HINT) from None
        self.last_pos = pos
        return out

    def top_fields(self, count: int) -> list[Field]:
        """The `count` fields of every value of the chunk (checked: no more, no fewer)."""

        out = self.fields(self.starts, None, count)
        if (self.last_pos != self.ends).any():
            raise StoreError(f"history: a value does not hold {count} fields", CORRUPT_HINT)
        return out

    def nested(self, field: Field, count: int) -> list[Field]:
        """The `count` fields of the `pack_fields` values held as bytes (tag 'y') in `field`."""
        present = field.valid & (field.tag == ord("y"))
        out = self.fields(field.start, present, count)
        if (self.last_pos[present] != (field.start + field.length)[present]).any():
            raise StoreError(f"history: a row does not hold {count} fields", CORRUPT_HINT)
        return out

    def binary(self, field: Field, arrow_type: Any = None) -> Any:
        """The bodies of `field` as an Arrow binary (or `arrow_type`: string) array, null
        where the field is not valid."""
        import numpy as np
        import pyarrow as pa

        valid = field.valid
        length = np.where(valid, field.length, 0)
        offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(length, out=offsets[1:])
        total = int(offsets[-1])
        if total:
            # Each body byte's position: its value's shift repeated, plus 0, 1, 2, ... (int64:
            # numpy converts any other index to intp first, which cost a third more).
            index = np.repeat(field.start - offsets[:-1], length)
            index += _counting(total)
            data = self.buf.take(index)
        else:
            data = np.zeros(0, np.uint8)
        large = total >= 1 << 31
        kind = arrow_type or pa.binary()
        if large:
            kind = pa.large_string() if kind == pa.string() else pa.large_binary()
        offsets = offsets if large else offsets.astype(np.int32)
        return pa.Array.from_buffers(
            kind, self.n, [_bitmap(valid), pa.py_buffer(offsets), pa.py_buffer(data)]
        )

    def float64(self, field: Field) -> Any:
        """Float bodies (tag 'f': 8 bytes, IEEE 754 big-endian) as an Arrow float64 array."""
        import numpy as np
        import pyarrow as pa

        start = np.where(field.valid, field.start, 0)
        raw = self.buf[start[:, None] + np.arange(8)]
        values = raw.copy().view(">f8").reshape(self.n).astype(np.float64)
        return pa.Array.from_buffers(
            pa.float64(), self.n, [_bitmap(field.valid), pa.py_buffer(values)]
        )

    def booleans(self, field: Field) -> Any:
        """Tags 'T'/'F' as an Arrow boolean array."""
        import pyarrow as pa

        return pa.array(field.tag == ord("T"), pa.bool_(), mask=~field.valid)


def _counting(total: int) -> Any:
    """0, 1, ..., total - 1 (int64, read-only): a view of one array shared by every chunk,
    made anew only when a chunk needs a longer one (an arange per chunk cost a tenth of its
    decode)."""
    import numpy as np

    global _COUNTING
    if _COUNTING is None or len(_COUNTING) < total:
        if total > _COUNTING_KEPT:  # not kept: a process would hold it for ever
            return np.arange(total, dtype=np.int64)
        counting = np.arange(min(_COUNTING_KEPT, max(total, 1 << 20) * 2), dtype=np.int64)
        counting.flags.writeable = False
        _COUNTING = counting
    return _COUNTING[:total]


def _bitmap(valid: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


# Tags whose bodies `python_rows` turns into Python values a column at a time, as
# `codecs.value.decode_value` would one at a time (text, integers, numerics).
_TEXT_TAGS = {ord("s"): None, ord("i"): int, ord("d"): "decimal"}


def python_rows(values: Any) -> list[tuple[Any, ...]] | None:
    """`tuple(unpack_fields(v))` of every value (a list of bytes, or an Arrow binary array
    without nulls), decoded a column at a time (an as-of read of a whole view decodes every
    row it returns: issue 15); None when the values do not all hold the same number of fields,
    or a column holds a tag other than text, integer, numeric, boolean or NULL: the caller
    decodes those one by one."""
    if not len(values):
        return []
    from decimal import Decimal

    import pyarrow as pa

    from viewstore.codecs.value import unpack_fields

    if isinstance(values, list):
        width = len(unpack_fields(values[0]))
        chunk = ValueChunk(values)
    else:
        width = len(unpack_fields(values[0].as_py()))
        chunk = ValueChunk.from_arrow(values)
    try:
        fields = chunk.top_fields(width)
    except StoreError:
        return None
    columns: list[list[Any]] = []
    for f in fields:
        tags = f.tags()
        if not tags:
            columns.append([None] * chunk.n)
        elif tags <= {ord("T"), ord("F")}:
            flags = (f.tag == ord("T")).tolist()
            columns.append(flags if f.valid.all() else _nulls(flags, f.valid))
        elif len(tags) == 1 and next(iter(tags)) in _TEXT_TAGS:
            strings = chunk.binary(f, pa.string())
            kind = _TEXT_TAGS[next(iter(tags))]
            if kind is int:
                try:  # Arrow parses digits 4x faster than int() does; beyond 64 bits, int()
                    columns.append(strings.cast(pa.int64()).to_pylist())
                    continue
                except pa.ArrowException:
                    pass
            try:
                text = strings.to_pylist()
            except (UnicodeDecodeError, pa.ArrowException):
                return None  # not UTF-8 (surrogatepass): the general path keeps it as it was
            if kind is not None:
                convert = Decimal if kind == "decimal" else int
                if f.valid.all():
                    text = list(map(convert, text))
                else:
                    text = [None if t is None else convert(t) for t in text]
            columns.append(text)
        else:
            return None
    return list(zip(*columns, strict=True))


def _nulls(values: list[Any], valid: Any) -> list[Any]:
    return [v if ok else None for v, ok in zip(values, valid.tolist(), strict=True)]
