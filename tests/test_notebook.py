"""The analysis notebook runs top to bottom (nbclient), and its committed copy has outputs."""

from __future__ import annotations

import importlib.util
import re
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


def _printed(nb) -> str:
    return "\n".join(
        o.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.output_type == "stream"
    )


def test_notebook_executes_top_to_bottom():
    builder = _builder()
    nb = builder.execute(builder.build(), timeout=240)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # durations, activity, hourly heat map
    printed = _printed(nb)
    assert "reload: 0 requests" in printed  # the reload sent no request
    assert "reload equal to the first load: True" in printed
    assert "snapshot round trip equal: True" in printed
    assert "writing the same data again writes: None" in printed
    # the progress bar as text, finished: the notebook shows its last state
    states = re.findall(r"mihu sessions: +(\d+)%\|[^\n]*?(\d+)/(\d+)", printed)
    bars: list[list[tuple[str, str, str]]] = []
    for state in states:  # a bar's states, until the count starts again
        if not bars or int(state[1]) < int(bars[-1][-1][1]):
            bars.append([])
        bars[-1].append(state)
    assert len(bars) >= 2, states
    assert all(bar[-1][0] == "100" and bar[-1][1] == bar[-1][2] for bar in bars), bars


def test_committed_notebook_matches_its_builder_and_has_outputs():
    committed = nbformat.read(NOTEBOOKS / "sessions_analysis.ipynb", as_version=4)
    built = _builder().build()
    assert [c.source for c in committed.cells] == [c.source for c in built.cells]
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) >= 3
    assert "snapshot round trip equal: True" in _printed(committed)
    assert "0/15" not in _printed(committed)  # no frozen progress bar
