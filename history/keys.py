"""History keys: the one place that encodes and decodes the layout of the `history` column family.

    c  view id (2)  commit LSN (8)  sequence (4)  ->  [output key, before, after, time, xid]
    k  view id (2)  output key      commit LSN (8)  ->  the row after (DELETED: deleted)
    p  view id (2)  checkpoint LSN (8)              ->  its number of rows (8)
    s  view id (2)  checkpoint LSN (8)  output key  ->  the row as of the checkpoint LSN

`c` is each view's log in commit order, `k` each view row's history (see `changelog`), `p` and
`s` its checkpoints: every row of the view as of an LSN (see `checkpoint`).
"""

from __future__ import annotations

import struct
from typing import Any

_HEAD = struct.Struct(">HQI")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
DELETED = b""  # a `k` value: the row was deleted by that transaction


def change_key(view_id: int, commit_lsn: int, seq: int) -> bytes:
    """The `c` key of a view's `seq`-th change in the transaction committed at `commit_lsn`."""
    return b"c" + _HEAD.pack(view_id, commit_lsn, seq)


def change_prefix(view_id: int) -> bytes:
    """The prefix of every `c` key of a view."""
    return b"c" + _U16.pack(view_id)


def change_lsn_prefix(view_id: int, commit_lsn: int) -> bytes:
    """The prefix of the `c` keys of one transaction's changes to a view."""
    return change_key(view_id, commit_lsn, 0)[:11]


def change_key_parts(key: bytes) -> tuple[int, int, int]:
    """(view id, commit LSN, sequence) of a `c` key."""
    view_id, commit_lsn, seq = _HEAD.unpack_from(key, 1)
    return view_id, commit_lsn, seq


def change_key_columns(keys: bytes) -> tuple[Any, Any]:
    """(commit LSNs, sequence numbers) as numpy arrays, of `c` keys concatenated in one bytes
    object (the DuckDB copy reads a chunk of the log at a time, issue 15)."""
    import numpy as np

    parts = np.frombuffer(keys, np.dtype([("c", "u1"), ("v", ">u2"), ("l", ">u8"), ("s", ">u4")]))
    return parts["l"].astype(np.uint64), parts["s"].astype(np.uint32)


def change_key_lsn(key: bytes) -> int:
    """The commit LSN of a `c` key."""
    return _U64.unpack_from(key, 3)[0]


def row_key_prefix(view_id: int, okey: bytes = b"") -> bytes:
    """The prefix of the `k` keys of a view (of one of its rows, given its output key)."""
    return b"k" + _U16.pack(view_id) + okey


def row_history_key(view_id: int, okey: bytes, commit_lsn: int) -> bytes:
    """The `k` key of a view row's change in the transaction committed at `commit_lsn`."""
    return row_key_prefix(view_id, okey) + _U64.pack(commit_lsn)


def row_key_lsn_suffix(commit_lsn: int) -> bytes:
    """The commit-LSN suffix of a `k` key, to seek to within one row's history."""
    return _U64.pack(commit_lsn)


def row_key_lsn(key: bytes) -> int:
    """The commit LSN of a `k` key (its last 8 bytes)."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def is_row_key_of(key: bytes, prefix: bytes) -> bool:
    """Whether `key` is a `k` key of exactly the row whose prefix is `prefix`."""
    return key.startswith(prefix) and len(key) == len(prefix) + 8


def checkpoint_marker(view_id: int, lsn: int) -> bytes:
    """The `p` key that says the view's checkpoint at `lsn` is complete."""
    return b"p" + _U16.pack(view_id) + _U64.pack(lsn)


def checkpoint_prefix(view_id: int, lsn: int) -> bytes:
    """The prefix of the `s` keys of the view's rows in its checkpoint at `lsn`."""
    return b"s" + _U16.pack(view_id) + _U64.pack(lsn)


def checkpoint_row_key(view_id: int, lsn: int, okey: bytes) -> bytes:
    """The `s` key of one row (output key `okey`) of the view's checkpoint at `lsn`."""
    return checkpoint_prefix(view_id, lsn) + okey


def checkpoint_lsn(key: bytes) -> int:
    """The checkpoint LSN of a `p` or `s` key."""
    return _U64.unpack_from(key, 3)[0]


def view_prefixes(view_id: int) -> list[bytes]:
    """Every key prefix of one view's history: its log, its rows' histories, its checkpoints."""
    vid = _U16.pack(view_id)
    return [b"c" + vid, b"k" + vid, b"p" + vid, b"s" + vid]
