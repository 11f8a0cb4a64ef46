"""MkDocs hook: a line ``<!-- cli-help: COMMAND -->`` in a page becomes that command's --help.

The help text is produced by the installed ``mihu_frames.cli`` at build time, so the command-line
page cannot disagree with the command line. ``<!-- cli-help: -->`` (no command) is the top level.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

MARKER = re.compile(r"^<!-- cli-help:\s*(?P<command>[a-z-]*)\s*-->$", re.MULTILINE)


def cli_help(command: str) -> str:
    """The ``mihu-frames [COMMAND] --help`` output, wrapped at 100 columns."""
    from mihu_frames.cli import main

    argv = [command, "--help"] if command else ["--help"]
    out = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(argv)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    text = out.getvalue().rstrip()
    if not text:
        raise RuntimeError(f"mihu-frames {' '.join(argv)} printed nothing")
    return text


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each cli-help marker by the command's help as a text block."""

    def block(match: re.Match[str]) -> str:
        command = match.group("command")
        title = f"mihu-frames {command} --help" if command else "mihu-frames --help"
        return f"```text\n$ {title}\n{cli_help(command)}\n```"

    return MARKER.sub(block, markdown)
