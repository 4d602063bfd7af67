"""An engine dropped is freed at once: no reference cycle keeps it (and with it a column
family handle, which keeps RocksDB open and locked) alive until the cycle collector runs. A
pipeline restarted in the same process reopens the store; with a cycle it failed
intermittently ("the store ... is open in another process")."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from viewstore.store.db import Store
from viewstore.store.engine import ViewEngine


class _Writer:
    def get_row(self, key: bytes) -> bytes | None:
        return None

    def view_write(self, key: bytes, value: bytes | None) -> None:
        pass


def test_a_dropped_engine_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    gc.disable()
    try:
        engine = ViewEngine([], store.views, _Writer())
        freed = weakref.ref(engine)
        del engine
        assert freed() is None, "the engine is in a reference cycle"
    finally:
        gc.enable()
        store.close()
