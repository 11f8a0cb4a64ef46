"""Decoding: page bodies and session dicts to the frame's Arrow columns, and their checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests

import mihu_frames as mf
from mihu_frames.decoding import PageInfo, arrow, decode_pages, extra, paginator_hint
from mihu_frames.frame import finish
from mihu_frames.schema import to_pandas

UUID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def _session(**overrides):
    base = {
        "uuid": UUID,
        "started_at": "2026-03-01T10:00:00Z",
        "ended_at": "2026-03-01T13:05:30.250+03:00",
        "last_activity_at": "2026-03-01T10:05:00.000000Z",
        "evaluated_at": None,
        "summary": 'Ça va? "quoted"\nnew line',
        "summary_generated_at": None,
        "created_at": "2026-03-01T10:00:00Z",
        "updated_at": "2026-03-01T10:06:00Z",
        "conversation_uuid": UUID,
        "agent_uuid": UUID,
        "contact": {
            "uuid": UUID,
            "name": "Zoë",
            "surname": "王",
            "phone_number": None,
            "email": "z@x",
        },
        "call_uuid": None,
        "campaign_uuid": None,
        "listing_uuid": None,
        "task_uuids": [UUID, UUID],
    }
    base.update(overrides)
    return base


def _page(sessions, page=1, **envelope):
    data = {"current_page": page, "total": len(sessions), "last_page": 1, "per_page": 100}
    data.update(envelope)
    data["data"] = sessions
    return json.dumps({"success": True, "message": "ok", "data": data}).encode()


def _decode(*bodies):
    infos = [PageInfo(conversation=UUID, page=i + 1) for i in range(len(bodies))]
    table, _ = decode_pages(list(bodies), infos)
    return to_pandas(finish([table]))


def test_offsets_fractions_and_derived_values():
    df = mf.sessions_frame([_session()])
    row = df.iloc[0]
    assert row["ended_at"] == pd.Timestamp("2026-03-01T10:05:30.250Z")
    assert row["duration"] == pd.Timedelta(minutes=5, seconds=30.25)
    assert row["idle_before_end"] == pd.Timedelta(seconds=30.25)
    assert row["contact_name"] == "Zoë" and row["task_count"] == 2
    assert pd.isna(row["time_to_evaluation"]) and not row["is_open"]


def test_page_bytes_and_dicts_give_the_same_frame():
    sessions = [_session(uuid=f"{i:08d}-0d44-4b50-8888-8dd25736052a") for i in range(5)]
    sessions[1]["contact"] = None
    sessions[2]["task_uuids"] = []
    sessions[3]["channel"] = "whatsapp"
    sessions[4]["contact"]["locale"] = "tr"
    from_bytes = _decode(_page(sessions))
    from_dicts = mf.sessions_frame(sessions)
    pd.testing.assert_frame_equal(from_bytes, from_dicts)
    assert json.loads(from_bytes.loc[3, "extra"]) == {"channel": "whatsapp"}
    assert json.loads(from_bytes.loc[4, "extra"]) == {"contact": {"locale": "tr"}}
    assert from_bytes["extra"].isna().sum() == 3
    assert from_bytes.loc[1, ["contact_uuid", "contact_name"]].isna().all()


def test_naive_and_nanosecond_timestamps_are_read_as_utc():
    df = mf.sessions_frame(
        [_session(started_at="2026-03-01T10:00:00", ended_at="2026-03-01T10:00:01.123456789Z")]
    )
    assert df.loc[0, "started_at"] == pd.Timestamp("2026-03-01T10:00:00Z")
    assert df.loc[0, "ended_at"] == pd.Timestamp("2026-03-01T10:00:01.123456Z")


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-01-01T10:00:00.1234567Z", "2026-01-01T10:00:00.123456Z"),
        ("2026-01-01T10:00:00+0200", "2026-01-01T08:00:00Z"),
        ("2026-01-01T10:00:00+02", "2026-01-01T08:00:00Z"),
        ("2026-01-01t10:00:00z", "2026-01-01T10:00:00Z"),
        ("2026-01-01", "2026-01-01T00:00:00Z"),
        ("2026-01-01T24:00:00Z", None),
        ("2026-01-01T10:00:60Z", None),
        (" 2026-01-01T10:00:00Z", None),
        ("2026-01-01T10:00:00Z ", None),
        ("2026-01-01T10:00:00.Z", None),
        ("\u0662\u0660\u0662\u0666-01-01T10:00:00Z", None),  # Arabic-Indic digits
        ("2026-01-01T10:00:00\uff10Z", None),  # a fullwidth digit
    ],
)
def test_pages_and_dicts_agree_on_every_timestamp_and_refuse_the_same(text, instant):
    text = json.loads(f'"{text}"')
    # Five pages: a batch that large goes to pyarrow's reader.
    page = [_session(started_at=text)]
    bodies = [_page(page, page=p, last_page=5, per_page=1, total=5) for p in range(1, 6)]
    if instant is None:
        with pytest.raises(mf.ResponseFormatError, match="started_at"):
            mf.sessions_frame([_session(started_at=text)])
        with pytest.raises(mf.ResponseFormatError, match="started_at"):
            _decode(*bodies)
        return
    assert mf.sessions_frame([_session(started_at=text)]).loc[0, "started_at"] == pd.Timestamp(
        instant
    )
    assert _decode(*bodies).loc[0, "started_at"] == pd.Timestamp(instant)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task_uuids": "not-a-list"}, "task_uuids"),
        ({"contact": ["a", "list"]}, "contact"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"summary": 42}, "summary"),
        ({"uuid": None}, "uuid"),
    ],
)
def test_wrong_values_name_the_field_and_conversation(change, field):
    body = _page([_session(), _session(**change)])
    with pytest.raises(mf.ResponseFormatError) as info:
        _decode(body)
    assert info.value.field == field and info.value.conversation == UUID and info.value.page == 1
    with pytest.raises(mf.ResponseFormatError) as info:
        mf.sessions_frame([_session(**change)])
    assert info.value.field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"<html>maintenance</html>", None),
        (b'{"success": false, "message": "nope"}', "success"),
        (b'{"success": true, "message": "ok"}', "data"),
        (_page([], last_page=None), "data.last_page"),
        (_page([], page=2), "data.current_page"),
        (_page([{"uuid": "a"}, {"uuid": "b"}], per_page=1), "data.data"),
        (_page([], last_page="3"), "data.last_page"),
        (b"[1, 2]", None),
    ],
)
def test_bodies_that_are_not_the_envelope(body, field):
    with pytest.raises(mf.ResponseFormatError) as info:
        _decode(body)
    assert info.value.field == field and info.value.conversation == UUID


def test_duplicates_across_pages_keep_the_latest_update():
    old = _session(summary="old")
    new = _session(summary="new", updated_at="2026-03-02T00:00:00Z")
    df = _decode(_page([old]), _page([new], page=2))
    assert len(df) == 1 and df.loc[0, "summary"] == "new"


def test_sessions_frame_tags_and_fetched_at():
    df = mf.sessions_frame([_session()], status="completed", type="voice", fetched_at="2026-03-02")
    assert df.loc[0, "status"] == "completed" and df.loc[0, "type"] == "voice"
    assert df.loc[0, "fetched_at"] == pd.Timestamp("2026-03-02T00:00:00Z")
    with pytest.raises(ValueError, match="status must be one of"):
        mf.sessions_frame([_session()], status="done")
    with pytest.raises(mf.ResponseFormatError, match="expected an object"):
        mf.sessions_frame([_session(), "not a dict"])


# --------------------------------------------------------------------------- exact extra, fast


def _count_rereads(monkeypatch):
    """Record the bodies whose ``extra`` is re-read with json.loads, and those decoded slowly."""
    reread, slowly = [], []
    exact_extras, decode_slowly = extra.exact_extras, arrow.decode_page_slowly

    def counting_reread(body, rows):
        reread.append(body)
        return exact_extras(body, rows)

    def counting_slow(body, info):
        slowly.append(body)
        return decode_slowly(body, info)

    monkeypatch.setattr(extra, "exact_extras", counting_reread)
    monkeypatch.setattr(arrow, "decode_page_slowly", counting_slow)
    return reread, slowly


SIMULATOR_EXTRA = {
    "channel": "whatsapp",
    "sentiment": -0.42,
    "is_test": False,
    "metadata": {"source": "widget", "version": 2},
}


def _with_extra(n, **extra):
    """Session ``n`` with the simulator's kinds of undocumented fields, changed by ``extra``."""
    return _session(uuid=f"{n:08d}-0d44-4b50-8888-8dd25736052a", **{**SIMULATOR_EXTRA, **extra})


