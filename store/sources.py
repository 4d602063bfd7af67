"""Where a server reads the store from: the writing process's own store, or a follower of it.

- `LiveSource` (`viewstore run --http`): the pipeline's open store. Each read takes a
  `Store.snapshot()`, consistent across column families and never blocking ingest.
- `FollowerSource` (`viewstore serve`, `viewstore subscribe`): a RocksDB secondary instance
  of a store another process writes. `refresh()` catches it up with the primary, only when
  the primary's log or manifest changed (a catch-up costs about 10 ms; a check, a directory
  listing). Between refreshes its state does not move, so a read needs no snapshot.

Both report the applied LSN cheaply, so a server can poll it every few milliseconds and wake
its subscribers when it moves.

Reads that may take long (a whole view, a snapshot for a new subscriber) run on worker threads
with `reading()`, so that the server's event loop keeps answering everyone else meanwhile. A
live read takes a RocksDB snapshot (its gets are as of it; rocksdict's iterators over one see
later writes, a limitation README lists). A follower has none that holds across a catch-up (a
secondary instance's snapshot sees what a later catch-up brings), so `refresh` does not catch
up while a `reading()` is open: it tries again at its next tick, and readers that arrive
after it asked wait for it (a few milliseconds) instead of starving it. `read()` is for the
event loop's own short reads, which never overlap a `refresh` (both run on the loop).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from rocksdict import AccessType, Rdict

from viewstore.errors import StoreError
from viewstore.ingest.lsn import Lsn
from viewstore.store.db import COLUMN_FAMILIES, Store, _cf_options, _options


class Source(Protocol):
    path: Path

    def read(self) -> Store:
        """A consistent store to read from (valid until the next `refresh`)."""
        ...

    def reading(self) -> AbstractContextManager[Store]:
        """A consistent store for a read on another thread, while the block runs."""
        ...

    def refresh(self) -> Lsn:
        """Catch up with the writer if needed; the applied LSN."""
        ...

    def close(self) -> None: ...


class LiveSource:
    """Reads of the store this process writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.path = store.path

    def read(self) -> Store:
        return self.store.snapshot()

    @contextmanager
    def reading(self) -> Iterator[Store]:
        yield self.read()  # a RocksDB snapshot, as the event loop's reads take

    def refresh(self) -> Lsn:
        return self.store.applied_lsn()

    def close(self) -> None:
        pass  # the pipeline owns the store


class FollowerSource:
    """A secondary instance following the store another process writes."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir)
        if not (self.path / "CURRENT").exists():
            raise StoreError(
                f"no viewstore data in {self.path}",
                hint="check --data, or start `viewstore run --data DIR` to create it",
            )
        # A secondary keeps its own info log; it is scratch, removed on close.
        self._scratch = tempfile.mkdtemp(prefix="viewstore-follower-")
        cfs = {name: _cf_options() for name in COLUMN_FAMILIES}
        try:
            db = Rdict(
                str(self.path),
                _options(),
                column_families=cfs,
                access_type=AccessType.secondary(self._scratch),
            )
        except Exception as exc:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise StoreError(f"cannot follow the store in {self.path}: {exc}") from None
        self.store = Store(db, self.path, readonly=True)
        self._signature = self._files()
        self._readers = 0  # reads open on other threads (`reading`)
        self._behind = False  # a catch-up waits for them; new readers wait for it
        self._cond = threading.Condition()

    def read(self) -> Store:
        return self.store

    @contextmanager
    def reading(self) -> Iterator[Store]:
        with self._cond:
            while self._behind:
                self._cond.wait()
            self._readers += 1
        try:
            yield self.store
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    def refresh(self) -> Lsn:
        files = self._files()
        if files != self._signature:
            with self._cond:
                if self._readers:
                    self._behind = True  # not under a read: at the next tick
                else:
                    self._signature = files
                    self.store.db.try_catch_up_with_primary()
                    self._behind = False
                    self._cond.notify_all()
        return self.store.applied_lsn()

    def _files(self) -> tuple[tuple[str, int, int], ...]:
        # The write-ahead log grows with every write; the manifest and CURRENT change on
        # flushes and compactions. Nothing else tells a secondary that there is news.
        out = []
        with os.scandir(self.path) as entries:
            for e in entries:
                if e.name.endswith(".log") or e.name.startswith(("MANIFEST", "CURRENT")):
                    try:
                        st = e.stat()
                    except FileNotFoundError:  # the writer deleted it since the listing
                        continue
                    out.append((e.name, st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))

    def close(self) -> None:
        self.store.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
