"""Uploads that cannot exhaust the server (``POST /v1/audio/transcriptions``).

Each probe runs its own loopback server (``serve`` of test_http) and is bounded
in count and time: every request has a 10 s timeout, and what it checks
(a refusal by header, a 429, a freed worker) must happen in a second or two.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import asrserve
from asrserve.audio import resample, upload_blocks
from asrserve.errors import AudioLimitError
from asrserve.server.app import AsrServer
from asrserve.server.openai_api import transcribe_segments
from tests.conftest import read_wav
from tests.server.test_http import WAVS, multipart, recognizer, serve

__all__ = ["recognizer"]  # the module-scoped fixture, shared with test_http

ROUTE = "/v1/audio/transcriptions"


def post(
    url: str, body: bytes, ctype: str, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url + ROUTE, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def error_of(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def wav_bytes(samples: npt.NDArray[Any], rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def wav_header(rate: int, frames: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV of silence with whatever header values we like."""
    data = bytes(2 * channels * frames)
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    riff = struct.pack("<I", 36 + len(data))
    return b"RIFF" + riff + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


def silence_flac(seconds: int, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(rate * 10, dtype=np.int16)
        for _ in range(seconds // 10):
            f.write(block)
    return buf.getvalue()


def hold_upload(port: int, file: bytes, filename: str = "long.flac") -> socket.socket:
    """Send a whole upload and return the socket unread: the server works on it
    until the socket is closed."""
    body, ctype = multipart({}, file, filename)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    s.sendall(head.encode() + body)
    return s


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def timed_post(url: str, body: bytes, ctype: str) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    status, headers, reply = post(url, body, ctype)
    return status, headers, reply, time.monotonic() - t0


@pytest.fixture(scope="module")
def long_silence() -> bytes:
    """10 min of silence as FLAC (a few kB): several seconds of decoding."""
    return silence_flac(600)


def whole_file_text(recognizer: asrserve.Recognizer, x: npt.NDArray[np.float32], rate: int) -> str:
    """The transcript of the former path: the whole file resampled at once."""
    model_rate = recognizer.feature_config.sample_rate
    return transcribe_segments(recognizer, resample(x, rate, model_rate), model_rate).text


def test_uploads_give_the_whole_file_transcript(recognizer: asrserve.Recognizer) -> None:
    """Decoded block by block, an upload's text and segments are those of the
    whole-file path, also as a stereo FLAC (downmixed per block) and at
    44.1 kHz (resampled by the stream, block by block, not all at once)."""

    async def body(_: AsrServer, base: str) -> None:
        for wav in WAVS:
            x, sr = read_wav(wav)
            want = transcribe_segments(recognizer, x, sr)
            assert want.text
            stereo = wav_bytes(np.stack([x, x], axis=1), sr, "FLAC")
            for name, data in ((wav.name, wav.read_bytes()), ("stereo.flac", stereo)):
                fields = {"response_format": "verbose_json"}
                b, ct = multipart(fields, data, name)
                status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
                assert status == 200, reply
                got = json.loads(reply)
                assert got["text"] == want.text
                assert [s["text"] for s in got["segments"]] == [s.text for s in want.segments]
                ends = [round(e, 3) for e in want.ends]
                assert [s["end"] for s in got["segments"]] == ends
                starts = [round(s.start_time, 3) for s in want.segments]
                assert [s["start"] for s in got["segments"]] == starts
                assert got["duration"] == pytest.approx(x.size / sr, abs=1e-3)
            cd = wav_bytes(resample(x, sr, 44100), 44100)
            b, ct = multipart({}, cd, "cd.wav")
            status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
            assert status == 200, reply
            y, _ = sf.read(io.BytesIO(cd), dtype="float32")
            assert json.loads(reply)["text"] == whole_file_text(recognizer, y, 44100)

    serve(recognizer, body)


def test_sample_rates_outside_the_served_range_are_refused_by_header(
    recognizer: asrserve.Recognizer,
) -> None:
    """A 2 kB WAV whose header says 1 Hz is 1,000 s of audio once resampled:
    refused in milliseconds by its header. 8 kHz telephony is served."""
    x, sr = read_wav(WAVS[0])

    async def body(_: AsrServer, base: str) -> None:
        for rate in (1, 4000, 768000):
            b, ct = multipart({}, wav_header(rate, 1000))
            status, _, reply, took = await asyncio.to_thread(timed_post, base, b, ct)
            assert status == 400, reply
            err = error_of(reply)
            assert err["code"] == "unsupported_sample_rate"
            assert f"{rate} Hz" in err["message"]
            assert "8000 to 384000 Hz" in err["message"]
            assert took < 2.0
        phone = wav_bytes(resample(x, sr, 8000), 8000)
        b, ct = multipart({}, phone)
        status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 200, reply
        # what the whole-file path (resampled at once) hears in the band-limited copy
        y, _ = sf.read(io.BytesIO(phone), dtype="float32")
        assert json.loads(reply)["text"] == whole_file_text(recognizer, y, 8000)

    serve(recognizer, body)


def test_long_silence_is_refused_by_header(recognizer: asrserve.Recognizer) -> None:
    """A few kB of FLAC holding 3 min of silence, against --max-audio-s 60: 413
    by the header, before any decoding."""
    flac = silence_flac(180)
    assert len(flac) < 100_000

    async def body(_: AsrServer, base: str) -> None:
        b, ct = multipart({}, flac, "quiet.flac")
        status, _, reply, took = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 413, reply
        err = error_of(reply)
        assert err["code"] == "audio_too_long"
        assert "180.0 s" in err["message"]
        assert "60 s" in err["message"]
        assert took < 1.0

    serve(recognizer, body, max_audio_s=60)


def test_the_audio_cap_holds_while_decoding_too() -> None:
    """Where a header gives no length, the cap is enforced block by block."""
    flac = silence_flac(30)
    blocks = upload_blocks(flac, "x.flac", max_audio_s=5.0, block_s=1.0)
    got = 0

    def read_all() -> None:
        nonlocal got
        for rate, block in blocks:
            assert block.size <= rate  # one second at most: memory is a block
            got += block.size

    with pytest.raises(AudioLimitError) as caught:
        read_all()
    assert caught.value.code == "audio_too_long"
    assert caught.value.too_large
    assert got == 5 * 16000


def test_many_channels_are_refused_by_header(recognizer: asrserve.Recognizer) -> None:
    x, sr = read_wav(WAVS[0])
    want = transcribe_segments(recognizer, x, sr).text

    async def body(_: AsrServer, base: str) -> None:
        b, ct = multipart({}, wav_header(16000, 1600, channels=16))
        status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 400, reply
        err = error_of(reply)
        assert err["code"] == "too_many_channels"
        assert "16 channels" in err["message"]
        assert "at most 8" in err["message"]
        # 8 identical channels: averaged block by block to the same samples
        b, ct = multipart({}, wav_bytes(np.stack([x] * 8, axis=1), sr, "FLAC"), "eight.flac")
        status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 200, reply
        assert json.loads(reply)["text"] == want

    serve(recognizer, body)


def test_a_full_upload_queue_is_429_at_once_and_a_gone_client_frees_its_worker(
    recognizer: asrserve.Recognizer, long_silence: bytes
) -> None:
    """One worker, no queue: while a long upload runs, a second is told 429
    with Retry-After at once; when the long upload's client goes away its
    decode stops and the next upload is served promptly."""
    wav = WAVS[0]
    x, sr = read_wav(wav)
    want = transcribe_segments(recognizer, x, sr).text

    async def body(server: AsrServer, base: str) -> None:
        held = hold_upload(server.port, long_silence)
        try:
            await asyncio.sleep(1.0)  # read, checked, decoding
            b, ct = multipart({}, wav.read_bytes(), wav.name)
            status, headers, reply, took = await asyncio.to_thread(timed_post, base, b, ct)
            assert status == 429, reply
            assert took < 1.0
            assert int(headers["Retry-After"]) > 0
            err = error_of(reply)
            assert err["code"] == "rate_limit_exceeded"
            assert "--max-queued-uploads" in err["message"]
        finally:
            held.close()
        await asyncio.sleep(0.5)
        status, _, reply, took = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 200, reply
        assert json.loads(reply)["text"] == want
        assert took < 3.0, f"the worker was still busy: {took:.1f} s"

    serve(recognizer, body, upload_workers=1, max_queued_uploads=0)


def test_a_gone_client_frees_its_worker_within_a_second(
    recognizer: asrserve.Recognizer, long_silence: bytes
) -> None:
    """Two clients leave their long uploads; each decode stops, and both
    workers are free again for the next uploads."""
    wav = WAVS[1]

    async def body(server: AsrServer, base: str) -> None:
        held = [hold_upload(server.port, long_silence) for _ in range(2)]
        await asyncio.sleep(1.0)
        for s in held:
            s.close()
        await asyncio.sleep(1.0)
        b, ct = multipart({}, wav.read_bytes(), wav.name)
        replies = await asyncio.gather(
            *(asyncio.to_thread(timed_post, base, b, ct) for _ in range(2))
        )
        for status, _, reply, took in replies:
            assert status == 200, reply
            assert took < 3.0, f"a worker was still busy: {took:.1f} s"

    serve(recognizer, body, upload_workers=2)


def test_uploads_count_as_connections(recognizer: asrserve.Recognizer, long_silence: bytes) -> None:
    """With --max-connections-per-ip 2, two uploads running from 127.0.0.1
    leave no room for a third upload nor a WebSocket (429); with
    --max-connections 1, one upload fills the server (503, /readyz unready)."""
    wav = WAVS[0]
    b, ct = multipart({}, wav.read_bytes(), wav.name)

    async def per_ip(server: AsrServer, base: str) -> None:
        held = [hold_upload(server.port, long_silence) for _ in range(2)]
        try:
            await asyncio.sleep(1.0)
            status, headers, reply, took = await asyncio.to_thread(timed_post, base, b, ct)
            assert status == 429, reply
            assert took < 1.0
            assert "Retry-After" in headers
            assert "too many connections from 127.0.0.1" in error_of(reply)["message"]
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base.replace("http", "ws", 1) + "/", open_timeout=5):
                    pass
            assert refused.value.response.status_code == 429
        finally:
            for s in held:
                s.close()

    serve(recognizer, per_ip, max_connections_per_ip=2, upload_workers=2)

    async def server_wide(server: AsrServer, base: str) -> None:
        held = hold_upload(server.port, long_silence)
        try:
            await asyncio.sleep(1.0)
            status, headers, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
            assert status == 503, reply
            assert "Retry-After" in headers
            assert error_of(reply)["code"] == "server_full"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base.replace("http", "ws", 1) + "/", open_timeout=5):
                    pass
            assert refused.value.response.status_code == 503
            assert await asyncio.to_thread(get_status, base + "/readyz") == 503
            assert await asyncio.to_thread(get_status, base + "/healthz") == 200
        finally:
            held.close()

    serve(recognizer, server_wide, max_connections=1)


