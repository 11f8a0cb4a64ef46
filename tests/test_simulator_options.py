"""The simulator's options: declared once, and the signature, the flags and spawn agree."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import MISSING, fields

import pytest

from mihu_frames.simulator import DEFAULT_SIZES, Simulator, SimulatorOptions, spawn
from mihu_frames.simulator.cli import PROCESS_SETTINGS, build_parser
from mihu_frames.simulator.options import flag, knob_names, parse_sizes, to_argv

OPTION_NAMES = [f.name for f in fields(SimulatorOptions)]
#: A value other than the default for every option (the command line must carry each one).
CHANGED = {
    "seed": 5,
    "sizes": (3, 0, 7),
    "token": "tok en",
    "latency": 0.25,
    "rate_limit": 0.5,
    "retry_after": 3,
    "rate_limit_max": 40,
    "rate_window": 1.5,
    "bucket_rate": 2.5,
    "bucket_burst": 4,
    "server_error": 0.125,
    "drop": 0.0625,
    "stall": 0.03125,
    "stall_seconds": 1.5,
    "drift": 2,
    "host": "127.0.0.2",
    "port": 0,
    "clock": "wall",
}


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def test_the_public_names_import_from_the_package() -> None:
    import mihu_frames.simulator as package

    names = [
        "Simulator", "spawn", "DATA_END", "DEFAULT_SIZES", "RequestRecord", "BASE_INSTANT",
        "CLOCKS", "FAULT_KINDS", "SpawnedSimulator", "main", "SimulatorOptions",
    ]  # fmt: skip
    assert set(names) == set(package.__all__)
    assert all(getattr(package, name) is not None for name in names)


def test_every_option_is_covered_here() -> None:
    assert set(CHANGED) == set(OPTION_NAMES)
    defaults = SimulatorOptions()
    changed = [n for n in OPTION_NAMES if CHANGED[n] != getattr(defaults, n)]
    assert set(OPTION_NAMES) - set(changed) == {"port"}  # a fixed port would collide in CI


def test_simulator_signature_is_the_options() -> None:
    parameters = inspect.signature(Simulator).parameters
    assert list(parameters) == OPTION_NAMES
    for f in fields(SimulatorOptions):
        parameter = parameters[f.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert f.default is not MISSING and parameter.default == f.default
        assert parameter.annotation is not inspect.Parameter.empty
    assert parameters["sizes"].default == DEFAULT_SIZES
    assert str(parameters["latency"]) == "latency: float = 0.0"


def test_command_line_flags_are_the_options() -> None:
    actions = option_actions(build_parser())
    process = list(PROCESS_SETTINGS)
    assert list(actions) == [*OPTION_NAMES, *process]
    for f in fields(SimulatorOptions):
        action = actions[f.name]
        assert action.option_strings == [flag(f.name)]
        assert action.help and len(action.help) > 10, f.name
    args = build_parser().parse_args([])
    parsed = SimulatorOptions(**{name: getattr(args, name) for name in OPTION_NAMES})
    assert parsed == SimulatorOptions(port=8765)  # the command line serves on a fixed port


def test_spawn_keywords_are_the_options() -> None:
    parameters = inspect.signature(spawn).parameters
    assert list(parameters) == [*OPTION_NAMES, "log_level", "startup_timeout"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert {n: parameters[n].default for n in OPTION_NAMES} == {
        f.name: f.default for f in fields(SimulatorOptions)
    }


def test_flags_carry_every_option_through_the_command_line() -> None:
    argv = to_argv(CHANGED)
    args = build_parser().parse_args(argv)
    through_cli = SimulatorOptions(**{name: getattr(args, name) for name in OPTION_NAMES})
    assert through_cli == SimulatorOptions(**CHANGED)
    assert Simulator(**CHANGED).options == through_cli
    with pytest.raises(TypeError, match="colour"):
        to_argv({"colour": "red"})


def test_validation() -> None:
    assert SimulatorOptions(sizes="2x2,5").sizes == (2, 2, 5)
    assert SimulatorOptions(sizes=None).sizes == DEFAULT_SIZES
    assert SimulatorOptions(sizes=[1, 2]).sizes == (1, 2)
    for bad in (
        {"clock": "lunar"},
        {"sizes": [-1]},
        {"rate_limit": 1.5},
        {"latency": -1},
        {"rate_window": 0},
        {"bucket_burst": 0},
        {"rate_limit_max": -1},
    ):
        with pytest.raises(ValueError):
            Simulator(**bad)
    with pytest.raises(TypeError):
        Simulator(colour="red")


def test_configure_changes_knobs_only() -> None:
    sim = Simulator(sizes=(1,))
    assert {"latency", "rate_limit", "drift"} <= knob_names()
    assert not {"seed", "sizes", "token", "host", "port", "clock"} & knob_names()
    new = sim.configure(latency=0.5, drop=0.25)
    assert (sim.latency, sim.drop) == (0.5, 0.25) == (new.latency, new.drop)
    with pytest.raises(ValueError, match="fixed"):
        sim.configure(seed=3)
    with pytest.raises(ValueError):
        sim.configure(latency=0.0, drop=2.0)  # validated together: nothing changes
    assert (sim.latency, sim.drop) == (0.5, 0.25)
    with pytest.raises(TypeError):
        sim.configure(colour="red")


def test_parse_sizes() -> None:
    assert parse_sizes("0,1,99,100") == (0, 1, 99, 100)
    assert parse_sizes("1000x3") == (1000, 1000, 1000)
    assert parse_sizes("5, 2x2") == (5, 2, 2)
    with pytest.raises(ValueError):
        parse_sizes("1,x")
