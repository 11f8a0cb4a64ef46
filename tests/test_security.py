"""The token stays secret; files holding contact data are owner-only."""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

import mihu_frames as mf
from mihu_frames.simulator import Simulator

TOKEN = "tok-3f9a1c7e-SECRET-5b2d"


@pytest.fixture
def secret_sim():
    with Simulator(seed=3, sizes=(120, 5), token=TOKEN, retry_after=0) as server:
        yield server


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_token_never_reaches_cache_snapshot_logs_errors_or_repr(secret_sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: mihu_frames, urllib3, requests_cache
    cache = tmp_path / "cache.sqlite"
    client = mf.MihuClient(secret_sim.base_url, token=TOKEN, cache=cache, backoff_factor=0.01)
    secret_sim.fail_next("500", conversation=secret_sim.conversation_uuids[0], page=2)
    df = client.sessions(secret_sim.conversation_uuids)
    client.sessions(secret_sim.conversation_uuids)  # from cache
    mf.write_snapshot(df, tmp_path / "snaps")
    texts = [repr(client), str(df.attrs), caplog.text]
    for error_case in ({"token": TOKEN + "x"}, {"token": TOKEN}):
        bad = mf.MihuClient(secret_sim.base_url, cache=None, retries=0, **error_case)
        try:
            bad.sessions("00000000-0000-4000-8000-000000000000")
        except mf.MihuError as exc:
            texts += [str(exc), repr(exc), repr(exc.args)]
            texts.append(repr(pickle.loads(pickle.dumps(exc)).__dict__))
    client.close()
    client.flush_cache()  # close() leaves the cache writes running; scan after them
    assert "DEBUG" in caplog.text  # the logs really were captured at DEBUG
    assert all(TOKEN not in text for text in texts)
    files = _files_under(tmp_path)
    assert any(p.name.startswith("cache.sqlite") for p in files)
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_client_cannot_be_pickled_and_session_repr_is_clean(secret_sim):
    client = mf.MihuClient(secret_sim.base_url, token=TOKEN, cache=None)
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert TOKEN not in repr(client) and TOKEN not in str(vars(client).keys())


def test_server_message_echoing_the_token_is_scrubbed(secret_sim):
    client = mf.MihuClient(secret_sim.base_url, token=TOKEN, cache=None)
    assert client.transport.scrub(f"bad token Bearer {TOKEN} {TOKEN}") == "bad token *** ***"


def test_the_transports_token_holder_never_shows_it():
    """The scrubber is the one holder of the token besides the headers: its repr says only
    whether one is set, and it finds the token in a body however JSON spelled it."""
    from mihu_frames.transport.scrubbing import Scrubber

    scrubber = Scrubber(TOKEN)
    assert repr(scrubber) == "Scrubber(token=set)"
    assert repr(Scrubber(None)) == repr(Scrubber("short")) == "Scrubber(token=none)"
    escaped = "".join(f"\\u{ord(c):04x}" if c == "S" else c for c in TOKEN)
    body = f'{{"message": "Bearer {escaped}", "echo": "{TOKEN}"}}'.encode()
    assert scrubber.scrub_body(body) == b'{"message": "***", "echo": "***"}'
    assert scrubber.holds_secret(body.decode()) and not scrubber.holds_secret(b"tok-3f9a1c7e")
    headers = {"Content-Length": "3", "X-Echo": f"Bearer {TOKEN}", "Date": "now"}
    assert scrubber.storable_headers(headers) == {"Date": "now"}


def test_cache_files_are_owner_only(secret_sim, tmp_path):
    old = os.umask(0o022)
    try:
        cache = tmp_path / "deep" / "cache.sqlite"
        with mf.MihuClient(secret_sim.base_url, token=TOKEN, cache=cache) as client:
            client.sessions(secret_sim.conversation_uuids)
            client.flush_cache()  # pages and the stored load are written in the background
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    paths = list(cache.parent.rglob("*"))
    assert any(p.suffix == ".arrow" for p in paths)  # the stored load's own file is checked too
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_default_cache_lives_in_the_user_cache_dir(monkeypatch, tmp_path, secret_sim):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with mf.MihuClient(secret_sim.base_url, token=TOKEN) as client:
        assert client.cache_path == tmp_path / "xdg" / "mihu_frames" / "http_cache.sqlite"
        client.sessions(secret_sim.conversation_uuids[1])
    assert client.cache_path.exists()


def test_a_cache_path_sqlite_cannot_open_is_a_clear_error(secret_sim, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "cache.sqlite").mkdir()  # a directory where the database file should be
    with pytest.raises((mf.MihuError, OSError)) as info:
        mf.MihuClient(secret_sim.base_url, token=TOKEN, cache=folder / "cache.sqlite")
    assert "cache.sqlite" in str(info.value) and TOKEN not in str(info.value)
    assert (folder / "cache.sqlite").is_dir()  # not moved aside: it is not a damaged database
