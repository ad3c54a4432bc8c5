"""What an operator sees and sets: log lines (access, startup), startup
errors, 404s, and options from the environment and a TOML file.

Servers run on 127.0.0.1 with ephemeral ports, each bounded by
``asyncio.wait_for``; the unbindable-address test only asks the kernel to
bind 192.0.2.1 (TEST-NET-1), which fails without sending anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import asrserve
from asrserve.cli import build_parser
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.errors import ConfigError
from asrserve.logs import JsonFormatter, TextFormatter, configure, redact
from asrserve.server.app import AsrServer
from asrserve.server.auth import fingerprint
from asrserve.server.models import model_summary
from tests.conftest import BUILTIN, read_wav

WAV = sorted((BUILTIN / "test_wavs").glob("*.wav"))[0]
TIMEOUT_S = 60
QUERY_TOKEN = "query-secret-0123456789"
HEADER_TOKEN = "header-secret-9876543210"
WRONG_TOKEN = "wrong-secret-5555555555"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))


class Captured:
    """The server's log output (asrserve and aiohttp loggers, debug and up)
    in both formats."""

    def __init__(self) -> None:
        self.text = io.StringIO()
        self.json = io.StringIO()

    def json_lines(self, logger: str | None = None) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in self.json.getvalue().splitlines()]
        return [r for r in rows if logger is None or r["logger"] == logger]

    def everything(self) -> str:
        return self.text.getvalue() + self.json.getvalue()


@pytest.fixture
def captured() -> Iterator[Captured]:
    cap = Captured()
    handlers = []
    for stream, formatter in ((cap.text, TextFormatter()), (cap.json, JsonFormatter())):
        h = logging.StreamHandler(stream)
        h.setFormatter(formatter)
        handlers.append(h)
    loggers = [logging.getLogger(name) for name in ("asrserve", "aiohttp")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        for h in handlers:
            lg.addHandler(h)
    try:
        yield cap
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            for h in handlers:
                lg.removeHandler(h)


def serve(
    recognizer: asrserve.Recognizer,
    body: Callable[[AsrServer, str], Awaitable[None]],
    **config: Any,
) -> None:
    async def main() -> None:
        cfg = ServerConfig(port=0, **config)
        async with AsrServer(recognizer, cfg, model_name="demo-model") as server:
            await body(server, f"127.0.0.1:{server.port}")

    asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))


def http_get(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def s16(x: np.ndarray[Any, Any]) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def asrserve_session(url: str, **kwargs: Any) -> list[dict[str, Any]]:
    x, sr = read_wav(WAV)
    out = []
    async with connect(url, **kwargs) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
        await ws.send(s16(x))
        await ws.send('{"type": "stop"}')
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                out.append(json.loads(m))
    return out


# --- access lines -------------------------------------------------------------


def test_access_lines_never_carry_the_token(
    recognizer: asrserve.Recognizer, captured: Captured, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{QUERY_TOKEN}\n{HEADER_TOKEN}\n")
    x, sr = read_wav(WAV)
    audio_s = x.size / sr
    finals: dict[str, int] = {}

    async def body(_: AsrServer, where: str) -> None:
        # asrserve dialect, token in the query (as browsers send it)
        msgs = await asrserve_session(f"ws://{where}/?token={QUERY_TOKEN}")
        finals["query"] = sum(m["type"] == "final" for m in msgs)
        # the same with the token in the Authorization header
        auth = {"Authorization": f"Bearer {HEADER_TOKEN}"}
        msgs = await asrserve_session(f"ws://{where}/", additional_headers=auth)
        finals["header"] = sum(m["type"] == "final" for m in msgs)
        # sherpa dialect: float32 frames, then "Done"
        async with connect(f"ws://{where}/", additional_headers=auth) as ws:
            await ws.send(x.astype("<f4").tobytes())
            await ws.send("Done")
            with contextlib.suppress(ConnectionClosed):
                async for _m in ws:
                    pass
        # OpenAI realtime: connect and leave
        async with connect(f"ws://{where}/v1/realtime?token={QUERY_TOKEN}"):
            pass
        base = f"http://{where}"
        assert await asyncio.to_thread(http_get, f"{base}/healthz?token={QUERY_TOKEN}") == 200
        assert await asyncio.to_thread(http_get, f"{base}/metrics", auth) == 200
        assert await asyncio.to_thread(http_get, f"{base}/metrics?token={WRONG_TOKEN}") == 401
        bad = {"Authorization": f"Bearer {WRONG_TOKEN}"}
        assert await asyncio.to_thread(http_get, f"{base}/v1/models", bad) == 401

    serve(recognizer, body, auth_token_file=str(tokens))

    lines = captured.json_lines("asrserve.access")
    sessions = [r for r in lines if r["msg"] == "websocket session"]
    requests = [r for r in lines if r["msg"] == "http request"]
    assert len(sessions) == 4, sessions
    assert len(requests) == 4, requests
    query, header, sherpa, realtime = sessions
    for row, token in ((query, QUERY_TOKEN), (header, HEADER_TOKEN)):
        assert row["client"] == "127.0.0.1"
        assert row["route"] == "/"
        assert row["dialect"] == "asrserve"
        assert row["token"] == fingerprint(token)
        assert row["audio_s"] == pytest.approx(audio_s, abs=1e-3)
        assert row["segments"] == 1
        assert row["close_code"] == 1000
        assert row["error"] == "-"
        assert 0 < row["duration_s"] < TIMEOUT_S
        assert row["level"] == "info"
    assert finals == {"query": 1, "header": 1}
    assert sherpa["dialect"] == "sherpa"
    assert sherpa["audio_s"] == pytest.approx(audio_s, abs=1e-3)
    assert sherpa["segments"] >= 1
    assert realtime["dialect"] == "realtime"
    assert realtime["route"] == "/v1/realtime"
    assert realtime["segments"] == 0
    assert realtime["token"] == fingerprint(QUERY_TOKEN)

    healthz, metrics, wrong_query, wrong_header = requests
    assert (healthz["route"], healthz["status"], healthz["method"]) == ("/healthz", 200, "GET")
    assert healthz["token"] == fingerprint(QUERY_TOKEN)
    assert healthz["error"] == "-"
    assert (metrics["status"], metrics["token"]) == (200, fingerprint(HEADER_TOKEN))
    assert (wrong_query["status"], wrong_query["error"]) == (401, "unauthorized")
    assert wrong_query["token"] == fingerprint(WRONG_TOKEN)
    assert wrong_header["route"] == "/v1/models"
    assert wrong_header["token"] == fingerprint(WRONG_TOKEN)

    # the text format says the same on one line each, with a timestamp
    text = captured.text.getvalue().splitlines()
    access = [line for line in text if " asrserve.access: " in line]
    assert len(access) == 8
    assert all(TS.match(line) for line in text)
    want = (
        f"INFO asrserve.access: websocket session client=127.0.0.1 route=/ dialect=asrserve "
        f"token={fingerprint(QUERY_TOKEN)} audio_s={audio_s:.3f} segments=1 duration_s="
    )
    assert want in access[0]
    assert access[0].endswith(" close_code=1000 error=-")

    everything = captured.everything()
    for secret in (QUERY_TOKEN, HEADER_TOKEN, WRONG_TOKEN):
        assert secret not in everything


def test_session_errors_and_limits_in_the_access_line(
    recognizer: asrserve.Recognizer, captured: Captured
) -> None:
    async def body(_: AsrServer, where: str) -> None:
        async with connect(f"ws://{where}/") as ws:
            await ws.send('{"type": "start", "sample_rate": -5}')
            with contextlib.suppress(ConnectionClosed):
                async for _m in ws:
                    pass
        first = await connect(f"ws://{where}/")
        with contextlib.suppress(Exception):
            await connect(f"ws://{where}/")  # refused: 503, the server is full
        await first.close()

    serve(recognizer, body, max_connections=1)
    rows = captured.json_lines("asrserve.access")
    bad_start, first = [r for r in rows if r["msg"] == "websocket session"]
    (full,) = [r for r in rows if r["msg"] == "http request"]
    assert (bad_start["error"], bad_start["close_code"]) == ("bad_config", 1003)
    assert bad_start["dialect"] == "-"  # a refused start begins no session
    assert first["dialect"] == "-"  # no message sent: dialect unknown
    assert (first["error"], first["close_code"], first["segments"]) == ("-", 1000, 0)
    assert (full["route"], full["status"], full["error"]) == ("/", 503, "full")


# --- startup line, startup errors, 404 ----------------------------------------


def test_startup_line(
    recognizer: asrserve.Recognizer, captured: Captured, test_event_loop: str
) -> None:
    ports: list[int] = []

    async def body(server: AsrServer, _: str) -> None:
        ports.append(server.port)

    serve(recognizer, body)
    (ready,) = [r for r in captured.json_lines("asrserve.server") if r["msg"].startswith("ready")]
    port = ports[0]
    family, precision = model_summary(recognizer)
    assert ready["level"] == "info"
    assert ready["model"] == "demo-model"
    assert (ready["family"], ready["precision"]) == (family, precision) == ("lstm", precision)
    assert "int8" in precision  # the demo model's encoder and joiner are int8
    assert ready["urls"] == [f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"]
    assert ready["page"] == f"http://127.0.0.1:{port}/"
    assert ready["event_loop"] == test_event_loop
    assert ready["msg"] == f"ready: listening on ws://127.0.0.1:{port} http://127.0.0.1:{port}"
    (line,) = [x for x in captured.text.getvalue().splitlines() if ": ready: " in x]
    shown = json.dumps(precision) if " " in precision else precision  # quoted with spaces
    assert TS.match(line)
    assert line.endswith(
        f"INFO asrserve.server: ready: listening on ws://127.0.0.1:{port} "
        f"http://127.0.0.1:{port} model=demo-model family=lstm precision={shown} "
        f"event_loop={test_event_loop} page=http://127.0.0.1:{port}/"
    )


def test_model_summary_reads_precision_from_file_names(tmp_path: Path) -> None:
    class Graph:
        def __init__(self, path: Path) -> None:
            self.path = str(path)

        def run(self) -> None: ...

    class Model:
        family = "zipformer"

        def __init__(self, *names: str) -> None:
            self.encoder, self.decoder = (Graph(tmp_path / n) for n in names)

        def graphs(self) -> dict[str, Graph]:
            return {"encoder": self.encoder, "decoder": self.decoder}

    class Rec:
        def __init__(self, model: Model) -> None:
            self.model = model

    def summary(*names: str) -> tuple[str, str]:
        return model_summary(Rec(Model(*names)))  # type: ignore[arg-type]

    assert summary("encoder.int8.onnx", "decoder.int8.onnx") == ("zipformer", "int8")
    assert summary("encoder.fp16.onnx", "decoder.fp16.onnx") == ("zipformer", "fp16")
    assert summary("encoder.onnx", "decoder.onnx") == ("zipformer", "fp32")
    assert summary("int8-static/encoder_model.onnx", "int8-static/decoder_model.onnx")[1] == "int8"
    assert summary("encoder.int8.onnx", "decoder.onnx")[1] == "mixed (encoder int8, decoder fp32)"


def test_unbindable_addresses_are_one_config_error(recognizer: asrserve.Recognizer) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def start(host: str, port: int) -> str:
        server = AsrServer(recognizer, ServerConfig(host=host, port=port))
        with pytest.raises(ConfigError) as info:
            await server.start()
        return str(info.value)

    try:
        msg = asyncio.run(asyncio.wait_for(start("127.0.0.1", port), TIMEOUT_S))
        assert msg == f"cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}"
        msg = asyncio.run(asyncio.wait_for(start("192.0.2.1", 6006), TIMEOUT_S))
        assert msg.startswith("cannot listen on 192.0.2.1:6006: ")
    finally:
        taken.close()


def _serve_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    code = "import sys; from asrserve.cli import main; sys.exit(main())"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("where", ["port in use", "address not ours"])
def test_serve_cannot_listen_is_one_line_and_exit_2(where: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    host, port = (
        ("127.0.0.1", taken.getsockname()[1])
        if where == "port in use"
        else (
            "192.0.2.1",
            6006,
        )
    )
    try:
        proc = _serve_cli("serve", "--host", host, "--port", str(port))
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        taken.close()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"asrserve serve: error: cannot listen on {host}:{port}: "), err
    assert len(err.strip().splitlines()) <= 2  # at most the demo model's notice before it


def test_serve_cli_json_logs_from_the_environment(tmp_path: Path) -> None:
    """The real command: options from the environment, the startup line as
    JSON, SIGTERM ends it with status 0."""
    proc = _serve_cli(
        "serve",
        env={"ASRSERVE_PORT": "0", "ASRSERVE_LOG_FORMAT": "json", "ASRSERVE_HOST": "127.0.0.1"},
    )
    ready = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT_S
        while ready is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if line.startswith("{"):
                row = json.loads(line)
                assert set(row) >= {"ts", "level", "logger", "msg"}
                if row["msg"].startswith("ready: listening on "):
                    ready = row
        assert ready is not None, "no startup line"
        assert ready["model"] == asrserve.DEFAULT_MODEL
        assert ready["family"] == "lstm"
        assert ready["urls"][0].startswith("ws://127.0.0.1:")
        assert ready["page"].startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unknown_get_is_404(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, where: str) -> None:
        base = f"http://{where}"
        assert await asyncio.to_thread(http_get, f"{base}/no/such/page") == 404
        assert await asyncio.to_thread(http_get, f"{base}/favicon.ico") == 404
        assert await asyncio.to_thread(http_get, f"{base}/") == 200  # the page
        assert await asyncio.to_thread(http_get, f"{base}/v1/realtime") == 426  # WebSocket only
        # upgrades still work on the page's path and others
        for path in ("/", "/asr"):
            msgs = await asrserve_session(f"ws://{where}{path}")
            assert msgs[-1]["type"] == "eof"

    serve(recognizer, body)


# --- log formats ----------------------------------------------------------------


def _record(msg: str, *args: object, **fields: Any) -> logging.LogRecord:
    record = logging.LogRecord("asrserve.test", logging.WARNING, __file__, 1, msg, args, None)
    if fields:
        record.fields = fields
    return record


def test_text_and_json_formats() -> None:
    r = _record("hello %s", "world", n=3, t=0.5, who="a b", none=None, urls=["x", "y"])
    text = TextFormatter().format(r)
    assert TS.match(text)
    assert text.endswith('WARNING asrserve.test: hello world n=3 t=0.500 who="a b" none=- urls=x,y')
    obj = json.loads(JsonFormatter().format(r))
    assert obj["level"] == "warning"
    assert obj["logger"] == "asrserve.test"
    assert obj["msg"] == "hello world"
    assert (obj["n"], obj["t"], obj["who"], obj["none"], obj["urls"]) == (
        3,
        0.5,
        "a b",
        None,
        ["x", "y"],
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"])


def test_messages_that_echo_a_token_are_redacted() -> None:
    assert redact("GET /?token=abc123&x=1 HTTP/1.1") == "GET /?token=<redacted>&x=1 HTTP/1.1"
    assert redact("Authorization: Bearer abc123") == "Authorization: Bearer <redacted>"
    r = _record("bad request line %r", "GET /?token=abc123")
    assert "abc123" not in TextFormatter().format(r)
    assert "abc123" not in JsonFormatter().format(r)


def test_configure_sets_levels_and_format() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("asrserve").level)
    buf = io.StringIO()
    try:
        configure("warning", "json", stream=buf)
        logging.getLogger("asrserve.x").info("hidden")
        logging.getLogger("asrserve.x").warning("shown")
        configure("debug", "text", stream=buf)
        logging.getLogger("asrserve.x").debug("debug shown")
        lines = buf.getvalue().splitlines()
        assert json.loads(lines[0])["msg"] == "shown"
        assert len(lines) == 2
        assert lines[1].endswith("DEBUG asrserve.x: debug shown")
        with pytest.raises(ValueError, match="loud"):
            configure("loud")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("asrserve").setLevel(saved[2])


def test_log_options() -> None:
    p = build_parser()
    a = p.parse_args(["serve"])
    assert (a.log_level, a.log_format, a.verbose) == ("info", "text", False)
    a = p.parse_args(["-v", "serve", "--log-format", "json", "--log-level", "error"])
    assert (a.log_level, a.log_format, a.verbose) == ("error", "json", True)
    with pytest.raises(SystemExit):
        p.parse_args(["serve", "--log-level", "loud"])


# --- options from the environment and a file -----------------------------------


def parse_serve(*argv: str) -> Any:
    return build_parser().parse_args(["serve", *argv])


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        parse_serve(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ASRSERVE_") and name not in ("ASRSERVE_BUILTIN_MODEL",):
            monkeypatch.delenv(name)
    return monkeypatch


def test_options_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ASRSERVE_PORT", "7000")
    clean_env.setenv("ASRSERVE_MAX_WAIT_MS", "12.5")
    clean_env.setenv("ASRSERVE_AUTH_TOKEN_FILE", "/run/secrets/tokens")
    clean_env.setenv("ASRSERVE_NO_ENDPOINT", "yes")
    clean_env.setenv("ASRSERVE_ISOLATE_BATCHES", "TRUE")
    clean_env.setenv("ASRSERVE_ALLOWED_ORIGIN", "https://a.example, https://b.example")
    clean_env.setenv("ASRSERVE_DECODING", "beam")
    clean_env.setenv("ASRSERVE_MAX_STREAMS", "9")  # the alias of --max-connections
    a = parse_serve()
    assert a.port == 7000
    assert a.max_wait_ms == 12.5
    assert a.auth_token_file == "/run/secrets/tokens"
    assert a.no_endpoint is True
    assert a.isolate_batches is True
    assert a.allowed_origin == ["https://a.example", "https://b.example"]
    assert a.decoding == "beam"
    assert a.max_connections == 9
    assert a.host == "127.0.0.1"  # untouched
    clean_env.setenv("ASRSERVE_NO_ENDPOINT", "0")
    assert parse_serve().no_endpoint is False
    # other subcommands do not read them
    clean_env.setenv("ASRSERVE_PORT", "not-a-port")
    assert build_parser().parse_args(["healthcheck"]).port == 6006


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("ASRSERVE_PORT", "seven", "invalid int value 'seven'"),
        ("ASRSERVE_NO_ENDPOINT", "maybe", "expected a boolean"),
        ("ASRSERVE_LOG_LEVEL", "loud", "'loud' is not one of"),
        ("ASRSERVE_MAX_WAIT_MS", "", "invalid float value"),
    ],
)
def test_bad_environment_value_is_one_line_naming_it(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    var: str,
    value: str,
    says: str,
) -> None:
    clean_env.setenv(var, value)
    line = one_line_error(capsys)
    assert line.startswith(f"asrserve serve: error: {var}: ")
    assert says in line


def test_options_from_a_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        "port = 7001\n"
        'host = "0.0.0.0"\n'
        "max-connections = 5\n"
        "max_batch_size = 4\n"
        "max-wait-ms = 10\n"
        'allowed-origin = ["https://a.example"]\n'
        'hotword = "HELLO WORLD"\n'
        "no-endpoint = true\n"
        'log-format = "json"\n'
    )
    a = parse_serve("--config", str(cfg))
    assert (a.port, a.host, a.max_connections, a.max_batch_size) == (7001, "0.0.0.0", 5, 4)
    assert a.max_wait_ms == 10.0
    assert a.allowed_origin == ["https://a.example"]
    assert a.hotword == ["HELLO WORLD"]
    assert a.no_endpoint is True
    assert a.log_format == "json"
    # $ASRSERVE_CONFIG names the file too
    clean_env.setenv("ASRSERVE_CONFIG", str(cfg))
    assert parse_serve().port == 7001
    # and an abbreviated --conf is the same option
    clean_env.delenv("ASRSERVE_CONFIG")
    assert parse_serve("--conf", str(cfg)).port == 7001


def test_precedence_flag_env_file_default(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text("port = 7001\nmax-connections = 5\n")
    assert parse_serve().port == 6006
    assert parse_serve("--config", str(cfg)).port == 7001
    clean_env.setenv("ASRSERVE_PORT", "7002")
    a = parse_serve("--config", str(cfg))
    assert (a.port, a.max_connections) == (7002, 5)
    a = parse_serve("--config", str(cfg), "--port", "7003")
    assert (a.port, a.max_connections) == (7003, 5)
    assert parse_serve("--port", "7004", "--config", str(cfg)).port == 7004


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("port = 7001\nmax-conections = 5\n", "unknown option 'max-conections'"),
        ("config = 'other.toml'\n", "unknown option 'config'"),
        ("port = 1.5\n", "port: invalid int value 1.5"),
        ("port = true\n", "port: expected a single value"),
        ("no-endpoint = 'perhaps'\n", "no-endpoint: expected a boolean"),
        ("port = \n", "is not valid TOML"),
    ],
)
def test_bad_config_file_is_one_line_naming_the_key(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str,
    says: str,
) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(content)
    line = one_line_error(capsys, "--config", str(cfg))
    assert line.startswith("asrserve serve: error: ")
    assert str(cfg) in line
    assert says in line


def test_missing_config_file(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = one_line_error(capsys, "--config", str(tmp_path / "nope.toml"))
    assert line == f"asrserve serve: error: config file not found: {tmp_path / 'nope.toml'}"


def test_help_shows_the_environment_default(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("ASRSERVE_MAX_BATCH_SIZE", "7")
    with pytest.raises(SystemExit):
        parse_serve("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "most streams one encoder call advances (default: 7)" in out
    assert "ASRSERVE_<OPTION>" in out
