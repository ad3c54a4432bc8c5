"""Log output of the server: a timestamp on every line, text or JSON.

:func:`configure` installs one handler on the root logger. A record may carry
structured fields, ``log.info("msg", extra={"fields": {...}})``: the text
format appends them as ``key=value``, the JSON format puts them beside
``ts``, ``level``, ``logger`` and ``msg`` (one object per line).
``extra={"text_skip": ("key", ...)}`` leaves fields the message already
says out of the text format.

Bearer tokens are never logged on purpose (log lines carry
:func:`asrserve.server.auth.fingerprint`); as a second guard both formats
blank anything that looks like one in a message (``token=...``,
``Bearer ...``), e.g. a malformed request line echoed by the HTTP parser.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
_NUMERIC = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")
ACCESS_LOGGER = "asrserve.access"

_SECRET = re.compile(r"(?i)(\btoken=|\bbearer\s+)[^\s&\"',;]+")
_BASE_KEYS = frozenset({"ts", "level", "logger", "msg"})


def redact(text: str) -> str:
    """``text`` with what follows ``token=`` or ``Bearer`` blanked."""
    return _SECRET.sub(r"\1<redacted>", text)


def _timestamp(record: logging.LogRecord) -> str:
    """UTC, ISO 8601, milliseconds: ``2025-01-31T12:00:00.123Z``."""
    when = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = record.__dict__.get("fields")
    return fields if isinstance(fields, Mapping) else {}


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return ",".join(_text_value(v) for v in value) or "-"
    text = str(value)
    if not text:
        return '""'
    if any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO asrserve.server: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        msg = redact(record.getMessage())
        skip = record.__dict__.get("text_skip") or ()
        fields = {k: v for k, v in _fields(record).items() if k not in skip}
        if fields:
            msg += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {msg}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the
    record's fields, and ``exc`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _fields(record).items():
            obj[key if key not in _BASE_KEYS else f"field_{key}"] = value
        if record.exc_info:
            obj["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(obj, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Route all logging through one handler with ``fmt`` (text | json):
    ``asrserve`` loggers at ``level``, other libraries at warning and above
    (at debug, everything). Replaces the root logger's handlers."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {LEVELS}")
    numeric = _NUMERIC[level]
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.getLogger("asrserve").setLevel(numeric)
