"""What the benchmark scripts share: their command line, the machine, their tables, the JSON they
write."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

import mihu_frames as mf

C = TypeVar("C")


def parse(doc: str, full: C, quick: C, argv: list[str] | None, quick_help: str) -> tuple[C, Any]:
    """``--quick``, ``--repeat N`` and ``--json PATH``; returns the config to run and the args."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeat", type=int, default=None, help="best of N (default 3; quick 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    cfg = quick if args.quick else full
    if args.repeat is not None:
        if args.repeat < 1:
            parser.error("--repeat must be >= 1")
        cfg = replace(cfg, repeat=args.repeat)  # type: ignore[type-var]
    return cfg, args


def print_machine(repeat: int, quick: bool) -> None:
    """The line that says what the figures below were measured with."""
    print(
        f"mihu_frames {mf.__version__} | Python {platform.python_version()} | pandas "
        f"{pd.__version__} | pyarrow {pa.__version__} | {os.cpu_count()} CPUs | best of "
        f"{repeat}{' | QUICK' if quick else ''}",
        flush=True,
    )


def environment() -> dict[str, Any]:
    """What the figures were measured with, for the JSON results."""
    return {
        "mihu_frames": mf.__version__,
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_json(path: Path, config: Any, quick: bool, **results: Any) -> None:
    """Write the run's configuration, machine and ``results`` to ``path``."""
    payload = {"config": config, "quick": quick, "environment": environment(), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def print_rows(header: Sequence[str], lines: Sequence[Sequence[object]]) -> None:
    """A plain-text table: columns padded to their widest cell, a rule under the header."""
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    print(" | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)))
