"""Fixtures: the simulator on 127.0.0.1 and clients with real requests-cache SQLite files."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mihu_frames as mf
from mihu_frames.schema import CONTACT_FIELDS, STRING_FIELDS, TIMESTAMP_FIELDS
from mihu_frames.simulator import Simulator

SIZES = (0, 1, 99, 100, 101, 250, 2500)


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    """One read-only simulator for the whole run: sizes 0, 1, 99, 100, 101, 250, 2500."""
    with Simulator(seed=7, sizes=SIZES) as server:
        yield server


@pytest.fixture
def fresh_sim() -> Iterator[Simulator]:
    """A small simulator a test may mutate or break (faults, drift, new sessions)."""
    with Simulator(seed=11, sizes=(0, 1, 150, 230), retry_after=0) as server:
        yield server


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "http_cache.sqlite"


@pytest.fixture
def make_client(cache_path: Path):
    """Build clients on a simulator with fast retries; closes them at the end."""
    clients: list[mf.MihuClient] = []

    def make(server: Simulator, **options: Any) -> mf.MihuClient:
        options.setdefault("cache", cache_path)
        options.setdefault("backoff_factor", 0.01)
        options.setdefault("timeout", 5)
        client = mf.MihuClient(server.base_url, token=server.token, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _utc(value: str | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def expected_rows(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frame's rows for ground-truth sessions, computed independently of mihu_frames."""
    known = {
        "uuid",
        "conversation_uuid",
        "contact",
        "task_uuids",
        *TIMESTAMP_FIELDS,
        *STRING_FIELDS,
    }
    rows = []
    for s in sessions:
        t = {name: _utc(s.get(name)) for name in TIMESTAMP_FIELDS}
        ended, started = t["ended_at"], t["started_at"]
        contact = s.get("contact") or {}
        extra = {k: v for k, v in s.items() if k not in known}
        rows.append(
            {
                "conversation_uuid": s["conversation_uuid"],
                "uuid": s["uuid"],
                **t,
                "duration": None if ended is None or started is None else ended - started,
                "is_open": ended is None,
                **{name: s.get(name) for name in STRING_FIELDS},
                **{f"contact_{k}": contact.get(k) for k in CONTACT_FIELDS},
                "task_uuids": list(s.get("task_uuids") or []),
                "task_count": len(s.get("task_uuids") or []),
                "extra": extra or None,
            }
        )
    return rows


def actual_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows in the same plain form as ``expected_rows``."""
    out = []
    columns = [c for c in expected_rows([{"uuid": "", "conversation_uuid": ""}])[0]]
    for record in df[[c for c in columns if c != "extra"]].to_dict("records"):
        out.append({k: (None if _isna(v) else v) for k, v in record.items()})
    for row, extra in zip(out, df["extra"], strict=True):
        row["extra"] = None if _isna(extra) else json.loads(extra)
        row["task_uuids"] = list(row["task_uuids"])
    return out


def tagged(values: pd.Series) -> pd.Series:
    """Which rows carry a status/type tag: a row fetched without that filter is "untagged" in
    a frame (null in Arrow and Parquet)."""
    return values.notna() & (values.astype(object) != "untagged")


def _isna(value: Any) -> bool:
    return not isinstance(value, (list, dict)) and not hasattr(value, "__len__") and pd.isna(value)


def assert_matches_truth(df: pd.DataFrame, truth: list[dict[str, Any]]) -> None:
    """Row for row: same sessions, same order, every value equal."""
    expected = expected_rows(truth)
    actual = actual_rows(df)
    assert [r["uuid"] for r in actual] == [r["uuid"] for r in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got == want, (got["uuid"], {k: (got[k], want[k]) for k in want if got[k] != want[k]})


class AnswerServer:
    """A loopback server whose answers a test writes: (status, headers, body) per path."""

    def __init__(self, answer: Any) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.paths.append(self.path)
                status, headers, body = answer(self.path, self.headers)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    servers: list[AnswerServer] = []

    def make(answer: Any) -> AnswerServer:
        servers.append(AnswerServer(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def reader_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A reader's shell for the documentation's examples: without the API's variables, the
    user cache dir in ``tmp_path``; returns an empty working folder.

    The examples set MIHU_BASE_URL and MIHU_API_TOKEN themselves (their setup block starts the
    simulator); monkeypatch puts the environment back afterwards.
    """
    for name in ("MIHU_BASE_URL", "MIHU_SUBDOMAIN", "MIHU_API_TOKEN", "MIHU_CONVERSATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = tmp_path / "work"
    work.mkdir()
    return work


def recorded(root: Any) -> dict[str, Any]:
    """The settings a snapshot root records (its ``mihu_frames.recorded`` table property)."""
    from mihu_frames.store import open_root

    settings = open_root(root).recorded
    assert settings is not None
    return settings.to_json()


def writes(root: Any) -> list[str]:
    """The snapshot ids of the writes a root's history holds, oldest first."""
    history = mf.read_snapshots(root, latest=False, columns=["snapshot_id"])
    return sorted(set(history["snapshot_id"]))
