"""A view's log read and decoded in a child process, for large syncs of the DuckDB copy.

In one process, reading and decoding the log (rocksdict, numpy, pyarrow: Python holding the
GIL between its steps) and DuckDB's append share one GIL: each time DuckDB's append comes back
to Python it waits for the reading thread to give the GIL up, and the append, the slower of the
two, slows down by a third (issue 15.1, 10M entries on this 2-core machine: 467k rows/s with a
reading thread, 643k with a reading process in the same run). A child process costs about a
second to start (an interpreter, numpy, pyarrow, RocksDB), so `duckdb_copy` uses one only for a
sync of at least `PROCESS_MIN_CHANGES` changes (`enough_changes`), a thread otherwise.

The child opens the store read-only itself (RocksDB allows any number of read-only opens beside
the writer) and first checks that it sees the view as the parent does: the same view record,
the same retained history and an applied LSN at least the parent's. The log up to the parent's
applied LSN only ever grows past it (retention, which removes from it, moves the history's
start), so the child then reads exactly the changes the parent would. It writes each piece as
Arrow IPC files into a directory of its own (in /dev/shm, memory, when it has room for a few;
else the system's temporary directory) and says so on a pipe, at most `_AHEAD` pieces ahead;
the parent memory-maps them, appends, and deletes them. A child whose parent died (kill -9)
finds its stdin closed, removes its directory and exits; a parent that stops early (an error)
kills the child and removes the directory.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pyarrow as pa

from viewstore.errors import StoreError
from viewstore.history.access import HistoryStore, ViewRecord
from viewstore.ingest.lsn import Lsn

# A sync of fewer changes than this reads in a thread: the child's start (~1 s) would cost
# more than it saves (~0.5 µs a change). VIEWSTORE_SYNC_PROCESS_MIN overrides it (the tests
# have a small log read by a process).
PROCESS_MIN_CHANGES = 2_000_000
_AHEAD = 2  # pieces written and not yet appended, at most
_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 1 << 30  # a few pieces of 200k changes of a wide view

# (store, views) opened read-only: a module-level function (with functools.partial), so that
# it can be handed to a spawned process.
Opener = Callable[[], tuple[HistoryStore, Mapping[str, ViewRecord]]]
# The pieces of a view's log: duckdb_copy._pieces with everything but the store bound.
PieceMaker = Callable[[HistoryStore], Iterator[Any]]


def enough_changes(store: HistoryStore, low: bytes, high: bytes) -> bool:
    """Whether the log's range [low, high) holds at least PROCESS_MIN_CHANGES entries, as far
    as the store's table files tell without reading them (see Store.history_entries_at_least)."""
    least = int(os.environ.get("VIEWSTORE_SYNC_PROCESS_MIN", PROCESS_MIN_CHANGES))
    if least <= 0:
        return True
    return store.history_entries_at_least(low, high) >= least


