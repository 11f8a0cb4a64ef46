"""The package's layers: imports run one way, with no cycle (imports inside functions too).

command line → {load, sync, snapshots, stats, plots, report} → client (the public facade) →
page runner → {transport, cache file, decoding} → {frame, options, schema, errors}.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mihu_frames"

#: Each module's layer; an import may only go to a lower layer (or, inside a group of
#: modules that belong together, sideways, as long as there is no cycle).
LAYERS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "schema": 0,
    "_files": 0,
    "_memory": 0,
    "_dates": 0,
    "_forking": 0,
    "_spelling": 0,
    "versions": 1,
    "legacy": 2,
    "store": 3,
    "options": 1,
    "option_types": 1,
    "frame": 1,
    "pacing": 1,
    "decoding": 2,
    "transport": 2,
    "cachefile": 2,
    "progress": 2,
    "runner": 3,
    "started": 3.5,  # a paging policy: over the runner, under the client that picks it
    "client": 4,
    "load": 5,
    "sync": 5,
    "snapshots": 5,
    "compaction": 5,
    "stats": 5,
    "engines": 5,  # the statistics on roots, Polars, DuckDB and Spark (over stats and root)
    "plots": 5,
    "report": 5,
    "cli": 6,
    "__main__": 7,
    "__init__": 7,
    "simulator": 5,  # a stand-in server the CLI runs: imports nothing of the library
}
#: Modules that know nothing of the API (they work on any sessions frame).
NO_API = (
    "stats",
    "engines.__init__",
    "engines.source",
    "engines.backends",
    "engines.compute",
    "engines.boxes",
    "plots",
    "report",
    "frame",
    "schema",
)
API = {"client", "runner", "transport", "cachefile", "decoding", "load", "sync", "pacing"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[tuple[str, ...]]:
    """What ``name`` imports from mihu_frames, at any depth of its code: for each import, the
    dotted targets it may mean (``from x import y``: the module ``x.y``, else ``x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            choices = [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = package[: len(package) - node.level + 1]
                module = ".".join(["mihu_frames", *base, *(node.module or "").split(".")])
                module = module.rstrip(".")
            else:
                module = node.module or ""
            choices = [(f"{module}.{alias.name}", module) for alias in node.names]
        else:
            continue
        for choice in choices:
            if choice[-1] == "mihu_frames" or choice[-1].startswith("mihu_frames."):
                out.add(tuple(c.removeprefix("mihu_frames").lstrip(".") for c in choice))
    return out


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import target names (``decoding.arrow.decode_pages`` → its module)."""
    parts = target.split(".") if target else ["__init__"]
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        if f"{candidate}.__init__" in modules:
            return f"{candidate}.__init__"
        parts = parts[:-1]
    return None


def _first(choice: tuple[str, ...], modules: dict[str, Path]) -> str | None:
    """The first target of an import that is a module itself, else what the last names."""
    for target in choice[:-1]:
        if target in modules or f"{target}.__init__" in modules:
            return _resolve(target, modules)
    return _resolve(choice[-1], modules)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = {_first(choice, modules) for choice in _imports(name, path)}
        graph[name] = {e for e in edges if e is not None and e != name}
    return graph


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_has_a_layer():
    assert [m for m in _graph() if m.split(".")[0] not in LAYERS] == []


def test_imports_run_one_way():
    wrong = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if _layer(b) > _layer(a)
        or (_layer(b) == _layer(a) and a.split(".")[0] != b.split(".")[0] and _layer(a) < 5)
    ]
    assert wrong == []


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_statistics_know_nothing_of_the_api():
    graph = _graph()
    for module in NO_API:
        assert {t.split(".")[0] for t in graph[module]} & API == set(), module


def test_the_simulator_imports_nothing_of_the_library():
    graph = _graph()
    outside = {
        (a, b)
        for a, targets in graph.items()
        if a.startswith("simulator")
        for b in targets
        if not b.startswith("simulator")
    }
    assert outside == set()


def test_the_checker_sees_imports_inside_functions():
    # cli imports most modules inside its command functions: they must be in the graph
    assert {"load", "sync", "snapshots", "report", "simulator.__init__"} <= _graph()["cli"]


#: One concern per class, one job per function (issue 22): the sizes where that usually breaks.
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 80


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines of code, its docstring aside."""
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    start = body[1].lineno if has_doc and len(body) > 1 else body[0].lineno
    return (node.end_lineno or start) - start + 1


def test_no_class_over_350_lines_and_no_function_over_80_lines_of_code():
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(PACKAGE)}:{node.__class__.__name__}"
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_big.append((where, node.name, lines))
            elif (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _code_lines(node) > MAX_FUNCTION_LINES
            ):
                too_big.append((where, node.name, _code_lines(node)))
    assert too_big == []
