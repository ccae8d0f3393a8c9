"""sqlml's modules import each other without cycles, through the layers they belong to.

The graph is read from the source with ``ast``, imports inside functions included: a lazy import
hides a cycle from the interpreter, not from a reader. An edge goes to the module an import names
(``from sqlml.automl import search`` -> ``sqlml.automl.search``; ``from sqlml.data.schema import
Feature`` -> ``sqlml.data.schema``); the implicit import of parent packages is not an edge.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sqlml"

# Cycles known on main and being removed by another branch; each an expected exception until it
# merges, then drop it here (the test fails on any other cycle, and on one of these that grows).
KNOWN_CYCLES: list[set[str]] = []

# The layers above the core, and who may import them. Everything else is the core, which imports
# none of these: no core module knows it runs inside PL/Python, under the CLI or beside a dev cluster.
IMPORTED_ONLY_FROM = {
    "sqlml.server": ["sqlml.server"],  # PL/Python's entry points (sql/sqlml.sql calls sqlml.server.api)
    "sqlml.cli": ["sqlml.cli"],  # the `sqlml` console script
    "sqlml.spark": ["sqlml.spark"],  # scoring inside Spark executors
    "sqlml.client": ["sqlml", "sqlml.cli"],  # sqlml.connect(), and the CLI's lifecycle commands over it
    "sqlml.devcluster": ["sqlml.cli"],  # dev-only: `sqlml dev`; never the production installer
}

# What `pip install sqlml` gets (no server extra): the CLI and the client import only these at module
# level, so `sqlml --help` and `import sqlml` work without the ML stack (tests/test_light_client.py).
LIGHT_CLIENT_ROOTS = ["sqlml", "sqlml.cli", "sqlml.client"]
LIGHT_CLIENT_THIRD_PARTY = {"psycopg2"}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = module_files()


def imported_names(module: str, path: Path, top_level_only: bool = False) -> set[str]:
    """The absolute names of what ``module`` imports: a module of sqlml where one is named
    (``from sqlml.automl import search`` -> ``sqlml.automl.search``), else the name imported from."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return names


def sqlml_module(name: str) -> str | None:
    """The module of sqlml a name lives in (``sqlml.data.schema.Feature`` -> ``sqlml.data.schema``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@functools.cache
def import_graph(top_level_only: bool = False) -> dict[str, set[str]]:
    return {module: {sqlml_module(n) for n in imported_names(module, path, top_level_only)
                     if n.split(".")[0] == "sqlml"} - {module}
            for module, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
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
                    found.append(component)
    return found


def within(module: str, package: str) -> bool:
    """``module`` is ``package`` or one of its modules (the root ``sqlml`` stands for its ``__init__`` only)."""
    return module == package or (package != "sqlml" and module.startswith(package + "."))


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "sqlml.client" in graph["sqlml"]  # sqlml.connect imports the client inside the function
    assert "sqlml.install" in graph["sqlml.devcluster"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    unexpected = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles in sqlml: {unexpected}"


@pytest.mark.parametrize("layer", sorted(IMPORTED_ONLY_FROM))
def test_layers_are_imported_only_from_above(layer):
    allowed = IMPORTED_ONLY_FROM[layer]
    wrong = sorted(f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
                   if within(target, layer) and not any(within(module, importer) for importer in allowed))
    assert not wrong, f"{layer} may be imported only from {allowed}: {wrong}"


def test_the_light_client_imports_no_server_stack_at_module_level():
    graph = import_graph(top_level_only=True)
    reached, todo = set(), list(LIGHT_CLIENT_ROOTS)
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    heavy = sorted(f"{module} imports {name}" for module in reached
                   for name in imported_names(module, MODULES[module], top_level_only=True)
                   if name.split(".")[0] not in sys.stdlib_module_names | LIGHT_CLIENT_THIRD_PARTY | {"sqlml", ""})
    assert "sqlml.cli.lifecycle" in reached and "sqlml.client" in reached
    assert not heavy, f"the light client (pip install sqlml) has no server stack: {heavy}"
