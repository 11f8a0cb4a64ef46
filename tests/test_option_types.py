"""Options a type checker sees: the ``TypedDict`` of every public ``**options`` agrees with the
option dataclasses (the one source of truth), and mypy reports a misspelled or mistyped option
in user code."""

from __future__ import annotations

import dataclasses
import inspect
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api
from typing_extensions import Unpack

import mihu_frames as mf
from mihu_frames import options as declared

#: Every public callable that takes ``**options`` (the ones ``takes`` gives a signature).
PUBLIC = {
    "load_sessions": mf.load_sessions,
    "list_conversations": mf.list_conversations,
    "sync_snapshots": mf.sync_snapshots,
    "MihuClient": mf.MihuClient.__init__,
    "MihuClient.sessions": mf.MihuClient.sessions,
    "MihuClient.conversations": mf.MihuClient.conversations,
    "read_snapshots": mf.read_snapshots,
}
GROUPS = (
    declared.ClientOptions,
    declared.LoadOptions,
    declared.ListingFilters,
    declared.SyncOptions,
    declared.OutputOptions,
)


def _declared_types() -> dict[str, dict[str, Any]]:
    """Each dataclass field's type, resolved, by group."""
    return {cls.__name__: typing.get_type_hints(cls) for cls in GROUPS}


def _typed_dict(func: Any) -> Any:
    hints = typing.get_type_hints(func, include_extras=True)
    unpacked = hints["options"] if "options" in hints else hints["output"]  # **output: a read
    assert typing.get_origin(unpacked) is Unpack, f"{func.__qualname__}: **options not Unpack"
    return typing.get_args(unpacked)[0]


def test_every_public_options_function_is_found():
    """Nothing public takes ``**options`` without being checked here."""
    found = set()
    for name in mf.__all__:
        value = getattr(mf, name)
        for func in (value, *vars(value).values()) if inspect.isclass(value) else (value,):
            if hasattr(func, "__options__"):
                found.add(func)
    assert found == set(PUBLIC.values())


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_the_typed_dict_names_every_option_with_its_declared_type(name):
    func = PUBLIC[name]
    typed = _typed_dict(func)
    code = func.__code__  # its own parameters (base_url, by position on MihuClient)
    own = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    expected = [o for o in func.__options__ if o not in own]
    hints = typing.get_type_hints(typed)
    assert sorted(hints) == sorted(expected), name
    assert not typed.__required_keys__, "every option has a default"
    by_group = _declared_types()
    for option in expected:
        # the dataclass that declares it for this function (filters' status before loads')
        types = [t[option] for t in by_group.values() if option in t]
        assert hints[option] in types, (name, option, hints[option], types)


def test_the_runtime_signatures_stay_complete():
    """Shift-Tab shows every option with its default, as before the type declarations."""
    signature = inspect.signature(mf.load_sessions)
    names = [p.name for p in signature.parameters.values()]
    assert names[0] == "conversations"
    fields = [
        f.name
        for cls in (declared.LoadOptions, declared.OutputOptions, declared.ClientOptions)
        for f in dataclasses.fields(cls)
    ]
    assert names[1:] == fields
    assert signature.parameters["per_page"].default == 100


def test_mypy_reports_a_misspelled_or_mistyped_option(tmp_path: Path):
    user_code = tmp_path / "analysis.py"
    user_code.write_text(
        textwrap.dedent(
            """
            import mihu_frames as mf

            ids = ["3c90c3cc-0d44-4b50-8888-8dd25736052a"]
            good = mf.load_sessions(ids, status="completed", per_page=50, cache=None)
            client = mf.MihuClient("http://127.0.0.1:1", timeout=5.0, max_workers=4)
            good2 = client.conversations(channel=["whatsapp", "web"], refresh=True)
            mf.load_sessions(ids, statuss="completed")
            mf.load_sessions(ids, per_page="100")
            mf.list_conversations(channel="web", sort_by="created_at")
            mf.sync_snapshots("root", ids, full="yes")
            client.sessions(ids, max_workers=2)
            """
        )
    )
    stdout, stderr, exit_status = mypy_api.run(
        [
            str(user_code),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--no-error-summary",
            "--hide-error-context",
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert exit_status == 1 and lines == [8, 9, 10, 11, 12], stdout + stderr
    assert '"statuss"' in stdout and '"sort_by"' in stdout and '"max_workers"' in stdout
