"""`toprows.top_images`: the top N of a view's rows as Arrow arrays equals sorting them all.

The fast path orders by the ordered column read as float64 and decodes only the candidates;
the reference decodes every row and sorts by the order-preserving key encoding, ties by output
key (what `viewread.query_rows` does). The values are chosen to be hard for floats: numerics
that differ only past the 17th digit (they round to one float), NaN, ±Infinity, NULL, ties,
integers beyond 2^53.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from viewstore.codecs.key import encode_key, encode_value
from viewstore.codecs.value import pack_fields
from viewstore.store.toprows import top_images

BIG = Decimal("12345678901234567890.5")


def _numeric(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.08:
        return Decimal(rng.choice(["NaN", "Infinity", "-Infinity"]))
    if r < 0.35:  # one float for all of them: only the exact values order them
        return BIG + Decimal(rng.randint(-5, 5)) / 100
    if r < 0.5:
        return Decimal(rng.randint(0, 4))  # many ties
    return Decimal(rng.randint(-10_000, 10_000)) / 100


def _integer(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.4:
        return 2**62 + rng.randint(-3, 3)  # one float for all of them
    return rng.randint(-50, 50)


def _float(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.1:
        return rng.choice([float("nan"), float("inf"), float("-inf")])
    return rng.randint(-20, 20) / 4


def reference(rows: list[tuple[Any, ...]], column: int, desc: bool, limit: int) -> list[Any]:
    pairs = sorted((encode_key([r[0]]), r) for r in rows)
    pairs.sort(key=lambda kr: encode_value(kr[1][column]), reverse=desc)
    return pairs[:limit]


def _same(a: list[Any], b: list[Any]) -> bool:
    # NaN != NaN: compare by encoding
    return [(k, [encode_value(v) for v in r]) for k, r in a] == [
        (k, [encode_value(v) for v in r]) for k, r in b
    ]


@pytest.mark.parametrize("make", [_numeric, _integer, _float])
@pytest.mark.parametrize("seed", range(6))
def test_top_images_equals_sorting_every_row(make: Any, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 7, 300, 2000])
    ids = rng.sample(range(10 * n), n)
    rows = [(i, f"player {i}", make(rng)) for i in ids]
    rng.shuffle(rows)  # images_as_of's arrays come in no particular order
    keys = pa.array([encode_key([r[0]]) for r in rows], pa.binary())
    images = pa.array([pack_fields(list(r)) for r in rows], pa.binary())
    for desc in (True, False):
        for limit in (1, 3, 10, n, n + 5):
            got = top_images(keys, images, 2, desc, limit)
            want = reference(rows, 2, desc, limit)
            assert _same([(k, r) for k, r in got], want), (desc, limit)
        # Ordered by a text column: every row decoded, the same answer.
        assert _same(top_images(keys, images, 1, desc, 5), reference(rows, 1, desc, 5))


def test_top_images_of_nothing() -> None:
    empty = pa.array([], pa.binary())
    assert top_images(empty, empty, 0, True, 10) == []
    one = pa.array([pack_fields([1, Decimal("2")])], pa.binary())
    assert top_images(pa.array([encode_key([1])], pa.binary()), one, 1, True, 0) == []
