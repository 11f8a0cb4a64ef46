"""The Python examples of a Markdown page, and running them the way a reader would.

A page's ```` ```python ```` blocks (also indented ones, inside an admonition) run in order in one
namespace, in a temporary working directory. A block is left out only when the line just before
its fence is ``<!-- not-run: <reason> -->`` (say why: it needs Spark, it is not Python ...).
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it starts, its code, and why it is not run (if so)."""

    line: int
    code: str
    not_run: str | None


def python_blocks(text: str) -> list[Block]:
    """Every ```` ```python ```` block of a page, in order."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("info").strip().split(" ")[0] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        code = textwrap.dedent(match.group("body"))
        blocks.append(Block(line, code, marker.group("reason") if marker else None))
    return blocks


def run_page(page: Path, workdir: Path) -> dict[str, Any]:
    """Run a page's blocks in order in one namespace, in ``workdir``; return the namespace.

    A failing block raises with the page and line in the message. A simulator the page started
    (any ``Simulator`` in the namespace) is stopped at the end.
    """
    page = page.resolve()
    namespace: dict[str, Any] = {"__name__": f"page_{page.stem}"}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        for block in python_blocks(page.read_text(encoding="utf-8")):
            if block.not_run:
                continue
            code = compile(block.code, f"{page.name}:{block.line}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                raise AssertionError(
                    f"{page.name}, the block at line {block.line} failed: {exc!r}\n{block.code}"
                ) from exc
    finally:
        os.chdir(previous)
        _stop_simulators(namespace)
        _close_figures()
    return namespace


def _stop_simulators(namespace: dict[str, Any]) -> None:
    from mihu_frames.simulator import Simulator

    for value in namespace.values():
        if isinstance(value, Simulator):
            value.stop()


def _close_figures() -> None:
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
