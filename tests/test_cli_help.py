"""Every argument of every subcommand explains itself and shows its default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from asrserve.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, prog: str = "asrserve"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def _flat(text: str) -> str:
    return " ".join(text.split())


def _squeezed(text: str) -> str:
    """Without any whitespace: help wraps lines at spaces and after hyphens."""
    return "".join(text.split())


PARSERS = list(_parsers(build_parser()))


def _shows_default(action: argparse.Action) -> bool:
    """Whether the help must show the default: a real value, not a flag's
    implied False/True, not None, not SUPPRESS."""
    d = action.default
    if d is None or d is argparse.SUPPRESS:
        return False
    if isinstance(action, argparse._StoreConstAction | argparse._AppendConstAction):
        return False  # store_true / store_false / store_const: the flag says it
    return not isinstance(action, argparse._HelpAction | argparse._VersionAction)


def test_all_subcommands_are_walked() -> None:
    names = {prog for prog, _ in PARSERS}
    for want in ("transcribe", "serve", "client", "mic", "bulk", "quantize", "ncnn-meta"):
        assert f"asrserve {want}" in names
    assert {"asrserve models list", "asrserve models pull"} <= names


@pytest.mark.parametrize(("prog", "parser"), PARSERS, ids=[p for p, _ in PARSERS])
def test_every_argument_has_help_and_shows_its_default(
    prog: str, parser: argparse.ArgumentParser
) -> None:
    text = _squeezed(parser.format_help())
    formatter = parser._get_formatter()
    missing, no_default = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help or action.help is argparse.SUPPRESS or not action.help.strip():
            missing.append(name)
            continue
        expanded = _flat(formatter._expand_help(action))
        assert _squeezed(expanded) in text, f"{prog} {name}: help not in --help output"
        if _shows_default(action):
            d = action.default
            if isinstance(d, list | tuple) and not d:
                # an empty list (repeatable options) is said in words: "(default: none)"
                ok = "(default: " in expanded
            else:
                ok = f"(default: {d})" in expanded
            if not ok:
                no_default.append(f"{name}={d!r}")
    assert not missing, f"{prog}: arguments without help: {', '.join(missing)}"
    assert not no_default, f"{prog}: help without the default: {', '.join(no_default)}"


def test_defaults_are_not_shown_twice() -> None:
    """An explicit '(default: ...)' in a help text is not followed by a
    generated one."""
    for prog, parser in PARSERS:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                expanded = formatter._expand_help(action)
                assert expanded.count("(default:") <= 1, f"{prog}: {expanded}"


def test_every_server_config_field_has_a_serve_option() -> None:
    """ServerConfig's fields are read from serve's options by name (cli.server_config):
    a field without an option would fail there, so each one needs one."""
    from dataclasses import fields

    from asrserve.cli import server_config
    from asrserve.config import ServerConfig

    args = build_parser().parse_args(["serve"])
    assert server_config(args) == ServerConfig()  # the options' defaults are the config's
    missing = [f.name for f in fields(ServerConfig) if not hasattr(args, f.name)]
    assert missing == ["max_upload_bytes", "trusted_proxies", "allowed_origins"]
