"""The command line: ``python -m mihu_frames.simulator`` and ``mihu-frames simulate``.

A thin shell over ``Simulator``: one flag per ``SimulatorOptions`` field (see ``options.py``),
plus the settings of the process itself (``--log-level``; ``--json-line`` and ``--control`` for
``spawn``). Once serving it prints, for a person, the lines to paste into a shell
(``export MIHU_BASE_URL=...``, ``export MIHU_API_TOKEN=...``) and a one-line hint for a notebook,
every other line a shell comment; with ``--json-line``, for a program, one JSON line instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mihu_frames.simulator import options as _options
from mihu_frames.simulator.app import Simulator
from mihu_frames.simulator.remote import serve_control

#: The program name ``--help`` shows when run as ``python -m mihu_frames.simulator``.
PROG = "python -m mihu_frames.simulator"
#: Settings of the process, not of the simulator: name -> ``add_argument`` keywords.
PROCESS_SETTINGS: dict[str, dict[str, Any]] = {
    "log_level": {"default": "WARNING", "help": "logging level for stderr"},
    "json_line": {
        "action": "store_true",
        "help": 'print one JSON line {"base_url", "token", "conversations"} instead of the '
        "lines for a shell (for programs)",
    },
    "control": {
        "action": "store_true",
        "help": "serve the control channel spawn() uses: read its auth key (hex) from the first "
        "line of stdin and add its address to the JSON line",
    },
}


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, with its ValueError turned into argparse's message."""

    def read(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    read.__name__ = getattr(parse, "__name__", "value")
    return read


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser: a flag per simulator option, then the process settings.

    Parameters
    ----------
    prog : str
        The program name in ``usage:`` (``"mihu-frames simulate"`` from ``mihu_frames.cli``).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the Mihu sessions API from seeded synthetic data on 127.0.0.1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    types = _options.option_types()
    for f in _options.option_fields():
        meta = f.metadata
        parse = meta["parse"]
        parser.add_argument(
            _options.flag(f.name),
            dest=f.name,
            type=types[f.name] if parse is None else _argument_type(parse),
            default=meta["cli_default"],
            choices=meta["choices"],
            metavar=meta["metavar"],
            help=meta["help"],
        )
    for name, settings in PROCESS_SETTINGS.items():
        parser.add_argument(_options.flag(name), dest=name, **settings)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the simulator until SIGINT/SIGTERM.

    Once serving, prints to stdout the ``export`` lines for a shell and a hint for a notebook
    (see ``announcement``), or with ``--json-line`` one JSON line ``{"base_url", "token",
    "conversations"}`` (and ``"control"`` with ``--control``).

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    prog : str
        The program name ``--help`` and errors show.

    Returns
    -------
    int
        The exit status, 0 on a clean shutdown.

    Examples
    --------
    ``python -m mihu_frames.simulator --port 0 --sizes 1000x20 --latency 0.02``;
    ``mihu-frames simulate`` calls ``main(argv, prog="mihu-frames simulate")``.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        sim = Simulator(**{f.name: getattr(args, f.name) for f in _options.option_fields()})
    except ValueError as exc:
        parser.error(str(exc))
    authkey = _control_key(parser, args)
    done = threading.Event()
    previous = _catch_signals(done)
    sim.generate_all()  # warm before announcing, so clients never wait on generation
    sim.start()
    try:
        _announce(sim, args, authkey)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _control_key(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bytes:
    """The control channel's auth key (first line of stdin, hex), or ``b""`` without
    ``--control``; a usage error when it is missing or not announced (``--json-line``)."""
    if not args.control:
        return b""
    if not args.json_line:
        parser.error("--control needs --json-line (its address is announced there)")
    try:
        authkey = bytes.fromhex(sys.stdin.readline().strip())
    except ValueError:
        authkey = b""
    if not authkey:
        parser.error("--control needs an auth key (hex) on the first line of stdin")
    return authkey


def _catch_signals(done: threading.Event) -> dict[signal.Signals, Any]:
    """Set ``done`` on SIGINT/SIGTERM; return the handlers replaced, to put back."""

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: rely on KeyboardInterrupt
            previous[sig] = signal.signal(sig, _on_signal)
    return previous


def _announce(sim: Simulator, args: argparse.Namespace, authkey: bytes) -> None:
    """Print where the simulator serves: the JSON line, or the lines for a person."""
    if not args.json_line:
        print(announcement(sim), flush=True)
        return
    line: dict[str, Any] = {
        "base_url": sim.base_url,
        "token": sim.token,
        "conversations": sim.conversation_uuids,
    }
    if args.control:
        line["control"] = serve_control(sim, authkey)
    print(json.dumps(line), flush=True)


def announcement(sim: Simulator, shown: int = 8) -> str:
    """What a person reads once the simulator serves: lines that paste into a shell as they are.

    Parameters
    ----------
    sim : Simulator
        The running simulator.
    shown : int
        How many conversation UUIDs to list.

    Examples
    --------
    >>> print(announcement(sim))  # doctest: +SKIP
    # Mihu simulator at http://127.0.0.1:8765: 7 conversations, 3,551 sessions (Ctrl-C stops it)
    export MIHU_BASE_URL=http://127.0.0.1:8765
    export MIHU_API_TOKEN=sim-token
    # notebook: import os; os.environ.update(MIHU_BASE_URL="http://127.0.0.1:8765", ...)
    # conversations: 3f0c... 9a1b... (GET /api/v1/conversations lists them)
    """
    uuids = sim.conversation_uuids
    listed = " ".join(uuids[:shown]) + (
        f" and {len(uuids) - shown} more" if len(uuids) > shown else ""
    )
    notebook = (
        f"import os; os.environ.update(MIHU_BASE_URL={json.dumps(sim.base_url)}, "
        f"MIHU_API_TOKEN={json.dumps(sim.token)})"
    )
    return "\n".join(
        [
            f"# Mihu simulator at {sim.base_url}: {len(uuids):,} conversations, "
            f"{sum(sim.sizes):,} sessions (Ctrl-C stops it)",
            f"export MIHU_BASE_URL={shlex.quote(sim.base_url)}",
            f"export MIHU_API_TOKEN={shlex.quote(sim.token)}",
            f"# notebook: {notebook}",
            f"# conversations: {listed or 'none'} (GET /api/v1/conversations lists them)",
        ]
    )