def test_only_pages_whose_extra_may_differ_are_reread(monkeypatch):
    reread, slowly = _count_rereads(monkeypatch)
    pages = [
        [_with_extra(1), _session(uuid="00000002-0d44-4b50-8888-8dd25736052a")],
        [_with_extra(3), _with_extra(4, channel=None)],  # an explicit null
        [_with_extra(5), _with_extra(6, sentiment=1)],  # an int among floats
        [_with_extra(7, metadata={"source": "api"}), _with_extra(8, language="tr")],
    ]
    bodies = [_page(sessions, page=i + 1) for i, sessions in enumerate(pages)]
    decoded = _decode(*bodies)
    assert reread == [bodies[1], bodies[2]] and slowly == []
    pd.testing.assert_frame_equal(decoded, mf.sessions_frame([s for p in pages for s in p]))
    assert json.loads(decoded.loc[3, "extra"]) == {**SIMULATOR_EXTRA, "channel": None}
    assert json.loads(decoded.loc[5, "extra"])["sentiment"].__class__ is int
    assert json.loads(decoded.loc[6, "extra"])["metadata"] == {"source": "api"}


def test_a_reread_that_disagrees_sends_the_batch_page_by_page(monkeypatch):
    reread, slowly = _count_rereads(monkeypatch)

    def disagree(body, rows):
        reread.append(body)
        raise extra.NotExact

    monkeypatch.setattr(extra, "exact_extras", disagree)
    sessions = [_with_extra(1), _with_extra(2, sentiment=None)]
    body = _page(sessions)
    pd.testing.assert_frame_equal(_decode(body), mf.sessions_frame(sessions))
    assert reread == [body] and slowly == [body]


