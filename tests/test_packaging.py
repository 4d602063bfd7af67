"""What a new user's machine gets: every import declared, and a wheel that works on its own.

A package installed by hand on the developers' machine hides a missing dependency: every run
there passes and a fresh clone fails at once (this happened with pglast). These tests read the
imports out of the source with `ast` and compare them with `pyproject.toml`, so an undeclared
import fails here, naming the module and the file, whatever this interpreter has installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _normalise(name: str) -> str:
    # PEP 503: distribution names compare case-insensitively, with runs of -_. equal.
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"pyproject.toml: cannot read the requirement {requirement!r}"
        names.add(_normalise(match.group(1)))
    return names


def _package_dirs() -> list[Path]:
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    return sorted({ROOT / path for path in package_dir.values()})


def _python_files(directory: Path) -> list[Path]:
    files = [p for p in directory.rglob("*.py") if "__pycache__" not in p.parts]
    # Scripts without the .py suffix (scripts/bench) count when they are Python.
    for path in directory.iterdir():
        if path.is_file() and path.suffix == "":
            first_line = path.read_bytes().split(b"\n", 1)[0]
            if first_line.startswith(b"#!") and b"python" in first_line:
                files.append(path)
    return sorted(files)


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one file (relative imports are first-party)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def _local_modules(directory: Path) -> set[str]:
    """Modules a directory's own files import from each other (tests' helpers, bench scripts)."""
    names = {p.stem for p in directory.rglob("*.py")}
    names |= {p.name for p in directory.rglob("*") if (p / "__init__.py").exists()}
    return names


def undeclared_imports(directories: list[Path], declared: set[str], root: Path = ROOT) -> list[str]:
    """One line per third-party import in `directories` whose distribution is not declared."""
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for directory in directories:
        local = _local_modules(directory) | {"viewstore"}
        for path in _python_files(directory):
            for module in sorted(_imported_modules(path)):
                if module in sys.stdlib_module_names or module in local or module == "__future__":
                    continue
                where = path.relative_to(root)
                owners = {_normalise(d) for d in distributions.get(module, [])}
                if not owners:
                    problems.append(
                        f"{where} imports {module!r}, which no installed distribution provides: "
                        f"declare the distribution that provides it in pyproject.toml"
                    )
                elif not owners & declared:
                    problems.append(
                        f"{where} imports {module!r} (from {', '.join(sorted(owners))}), "
                        f"which pyproject.toml does not declare"
                    )
    return problems


def test_package_imports_are_declared() -> None:
    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    problems = undeclared_imports(_package_dirs(), declared)
    assert not problems, "undeclared dependencies of the package:\n" + "\n".join(problems)


def test_tests_and_scripts_imports_are_declared() -> None:
    declared = _requirement_names(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared |= _requirement_names(extra)
    problems = undeclared_imports([ROOT / "tests", ROOT / "scripts"], declared)
    assert not problems, "undeclared dependencies of tests/ and scripts/:\n" + "\n".join(problems)


def test_undeclared_import_is_named(tmp_path: Path) -> None:
    # The check itself can fail: a file importing pglast against a pyproject without it.
    (tmp_path / "viewsql.py").write_text("from pglast import parse_sql\nimport json\n")
    problems = undeclared_imports([tmp_path], {"psycopg"}, root=tmp_path)
    assert len(problems) == 1
    assert "viewsql.py imports 'pglast'" in problems[0]


@pytest.mark.slow
def test_built_wheel_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """What `pip install viewstore` from a wheel gives a user: no source tree, no editable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_ROOT_USER_ACTION"] = "ignore"
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("viewstore-*.whl")
    venv.create(tmp_path / "venv", with_pip=True, clear=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, env=env, cwd=tmp_path
    )
    bindir = python.parent
    for args in (["--help"], ["query", "--help"]):
        result = subprocess.run(
            [str(bindir / "viewstore"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout
    check = r"""
import importlib, importlib.resources, pkgutil, sys
import viewstore
assert "site-packages" in viewstore.__file__, viewstore.__file__
names = [m.name for m in pkgutil.walk_packages(viewstore.__path__, "viewstore.")]
for name in names:
    importlib.import_module(name)
page = importlib.resources.files("viewstore").joinpath(sys.argv[1])
assert page.is_file() and b"<html" in page.read_bytes().lower(), sys.argv[1]
print(len(names))
"""
    result = subprocess.run(
        [str(python), "-c", check, STATIC_PAGE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 20


# Where the leaderboard page lives inside the installed package.
STATIC_PAGE = "serve/static/leaderboard.html"
