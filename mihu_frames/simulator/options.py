"""The simulator's options, declared once.

``SimulatorOptions`` is the one declaration: each field's default, type, help text and command-line
spelling. Everything else is derived from it:

- ``Simulator(**options)``: its signature (``inspect.signature``, Jupyter's Shift-Tab) is
  ``signature()``, every option keyword-only with its default and annotation;
- the command line (``python -m mihu_frames.simulator``, ``mihu-frames simulate``): one flag per
  field, ``--`` plus the name with dashes, its help text and its default (``cli_default`` where the
  command line differs, e.g. a fixed port);
- ``spawn(**options)``: accepts exactly these keywords and turns them into those flags
  (``to_argv``).

Knobs (``knob=True``) may be changed while the simulator runs (``Simulator.configure`` or plain
attribute assignment); the others fix the data or the address and are set at construction.

Three kinds of 429 can be switched on, independently:

- ``rate_limit``: a probability; any request may get a 429 (``Retry-After: retry_after``), with no
  counting at all (a noisy upstream);
- ``rate_limit_max`` per ``rate_window`` seconds: Laravel's throttle middleware, a fixed window per
  token with ``X-RateLimit-Limit``/``-Remaining`` on every API response and ``Retry-After``/
  ``X-RateLimit-Reset`` on its 429s (Laravel's stock API limit is 60 per 60 s);
- ``bucket_rate`` per second with ``bucket_burst``: a bare token bucket per token in front of the
  application, whose 429s carry only ``Retry-After: 1``.

Both limiters count on the real clock, every request that reaches an API route (whatever its
answer); ``faults.py`` has their exact rules and ``pipeline.py`` their place among the faults.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any

#: Sessions per conversation when ``sizes`` is not given: the paging edge cases plus one big one.
DEFAULT_SIZES: tuple[int, ...] = (0, 1, 99, 100, 101, 250, 3000)
#: Values of ``Simulator(clock=...)``: the simulated clock (from ``DATA_END``) or the wall clock.
CLOCKS: tuple[str, ...] = ("simulated", "wall")


def parse_sizes(text: str) -> tuple[int, ...]:
    """Read ``"0,1,99,100"`` or ``"1000x20"`` (20 conversations of 1000), or a mix of both.

    Examples
    --------
    >>> parse_sizes("5, 2x2")
    (5, 2, 2)
    """
    sizes: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        count, _, times = part.partition("x")
        try:
            n, repeat = int(count), int(times or "1")
        except ValueError:
            raise ValueError(f"bad sizes item {part!r}") from None
        if n < 0 or repeat < 0:
            raise ValueError(f"bad sizes item {part!r}")
        sizes.extend([n] * repeat)
    return tuple(sizes)


def _sizes_text(sizes: Sequence[int] | str) -> str:
    return sizes if isinstance(sizes, str) else ",".join(str(int(n)) for n in sizes)


def _option(
    default: Any,
    help: str,
    *,
    knob: bool = True,
    cli_default: Any = MISSING,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    unparse: Callable[[Any], str] = str,
    metavar: str | None = None,
) -> Any:
    """A ``SimulatorOptions`` field with its command-line metadata.

    ``parse`` reads the flag's text (default: the field's type); ``unparse`` writes a value back
    as flag text (``spawn``); ``cli_default`` replaces the default on the command line only.
    """
    metadata = {
        "help": help,
        "knob": knob,
        "cli_default": default if cli_default is MISSING else cli_default,
        "choices": tuple(choices) if choices else None,
        "parse": parse,
        "unparse": unparse,
        "metavar": metavar,
    }
    return field(default=default, metadata=MappingProxyType(metadata))


@dataclass(frozen=True)
class SimulatorOptions:
    """Every option of a ``Simulator``, with its default; validated on construction.

    Attributes
    ----------
    seed : int
        Seed of the generated data; with ``sizes`` it fully determines the ground truth.
    sizes : sequence of int or str
        Sessions per conversation, one conversation each, in order (``DEFAULT_SIZES``; None means
        the default). A string is read like ``--sizes``: ``"0,1,99"`` or ``"1000x20"``. Stored as
        a tuple of int.
    token : str
        The bearer token the server accepts.
    latency : float
        Seconds to sleep before answering every request (never while holding a lock).
    rate_limit : float
        Probability that a request gets a 429 with ``Retry-After: retry_after`` (random, counted
        nowhere: a noisy upstream, not a limit a client can pace itself by).
    retry_after : int
        Seconds in the ``Retry-After`` of those random 429s and of ``fail_next("429")``.
    rate_limit_max : int
        Laravel's throttle: requests allowed per ``rate_window`` per token; 0 (default) is off.
    rate_window : float
        Laravel's throttle: the window in seconds (Laravel: 60; e.g. 1.0 to keep tests short).
    bucket_rate : float
        A bare token bucket: requests per second per token; 0 (default) is off.
    bucket_burst : int
        The token bucket's capacity: requests allowed at once after a pause.
    server_error : float
        Probability of a 500/502/503 with an nginx-style HTML body.
    drop : float
        Probability that the connection is closed without any response.
    stall : float
        Probability that the answer is delayed by ``stall_seconds``.
    stall_seconds : float
        Length of a stall.
    drift : int
        When k > 0, every sessions request first adds k sessions to its conversation and touches k.
    host : str
        Address to listen on.
    port : int
        Port to listen on; 0 picks a free one (the command line's default is 8765).
    clock : {"simulated", "wall"}
        ``"simulated"``: ``now()`` is ``DATA_END`` plus the time since ``start``, so the ``Date``
        header and new timestamps continue the generated data. ``"wall"``: the real clock.
    """

    seed: int = _option(
        0, "seed of the generated data; with --sizes it fixes the ground truth", knob=False
    )
    sizes: Sequence[int] | str | None = _option(
        DEFAULT_SIZES,
        'sessions per conversation: "0,1,99,100" or "1000x20" (20 of 1000); may be mixed',
        knob=False,
        cli_default=",".join(map(str, DEFAULT_SIZES)),
        parse=parse_sizes,
        unparse=_sizes_text,
        metavar="SIZES",
    )
    token: str = _option("sim-token", "the bearer token the server accepts", knob=False)
    latency: float = _option(0.0, "seconds to wait before answering every request")
    rate_limit: float = _option(0.0, "probability of a 429 with Retry-After: --retry-after")
    retry_after: int = _option(1, "seconds in the Retry-After of random and fail_next 429s")
    rate_limit_max: int = _option(
        0,
        "Laravel throttle: requests per --rate-window per token, X-RateLimit-* headers on "
        "every API response; 0 = off",
    )
    rate_window: float = _option(
        60.0, "Laravel throttle: the fixed window in seconds (scale down for tests)"
    )
    bucket_rate: float = _option(
        0.0, "token bucket: requests per second per token, 429 with Retry-After: 1; 0 = off"
    )
    bucket_burst: int = _option(10, "token bucket: capacity, requests allowed at once")
    server_error: float = _option(0.0, "probability of a 500/502/503 nginx HTML page")
    drop: float = _option(0.0, "probability of closing the connection without an answer")
    stall: float = _option(0.0, "probability of answering only after --stall-seconds")
    stall_seconds: float = _option(5.0, "length of a stall in seconds")
    drift: int = _option(
        0, "sessions added to and touched in a conversation before each of its sessions requests"
    )
    host: str = _option("127.0.0.1", "address to listen on", knob=False)
    port: int = _option(0, "port to listen on; 0 picks a free one", knob=False, cli_default=8765)
    clock: str = _option(
        "simulated",
        "simulated: Date and new timestamps continue from the data's end; wall: real time",
        knob=False,
        choices=CLOCKS,
    )

    def __post_init__(self) -> None:
        sizes = self.sizes
        if sizes is None:
            sizes = DEFAULT_SIZES
        elif isinstance(sizes, str):
            sizes = parse_sizes(sizes)
        sizes = tuple(int(n) for n in sizes)
        if any(n < 0 for n in sizes):
            raise ValueError(f"sizes must be >= 0, got {list(sizes)}")
        object.__setattr__(self, "sizes", sizes)
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {self.clock!r}")
        for name in ("rate_limit", "server_error", "drop", "stall"):
            _check(name, 0 <= getattr(self, name) <= 1, "a probability in [0, 1]")
        for name in ("latency", "stall_seconds", "retry_after", "drift", "rate_limit_max"):
            _check(name, getattr(self, name) >= 0, ">= 0")
        _check("bucket_rate", self.bucket_rate >= 0, ">= 0")
        _check("rate_window", self.rate_window > 0, "> 0")
        _check("bucket_burst", self.bucket_burst >= 1, ">= 1")
        _check("port", 0 <= self.port <= 65535, "a port number (0 picks a free one)")


def _check(name: str, ok: bool, wanted: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {wanted}")


def option_fields() -> tuple[Field[Any], ...]:
    """The option fields, in declaration order."""
    return fields(SimulatorOptions)


def knob_names() -> frozenset[str]:
    """Options that may change while the simulator runs."""
    return frozenset(f.name for f in option_fields() if f.metadata["knob"])


def reconfigured(current: SimulatorOptions, knobs: Mapping[str, Any]) -> SimulatorOptions:
    """``current`` with ``knobs`` changed, validated together.

    Raises
    ------
    TypeError
        If a name is no option.
    ValueError
        If a name is an option fixed at construction, or a value is out of range.
    """
    fixed = sorted(set(knobs) - knob_names())
    if fixed:
        known = {f.name for f in option_fields()}
        unknown = sorted(set(fixed) - known)
        if unknown:
            raise TypeError(f"unknown simulator options {unknown}")
        raise ValueError(f"{fixed} are fixed when the simulator is built")
    return SimulatorOptions(**{**vars(current), **knobs})


def option_types() -> dict[str, Any]:
    """Each option's type, resolved (the dataclass holds them as strings)."""
    return typing.get_type_hints(SimulatorOptions)


def signature(*extra: inspect.Parameter) -> inspect.Signature:
    """Every option as a keyword-only parameter with its default, then ``extra``."""
    types = option_types()
    parameters = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=t)
        for f in option_fields()
        for t in (types[f.name],)
    ]
    return inspect.Signature([*parameters, *extra])


def flag(name: str) -> str:
    """The command-line flag of an option (or of a command-line-only setting)."""
    return "--" + name.replace("_", "-")


def to_argv(options: Mapping[str, Any]) -> list[str]:
    """Command-line flags for ``options`` (names of ``SimulatorOptions`` fields; None is left out).

    Raises
    ------
    TypeError
        For a name that is not an option.
    """
    by_name = {f.name: f for f in option_fields()}
    unknown = sorted(set(options) - set(by_name))
    if unknown:
        raise TypeError(f"unknown simulator options {unknown}")
    argv: list[str] = []
    for name, value in options.items():
        if value is not None:
            argv += [flag(name), by_name[name].metadata["unparse"](value)]
    return argv
