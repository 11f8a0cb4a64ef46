"""The analysis notebook runs top to bottom (nbclient), and its committed copy has outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebook", NOTEBOOKS / "build_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_live_api(monkeypatch):
    for name in ("MIHU_BASE_URL", "MIHU_SUBDOMAIN", "MIHU_API_TOKEN", "MIHU_CONVERSATIONS"):
        monkeypatch.delenv(name, raising=False)


def test_notebook_executes_top_to_bottom():
    builder = _builder()
    nb = builder.execute(builder.build(), timeout=240)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # durations, activity, hourly heat map
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "(0, " in text  # the reload sent no request
    assert "True" in text  # snapshot read back equal


def test_committed_notebook_matches_its_builder_and_has_outputs():
    committed = nbformat.read(NOTEBOOKS / "sessions_analysis.ipynb", as_version=4)
    built = _builder().build()
    assert [c.source for c in committed.cells] == [c.source for c in built.cells]
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) >= 3