def _simulator_bodies(sim):
    conversation = sim.conversation_uuids[-1]  # 2,500 sessions
    url = f"{sim.base_url}/api/v1/conversations/{conversation}/sessions"
    headers = {"Authorization": f"Bearer {sim.token}"}
    bodies, page, last = [], 1, 1
    while page <= last:
        response = requests.get(url, params={"page": page, "per_page": 100}, headers=headers)
        response.raise_for_status()
        bodies.append(response.content)
        last = response.json()["data"]["last_page"]
        page += 1
    return conversation, bodies


@pytest.mark.parametrize("encoding", ["as served", "ascii escapes"])
def test_simulator_pages_keep_extra_on_the_fast_path(sim, monkeypatch, encoding):
    conversation, bodies = _simulator_bodies(sim)
    if encoding == "ascii escapes":  # as PHP writes JSON: \u00e9 and \/ in the text
        bodies = [json.dumps(json.loads(b)).replace("/", "\\/").encode() for b in bodies]
    reread, slowly = _count_rereads(monkeypatch)
    infos = [PageInfo(conversation=conversation, page=i + 1) for i in range(len(bodies))]
    b = arrow.batch_size(100)
    tables = [
        decode_pages(bodies[i : i + b], infos[i : i + b])[0] for i in range(0, len(bodies), b)
    ]
    decoded = to_pandas(finish(tables))
    assert reread == [] and slowly == []
    records = [s for body in bodies for s in json.loads(body)["data"]["data"]]
    assert list(decoded["extra"]) == list(mf.sessions_frame(records)["extra"])
    kinds = {
        (key, type(value).__name__)
        for text in decoded["extra"].dropna()
        for key, value in json.loads(text).items()
    }
    assert {kind for _, kind in kinds} == {"str", "float", "bool", "dict"}, kinds


