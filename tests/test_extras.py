"""The extras install what their users import: the notebook's cells run after `make notebook`."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import nbformat
import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "sessions_analysis.ipynb"


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def _imported_modules(notebook: Path) -> set[str]:
    """Top-level names of every module the notebook's code cells import."""
    nb = nbformat.read(notebook, as_version=4)
    modules: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_module_the_notebook_imports_is_installed_by_the_notebook_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = {_name(r) for r in project["dependencies"]}
    installed |= {_name(r) for r in project["optional-dependencies"]["notebook"]}
    installed.add(_name(project["name"]))

    modules = _imported_modules(NOTEBOOK) - set(sys.stdlib_module_names)
    assert {"duckdb", "matplotlib", "pandas", "mihu_frames"} <= modules  # the parse sees them
    providers = packages_distributions()  # module name -> the distributions installing it
    missing = {}
    for module in sorted(modules):
        names = {_name(d) for d in providers.get(module, [module])}
        if not names & installed:
            missing[module] = sorted(names)
    assert missing == {}, (
        f"modules the notebook imports but `pip install .[notebook]` lacks: {missing}"
    )
