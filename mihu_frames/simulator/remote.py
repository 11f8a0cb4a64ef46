"""``spawn``: the simulator in a subprocess, with a control channel to change it from outside.

A benchmark's client should not share the server's GIL, so ``spawn`` runs ``python -m
mihu_frames.simulator --json-line --control`` and yields a ``SpawnedSimulator``: where it serves,
and the same methods and knobs as an in-process ``Simulator`` (``add_sessions``, ``fail_next``,
``latency = 0.01``, ``requests``, ``ground_truth`` ...), carried out in the subprocess.

The control channel is a ``multiprocessing.connection`` socket on 127.0.0.1: the child listens
and announces its address in the JSON line; the parent connects with an auth key it wrote to the
child's stdin (never in argv or the environment), so other local users can neither connect nor
make the child unpickle anything (the key is checked, HMAC, before any message is read). A
message names one member of ``REMOTE_METHODS`` or ``REMOTE_READS``, nothing else; exceptions
raised in the child (``KeyError``, ``ValueError`` ...) are raised again in the parent.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from mihu_frames.simulator import options as _options
from mihu_frames.simulator.app import Simulator
from mihu_frames.simulator.server import RequestRecord

logger = logging.getLogger(__name__)

#: ``Simulator`` methods a ``SpawnedSimulator`` carries out in its subprocess.
REMOTE_METHODS: tuple[str, ...] = (
    "add_conversation",
    "add_sessions",
    "touch_sessions",
    "delete_sessions",
    "fail_next",
    "configure",
    "reset_requests",
    "reset_rate_limits",
    "ground_truth",
    "conversations_truth",
    "tags",
    "now",
    "generate_all",
)
#: ``Simulator`` attributes a ``SpawnedSimulator`` reads from its subprocess (and every option).
REMOTE_READS: tuple[str, ...] = ("request_count", "requests", "conversation_uuids", "options")


# --- the child's side ----------------------------------------------------------------------------
def serve_control(sim: Simulator, authkey: bytes) -> tuple[str, int]:
    """Serve ``sim``'s control channel in daemon threads; return its address.

    Parameters
    ----------
    sim : Simulator
        The simulator the messages act on.
    authkey : bytes
        The key a client must prove it holds (``multiprocessing.connection``'s HMAC challenge).

    Returns
    -------
    tuple of (str, int)
        The host and port to connect to.
    """
    listener = Listener(("127.0.0.1", 0), authkey=authkey)

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:  # closed, or a client without the key: the channel stays up
                logger.debug("control channel: connection refused", exc_info=True)
                continue
            threading.Thread(target=_obey, args=(conn, sim), daemon=True).start()

    threading.Thread(target=accept, name="mihu-simulator-control", daemon=True).start()
    host, port = listener.address
    return str(host), int(port)


def _obey(conn: Connection, sim: Simulator) -> None:
    """Answer one connection's messages ``(name, args, kwargs)`` until it closes."""
    reads = {*REMOTE_READS, *(f.name for f in _options.option_fields())}
    with conn:
        while True:
            try:
                name, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            try:
                if name in REMOTE_METHODS:
                    result: Any = getattr(sim, name)(*args, **kwargs)
                elif name in reads:
                    result = getattr(sim, name)
                    if name == "requests":
                        result = list(result)  # a copy: handlers append while it is pickled
                else:
                    raise AttributeError(f"the control channel does not carry {name!r}")
                reply: tuple[str, Any] = ("ok", result)
            except Exception as exc:
                reply = ("error", exc)
            try:
                conn.send(reply)
            except Exception as exc:  # e.g. an exception that does not pickle
                conn.send(("error", RuntimeError(f"{name}: {exc!r}")))


# --- the parent's side ---------------------------------------------------------------------------
class SpawnedSimulator:
    """A simulator running in a subprocess, controlled from this one (see ``spawn``).

    It has the methods of ``Simulator`` named in ``REMOTE_METHODS`` (same signatures, same
    return values, same exceptions) and its knobs as attributes (``sim.latency = 0.01`` changes
    the subprocess's; the options fixed at construction are read-only), each a round trip.

    Attributes
    ----------
    base_url, token : str
        Where it serves and the token it accepts.
    conversation_uuids : list of str
        Its conversations, in creation order (read from the subprocess).
    pid : int
        The subprocess id.
    process : subprocess.Popen
        The subprocess itself.
    control_address : tuple of (str, int)
        Where its control channel listens (useless without the auth key).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        process: subprocess.Popen[bytes],
        control: tuple[str, int],
        authkey: bytes,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.process = process
        self.pid = process.pid
        self.control_address = control
        self._conn = Client(control, authkey=authkey)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SpawnedSimulator({self.base_url}, pid={self.pid})"

    def close(self) -> None:
        """Close the control channel (the subprocess keeps serving until ``spawn`` ends)."""
        with self._lock:
            self._conn.close()

    def _remote(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._conn.send((name, args, kwargs))
            status, value = self._conn.recv()
        if status == "error":
            raise value
        return value

    @property
    def conversation_uuids(self) -> list[str]:
        """Its conversations, in creation order (``add_conversation`` appends)."""
        return list(self._remote("conversation_uuids"))

    @property
    def request_count(self) -> int:
        """Number of requests received since the start or the last ``reset_requests``."""
        return int(self._remote("request_count"))

    @property
    def requests(self) -> list[RequestRecord]:
        """The requests received (a copy), each with the status it got."""
        return list(self._remote("requests"))

    @property
    def options(self) -> _options.SimulatorOptions:
        """The subprocess's options, knobs as they are now."""
        return self._remote("options")


def _remote_method(name: str) -> Callable[..., Any]:
    method = getattr(Simulator, name)

    @functools.wraps(method)
    def call(self: SpawnedSimulator, *args: Any, **kwargs: Any) -> Any:
        return self._remote(name, *args, **kwargs)

    # the same signature as the in-process method (wraps keeps it through __wrapped__)
    return call


def _remote_option(name: str, knob: bool, help_text: str) -> property:
    def get(self: SpawnedSimulator) -> Any:
        return self._remote(name)

    def set_(self: SpawnedSimulator, value: Any) -> None:
        if not knob:
            raise AttributeError(f"{name} is fixed when the simulator is built")
        self._remote("configure", **{name: value})

    return property(get, set_, doc=help_text)


for _name in REMOTE_METHODS:
    setattr(SpawnedSimulator, _name, _remote_method(_name))
for _field in _options.option_fields():
    if _field.name != "token":  # read once at start: the token never changes
        knob = bool(_field.metadata["knob"])
        setattr(
            SpawnedSimulator,
            _field.name,
            _remote_option(_field.name, knob, _field.metadata["help"]),
        )


# --- spawn ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def spawn(
    *, startup_timeout: float = 60.0, log_level: str | None = None, **options: Any
) -> Iterator[SpawnedSimulator]:
    """Run the simulator in a subprocess and yield its remote control; terminate it on exit.

    Parameters
    ----------
    startup_timeout : float
        Seconds to wait for the server to announce itself.
    log_level : str, optional
        Logging level of the subprocess (stderr); its default is WARNING.
    **options
        ``Simulator`` options (``seed``, ``sizes``, ``latency`` ...; see ``SimulatorOptions``),
        checked here and passed as command-line flags. ``port`` defaults to 0 (a free port).

    Yields
    ------
    SpawnedSimulator
        ``base_url``, ``token``, ``conversation_uuids``, ``pid``, and the ``Simulator`` methods
        and knobs, carried out in the subprocess.

    Raises
    ------
    TypeError
        For an option that does not exist.
    ValueError
        For an option value the simulator refuses.

    Examples
    --------
    >>> with spawn(seed=1, sizes="1000x20", latency=0.02) as sim:  # doctest: +SKIP
    ...     client = MihuClient(base_url=sim.base_url, token=sim.token, cache=None)
    ...     sim.add_sessions(sim.conversation_uuids[0], 5)
    ...     sim.rate_limit_max, sim.rate_window = 40, 1.0
    """
    options.setdefault("port", 0)
    _options.SimulatorOptions(**options)  # unknown names and bad values fail here, not in the child
    argv = [sys.executable, "-m", "mihu_frames.simulator", "--json-line", "--control"]
    argv += _options.to_argv(options)
    if log_level is not None:
        argv += [_options.flag("log_level"), log_level]
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    authkey = secrets.token_bytes(32)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=env)
    remote: SpawnedSimulator | None = None
    try:
        assert process.stdin is not None and process.stdout is not None
        with contextlib.suppress(BrokenPipeError):  # exited already: _announcement says so
            process.stdin.write(authkey.hex().encode() + b"\n")
            process.stdin.close()
        info = _announcement(process, startup_timeout)
        logger.debug("spawned simulator pid %d at %s", process.pid, info["base_url"])
        remote = SpawnedSimulator(
            info["base_url"], info["token"], process, tuple(info["control"]), authkey
        )
        yield remote
    finally:
        if remote is not None:
            remote.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _announcement(process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The child's JSON line, read within ``timeout`` seconds."""
    lines: queue.Queue[bytes] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"simulator did not start within {timeout} s") from None
    if not line:
        raise RuntimeError(f"simulator exited with status {process.wait()} before serving")
    return dict(json.loads(line))


spawn.__signature__ = _options.signature(  # type: ignore[attr-defined]
    inspect.Parameter(
        "log_level", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None
    ),
    inspect.Parameter(
        "startup_timeout", inspect.Parameter.KEYWORD_ONLY, default=60.0, annotation=float
    ),
)
