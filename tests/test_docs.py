"""The reference site's examples run, against the simulator, as the README's do.

`make test` (and `make docs`) run `mkdocs build --strict`, which checks the links, the anchors
and the API reference; this file runs every page's Python blocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_examples import python_blocks, run_page

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: Blocks that cannot run in the tests, each with its reason on the page (keep this short).
NOT_RUN_ALLOWED = {
    (
        "recipes.md",
        "needs a Spark session (tests/test_stats_spark.py runs Spark against the same statistics)",
    ),
    ("statistics.md", "needs a Spark session and a root on object storage"),
}


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p.read_text())], ids=lambda p: p.name
)
def test_page_examples_run(page, reader_env):
    run_page(page, reader_env)


def test_blocks_left_out_are_few_and_say_why():
    left_out = {
        (page.name, block.not_run)
        for page in PAGES
        for block in python_blocks(page.read_text())
        if block.not_run
    }
    assert left_out == NOT_RUN_ALLOWED


def test_pages_with_examples_name_no_account():
    for page in PAGES:
        for block in python_blocks(page.read_text()):
            assert "subdomain=" not in block.code and "token=" not in block.code.replace(
                "sim.token", ""
            ), f"{page.name}:{block.line}"


def test_pages_in_the_nav_exist_and_every_page_is_in_it():
    import yaml

    config = yaml.safe_load((DOCS.parent / "mkdocs.yml").read_text())

    def files(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from files(value)
        else:
            for item in entry:
                yield from files(item)

    listed = set(files(config["nav"]))
    assert listed == {p.name for p in PAGES}
