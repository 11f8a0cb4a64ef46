"""A local stand-in for the Mihu API: a real HTTP server on 127.0.0.1.

``Simulator`` serves ``GET /api/v1/conversations/{uuid}/sessions`` exactly as documented (envelope,
paging, filters, sorting, Laravel-style 401/404/422 bodies) and the account's conversations
(``GET /api/v1/conversations``, ``GET /api/v1/conversations/{uuid}``) from a synthetic dataset
that is generated deterministically from ``(seed, sizes)`` and looks like production data. Knobs
add latency, random 429s, Laravel's rate limit (``X-RateLimit-*``) or a bare token bucket, 5xx
pages, dropped connections, stalls and drift (sessions added and updated while a client pages);
``fail_next`` injects deterministic faults. So the client can be tested without a token or a
network, and ``ground_truth``/``conversations_truth`` say what it should have received.

Run it stand-alone with ``mihu-frames simulate`` or ``python -m mihu_frames.simulator`` (see
``main``), or in a subprocess with ``spawn``, which yields a remote control with the same methods,
so a benchmark's client does not share the server's GIL. Only the standard library is used.

Modules, one concern each; each imports only modules above it here:

- ``options``: ``SimulatorOptions``, every option declared once (signature, flags, spawn);
- ``data``: generation, conversations, sessions, ground truth and changes (``Dataset``);
- ``listing``: the account's conversations as the listing derives them from their sessions;
- ``server``: HTTP plumbing, routing, envelopes and Laravel error bodies;
- ``faults``: ``fail_next`` rules, the random faults and the two rate limiters;
- ``clock``: ``DataClock``, the simulated time that continues the data (``now``, ``Date``);
- ``endpoints``: the application: auth and the three endpoints' answers;
- ``pipeline``: a request's way through latency, faults and rate limits to the endpoints;
- ``app``: ``Simulator``, the public face that puts them together;
- ``remote``: ``spawn`` and its control channel; ``cli``: the command line (``main``).

Examples
--------
>>> with Simulator(sizes=[120], rate_limit_max=40, rate_window=1.0) as sim:  # doctest: +SKIP
...     client = mf.MihuClient(sim.base_url, token=sim.token, cache=None)
...     df = client.sessions(sim.conversation_uuids)
"""

from mihu_frames.simulator.app import Simulator
from mihu_frames.simulator.cli import main
from mihu_frames.simulator.data import BASE_INSTANT, DATA_END
from mihu_frames.simulator.faults import FAULT_KINDS
from mihu_frames.simulator.options import CLOCKS, DEFAULT_SIZES, SimulatorOptions
from mihu_frames.simulator.remote import SpawnedSimulator, spawn
from mihu_frames.simulator.server import RequestRecord

__all__ = [
    "BASE_INSTANT",
    "CLOCKS",
    "DATA_END",
    "DEFAULT_SIZES",
    "FAULT_KINDS",
    "RequestRecord",
    "Simulator",
    "SimulatorOptions",
    "SpawnedSimulator",
    "main",
    "spawn",
]
