"""The WebSocket client against a fake server speaking the asrserve dialect.

The fake server runs its own event loop in a thread, so both the async API
and the ``client`` command (which calls ``asyncio.run``) can talk to it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from asrserve.audio import read_audio
from asrserve.clients.commands import add_parsers
from asrserve.clients.mic import LiveDisplay, transcribe_remote
from asrserve.clients.sources import FileSource
from asrserve.clients.ws_client import ServerError, stream_to_server, transcribe_files
from tests.conftest import BUILTIN

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


@dataclass
class Session:
    """What the fake server saw of one connection."""

    texts: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    frames: int = 0


class FakeServer:
    """Replies ``ready`` to start, a ``partial`` per audio frame, and on ``stop``
    a ``final`` plus ``eof`` before closing with 1000.

    ``mode``: ``"bad_config"`` answers start with an error and closes 1003;
    ``"warn"`` adds a non-fatal error after the first frame; ``"full"``
    refuses the handshake with HTTP 503; ``"shutdown"`` closes 1001 after ready.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.sessions: list[Session] = []
        self.active = 0
        self.max_active = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        assert self._started.wait(5)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        # max_queue=None: a handler that closes early must still read the client's close frame.
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._admit, max_queue=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            self._started.set()
            await self._stop.wait()

    def _admit(self, conn: ServerConnection, _request: Request) -> Response | None:
        if self.mode == "full":
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many sessions\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        s = Session()
        self.sessions.append(s)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        width = 2
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    s.audio += raw
                    s.frames += 1
                    n = len(s.audio) // width
                    await ws.send(json.dumps({"type": "partial", "segment": 0, "text": f"P{n}"}))
                    if self.mode == "warn" and s.frames == 1:
                        error = {"type": "error", "code": "bad_audio", "message": "odd"}
                        await ws.send(json.dumps(error))
                    continue
                msg = json.loads(raw)
                s.texts.append(msg)
                if msg["type"] == "start":
                    width = 4 if msg.get("format") == "f32le" else 2
                    if self.mode == "bad_config":
                        error = {"type": "error", "code": "bad_config", "message": "no such beam"}
                        await ws.send(json.dumps(error))
                        await ws.close(1003, "bad config")
                        return
                    ready = {"type": "ready", "sample_rate": msg.get("sample_rate")}
                    await ws.send(json.dumps(ready))
                    if self.mode == "shutdown":
                        await ws.close(1001, "going away")
                        return
                elif msg["type"] == "stop":
                    n = len(s.audio) // width
                    final = {"type": "final", "segment": 0, "text": f"F{n}", "start": 0.0}
                    await ws.send(json.dumps(final))
                    await ws.send(json.dumps({"type": "eof", "segments": 1, "duration": n}))
                    await ws.close(1000)
                    return
        finally:
            self.active -= 1


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


def test_session_start_audio_stop_and_messages_in_order(server: FakeServer) -> None:
    samples, rate = read_audio(WAVS[0])
    seen: list[dict[str, Any]] = []
    messages = run(
        stream_to_server(
            server.url,
            FileSource(WAVS[0], realtime=False),
            decoding={"method": "modified_beam", "beam": 4},
            hotwords=["POSTGRES"],
            endpointing=True,
            on_message=seen.append,
        )
    )
    [s] = server.sessions
    assert s.texts == [
        {
            "type": "start",
            "format": "s16le",
            "sample_rate": rate,
            "decoding": {"method": "modified_beam", "beam": 4},
            "hotwords": ["POSTGRES"],
            "endpointing": {"enabled": True},
        },
        {"type": "stop"},
    ]
    pcm = np.frombuffer(bytes(s.audio), "<i2")
    np.testing.assert_array_equal(pcm, np.round(samples * 32768).astype(np.int16))
    assert s.frames == -(-samples.size // 1600)
    types = [m["type"] for m in messages]
    assert types == ["ready"] + ["partial"] * s.frames + ["final", "eof"]
    assert messages[-2]["text"] == f"F{samples.size}"
    assert seen == messages


def test_f32le_and_defaults_omitted(server: FakeServer) -> None:
    samples, _ = read_audio(WAVS[1])
    run(stream_to_server(server.url, FileSource(WAVS[1], realtime=False), format="f32le"))
    [s] = server.sessions
    assert s.texts[0] == {"type": "start", "format": "f32le", "sample_rate": 16000}
    np.testing.assert_array_equal(np.frombuffer(bytes(s.audio), "<f4"), samples)


def test_fatal_error_and_close_1003_raise(server: FakeServer) -> None:
    server.mode = "bad_config"
    with pytest.raises(ServerError, match=r"bad_config\): no such beam.*1003") as info:
        run(stream_to_server(server.url, FileSource(WAVS[0], realtime=False)))
    assert (info.value.code, info.value.close_code) == ("bad_config", 1003)


def test_non_fatal_error_is_returned(server: FakeServer) -> None:
    server.mode = "warn"
    messages = run(stream_to_server(server.url, FileSource(WAVS[1], realtime=False)))
    assert [m["code"] for m in messages if m["type"] == "error"] == ["bad_audio"]
    assert messages[-1]["type"] == "eof"


def test_close_before_eof_raises(server: FakeServer) -> None:
    server.mode = "shutdown"
    with pytest.raises(ServerError, match=r"before eof.*1001") as info:
        run(stream_to_server(server.url, FileSource(WAVS[0], realtime=False)))
    assert info.value.close_code == 1001


def test_full_server_refuses_with_503(server: FakeServer) -> None:
    server.mode = "full"
    with pytest.raises(ServerError, match=r"server is full \(HTTP 503\): too many sessions"):
        run(stream_to_server(server.url, FileSource(WAVS[0], realtime=False)))


def test_nothing_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServerError, match=f"cannot connect to ws://127.0.0.1:{port}"):
        run(stream_to_server(f"ws://127.0.0.1:{port}", FileSource(WAVS[0], realtime=False)))