def test_a_flood_of_form_fields_is_refused_fast_and_the_loop_stays_free(
    recognizer: asrserve.Recognizer,
) -> None:
    """10k tiny fields (OpenAI's own field name): refused at part 33, while
    /healthz keeps answering; unknown and oversized fields are refused by name."""
    wav = WAVS[0].read_bytes()
    boundary = "flood"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'
    flood = (part * 10_000 + f"--{boundary}--\r\n").encode()
    ctype = f"multipart/form-data; boundary={boundary}"

    async def body(_: AsrServer, base: str) -> None:
        worst = 0.0
        done = threading.Event()

        def probe() -> None:
            nonlocal worst
            while not done.is_set():
                t0 = time.monotonic()
                with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
                    assert r.status == 200
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            replies = await asyncio.gather(
                *(asyncio.to_thread(timed_post, base, flood, ctype) for _ in range(3))
            )
        finally:
            done.set()
            await asyncio.to_thread(prober.join)
        assert worst < 0.5, f"/healthz took {worst:.2f} s"
        for status, _, reply, took in replies:
            assert took < 1.0, f"a flood took {took:.2f} s"
            assert status == 400, reply[:200]
            assert "more than 32 parts" in error_of(reply)["message"]

        b, ct = multipart({"colour": "blue"}, wav)
        status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 400
        assert "unknown field 'colour'" in error_of(reply)["message"]
        b, ct = multipart({"prompt": "x" * 100_000}, wav)
        status, _, reply, _ = await asyncio.to_thread(timed_post, base, b, ct)
        assert status == 400
        assert "field 'prompt' is longer than" in error_of(reply)["message"]

    serve(recognizer, body)


@pytest.mark.parametrize(
    "head",
    [b"Garbage", b"\x00\xff: x", b": x", b'Content-Disposition: form-data; name="file"\r\n:'],
)
def test_a_garbage_part_header_is_400(recognizer: asrserve.Recognizer, head: bytes) -> None:
    body = b"--b\r\n" + head + b"\r\n\r\nxx\r\n--b--\r\n"

    async def run(_: AsrServer, base: str) -> None:
        status, _, reply, _ = await asyncio.to_thread(
            timed_post, base, body, "multipart/form-data; boundary=b"
        )
        assert status == 400, reply
        err = error_of(reply)
        assert "malformed multipart body" in err["message"]
        assert "Invalid HTTP header" in err["message"]

    serve(recognizer, run)
