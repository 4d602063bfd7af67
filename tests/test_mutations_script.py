"""scripts/mutations stays in step with the code: each mutation's text is in the tree exactly
once (else the script reports it STALE and checks nothing), and each names tests that exist.
Running the mutations themselves takes a minute or two: `scripts/mutations`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():  # type: ignore[no-untyped-def]
    loader = importlib.machinery.SourceFileLoader("mutations", str(ROOT / "scripts" / "mutations"))
    spec = importlib.util.spec_from_loader("mutations", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutations"] = module  # its dataclasses look themselves up there
    loader.exec_module(module)
    return module


def test_every_mutation_applies_once_and_names_real_tests() -> None:
    mutations = _script().MUTATIONS
    assert len(mutations) >= 4
    for m in mutations:
        for file, old, new in m.edits:
            assert (ROOT / file).read_text().count(old) == 1, (m.name, file, old)
            assert old != new
        for test in m.tests:
            path, _, name = test.partition("::")
            name = re.sub(r"\[.*\]$", "", name)
            assert f"def {name}(" in (ROOT / path).read_text(), (m.name, test)
