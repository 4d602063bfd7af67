"""The history's change entries are `pack_fields` of five fields, written out for speed: the
bytes must be the same, or a replay (and every reader) would see another format."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from viewstore.codecs.value import pack_change, pack_fields, unpack_fields

maybe_bytes = st.none() | st.binary(max_size=40)
maybe_int = st.none() | st.integers(min_value=-(2**63), max_value=2**63)


@given(st.binary(max_size=40), maybe_bytes, maybe_bytes, maybe_int, maybe_int)
def test_pack_change_is_pack_fields(
    okey: bytes, before: bytes | None, after: bytes | None, time: int | None, xid: int | None
) -> None:
    packed = pack_change(okey, before, after, time, xid)
    assert packed == pack_fields([okey, before, after, time, xid])
    assert unpack_fields(packed) == [okey, before, after, time, xid]
