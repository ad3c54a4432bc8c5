"""Faults: SIGTERM under load, broken model files, a stream whose decode fails,
clients that vanish, and the regressions the fuzz and load runs found.

Subprocess tests run ``asrserve serve --port 0`` (see ``test_load.spawn_server``);
in-process tests run :class:`AsrServer` on a loopback ephemeral port. Every
one is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import asrserve
from asrserve.audio import resample
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.core.recognizer import Recognizer
from asrserve.server.app import AsrServer
from asrserve.server.protocol import Session, SessionConfig
from asrserve.server.realtime import RealtimeSession
from tests.conftest import BUILTIN, SHARED_MODELS, read_wav
from tests.server.test_fuzz import captured_logs, exact_model
from tests.server.test_load import ASRSERVE, spawn_server

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(exact_model(), precision="fp32", endpoint=EndpointConfig(False))


@pytest.fixture(scope="module")
def offline(recognizer: asrserve.Recognizer) -> dict[Path, list[str]]:
    return {w: recognizer.transcribe(w).tokens for w in WAVS}


def serve(
    recognizer: Recognizer, body: Callable[[AsrServer, str], Awaitable[None]], **config: Any
) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            async with AsrServer(recognizer, ServerConfig(port=0, **config)) as server:
                await body(server, f"ws://127.0.0.1:{server.port}")

    asyncio.run(main())


def s16(x: np.ndarray[Any, Any]) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def read_all(ws: ClientConnection) -> list[Any]:
    out: list[Any] = []
    with contextlib.suppress(ConnectionClosed):
        async for m in ws:
            out.append(m if m == "Done!" else json.loads(m))
    return out


# --- SIGTERM under load -----------------------------------------------------------------------
def test_sigterm_under_load_sends_finals_then_1001(
    tmp_path: Path, recognizer: Recognizer, offline: dict[Path, list[str]]
) -> None:
    """24 streams (asrserve, sherpa and realtime) have sent all their audio but
    not ``stop``/``Done``; SIGTERM arrives while the server is still decoding.
    Each gets its final, then a 1001 close, and only then does the process exit 0."""
    n = 24
    server = spawn_server(
        tmp_path / "server.log",
        *("--model", str(exact_model()), "--precision", "fp32", "--no-endpoint"),
        *("--max-batch-size", "8", "--max-connections", "64"),
    )

    async def stream(i: int, sent: asyncio.Event) -> dict[str, Any]:
        wav = WAVS[i % len(WAVS)]
        x, sr = read_wav(wav)
        dialect = ("asrserve", "sherpa", "realtime")[i % 3]
        path = "/v1/realtime?intent=transcription" if dialect == "realtime" else "/"
        async with connect(server.url + path, max_size=None) as ws:
            if dialect == "asrserve":
                await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
                for k in range(0, x.size, 1600):
                    await ws.send(s16(x[k : k + 1600]))
            elif dialect == "sherpa":
                for k in range(0, x.size, 1600):
                    await ws.send(x[k : k + 1600].astype("<f4").tobytes())
            else:
                x24 = resample(x, sr, 24000)
                for k in range(0, x24.size, 2400):
                    audio = base64.b64encode(s16(x24[k : k + 2400])).decode()
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            sent.set()
            msgs = await read_all(ws)
            code = ws.close_code
        return {"wav": wav, "dialect": dialect, "msgs": msgs, "code": code}

    async def main() -> tuple[list[dict[str, Any]], int | None]:
        events = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(stream(i, events[i])) for i in range(n)]
        await asyncio.gather(*(e.wait() for e in events))
        await asyncio.sleep(0.3)  # the frames are read; decoding is under way
        server.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        # every stream was closed by the server before the process went away
        return results, server.proc.poll()

    try:
        results, rc_at_last_close = asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))
        rc = server.proc.wait(30)
    finally:
        server.stop()
    assert rc == 0, server.log.read_text()
    del rc_at_last_close  # may already be 0: the process exits right after the last close
    for r in results:
        want = offline[r["wav"]]
        msgs = r["msgs"]
        assert r["code"] == 1001, (r["dialect"], r["code"], msgs[-2:])
        if r["dialect"] == "asrserve":
            finals = [m for m in msgs if m["type"] == "final"]
            assert [f["tokens"] for f in finals] == [want]
            assert msgs[-1]["type"] == "eof"
        elif r["dialect"] == "sherpa":
            assert msgs[-1] == "Done!"
            assert msgs[-2]["is_eof"]
            assert msgs[-2]["tokens"] == want
        else:
            completed = [m for m in msgs if m["type"].endswith(".completed")]
            assert len(completed) == 1
            x, sr = read_wav(r["wav"])
            want_text = recognizer.transcribe(resample(x, sr, 24000), 24000).text
            assert completed[0]["transcript"] == want_text
    log = server.log.read_text()
    assert "Traceback" not in log
    assert "shutting down" in log


# --- broken model files ---------------------------------------------------------------------------
def _model_copy(tmp_path: Path) -> Path:
    src = exact_model() if (exact_model() / "encoder.onnx").is_file() else BUILTIN
    dst = tmp_path / "model"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    return dst


def _foreign_onnx(path: Path) -> None:
    """A valid ONNX graph that is no transducer (an Identity, no metadata)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


