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
    "portrait": {"storage", "encoding", "actors", "serve", "offline", "migrations"},
    "storage": {"actors", "serve", "offline"},
    # The encoder adapters, used by both applications: the same layer as storage.
    "encoding": {"actors", "serve", "offline"},
    "actors": {"serve", "offline"},
    "serve": {"offline"},
    "offline": set(),
    # The client is for our users' programs: it stands alone (httpx only).
    "portrait_client": {"portrait", "storage", "encoding", "actors", "serve", "offline",
                        "migrations"},
}
# The `portrait` command is the one module above both applications: it dispatches the
# offline subcommands (evaluate, tune, ab) to offline.cli.
EXEMPT = {("serve/cli/__init__.py", "offline")}
# Production code never reaches into the offline evaluation.
NO_EVALUATION = ("storage", "encoding", "actors", "serve")


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


# Every first-party tree whose modules import each other: the packages (found, so a new one
# is covered without an edit here), tests too (a helper module there can close a loop as well
# as a package can), and the script folders.
FIRST_PARTY = sorted(
    {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"bench", "migrations"}
)
# Cycles another part of the work is removing; each entry is one cycle's modules, sorted.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is itself imported.

    Function bodies are skipped (they import when called, so they cannot close a cycle at
    import time), but ``if TYPE_CHECKING:`` blocks count: a cycle that only a type checker
    sees is still two modules that each need the other, which is what the test forbids.
    """
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from portrait import profile` imports the module portrait.profile too.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return names


def with_packages(name: str, importer: str) -> set[str]:
    """``name`` and the packages above it, whose ``__init__`` runs first.

    Less the importer's own packages: they are already being imported when it runs, so
    `from serve.inspector import charts` inside ``serve.inspector.routes`` needs ``charts``,
    not a second start of the package that is importing ``routes``.
    """
    parts = name.split(".")
    own = {".".join(importer.split(".")[:n]) for n in range(1, importer.count(".") + 1)}
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1)} - own


def first_party_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports at module level."""
    paths = {module_name(p): p for top in FIRST_PARTY for p in sorted((ROOT / top).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        imported = module_level_imports(path)
        needed = {m for each in imported for m in with_packages(each, name)}
        graph[name] = {m for m in needed if m in paths} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component of several modules.

    Tarjan's algorithm, iterative so a deep import chain cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [cycle_through(graph, component) for component in components]


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth first)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in strongly connected {sorted(component)}")


def test_cycles_finds_a_cycle_and_prints_it() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    found = [
        cycle
        for cycle in cycles(first_party_graph())
        if tuple(sorted(set(cycle))) not in KNOWN_CYCLES
    ]
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


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