def pieces(open_store: Opener, info: ViewRecord, until: int, make: PieceMaker) -> Iterator[Any]:
    """The pieces `make` yields from a read-only store that has applied `until`, made in a
    child process: each is handed back with its Arrow tables memory-mapped from the child's
    files."""
    workdir = Path(tempfile.mkdtemp(prefix="viewstore-sync-", dir=_shm_or_none()))
    # A new interpreter rather than multiprocessing's spawn, which would import the caller's
    # __main__ again (a script calling sync outside `if __name__ == "__main__"` would recurse);
    # never a fork of a process with RocksDB open.
    child = subprocess.Popen(
        [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        _send(child.stdin, (open_store, info, until, make, workdir))
        while True:
            kind, item = _receive(child.stdout, child)
            if kind == "end":
                return
            if kind == "error":
                raise StoreError(f"history copy: reading the log failed: {item}")
            piece = _mapped(item)
            with suppress(BrokenPipeError):  # a child done (or dead: the next read says so)
                child.stdin.write(b"+")  # room for one more piece
                child.stdin.flush()
            yield piece
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            with suppress(OSError):
                pipe.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _shm_or_none() -> str | None:
    """/dev/shm when it has room for a few pieces (a container's is often 64 MB: a piece of a
    wide view would not fit), else None: the system's temporary directory."""
    try:
        roomy = shutil.disk_usage(_SHM).free >= _SHM_MIN_FREE and os.access(_SHM, os.W_OK)
    except OSError:
        return None
    return str(_SHM) if roomy else None


def _send(pipe: Any, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(struct.pack("<Q", len(data)) + data)
    pipe.flush()


def _receive(pipe: Any, child: subprocess.Popen[bytes]) -> tuple[str, Any]:
    head = pipe.read(8)
    if len(head) < 8:
        raise StoreError(
            f"history copy: the process reading the log died (exit code {child.wait()})",
            hint="sync again (the copy is consistent at its last synced LSN)",
        )
    (size,) = struct.unpack("<Q", head)
    return pickle.loads(pipe.read(size))


def _mapped(piece: Any) -> Any:
    """The piece with each file name replaced by its Arrow table, memory-mapped; the files
    are deleted at once (the mappings keep their pages until the tables are dropped)."""

    def load(path: str) -> pa.Table:
        table = pa.ipc.open_file(pa.memory_map(path)).read_all()
        os.unlink(path)
        return table

    changes = None if piece.changes is None else load(piece.changes)
    checkpoints = [load(p) for p in piece.checkpoints]
    return dataclasses.replace(piece, changes=changes, checkpoints=checkpoints)


def main() -> None:
    """The child: read the job from stdin, write each piece into the job's directory and say
    so on stdout, at most `_AHEAD` pieces ahead of the parent (which sends a byte for each it
    takes). A parent that died closes stdin: the child removes the directory and exits."""
    # Ctrl-C reaches the whole process group: the parent stops and kills the child, which
    # would otherwise print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job_in = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")  # the messages' own pipe: a stray print goes to stderr
    os.dup2(2, 1)
    open_store, info, until, make, workdir = pickle.loads(
        job_in.read(struct.unpack("<Q", job_in.read(8))[0])
    )
    try:
        store, views = open_store()
        try:
            seen = views.get(info.name)
            same = seen is not None and (
                seen.view_id,
                seen.fingerprint,
                seen.built_at,
                seen.history_start,
            ) == (info.view_id, info.fingerprint, info.built_at, info.history_start)
            if not same:
                raise StoreError(f"view {info.name} changed while the history copy read it")
            if store.applied_lsn() < until:
                raise StoreError(f"the store the history copy reads is behind {Lsn(until)}")
            room = _AHEAD
            for n, piece in enumerate(make(store)):
                if not room:
                    if not job_in.read(1):
                        raise _Orphaned
                    room += 1
                _send(out, ("piece", _written(piece, workdir / str(n))))
                room -= 1
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        _send(out, ("end", None))
    except (_Orphaned, BrokenPipeError):
        shutil.rmtree(workdir, ignore_errors=True)
    except Exception as exc:  # handed to the parent, which raises it
        with suppress(BrokenPipeError):
            _send(out, ("error", f"{type(exc).__name__}: {exc}"))


class _Orphaned(Exception):
    """The parent died: nobody will read what the child makes."""


def _written(piece: Any, stem: Path) -> Any:
    """The piece with each Arrow table replaced by the name of the IPC file it was written to."""

    def write(table: pa.Table, path: Path) -> str:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return str(path)

    changes = None if piece.changes is None else write(piece.changes, stem.with_suffix(".arrow"))
    checkpoints = [
        write(t, stem.with_name(f"{stem.name}-checkpoint{i}.arrow"))
        for i, t in enumerate(piece.checkpoints)
    ]
    return dataclasses.replace(piece, changes=changes, checkpoints=checkpoints)


if __name__ == "__main__":
    main()
