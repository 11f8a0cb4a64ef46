"""``spawn``: the simulator in a subprocess, so a benchmark's client does not share its GIL."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mihu_frames.simulator import options as _options

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpawnedSimulator:
    """A simulator running in a subprocess (see ``spawn``).

    Attributes
    ----------
    base_url, token : str
        Where it serves and the token it accepts.
    conversation_uuids : list of str
        Its conversations, in order of ``sizes``.
    pid : int
        The subprocess id.
    process : subprocess.Popen
        The subprocess itself.
    """

    base_url: str
    token: str
    conversation_uuids: list[str]
    pid: int
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)


@contextlib.contextmanager
def spawn(
    *, startup_timeout: float = 60.0, log_level: str | None = None, **options: Any
) -> Iterator[SpawnedSimulator]:
    """Run the simulator in a subprocess and yield where it serves; terminate it on exit.

    Parameters
    ----------
    startup_timeout : float
        Seconds to wait for the server to announce itself.
    log_level : str, optional
        Logging level of the subprocess (stderr); its default is WARNING.
    **options
        ``Simulator`` options (``seed``, ``sizes``, ``latency`` ...), passed as command-line flags.
        ``port`` defaults to 0 (a free port).

    Yields
    ------
    SpawnedSimulator
        ``base_url``, ``token``, ``conversation_uuids`` and ``pid`` of the running server. Its
        ground truth is ``Simulator(seed=..., sizes=...).ground_truth()`` built in-process.

    Examples
    --------
    >>> with spawn(seed=1, sizes="1000x20", latency=0.02) as sim:  # doctest: +SKIP
    ...     client = MihuClient(base_url=sim.base_url, token=sim.token, cache=None)
    """
    options.setdefault("port", 0)
    _options.SimulatorOptions(**options)  # unknown names and bad values fail here, not in the child
    argv = [sys.executable, "-m", "mihu_frames.simulator", *_options.to_argv(options)]
    if log_level is not None:
        argv += [_options.flag("log_level"), log_level]
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        lines: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=startup_timeout)
        except queue.Empty:
            raise RuntimeError(f"simulator did not start within {startup_timeout} s") from None
        if not line:
            raise RuntimeError(f"simulator exited with status {process.wait()} before serving")
        info = json.loads(line)
        logger.debug("spawned simulator pid %d at %s", process.pid, info["base_url"])
        yield SpawnedSimulator(
            base_url=info["base_url"],
            token=info["token"],
            conversation_uuids=list(info["conversations"]),
            pid=process.pid,
            process=process,
        )
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


spawn.__signature__ = _options.signature(  # type: ignore[attr-defined]
    inspect.Parameter(
        "log_level", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None
    ),
    inspect.Parameter(
        "startup_timeout", inspect.Parameter.KEYWORD_ONLY, default=60.0, annotation=float
    ),
)