NCNN_PARAM = (
    "7767517\n3 3\nInput in0 0 1 in0\nSplit splitncnn_0 1 2 in0 a b\n"
    "BinaryOp add 2 1 a b out0 0=0\n"
)


def _break(model: Path, case: str) -> tuple[Path, str]:
    """Break one file of ``model``; returns it and a word the error must contain."""
    enc = model / "encoder.onnx"
    if case == "truncated_encoder":
        data = enc.read_bytes()
        enc.write_bytes(data[: len(data) // 3])
        return enc, "not a loadable ONNX model"
    if case == "truncated_joiner":
        j = model / "joiner.onnx"
        j.write_bytes(j.read_bytes()[:1000])
        return j, "not a loadable ONNX model"
    if case == "empty_decoder":
        d = model / "decoder.onnx"
        d.write_bytes(b"")
        return d, "decoder.onnx"
    if case == "foreign_onnx":
        _foreign_onnx(enc)
        return enc, "model_type"
    if case == "ncnn_param_as_onnx":
        enc.write_text(NCNN_PARAM)
        return enc, "not a loadable ONNX model"
    if case == "encoder_of_another_model":
        other = SHARED_MODELS / "bench-lstm-random-80m" / "encoder.int8.onnx"
        if not other.is_file():
            pytest.skip(f"no second model at {other}")
        shutil.copy(other, enc)
        return enc, "different models"
    if case == "joiner_of_another_model":
        other = SHARED_MODELS / "bench-lstm-random-80m" / "joiner.int8.onnx"
        if not other.is_file():
            pytest.skip(f"no second model at {other}")
        shutil.copy(other, model / "joiner.onnx")
        return model / "joiner.onnx", "different models"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "truncated_encoder",
        "truncated_joiner",
        "empty_decoder",
        "foreign_onnx",
        "ncnn_param_as_onnx",
        "encoder_of_another_model",
        "joiner_of_another_model",
    ],
)
@pytest.mark.parametrize("command", ["serve", "transcribe"])
def test_broken_model_file_fails_at_startup_in_one_line(
    tmp_path: Path, case: str, command: str
) -> None:
    model = _model_copy(tmp_path)
    bad, why = _break(model, case)
    args = ["--port", "0"] if command == "serve" else [str(next(BUILTIN.glob("test_wavs/*.wav")))]
    done = subprocess.run(
        [str(ASRSERVE), command, "--model", str(model), "--precision", "fp32", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("asrserve: error: ")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stderr + done.stdout
    assert str(bad) in errors[0] or bad.name in errors[0], errors[0]
    assert why in errors[0], errors[0]


# --- one stream's decode fails --------------------------------------------------------------------
VICTIM_RULE3 = 19.75  # a start option only the victim sends, to find its stream


def _poison(recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch, where: str) -> dict[str, int]:
    """Make the victim's stream fail: its ``decode`` (the whole batch it is in
    raises, as a broken kernel would) or its ``feed`` (accepting audio raises)."""
    victims: set[int] = set()
    hits = {"n": 0}
    create = recognizer.create_stream
    decode = recognizer.decode_streams

    def create_stream(*args: Any, **kwargs: Any) -> Any:
        s = create(*args, **kwargs)
        endpoint = kwargs.get("endpoint")
        if endpoint is not None and endpoint.rule3.min_utterance_length == VICTIM_RULE3:
            victims.add(id(s))
            if where == "feed":
                accept = s.accept_waveform

                def failing_accept(sample_rate: int, samples: Any) -> None:
                    if s.num_processed_frames > 100:  # after some partials
                        hits["n"] += 1
                        raise RuntimeError("injected feature failure")
                    accept(sample_rate, samples)

                s.accept_waveform = failing_accept  # type: ignore[method-assign]
        return s

    def decode_streams(streams: list[Any]) -> None:
        if where == "decode" and any(
            id(s) in victims and s.num_processed_frames > 100 for s in streams
        ):
            hits["n"] += 1
            raise RuntimeError("injected decode failure")
        decode(streams)

    monkeypatch.setattr(recognizer, "create_stream", create_stream)
    monkeypatch.setattr(recognizer, "decode_streams", decode_streams)
    return hits


@pytest.mark.parametrize("where", ["decode", "feed"])
def test_failing_stream_gets_error_others_finish(
    recognizer: Recognizer,
    offline: dict[Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    hits = _poison(recognizer, monkeypatch, where)

    async def session(url: str, wav: Path, victim: bool) -> tuple[list[Any], int | None]:
        x, sr = read_wav(wav)
        start: dict[str, Any] = {"type": "start", "sample_rate": sr, "format": "s16le"}
        if victim:
            start["endpointing"] = {"enabled": False, "rule3_min_utterance_length": VICTIM_RULE3}
        ws = await connect(url)
        reader = asyncio.create_task(read_all(ws))
        # the victim's sends fail once the server closed it
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(start))
            for k in range(0, x.size, 1600):  # paced a little, so batches form
                await ws.send(s16(x[k : k + 1600]))
                # the victim slower still: its audio must still be arriving once
                # 100 frames are decoded, also on a busy machine ("feed")
                await asyncio.sleep(0.03 if victim else 0.01)
            await ws.send('{"type": "stop"}')
        msgs = await reader
        with contextlib.suppress(ConnectionClosed, OSError):
            await ws.close()
        return msgs, ws.close_code

    async def body(server: AsrServer, url: str) -> None:
        files = [WAVS[i % len(WAVS)] for i in range(8)]
        results = await asyncio.gather(
            *(session(url, w, victim=i == 3) for i, w in enumerate(files))
        )
        for i, (wav, (msgs, code)) in enumerate(zip(files, results, strict=True)):
            if i == 3:
                errors = [m for m in msgs if m["type"] == "error"]
                assert [e["code"] for e in errors] == ["internal"], msgs
                assert "injected" in errors[0]["message"]
                assert code == 1011
                assert any(m["type"] == "partial" for m in msgs)  # it failed mid-stream
                assert not any(m["type"] == "eof" for m in msgs)
            else:
                finals = [m for m in msgs if m["type"] == "final"]
                assert [f["tokens"] for f in finals] == [offline[wav]], (i, msgs[-3:])
                assert code == 1000
        assert hits["n"] >= 1
        assert await until_released(server) == {}

    with captured_logs() as logs:
        serve(recognizer, body, max_wait_ms=20)
    # the failure is a bug on the server's side: logged with its traceback, once per hit
    tracebacks = [r for r in logs.records if r.exc_info]
    assert tracebacks
    assert all("injected" in str(r.exc_info[1]) for r in tracebacks if r.exc_info)


def server_state_left(server: AsrServer) -> dict[str, int]:
    """Per-stream state the server still holds (empty once every stream ended)."""
    left = {
        "open": len(server._open),
        "conns": len(server._conns),
        "slots": server.scheduler.live_streams,
    }
    return {k: v for k, v in left.items() if v}


async def until_released(server: AsrServer, timeout_s: float = 5.0) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while server_state_left(server) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return server_state_left(server)


# --- clients that vanish (regression: their connections were never released) ----------------------
@pytest.mark.parametrize("dialect", ["asrserve", "sherpa", "realtime"])
@pytest.mark.parametrize("how", ["fin", "close_frame"])
def test_vanished_client_is_released(recognizer: Recognizer, dialect: str, how: str) -> None:
    """Before the fix, a client that left without stop/Done kept its connection,
    slot and stream forever (and counted against --max-connections)."""
    x, sr = read_wav(WAVS[0])

    async def body(server: AsrServer, url: str) -> None:
        path = "/v1/realtime?intent=transcription" if dialect == "realtime" else "/"
        ws = await connect(url + path)
        if dialect == "asrserve":
            await ws.send(json.dumps({"type": "start", "sample_rate": sr, "format": "s16le"}))
            await ws.send(s16(x[: sr // 2]))
        elif dialect == "sherpa":
            await ws.send(x[: sr // 2].astype("<f4").tobytes())
        else:
            audio = base64.b64encode(s16(x[: sr // 2])).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await asyncio.sleep(0.2)
        assert server_state_left(server)
        if how == "fin":
            ws.transport.abort()
        else:
            await ws.close()
        assert await until_released(server) == {}

    serve(recognizer, body)


# --- flush then more audio than the backlog allows (regression: deadlock) -------------------------
def test_flush_then_backlog_does_not_deadlock(
    recognizer: Recognizer, offline: dict[Path, list[str]]
) -> None:
    """Before the fix: input queued behind a flush waited for a wake-up that
    never came once backpressure had paused the reader, and the session hung."""
    clips = [read_wav(w) for w in WAVS]

    async def body(_: AsrServer, url: str) -> None:
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le"}))
            for x, _sr in clips:
                await ws.send(s16(x))
                await ws.send('{"type": "flush"}')
            await ws.send('{"type": "stop"}')
            async with asyncio.timeout(20):
                msgs = await read_all(ws)
        finals = [m for m in msgs if m["type"] == "final"]
        assert len(finals) == len(clips)
        assert msgs[-1]["type"] == "eof"

    serve(recognizer, body, max_backlog_s=0.3)


# --- the sans-I/O regressions the fuzzer found ---------------------------------------------------
def test_deeply_nested_json_is_a_bad_message() -> None:
    deep = "[" * 100_000
    out = Session(SessionConfig()).receive(deep)
    assert '"bad_message"' in out[0].data  # type: ignore[union-attr]
    out = RealtimeSession(SessionConfig(), "m").receive(deep)
    assert '"invalid_event"' in out[0].data  # type: ignore[union-attr]


@pytest.mark.parametrize("silence", ["NaN", "Infinity", "-Infinity", "1e400", "true", "0"])
def test_realtime_silence_must_be_a_finite_positive_number(silence: str) -> None:
    event = (
        '{"type": "transcription_session.update", "session": {"turn_detection": '
        f'{{"type": "server_vad", "silence_duration_ms": {silence}}}}}}}'
    )
    out = RealtimeSession(SessionConfig(), "m").receive(event)
    assert len(out) == 1
    assert '"invalid_value"' in out[0].data  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "start",
    [
        {"decoding": {"method": "modified_beam", "beam": 65}},
        {"decoding": {"max_symbols_per_frame": 17}},
        {"decoding": {"method": "modified_beam"}, "hotwords": ["A"] * 1001},
        {"decoding": {"method": "modified_beam"}, "hotwords": ["A" * 201]},
    ],
)
def test_start_limits_what_one_session_may_cost(start: dict[str, Any]) -> None:
    out = Session(SessionConfig()).receive(json.dumps({"type": "start", **start}))
    assert '"bad_config"' in out[0].data  # type: ignore[union-attr]
    assert "at most" in out[0].data  # type: ignore[union-attr]


def test_samples_far_out_of_range_are_refused() -> None:
    huge = np.array([0.0, 3e38, 0.0, 0.0], dtype="<f4").tobytes()
    out = Session(SessionConfig()).receive(huge)  # sherpa: close 1003
    assert out[-1].code == 1003  # type: ignore[union-attr]
    s = Session(SessionConfig())
    s.receive('{"type": "start"}')
    out = s.receive(huge)
    assert '"bad_audio"' in out[0].data  # type: ignore[union-attr]
    # the int16 range in floats is still audio
    ok = s.receive(np.array([0.5, -32768.0, 32767.0], dtype="<f4").tobytes())
    assert type(ok[0]).__name__ == "Audio"


def test_malformed_http_is_one_info_line(recognizer: Recognizer) -> None:
    async def body(server: AsrServer, _: str) -> None:
        for junk in (b"GET / HTTP/1.1\r\n\r\n", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(junk)
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1."), answer[:60]
            assert b" 400 " in answer[:20], answer[:60]

    with captured_logs() as logs:
        serve(recognizer, body)
    assert logs.problems() == []
    refused = [r for r in logs.records if "malformed request" in r.getMessage()]
    assert len(refused) == 2
    assert all(r.levelno == logging.INFO and not r.exc_info for r in refused)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
