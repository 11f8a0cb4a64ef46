"""The README keeps its promises: its examples run, and its first screen says how to install."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_examples import python_blocks, run_page

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: What a reader sees before scrolling.
FIRST_SCREEN = 45


def test_every_python_block_of_the_readme_runs(reader_env):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    assert [b.line for b in blocks if b.not_run] == []  # the README runs whole
    ns = run_page(README, reader_env)
    sizes = [40, 180, 420, 950, 1600]
    assert ns["sim"].conversation_uuids == ns["conversations"]
    assert len(ns["conversations"]) == len(sizes)
    assert len(ns["df"]) == sum(sizes)
    assert set(ns["df"]["status"].dropna().astype(str)) <= {"active", "completed", "timed_out"}
    assert len(ns["latest"]) == sum(sizes)
    assert (reader_env / "data" / "snapshots").is_dir()


def test_readme_examples_take_the_address_from_the_environment():
    """No example hard-codes an account: each reader's environment says where the API is."""
    for block in python_blocks(README.read_text(encoding="utf-8")):
        assert not re.search(r"\b(subdomain|base_url|token)\s*=", block.code), block.code


def _first_screen() -> str:
    return "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])


def test_first_screen_says_how_to_install_and_develop():
    screen = _first_screen()
    assert 'pip install "./mihu_frames[plot]"' in screen
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in extras:
        assert f"| `{extra}` |" in screen, f"the extra {extra!r} is not in the README's table"
    for target in ("make demo", "make test", "make notebook", "make docs"):
        assert target in screen


def test_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == []
