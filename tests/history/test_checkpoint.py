"""History checkpoints (issue 15, item 2): the block format round-trips through RocksDB, a
checkpoint with changes applied equals folding the same changes one by one, and the columnar
decode of a whole view's rows equals `unpack_fields` row by row."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viewstore.codecs.key import encode_key
from viewstore.codecs.value import pack_fields, unpack_fields
from viewstore.codecs.valuecolumns import python_rows
from viewstore.history import checkpoint
from viewstore.history.changelog import entries
from viewstore.store.db import Store

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.decimals(allow_infinity=False, places=3).map(Decimal),
    st.just(Decimal("NaN")),
    st.floats(allow_nan=False),
)


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    # Decimal('NaN') != itself: compare the stored encoding.
    return [pack_fields(list(r)) for r in a] == [pack_fields(list(r)) for r in b]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(VALUES, min_size=3, max_size=3), max_size=40), st.integers(0, 5))
def test_python_rows_equals_unpack_fields(rows: list[list[Any]], cut: int) -> None:
    values = [pack_fields(r) for r in rows]
    want = [tuple(unpack_fields(v)) for v in values]
    for given_values in (values, pa.array(values, pa.binary())):
        got = python_rows(given_values)
        if got is not None:  # None: a column the columnar path leaves to unpack_fields
            assert _same(got, want)
    array = pa.array(values, pa.large_binary()).slice(min(cut, len(values)))
    got = python_rows(array)
    if got is not None:
        assert _same(got, want[min(cut, len(values)) :])


def test_python_rows_takes_the_common_columns() -> None:
    rows = [
        [i, f"p{i}", Decimal(i) / 100, None if i % 2 else True, 2**65 if i == 3 else i]
        for i in range(9)
    ]
    values = [pack_fields(r) for r in rows]
    assert python_rows(values) == [tuple(r) for r in rows]
    assert python_rows([pack_fields([1.5])]) is None  # floats: one by one
    assert python_rows([pack_fields([1, 2]), pack_fields([1])]) is None  # ragged


_LSNS = itertools.count(1)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.open(tmp_path / "data") as s:
        yield s


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.integers(0, 3000), st.text(max_size=30), max_size=2500),
    st.lists(st.tuples(st.integers(0, 3000), st.none() | st.text(max_size=30)), max_size=300),
)
def test_checkpoint_with_changes_equals_folding_them(
    store: Store, start: dict[int, str], changes: list[tuple[int, str | None]]
) -> None:
    lsn = next(_LSNS)  # a new checkpoint per example, in the same store
    rows = {encode_key([k]): pack_fields([k, v]) for k, v in sorted(start.items())}
    batch = store.new_batch()
    assert checkpoint.put(batch, store.cf["history"], 7, lsn, sorted(rows.items())) == len(rows)
    store.write(batch, sync=False)
    assert checkpoint.latest(store, 7, lsn) == lsn
    assert checkpoint.rows(store, 7, lsn) == rows  # blocks of 1,024 rows and the last one

    keys, values = checkpoint.arrays(store, 7, lsn)
    change_keys = [encode_key([k]) for k, _ in changes]
    afters = [None if v is None else pack_fields([k, v]) for k, v in changes]
    keys, values = checkpoint.apply(
        keys, values, pa.array(change_keys, pa.binary()), pa.array(afters, pa.binary())
    )
    want = dict(rows)
    for key, after in zip(change_keys, afters, strict=True):
        if after is None:
            want.pop(key, None)
        else:
            want[key] = after
    assert dict(zip(keys.to_pylist(), values.to_pylist(), strict=True)) == want


def test_a_restarted_store_counts_the_changes_after_its_newest_checkpoint(store: Store) -> None:
    cf = store.cf["history"]
    batch = store.new_batch()
    for lsn in range(10, 20):
        for seq in range(3):
            for key, value in entries(9, lsn, seq, encode_key([seq]), None, b"\x01", 1, 1):
                batch.put(key, value, cf)
    store.write(batch, sync=False)
    assert checkpoint.changes_after_latest(store, 9, 1000) == 30  # none yet: from the start
    assert checkpoint.changes_after_latest(store, 9, 7) == 7  # counts up to the limit
    batch = store.new_batch()
    checkpoint.put(batch, cf, 9, 14, [(encode_key([0]), b"\x01")])
    store.write(batch, sync=False)
    assert checkpoint.changes_after_latest(store, 9, 1000) == 15  # LSNs 15-19
    assert checkpoint.lsns(store, 9) == [14]
    assert checkpoint.latest(store, 9, 13) is None and checkpoint.latest(store, 9, 99) == 14
