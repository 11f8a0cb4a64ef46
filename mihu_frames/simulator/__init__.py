"""A local stand-in for the Mihu API: a real HTTP server on 127.0.0.1.

``Simulator`` serves ``GET /api/v1/conversations/{uuid}/sessions`` exactly as documented (envelope,
paging, filters, sorting, Laravel-style 401/404/422 bodies) from a synthetic dataset that is
generated deterministically from ``(seed, sizes)`` and looks like production data. Knobs add
latency, 429s, 5xx pages, dropped connections, stalls and drift (sessions added and updated while
a client pages), and ``fail_next`` injects deterministic faults, so the client can be tested
without a token or a network.

Run it stand-alone with ``python -m mihu_frames.simulator`` or ``mihu-frames simulate`` (see
``main``), or in a subprocess with ``spawn`` so a benchmark's client does not share the server's
GIL. Only the standard library is used.

Modules, one concern each:

- ``options``: ``SimulatorOptions``, every option declared once (signature, flags, spawn);
- ``data``: generation, conversations, sessions, ground truth and changes (``Dataset``);
- ``faults``: ``fail_next`` rules and the random faults;
- ``server``: HTTP plumbing, routing, envelopes and Laravel error bodies;
- ``app``: ``Simulator``, which puts them together and answers requests;
- ``cli``: the command line (``main``); ``remote``: ``spawn``.
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
