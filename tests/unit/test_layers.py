"""The import graph points one way: portrait <- storage <- actors <- serve/offline.

Read statically (every import statement, also ones inside functions), so a lazy import
cannot hide an arrow from a lower layer to a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the first-party packages it must never import
FORBIDDEN = {
    "portrait": {"storage", "actors", "serve", "offline", "migrations"},
    "storage": {"actors", "serve", "offline"},
    "actors": {"serve", "offline"},
    "serve": {"offline"},
    "offline": set(),
    # The client is for our users' programs: it stands alone (httpx only).
    "portrait_client": {"portrait", "storage", "actors", "serve", "offline", "migrations"},
}
# The `portrait` command is the one module above both applications: it dispatches the
# offline subcommands (evaluate, tune, ab) to offline.cli.
EXEMPT = {("serve/cli/__init__.py", "offline")}
# Production code never reaches into the offline evaluation.
NO_EVALUATION = ("storage", "actors", "serve")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_from_a_higher_layer(package: str) -> None:
    bad = []
    for path in modules(package):
        rel = path.relative_to(ROOT).as_posix()
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package] and (rel, top) not in EXEMPT:
                bad.append(f"{rel} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", NO_EVALUATION)
def test_production_code_does_not_import_the_evaluation(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in imports_of(path)
        if name.startswith("portrait.evaluation")
    ]
    assert not bad, "\n".join(bad)


# SQL lives in storage/ (and the migrations): every other application package reaches the
# database through storage's stores and functions, never through a driver or a statement.
DATABASE_DRIVERS = ("sqlalchemy", "asyncpg")
SQL_OWNERS = ("storage", "migrations")


@pytest.mark.parametrize("package", sorted(set(FORBIDDEN) - set(SQL_OWNERS)))
def test_only_storage_speaks_sql(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in imports_of(path)
        if name.split(".")[0] in DATABASE_DRIVERS
    ]
    assert not bad, "\n".join(bad)
