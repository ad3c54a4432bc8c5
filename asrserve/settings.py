"""Options from the environment and a TOML file, beneath the command line.

A :class:`LayeredParser` with ``layered = True`` (``asrserve serve``) takes
each option, in this order of precedence, from

1. the command line,
2. ``ASRSERVE_<OPTION>`` in the environment (``--max-connections`` →
   ``ASRSERVE_MAX_CONNECTIONS``; flags take 1/0, true/false, yes/no, on/off;
   repeatable options a comma-separated list),
3. the TOML file of ``--config FILE`` (or ``$ASRSERVE_CONFIG``), whose keys
   are option names with dashes or underscores (``max-connections = 8``,
   ``max_connections = 8``; repeatable options a list or one string),
4. the built-in default.

A value that does not convert, or a key the file should not have, is one
line naming the variable or key, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from asrserve.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ENV_PREFIX = "ASRSERVE_"
CONFIG_OPTION = "--config"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_name(option: str) -> str:
    """``--max-connections`` → ``ASRSERVE_MAX_CONNECTIONS``."""
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def _layerable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long option name (without dashes) → action, for every option a file
    or variable may set (not --help, not --config)."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        for option in action.option_strings:
            if option.startswith("--") and option != CONFIG_OPTION:
                out[option[2:]] = action
    return out


def _boolean(raw: object, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ConfigError(f"{where}: expected a boolean (1/0, true/false, yes/no), got {raw!r}")


def _scalar(action: argparse.Action, raw: object, where: str) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f"{where}: expected a single value, got {raw!r}")
    convert: Any = action.type or str
    if convert is float and isinstance(raw, int | float):
        value: Any = float(raw)
    elif convert is int and isinstance(raw, int):
        value = raw
    else:
        try:
            value = convert(str(raw).strip() if isinstance(raw, str) else str(raw))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            kind = getattr(convert, "__name__", "")
            detail = f"invalid {kind} value {raw!r}" if kind in ("int", "float") else str(exc)
            raise ConfigError(f"{where}: {detail}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    return value


def convert(action: argparse.Action, raw: object, where: str, *, from_env: bool) -> Any:
    """``raw`` (a variable's string or a TOML value) as ``action`` would
    store it; ``where`` names the source in errors."""
    if isinstance(action, argparse._StoreConstAction):  # store_true / store_false
        return action.const if _boolean(raw, where) else action.default
    if isinstance(action, argparse.BooleanOptionalAction):
        return _boolean(raw, where)
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if many:
        if isinstance(raw, str):
            items: list[object] = [p for p in raw.split(",") if p.strip()] if from_env else [raw]
        elif isinstance(raw, list):
            items = list(raw)
        else:
            items = [raw]
        return [_scalar(action, item, where) for item in items]
    return _scalar(action, raw, where)


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return data


def layered_defaults(
    parser: argparse.ArgumentParser, config: str | None, environ: Mapping[str, str]
) -> dict[str, Any]:
    """dest → value from the config file, then the environment over it."""
    options = _layerable(parser)
    values: dict[str, Any] = {}
    if config:
        for key, raw in read_config_file(config).items():
            action = options.get(key.replace("_", "-"))
            if action is None:
                raise ConfigError(
                    f"{config}: unknown option {key!r} (keys are option names, "
                    f"e.g. port or max-connections; see {parser.prog} --help)"
                )
            values[action.dest] = convert(action, raw, f"{config}: {key}", from_env=False)
    for name, action in options.items():
        var = env_name(name)
        if var in environ:
            values[action.dest] = convert(action, environ[var], var, from_env=True)
    return values


def _config_in(args: Sequence[str]) -> str | None:
    """The value of ``--config`` on a command line (its last one)."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == CONFIG_OPTION and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(CONFIG_OPTION + "="):
            found = arg.split("=", 1)[1]
    return found


class LayeredParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser`; with ``layered = True`` its
    defaults come from the environment and a ``--config`` file first (see
    the module docstring)."""

    layered = False
    _builtin: dict[str, Any] | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.layered:
            return super().parse_known_args(args, namespace)
        argv = list(sys.argv[1:] if args is None else args)
        config = _config_in(argv) or os.environ.get(env_name(CONFIG_OPTION)) or None
        self._layer(config)
        ns, rest = super().parse_known_args(argv, namespace)
        given = getattr(ns, "config", None)
        if given and given != config:  # an abbreviated --conf FILE: layer again with it
            self._layer(given)
            ns, rest = super().parse_known_args(argv, namespace)
        return ns, rest

    def _layer(self, config: str | None) -> None:
        if self._builtin is None:
            self._builtin = {a.dest: a.default for a in self._actions}
        else:
            self.set_defaults(**self._builtin)
        try:
            self.set_defaults(**layered_defaults(self, config, os.environ))
        except ConfigError as exc:
            self._fail(str(exc))

    def _fail(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