def test_files_concurrently_in_input_order(server: FakeServer, tmp_path: Path) -> None:
    paths = [WAVS[2], tmp_path / "missing.wav", WAVS[0], WAVS[1]]
    results = run(transcribe_files(server.url, paths, realtime=False, concurrency=2))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert results[1].error is not None
    assert "no such audio file" in results[1].error
    for r, p in zip(results, paths, strict=True):
        if r.error is None:
            n = read_audio(p)[0].size
            assert r.to_json() == {
                "file": str(p),
                "text": f"F{n}",
                "segments": [{"type": "final", "segment": 0, "text": f"F{n}", "start": 0.0}],
                "duration": n,
            }
    assert 1 <= server.max_active <= 2


def test_mic_remote_path_displays_partials_and_finals(server: FakeServer) -> None:
    out = io.StringIO()
    finals = run(
        transcribe_remote(
            server.url, FileSource(WAVS[1], realtime=False), LiveDisplay(out, partials=True)
        )
    )
    n = read_audio(WAVS[1])[0].size
    assert finals == [f"F{n}"]
    assert out.getvalue().startswith("\r\x1b[KP1600\r\x1b[KP3200")
    assert out.getvalue().endswith(f"\r\x1b[KF{n}\n")


def _client_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asrserve")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["client", *argv])


def test_client_command_text_and_json(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(WAVS[0]), str(WAVS[1])]
    n = [read_audio(f)[0].size for f in files]
    args = _client_args(*files, "--url", server.url, "--fast")
    assert args.func is not None
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"{files[0]}: F{n[0]}\n{files[1]}: F{n[1]}\n"
    args = _client_args(*files, "--url", server.url, "--fast", "--format", "json", "--beam", "8")
    assert args.func(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["file"], r["text"], r["duration"]) for r in rows] == [
        (files[0], f"F{n[0]}", n[0]),
        (files[1], f"F{n[1]}", n[1]),
    ]
    assert "decoding" not in server.sessions[-1].texts[0]  # --beam alone: server's decoding


def test_client_command_decoding_options_and_failure(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", server.url, "--fast", "--decoding", "beam", "--beam", "8"]
    args = _client_args(str(WAVS[0]), *argv, "--hotword", "A B", "--no-endpointing")
    assert args.func(args) == 0
    start = server.sessions[-1].texts[0]
    assert start["decoding"] == {"method": "modified_beam", "beam": 8}
    assert start["hotwords"] == ["A B"]
    assert start["endpointing"] == {"enabled": False}
    server.mode = "full"
    args = _client_args(str(WAVS[0]), "--url", server.url)
    assert args.func(args) == 1
    assert "server is full (HTTP 503)" in capsys.readouterr().err


def test_client_command_usage_errors() -> None:
    with pytest.raises(SystemExit) as info:
        _client_args(str(WAVS[0]), "--concurrency", "0")
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        _client_args(str(WAVS[0]), "--fast", "--realtime")
