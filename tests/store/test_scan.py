"""`store.db.scan`: every key under a prefix, on the live column families and on a snapshot.

The forward scan of a live column family stops at a RocksDB upper bound (no Python test per
key); a snapshot's families and reverse scans test each key. All must list exactly the keys a
brute-force filter finds, including prefixes that end in 0xff bytes and keys right at the bound.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from viewstore.store.db import Store, scan

KEYS = [
    b"a",
    b"a\x00",
    b"a\xff",
    b"a\xff\xff",
    b"a\xff\xff\x01",
    b"ab",
    b"b",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
    b"v\x00\x01r1",
    b"v\x00\x01r2",
    b"v\x00\x01s",
    b"v\x00\x02",
]
PREFIXES = [b"a", b"a\xff", b"\xff", b"\xff\xff", b"v\x00\x01", b"v\x00\x01r", b"v", b"c", b""]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "s")
    batch = s.new_batch()
    for k in KEYS:
        batch.put(k, b"=" + k, s.cf["views"])
    s.write(batch, sync=True)
    return s


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_scan_lists_exactly_the_keys_under_the_prefix(store: Store, reverse: bool) -> None:
    snapshot = store.snapshot()
    for prefix in PREFIXES:
        want = sorted((k for k in KEYS if k.startswith(prefix)), reverse=reverse)
        live = list(scan(store.views, prefix, reverse=reverse))
        assert [k for k, _ in live] == want, prefix
        assert all(v == b"=" + k for k, v in live)
        seen = [k for k, _ in scan(snapshot.views, prefix, reverse=reverse)]
        assert seen == want, prefix
    store.close()
