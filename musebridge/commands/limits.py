"""Session parameters on the command line, from the protocol's one table of limits (protocol.PARAMS).

`musebridge generate`, `play` and `ctl set` build their options for session parameters here, so each accepts
exactly the values the server accepts, and says the range and the default in its --help:

    add_param(parser, "temperature", default=1.0)    # --temperature X: within 0.05..5, refused otherwise (exit 2)
    add_param(parser, "seed")                        # --seed N: default None (the option was not given)
    parse_param("top_p", "0")                        # ParamError: "top_p must be above 0 and at most 1, got 0"

A refused value is an argparse error: one line naming the option, the range and the value, exit status 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from musebridge.engine.inference.sampler import scale_pitch_classes
from musebridge.engine.server.protocol import BOOL, INT, NUM, PARAMS, Arg, check_value, span
from musebridge.engine.tokens.tonality import parse_key

NUMERIC = tuple(name for name, arg in PARAMS.items() if arg.types in (INT, NUM))  # the parameters with a range
_UNSET = object()


class ParamError(ValueError):
    """A parameter value outside the table (or not a number where one is needed); the message is one line."""


def option(name: str) -> str:
    """The command-line option of a parameter: "top_p" -> "--top-p"."""
    return "--" + name.replace("_", "-")


def _number(arg: Arg, text: str) -> int | float:
    """`text` as the parameter's type: int for INT, a finite float (or int) for NUM; ValueError otherwise."""
    if arg.types == INT:
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _key(text: str) -> str:
    """A hard-mask key as the engine reads it ("E minor", "Bb major", "A dorian"); ValueError naming choices."""
    root, _, mode = text.strip().partition(" ")
    scale_pitch_classes(root, mode.strip() or "major")
    return text


def _follow_key(text: str) -> str:
    if text not in ("auto", "off"):
        parse_key(text)
    return text


_STRING_CHECKS = {"key": _key, "follow_key": _follow_key}


def parse_param(name: str, text: str) -> Any:
    """The value of parameter `name` written as `text` on a command line; ParamError (one line) when the table
    refuses it. Parameters without a check here (style, instruments ...) are returned as given."""
    arg = PARAMS[name]
    if arg.types in (INT, NUM):
        try:
            value = _number(arg, text)
        except ValueError:
            kind = "a whole number" if arg.types == INT else "a number"
            raise ParamError(f"{name} must be {kind} {span(arg)}, got {text!r}") from None
    elif arg.types == BOOL:
        if text.lower() not in ("true", "false", "on", "off", "1", "0"):
            raise ParamError(f"{name} must be true or false, got {text!r}")
        value = text.lower() in ("true", "on", "1")
    else:
        value = text
    check_param(name, value)
    return value


def check_param(name: str, value: Any) -> None:
    """ParamError unless `value` (already typed, as sent on the wire) is one the table accepts for `name`; a key
    is read as the engine reads it."""
    if name not in PARAMS:
        raise ParamError(f"unknown parameter {name!r}; choose from: {', '.join(PARAMS)}")
    problem = check_value(value, PARAMS[name])
    if problem:
        raise ParamError(f"{name} {problem}")
    if name in _STRING_CHECKS:
        try:
            _STRING_CHECKS[name](value)
        except ValueError as exc:
            raise ParamError(f"{name}: {exc}") from None


def check_params(params: dict) -> None:
    """check_param for each of `params`, then what the table cannot say alone: pitch_low at most pitch_high."""
    for name, value in params.items():
        check_param(name, value)
    low, high = params.get("pitch_low", 0), params.get("pitch_high", 127)
    if low > high:
        raise ParamError(f"pitch_low {low} is above pitch_high {high}; swap them")


def param_type(name: str):
    """An argparse `type` for parameter `name`: the typed value, or ArgumentTypeError with the range."""

    def convert(text: str):
        try:
            return parse_param(name, text)
        except ParamError as exc:
            message = str(exc)  # argparse names the option itself: "argument --top-p: must be ..."
            message = message[len(name):].lstrip(": ") if message.startswith(name) else message
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


def param_help(name: str, default: Any = _UNSET, extra: str = "", shown: str | None = None) -> str:
    """The --help text of a parameter's option: the table's help, `extra`, its range and its default (the
    parser's own default when it has one, as argparse's %(default)s; else `shown`, else the engine's, from the
    table)."""
    arg = PARAMS[name]
    parts = [arg.help + (f"; {extra}" if extra else "")]
    if arg.types in (INT, NUM):
        parts.append(span(arg).replace("within ", ""))
    if default is not _UNSET and default is not None:
        parts.append("default %(default)s")
    elif shown is not None:
        parts.append(f"default {shown}")
    elif arg.default is not None or arg.unset:
        parts.append(f"default {arg.unset or arg.default}")
    return f"{parts[0]} ({'; '.join(parts[1:])})" if len(parts) > 1 else parts[0]


def add_param(parser, name: str, default: Any = None, *, extra: str = "", shown: str | None = None,
              metavar: str | None = None, flags: tuple[str, ...] = ()) -> argparse.Action:
    """Add the option of session parameter `name` (option(name), plus `flags`) to `parser` (a parser or an
    argument group): typed and range-checked by the table, with its help, range and default. default None:
    absent when not given (the engine's default applies, and the help says which, or `shown`)."""
    arg = PARAMS[name]
    if metavar is None:
        metavar = {INT: "N", NUM: "X"}.get(arg.types, name.upper())
    return parser.add_argument(option(name), *flags, dest=name, type=param_type(name), default=default,
                               metavar=metavar, help=param_help(name, default, extra, shown))
