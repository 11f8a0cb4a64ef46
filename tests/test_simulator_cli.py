"""The simulator's command line, run as real subprocesses: what it prints, its flags, its help."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from mihu_frames.simulator import DATA_END, Simulator, SimulatorOptions
from mihu_frames.simulator.cli import PROCESS_SETTINGS, build_parser
from mihu_frames.simulator.options import flag, option_fields

SIMULATOR = (sys.executable, "-m", "mihu_frames.simulator")
SIMULATE = (sys.executable, "-m", "mihu_frames", "simulate")


@contextmanager
def running(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """The command in a subprocess; killed at the end if it is still running."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def read_lines(process: subprocess.Popen[bytes], n: int, timeout: float = 30) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for _ in range(n):
            lines.append(process.stdout.readline().decode())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(lines) == n and all(lines), f"expected {n} lines, got {lines}"
    return [line.rstrip("\n") for line in lines]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    assert process.stdout is not None and process.stdout.read() == b""  # nothing more


def sessions_total(base_url: str, token: str, conversation: str) -> int:
    reply = requests.get(
        f"{base_url}/api/v1/conversations/{conversation}/sessions",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert DATA_END <= parsedate_to_datetime(reply.headers["Date"]) <= DATA_END + timedelta(60)
    return int(reply.json()["data"]["total"])


def test_json_line_for_programs() -> None:
    argv = ("--json-line", "--port", "0", "--seed", "4", "--sizes", "3,2x2", "--token", "tok")
    with running(*SIMULATOR, *argv) as process:
        info: dict[str, Any] = json.loads(read_lines(process, 1)[0])
        assert list(info) == ["base_url", "token", "conversations"]
        assert info["token"] == "tok"
        assert info["conversations"] == Simulator(seed=4, sizes=(3, 2, 2)).conversation_uuids
        assert sessions_total(info["base_url"], "tok", info["conversations"][0]) == 3
        stop(process)


def test_simulate_prints_lines_to_paste_into_a_shell() -> None:
    token = "tok en's"  # needs quoting in a shell
    with running(*SIMULATE, "--port", "0", "--seed", "4", "--sizes", "3,2", "--token", token) as p:
        lines = read_lines(p, 5)
        assert re.fullmatch(
            r"# Mihu simulator at http://127\.0\.0\.1:\d+: 2 conversations, "
            r"5 sessions \(Ctrl-C stops it\)",
            lines[0],
        ), lines[0]
        assert re.fullmatch(r"export MIHU_BASE_URL=http://127\.0\.0\.1:\d+", lines[1]), lines[1]
        assert lines[2].startswith("export MIHU_API_TOKEN=")
        assert lines[3].startswith("# notebook: import os; os.environ.update(MIHU_BASE_URL=")
        uuids = Simulator(seed=4, sizes=(3, 2)).conversation_uuids
        assert (
            lines[4] == f"# conversations: {' '.join(uuids)} (GET /api/v1/conversations lists them)"
        )
        # pasted into a shell as they are, every line works
        shell = subprocess.run(
            [
                "sh",
                "-c",
                "\n".join(lines) + '\nprintf "%s\\n%s" "$MIHU_BASE_URL" "$MIHU_API_TOKEN"',
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        base_url, exported_token = shell.stdout.split("\n")
        assert exported_token == token
        assert sessions_total(base_url, token, uuids[0]) == 3
        # the notebook hint is Python that sets the same variables
        environ: dict[str, str] = {}
        code = lines[3].removeprefix("# notebook: ").replace("import os; os.environ", "environ")
        exec(code, {"environ": environ})
        assert environ == {"MIHU_BASE_URL": base_url, "MIHU_API_TOKEN": token}
        stop(p)


@pytest.mark.parametrize(
    ("command", "prog"),
    [(SIMULATOR, "python -m mihu_frames.simulator"), (SIMULATE, "mihu-frames simulate")],
)
def test_help_names_the_program_and_every_flag(command: tuple[str, ...], prog: str) -> None:
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {prog} ")
    text = " ".join(result.stdout.split())
    for f in option_fields():
        assert flag(f.name) in text
        assert " ".join(f.metadata["help"].split()) in text.replace("- ", "-"), f.name
    for name in PROCESS_SETTINGS:
        assert flag(name) in text


def test_bad_flags_are_refused_with_the_program_name() -> None:
    for argv, message in (
        (("--latency", "-1"), "latency must be >= 0"),
        (("--sizes", "3,x"), "bad sizes item 'x'"),
        (("--clock", "lunar"), "invalid choice"),
        (("--control",), "--control needs --json-line"),
    ):
        result = subprocess.run([*SIMULATE, *argv], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stderr.startswith("usage: mihu-frames simulate")
        assert message in result.stderr


def test_command_line_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.port, args.json_line, args.control, args.log_level) == (
        8765,
        False,
        False,
        "WARNING",
    )
    assert SimulatorOptions(**{f.name: getattr(args, f.name) for f in option_fields()}).sizes == (
        SimulatorOptions().sizes
    )
