"""The layout's import rules (DESIGN.md, issue 12), checked on the source with `ast`.

Imports only go down the data path:

    viewstore/ leaf modules (errors, dsn, render, progress, pgcluster, codecs/)
    ingest/    imports none of views/, store/, history/, serve/
    views/     the compiler: no RocksDB, none of store/, history/, serve/
    history/   no store/ module (the store passes a typed interface, history.access), no psycopg
    store/     may import views/, ingest/, history/
    serve/     the HTTP side, imported by nothing but viewstore/cli.py
    viewstore/ cli, demo, the package itself: the top

Every import counts, including the ones inside functions and under TYPE_CHECKING: a lazy
import still ties the modules together. And `import viewstore` stays cheap.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ingest": "ingest", "views": "views", "store": "store", "history": "history"}
PACKAGES["serve"] = "serve"
# The modules of viewstore/ that everything may use (they import no package above them).
BASE = {"errors", "dsn", "render", "progress", "pgcluster", "codecs"}
APP = "app"  # the rest of viewstore/: the CLI, the demo, the package's __init__

# Which layers each layer may import (besides the standard library and declared dependencies).
ALLOWED = {
    "base": {"base"},
    "ingest": {"base", "ingest"},
    "views": {"base", "ingest", "views"},
    "history": {"base", "ingest", "history"},
    "store": {"base", "ingest", "views", "history", "store"},
    "serve": {"base", "ingest", "views", "history", "store", "serve"},
    APP: {"base", "ingest", "views", "history", "store", "serve", APP},
}
# Third-party modules only some places may import.
ONLY_IN = {
    "rocksdict": lambda layer, path: layer == "store",
    "psycopg": lambda layer, path: layer in ("base", APP) or path == "ingest/pgconn.py",
    "fastapi": lambda layer, path: layer == "serve",
    "starlette": lambda layer, path: layer == "serve",
    "uvicorn": lambda layer, path: layer == "serve",
}
HEAVY = ("rocksdict", "duckdb", "fastapi", "psycopg")


def layer_of_module(name: str) -> str | None:
    """The layer of a `viewstore...` module name; None for anything else."""
    parts = name.split(".")
    if parts[0] != "viewstore":
        return None
    if len(parts) == 1:
        return APP
    if parts[1] in PACKAGES:
        return parts[1]
    return "base" if parts[1] in BASE else APP


def layer_of_path(rel: str) -> str:
    top, _, rest = rel.partition("/")
    if top in PACKAGES.values():
        return top
    assert top == "viewstore", rel
    return "base" if rest.split("/")[0].removesuffix(".py") in BASE else APP


def source_files() -> Iterator[tuple[str, Path]]:
    for top in [*PACKAGES.values(), "viewstore"]:
        for path in sorted((ROOT / top).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            assert node.module is not None
            yield node.lineno, node.module
            for alias in node.names:  # `from viewstore.store import db` imports store.db
                yield node.lineno, f"{node.module}.{alias.name}"


def violations() -> list[str]:
    found = []
    for rel, path in source_files():
        layer = layer_of_path(rel)
        for line, module in imports(path):
            target = layer_of_module(module)
            where = f"{rel}:{line}: {layer} imports {module}"
            if target is not None:
                if target not in ALLOWED[layer]:
                    found.append(f"{where} ({target} is not below {layer})")
                if target == "serve" and layer != "serve" and rel != "viewstore/cli.py":
                    found.append(f"{where} (only viewstore/cli.py imports serve)")
                continue
            top = module.split(".")[0]
            if top in ONLY_IN and not ONLY_IN[top](layer, rel):
                found.append(f"{where} ({top} is not imported there)")
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for rel, path in source_files():
        layer = layer_of_path(rel)
        for _, module in imports(path):
            target = layer_of_module(module)
            if target is not None and target != layer:
                graph.setdefault(layer, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_only_go_down() -> None:
    found = violations()
    assert not found, "imports against the layout (DESIGN.md):\n" + "\n".join(found)


def test_no_cycles_between_packages() -> None:
    graph = package_graph()
    assert find_cycle(graph) is None, f"import cycle between packages: {find_cycle(graph)}"
    assert "history" not in graph.get("views", set())
    assert "store" not in graph.get("history", set())


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a copy of a module is reported."""
    bad = tmp_path / "changelog.py"
    bad.write_text("from viewstore.store.db import Store\n")
    found = [
        f"history/changelog.py:{line}: history imports {module}"
        for line, module in imports(bad)
        if layer_of_module(module) not in ALLOWED["history"]
    ]
    assert found[0] == "history/changelog.py:1: history imports viewstore.store.db"
    assert find_cycle({"store": {"history"}, "history": {"store"}}) == [
        "history",
        "store",
        "history",
    ]


@pytest.mark.parametrize("module", ["viewstore", "viewstore.ingest.pgoutput"])
def test_import_viewstore_is_cheap(module: str) -> None:
    code = f"import sys, {module}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert out == "", f"`import {module}` loads {out}"


def test_viewstore_open_still_works_lazily() -> None:
    import viewstore

    assert callable(viewstore.open)
    assert viewstore.Reader.__name__ == "Reader"