def test_a_null_among_many_undocumented_names_is_kept(monkeypatch):
    # more names than one RE2 pattern takes: the check is split, and the null still found
    reread, _ = _count_rereads(monkeypatch)
    sessions = [_with_extra(i, **{f"custom_field_{i:04d}": 0.5}) for i in range(100)]
    sessions[98]["custom_field_0099"] = None  # a name the last pattern holds
    pages = [sessions[:50], sessions[50:]]
    bodies = [
        _page(p, page=i + 1, total=100, per_page=50, last_page=2) for i, p in enumerate(pages)
    ]
    decoded = _decode(*bodies)
    assert reread == [bodies[1]]
    pd.testing.assert_frame_equal(decoded, mf.sessions_frame(sessions))
    assert json.loads(decoded.loc[98, "extra"])["custom_field_0099"] is None


# --------------------------------------------------------------------------- whole responses


def test_sessions_frame_takes_a_whole_response_or_a_list_of_them():
    first = [_session(uuid=f"{n:08d}-0d44-4b50-8888-8dd25736052a") for n in range(3)]
    second = [_session(uuid=f"{n:08d}-0d44-4b50-8888-8dd25736052a") for n in range(3, 5)]
    one = json.loads(_page(first, total=5, last_page=2, per_page=3))
    two = json.loads(_page(second, page=2, total=5, last_page=2, per_page=3))
    expected = mf.sessions_frame(first + second)
    pd.testing.assert_frame_equal(mf.sessions_frame([one, two]), expected)
    pd.testing.assert_frame_equal(mf.sessions_frame(one), mf.sessions_frame(first))
    with pytest.raises(mf.ResponseFormatError, match="'success' is not true"):
        mf.sessions_frame({**one, "success": False, "message": "no"})


# --------------------------------------------------------------------------- instants out of range


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:00:00-12:00", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-00:01"]
)
def test_an_instant_outside_years_1_to_9999_is_null_with_its_text_kept(text):
    sessions = [_session(updated_at=text), _session(uuid="00000002-0d44-4b50-8888-8dd25736052a")]
    with pytest.warns(RuntimeWarning, match="1 timestamp"):
        df = mf.sessions_frame(sessions)
    assert pd.isna(df.loc[0, "updated_at"]) and not pd.isna(df.loc[1, "updated_at"])
    assert json.loads(df.loc[0, "extra"]) == {"updated_at": text}
    assert df.attrs["mihu_frames"]["timestamps_out_of_range"] == 1
    decoded = _decode(_page(sessions))  # the fast path hands such a page to json.loads
    pd.testing.assert_frame_equal(decoded, df, check_flags=False, check_like=False)
    _, envelopes = decode_pages([_page(sessions)], [PageInfo(conversation=UUID, page=1)])
    assert envelopes[0].out_of_range == 1


def test_a_load_counts_and_warns_about_instants_out_of_range():
    import http.server
    import threading

    body = _page([_session(updated_at="9999-12-31T23:00:00-12:00")])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.warns(RuntimeWarning, match="outside years 1-9999"):
            df = mf.load_sessions(UUID, base_url=base_url, token="tok-12345678", cache=None)
    finally:
        server.shutdown()
        server.server_close()
    assert df.attrs["mihu_frames"]["timestamps_out_of_range"] == 1
    assert pd.isna(df.loc[0, "updated_at"])


# --------------------------------------------------------------------------- paginator hint


def _body(last_page: int, total: int, per_page: int = 100, sessions: str = "") -> bytes:
    return (
        f'{{"success":true,"message":"ok","data":{{"current_page":1,"data":[{sessions}],'
        f'"last_page":{last_page},"per_page":{per_page},"total":{total}}}}}'
    ).encode()


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (_body(10, 1000), 10),
        (_body(1, 0), 1),
        (_body(3, 201), 3),
        (b'{"data": {"last_page" : 2 , "total": 150, "per_page": 100}}', 2),
        # a session's own field named like the paginator comes before the envelope's
        (_body(4, 400, sessions='{"uuid":"u","last_page":99,"total":1,"per_page":1}'), 4),
        (_body(4, 100), None),  # disagrees with total / per_page: wait for the decode
        (_body(2, 150, per_page=0), None),
        (b'{"data": {"last_page": 2}}', None),
        (b"not json", None),
        (b'{"data": {"last_page": "2", "total": 150, "per_page": 100}}', None),
        (b'{"data": {"last_page": 2.5, "total": 150, "per_page": 100}}', None),
    ],
)
def test_paginator_hint(body, hint):
    assert paginator_hint(body) == hint
