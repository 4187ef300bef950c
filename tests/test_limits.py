"""The one table of limits (protocol.PARAMS): `generate`, `play` and `ctl set` accept exactly its ranges, and the
engine builds a session from every value the table accepts."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from musebridge.engine.server.protocol import INT, PARAMS
from musebridge.engine.server.service import session_config

from musebridge.cli import SUBCOMMANDS, build_parser
from musebridge.commands.ctl import set_args
from musebridge.commands.limits import NUMERIC, ParamError, option
from tests.net import free_port

POSITIONALS = {"generate": ["out.mid"], "play": []}


def command_parser(command: str):
    """The subcommand's parser as `musebridge COMMAND` builds it."""
    _, subparsers = build_parser()
    importlib.import_module(SUBCOMMANDS[command][0]).add_arguments(subparsers[command])
    return subparsers[command]


def offered(command: str) -> list[str]:
    """The numeric session parameters the command has an option for (an option spelled as the parameter)."""
    flags = {flag for action in command_parser(command)._actions for flag in action.option_strings}
    return [name for name in NUMERIC if option(name) in flags]


def text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def edges(name: str) -> tuple[list[str], list[str]]:
    """(values just inside the table's range, values just outside), as typed on a command line."""
    arg = PARAMS[name]
    step = 1 if arg.types == INT else 1e-6
    low_in = arg.low + step if arg.low_open else arg.low
    low_out = arg.low if arg.low_open else arg.low - step
    return [text(low_in), text(arg.high)], [text(low_out), text(arg.high + step)]


def test_each_command_offers_the_parameters_a_user_expects():
    assert {"temperature", "top_k", "top_p", "min_p", "seed", "best_of", "pitch_low", "pitch_high", "polyphony",
            "key_strength", "context"} <= set(offered("generate"))
    assert {"temperature", "top_p", "seed", "context", "key_strength"} <= set(offered("play"))


@pytest.mark.parametrize("command", ["generate", "play"])
def test_option_ranges_are_the_tables(command, capsys):
    names = offered(command)
    assert names
    for name in names:
        inside, outside = edges(name)
        for value in inside:
            args = command_parser(command).parse_args([*POSITIONALS[command], f"{option(name)}={value}"])
            assert getattr(args, name) == pytest.approx(float(value)), (command, name, value)
        for value in outside:
            with pytest.raises(SystemExit) as refused:
                command_parser(command).parse_args([*POSITIONALS[command], f"{option(name)}={value}"])
            assert refused.value.code == 2, (command, name, value)
            error = capsys.readouterr().err.strip().splitlines()[-1]
            assert f"argument {option(name)}: must be" in error and value in error, error


@pytest.mark.parametrize("name", NUMERIC)
def test_ctl_set_checks_the_tables_range_before_sending(name):
    inside, outside = edges(name)
    for value in inside:
        assert set_args([name, value])[name] == pytest.approx(float(value))
    for value in outside:
        with pytest.raises(ParamError, match=f"{name} must be"):
            set_args([name, value])


@pytest.mark.parametrize("name", NUMERIC)
def test_the_engine_builds_a_session_from_every_value_the_table_accepts(name):
    inside, _ = edges(name)
    for value in inside:
        arg = PARAMS[name]
        session_config({name: int(value) if arg.types == INT else float(value)})


@pytest.mark.parametrize("command, args, needle", [
    (["generate", "x.mid"], ["--temperature", "0"], "argument --temperature: must be within 0.05..5, got 0"),
    (["generate", "x.mid"], ["--top-p", "0"], "argument --top-p: must be above 0 and at most 1, got 0"),
    (["play"], ["--temperature", "0"], "argument --temperature: must be within 0.05..5, got 0"),
    (["ctl", "set"], ["temperature", "0"], "musebridge ctl: temperature must be within 0.05..5, got 0"),
    (["ctl", "set"], ["top_k", "1.5"], "top_k must be a whole number within 0..100000, got '1.5'"),
    (["ctl", "set"], ["key", "H major"], "key: unknown key 'H'"),
])
def test_the_three_commands_refuse_the_same_values_with_exit_2(tmp_path, command, args, needle):
    extra = ["--port", str(free_port()), "--timeout", "5"] if command[0] == "ctl" else []
    proc = subprocess.run([sys.executable, "-m", "musebridge", *command, *args, *extra], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.mid").exists()


def test_generate_help_shows_each_sampling_options_description_and_default():
    help_text = " ".join(command_parser("generate").format_help().split())
    for flag, default in (("--temperature X", "default 1.0"), ("--top-p X", "default 1.0"),
                          ("--seed N", "default random"), ("--top-k N", "default 0")):
        described = help_text.rsplit(flag, 1)[1].split(" --", 1)[0]
        assert default in described and len(described.split()) > 5, (flag, described)
