"""HTTP beside the WebSocket: the OpenAI transcription API, probes, auth, TLS, limits.

Every test runs its own server on an ephemeral loopback port, bounded by
``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import asrserve
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.errors import ConfigError
from asrserve.server.app import AsrServer
from asrserve.server.openai_api import transcribe_segments
from tests import prometheus
from tests.conftest import BUILTIN, read_wav

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
TIMEOUT_S = 60
TOKEN = "s3cret-token-123"


@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))


def serve(
    recognizer: asrserve.Recognizer,
    body: Callable[[AsrServer, str], Awaitable[None]],
    **config: Any,
) -> None:
    async def main() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            cfg = ServerConfig(port=0, **config)
            async with AsrServer(recognizer, cfg, model_name="tiny-lstm") as server:
                scheme = "https" if cfg.tls_cert else "http"
                await body(server, f"{scheme}://127.0.0.1:{server.port}")

    asyncio.run(main())


def request(
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def multipart(fields: dict[str, str], file: bytes, filename: str = "a.wav") -> tuple[bytes, str]:
    """A raw multipart/form-data body, as curl -F builds it."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        + file
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def expected_text(recognizer: asrserve.Recognizer, wav: Path) -> str:
    x, sr = read_wav(wav)
    return transcribe_segments(recognizer, x, sr).text


def test_openai_client(recognizer: asrserve.Recognizer) -> None:
    """The official ``openai`` client, pointed at the loopback server."""
    openai = pytest.importorskip("openai")
    wav = WAVS[0]
    want = expected_text(recognizer, wav)
    assert want

    async def body(_: AsrServer, base: str) -> None:
        def call() -> tuple[Any, ...]:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            with wav.open("rb") as f:
                plain = client.audio.transcriptions.create(model="tiny-lstm", file=f)
            with wav.open("rb") as f:
                verbose = client.audio.transcriptions.create(
                    model="tiny-lstm",
                    file=f,
                    response_format="verbose_json",
                    timestamp_granularities=["word", "segment"],
                )
            with wav.open("rb") as f:
                text = client.audio.transcriptions.create(
                    model="tiny-lstm", file=f, response_format="text"
                )
            models = client.models.list()
            one = client.models.retrieve("tiny-lstm")
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve("whisper-1")
            return plain, verbose, text, models, one

        plain, verbose, text, models, one = await asyncio.to_thread(call)
        assert (one.id, one.object, one.owned_by) == ("tiny-lstm", "model", "asrserve")
        assert plain.text == want
        assert verbose.text == want
        assert verbose.duration == pytest.approx(read_wav(wav)[0].size / 16000, abs=1e-3)
        assert " ".join(w.word for w in verbose.words) == want
        starts = [w.start for w in verbose.words]
        assert starts == sorted(starts)
        assert all(w.end >= w.start for w in verbose.words)
        assert verbose.segments
        assert verbose.segments[0].text
        assert str(text).strip() == want
        assert [m.id for m in models.data] == ["tiny-lstm"]

    serve(recognizer, body)


def test_raw_multipart_formats_and_errors(recognizer: asrserve.Recognizer) -> None:
    wav = WAVS[1]
    data = wav.read_bytes()
    want = expected_text(recognizer, wav)

    async def body(_: AsrServer, base: str) -> None:
        url = base + "/v1/audio/transcriptions"

        def post(fields: dict[str, str], file: bytes = data) -> tuple[int, dict[str, str], bytes]:
            payload, ctype = multipart(fields, file)
            return request(url, payload, {"Content-Type": ctype})

        status, _, out = await asyncio.to_thread(post, {"model": "x"})
        assert status == 200
        assert json.loads(out) == {"text": want}
        status, _, out = await asyncio.to_thread(post, {"response_format": "srt"})
        assert status == 200
        assert out.decode().startswith("1\n00:00:")
        status, _, out = await asyncio.to_thread(post, {"response_format": "vtt"})
        assert out.decode().startswith("WEBVTT")
        status, _, out = await asyncio.to_thread(post, {"response_format": "xml"})
        assert status == 400
        assert json.loads(out)["error"]["param"] == "response_format"
        status, _, out = await asyncio.to_thread(post, {}, b"this is not audio")
        assert status == 400
        assert "cannot decode audio" in json.loads(out)["error"]["message"]
        status, _, out = await asyncio.to_thread(
            request, url, b"{}", {"Content-Type": "application/json"}
        )
        assert status == 400
        assert json.loads(out)["error"]["type"] == "invalid_request_error"

    serve(recognizer, body)


def test_upload_limit_is_413(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, base: str) -> None:
        payload, ctype = multipart({}, WAVS[0].read_bytes())
        status, _, out = await asyncio.to_thread(
            request, base + "/v1/audio/transcriptions", payload, {"Content-Type": ctype}
        )
        assert status == 413
        assert "too large" in json.loads(out)["error"]["message"]

    serve(recognizer, body, max_upload_bytes=10_000)


def test_readyz_and_models(recognizer: asrserve.Recognizer) -> None:
    async def body(server: AsrServer, base: str) -> None:
        status, _, out = await asyncio.to_thread(request, base + "/readyz")
        assert (status, out) == (200, b"ready\n")
        status, _, out = await asyncio.to_thread(request, base + "/v1/models")
        assert json.loads(out)["data"][0]["id"] == "tiny-lstm"
        status, _, out = await asyncio.to_thread(request, base + "/v1/models/tiny-lstm")
        assert status == 200
        model = json.loads(out)
        assert (model["id"], model["object"], model["owned_by"]) == (
            "tiny-lstm",
            "model",
            "asrserve",
        )
        assert isinstance(model["created"], int)
        status, _, out = await asyncio.to_thread(request, base + "/v1/models/whisper-1")
        assert status == 404
        assert json.loads(out)["error"]["code"] == "model_not_found"
        ws_url = base.replace("http", "ws")
        async with connect(ws_url):  # the one allowed connection
            await asyncio.sleep(0.05)
            status, _, out = await asyncio.to_thread(request, base + "/readyz")
            assert (status, out) == (503, b"full\n")
            status, _, _ = await asyncio.to_thread(request, base + "/healthz")
            assert status == 200

    serve(recognizer, body, max_connections=1)


def test_auth_refuses_before_upgrade_and_never_logs_tokens(
    recognizer: asrserve.Recognizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# ops\n{TOKEN}\n")

    async def body(server: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url):
                pass
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url + "/?token=wrong-token-456"):
                pass
        assert info.value.response.status_code == 401
        # header and query tokens both work
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "ready"
        async with connect(ws_url + f"/?token={TOKEN}") as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "ready"
        # HTTP API: OpenAI-style 401; probes and the page stay public
        payload, ctype = multipart({}, WAVS[0].read_bytes())
        url = base + "/v1/audio/transcriptions"
        status, headers, out = await asyncio.to_thread(
            request, url, payload, {"Content-Type": ctype}
        )
        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(out)["error"]["code"] == "unauthorized"
        auth = {"Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"}
        status, _, _ = await asyncio.to_thread(request, url, payload, auth)
        assert status == 200
        for public in ("/healthz", "/readyz", "/"):
            status, _, _ = await asyncio.to_thread(request, base + public)
            assert status == 200, public
        status, _, _ = await asyncio.to_thread(request, base + "/metrics")
        assert status == 401
        # SIGHUP's reload: a new token works, the removed one no longer does
        tokens.write_text("rotated-token-789\n")
        server.reload_tokens()
        with pytest.raises(InvalidStatus):
            async with connect(ws_url + f"/?token={TOKEN}"):
                pass
        async with connect(ws_url + "/?token=rotated-token-789"):
            pass

    with caplog.at_level(logging.DEBUG, logger="asrserve"):
        serve(recognizer, body, auth_token_file=str(tokens))
    logged = caplog.text
    assert "refused" in logged
    for secret in (TOKEN, "wrong-token-456", "rotated-token-789"):
        assert secret not in logged


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_serves_https_and_wss(recognizer: asrserve.Recognizer, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))  # verification on, against our cert
    x, _ = read_wav(WAVS[0])

    async def body(_: AsrServer, base: str) -> None:
        assert base.startswith("https://")
        status, _, out = await asyncio.to_thread(request, base + "/healthz", None, None, ctx)
        assert (status, out) == (200, b"ok\n")
        async with connect(base.replace("https", "wss"), ssl=ctx) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(x.astype("<f4").tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            kinds = [json.loads(m)["type"] async for m in ws]
        assert kinds[-1] == "eof"
        assert "final" in kinds
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(
                request, base + "/healthz", None, None, ssl.create_default_context()
            )

    serve(recognizer, body, tls_cert=str(cert), tls_key=str(key))


def test_bad_tls_files_are_named(recognizer: asrserve.Recognizer, tmp_path: Path) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load TLS certificate"):
        AsrServer(recognizer, ServerConfig(port=0, tls_cert=str(bogus), tls_key=str(bogus)))
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        ServerConfig(tls_cert=str(bogus)).validate()


def test_per_client_limits(recognizer: asrserve.Recognizer, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a-token\nb-token\n")

    async def body(_: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with connect(ws_url + "/?token=a-token"):
            with pytest.raises(InvalidStatus) as info:
                async with connect(ws_url + "/?token=a-token"):
                    pass
            assert info.value.response.status_code == 429
            assert b"too many streams for this token" in info.value.response.body
            async with connect(ws_url + "/?token=b-token"):  # another token: fine
                # a third connection from this address passes the per-IP limit of 2
                with pytest.raises(InvalidStatus) as info:
                    async with connect(ws_url + "/?token=b-token"):
                        pass
                assert info.value.response.status_code == 429
                assert b"too many connections from 127.0.0.1" in info.value.response.body

    serve(
        recognizer,
        body,
        auth_token_file=str(tokens),
        max_streams_per_token=1,
        max_connections_per_ip=2,
    )


def test_audio_limit_ends_the_session_with_1008(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, base: str) -> None:
        async with connect(base.replace("http", "ws")) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await ws.recv()
            with contextlib.suppress(ConnectionClosed):  # the server may close first
                for _ in range(4):  # 4 s of audio against a 2.5 s limit
                    await ws.send(np.zeros(16000, np.float32).tobytes())
            msgs = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    msgs.append(json.loads(await ws.recv()))
            assert ws.close_code == 1008
        errors = [m for m in msgs if m["type"] == "error"]
        assert errors
        assert "more than 2.5 s of audio" in errors[0]["message"]
        assert msgs[-1]["type"] == "eof"

    serve(recognizer, body, max_audio_s=2.5)


def test_origin_allow_list(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        async with connect(ws_url, origin="https://app.example"):  # type: ignore[arg-type]
            pass
        async with connect(ws_url):  # no Origin: not a browser
            pass

    serve(recognizer, body, allowed_origins=("https://app.example",))


def _pcm16_b64(samples: np.ndarray) -> str:
    import base64

    return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def test_realtime_transcription_events(recognizer: asrserve.Recognizer) -> None:
    """The documented OpenAI Realtime transcription events, from a raw client."""
    from asrserve.audio import resample

    x16, _ = read_wav(WAVS[0])
    x24 = resample(x16, 16000, 24000)
    want = recognizer.transcribe(x24, 24000).text
    assert want

    async def body(_: AsrServer, base: str) -> None:
        url = base.replace("http", "ws") + "/v1/realtime?intent=transcription"
        async with connect(url) as ws:

            async def event() -> dict[str, Any]:
                return json.loads(await ws.recv())  # type: ignore[no-any-return]

            created = await event()
            assert created["type"] == "transcription_session.created"
            assert created["session"]["input_audio_format"] == "pcm16"
            await ws.send(
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {
                            "input_audio_transcription": {"model": "tiny-lstm", "language": "en"},
                            "turn_detection": None,
                        },
                    }
                )
            )
            updated = await event()
            assert updated["type"] == "transcription_session.updated"
            assert updated["session"]["turn_detection"] is None
            # errors leave the session usable
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c0"}))
            err = await event()
            assert err["error"]["code"] == "input_audio_buffer_commit_empty"
            assert err["error"]["event_id"] == "c0"
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))
            assert (await event())["error"]["code"] == "invalid_audio"
            await ws.send(json.dumps({"type": "response.create"}))
            assert (await event())["error"]["code"] == "unknown_event"
            await ws.send(b"\x00\x01")
            assert (await event())["type"] == "error"
            step = 2400  # 0.1 s at 24 kHz
            for i in range(0, x24.size, step):
                audio = _pcm16_b64(x24[i : i + step])
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = []
            while not events or events[-1]["type"] != f"{TRANSCRIPTION}.completed":
                events.append(await event())
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.committed" in kinds
        completed = events[-1]
        committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
        assert completed["item_id"] == committed["item_id"]
        assert completed["transcript"] == want
        deltas = [e["delta"] for e in events if e["type"] == f"{TRANSCRIPTION}.delta"]
        assert deltas
        assert want.startswith("".join(deltas))

    serve(recognizer, body)


TRANSCRIPTION = "conversation.item.input_audio_transcription"


def test_realtime_server_vad_and_clear(recognizer: asrserve.Recognizer) -> None:
    """With turn detection, silence ends an item by itself; clear drops an item."""
    from asrserve.audio import resample

    x24 = resample(read_wav(WAVS[0])[0], 16000, 24000)
    silence = np.zeros(24000 * 2, np.float32)

    async def body(_: AsrServer, base: str) -> None:
        url = base.replace("http", "ws") + "/v1/realtime?intent=transcription"
        async with connect(url) as ws:
            await ws.recv()
            update = {
                "type": "transcription_session.update",
                "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 800}},
            }
            await ws.send(json.dumps(update))
            assert (
                json.loads(await ws.recv())["session"]["turn_detection"]["silence_duration_ms"]
                == 800
            )
            for chunk in (x24, silence, x24, silence):
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": _pcm16_b64(chunk)})
                )
            completed: list[dict[str, Any]] = []
            committed: list[dict[str, Any]] = []
            while len(completed) < 2:
                e = json.loads(await ws.recv())
                if e["type"] == f"{TRANSCRIPTION}.completed":
                    completed.append(e)
                elif e["type"] == "input_audio_buffer.committed":
                    committed.append(e)
            # two utterances, two items (the second decoded with the warm encoder state)
            assert completed[0]["transcript"]
            assert completed[1]["transcript"]
            assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]
            assert committed[1]["previous_item_id"] == committed[0]["item_id"]
            # speech then clear: the item is dropped, nothing completes for it
            half = x24[: x24.size // 2]
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": _pcm16_b64(half)})
            )
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            kinds = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5):
                    while True:
                        kinds.append(json.loads(await ws.recv())["type"])
            assert "input_audio_buffer.cleared" in kinds
            assert f"{TRANSCRIPTION}.completed" not in kinds
            with pytest.raises(InvalidStatus):
                async with connect(base.replace("http", "ws") + "/v1/realtime?intent=chat"):
                    pass

    serve(recognizer, body)


def test_realtime_with_the_openai_client(recognizer: asrserve.Recognizer) -> None:
    """The ``openai`` package's own realtime connection, pointed at loopback."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("websockets.sync.client")
    from asrserve.audio import resample

    x24 = resample(read_wav(WAVS[0])[0], 16000, 24000)
    want = recognizer.transcribe(x24, 24000).text

    async def body(_: AsrServer, base: str) -> None:
        def client() -> tuple[list[str], str]:
            c = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            kinds, transcript = [], ""
            with c.realtime.connect(
                model="tiny-lstm", extra_query={"intent": "transcription"}
            ) as conn:
                kinds.append(conn.recv().type)
                update = {
                    "type": "transcription_session.update",
                    "session": {"turn_detection": None},
                }
                conn.send(update)  # type: ignore[arg-type]
                kinds.append(conn.recv().type)
                append = {"type": "input_audio_buffer.append", "audio": _pcm16_b64(x24)}
                conn.send(append)  # type: ignore[arg-type]
                conn.input_audio_buffer.commit()
                for event in conn:
                    kinds.append(event.type)
                    if event.type == f"{TRANSCRIPTION}.completed":
                        transcript = event.transcript
                        break
            return kinds, transcript

        kinds, transcript = await asyncio.to_thread(client)
        assert kinds[:3] == [
            "transcription_session.created",
            "transcription_session.updated",
            "input_audio_buffer.committed",
        ]
        assert f"{TRANSCRIPTION}.delta" in kinds
        assert transcript == want

    serve(recognizer, body)


def test_readyz_turns_unready_while_draining(recognizer: asrserve.Recognizer) -> None:
    x, _ = read_wav(WAVS[0])

    async def body(server: AsrServer, base: str) -> None:
        async with connect(base.replace("http", "ws")) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await ws.recv()
            # ~20 s of audio: decoding it keeps the drain going while we probe
            await ws.send(np.tile(x, 6).astype("<f4").tobytes())
            drain = asyncio.create_task(server.shutdown())
            await asyncio.sleep(0)  # the drain has begun: the stream is still open
            status, _, out = await asyncio.to_thread(request, base + "/readyz")
            assert (status, out) == (503, b"draining\n")
            status, _, out = await asyncio.to_thread(request, base + "/healthz")
            assert (status, out) == (200, b"draining\n")
            kinds = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    kinds.append(json.loads(await ws.recv())["type"])
            assert ws.close_code == 1001
            assert "final" in kinds
            await drain

    serve(recognizer, body)


def test_a_client_that_reads_nothing_is_cut_not_queued_for(
    recognizer: asrserve.Recognizer,
) -> None:
    """Results pile up for a client whose socket is not read: past
    ``max_pending_messages`` the connection is dropped and its stream abandoned."""
    from asrserve.core.events import Result
    from asrserve.server.app import _Connection
    from asrserve.server.protocol import Session, SessionConfig
    from asrserve.server.scheduler import Outcome, StreamSlot

    class StuckSocket:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    async def main() -> None:
        server = AsrServer(recognizer, ServerConfig(port=0, max_pending_messages=8))
        ws = StuckSocket()
        conn = _Connection(ws, Session(SessionConfig()))  # type: ignore[arg-type]
        conn.session.receive(json.dumps({"type": "start"}))
        conn.slot = StreamSlot(SessionConfig())
        partial = Outcome("partial", Result(text="A", tokens=["A"], timestamps=[0.0]))
        server._deliver(conn, [partial] * 8)
        assert not ws.aborted
        server._deliver(conn, [partial])
        assert ws.aborted
        assert conn.slot.abandoned
        assert (
            prometheus.value(server.metrics.render(), 'asrserve_errors_total{code="slow_client"}')
            == 1
        )

    asyncio.run(main())


def test_websocket_and_http_give_the_same_segment_bounds_within_the_audio(
    recognizer: asrserve.Recognizer, tmp_path: Path
) -> None:
    """Three utterances apart by silence (endpoints), the last one ending at
    the file's end: the WebSocket's finals and partials end no later than the
    audio (the decoder's tail padding is no audio), and the finals' bounds
    are those of the HTTP API's verbose_json segments for the same file."""
    import soundfile as sf

    clips = [read_wav(w) for w in WAVS[:3]]
    sr = clips[0][1]
    gap = np.zeros(2 * sr, dtype=np.float32)
    x = np.concatenate([clips[0][0], gap, clips[1][0], gap, clips[2][0]])
    path = tmp_path / "three.wav"
    sf.write(str(path), x, sr, subtype="PCM_16")
    duration = x.size / sr

    async def body(_: AsrServer, base: str) -> None:
        payload, ctype = multipart({"response_format": "verbose_json"}, path.read_bytes())
        status, _, out = await asyncio.to_thread(
            request, base + "/v1/audio/transcriptions", payload, {"Content-Type": ctype}
        )
        assert status == 200
        verbose = json.loads(out)
        pcm = (np.clip(read_wav(path)[0], -1, 1) * 32767).astype("<i2").tobytes()
        async with connect("ws" + base[4:]) as ws:
            start = {"type": "start", "sample_rate": sr, "format": "s16le"}
            await ws.send(json.dumps({**start, "endpointing": {"enabled": True}}))
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
            await ws.send('{"type": "stop"}')
            msgs = []
            with contextlib.suppress(ConnectionClosed):
                async for m in ws:
                    msgs.append(json.loads(m))
        results = [m for m in msgs if m["type"] in ("partial", "final")]
        assert results
        assert all(m["end"] <= round(duration, 3) for m in results), results
        finals = [m for m in results if m["type"] == "final"]
        assert len(finals) == 3, finals
        assert finals[-1]["end"] == round(duration, 3)
        assert [(f["start"], f["end"], f["text"]) for f in finals] == [
            (s["start"], s["end"], s["text"]) for s in verbose["segments"]
        ]
        assert verbose["duration"] == round(duration, 3)

    serve(recognizer, body)


def test_error_bodies_name_the_problem_not_python_objects(
    recognizer: asrserve.Recognizer,
) -> None:
    """Undecodable uploads are named with libsndfile's reason; no error body
    carries a Python object's repr (``<_io.BytesIO object at 0x…>``)."""
    riff_garbage = b"RIFF\x24\x00\x00\x00WAVEfmt garbage" + bytes(64)
    uploads = [
        ("notes.wav", b"this is not audio", "Format not recognised"),
        ("empty.wav", b"", "Format not recognised"),
        ("broken.wav", riff_garbage, "Malformed 'fmt ' chunk"),
    ]

    async def body(_: AsrServer, base: str) -> None:
        url = base + "/v1/audio/transcriptions"
        bodies = []
        for name, data, reason in uploads:
            payload, ctype = multipart({}, data, filename=name)
            status, _, out = await asyncio.to_thread(request, url, payload, {"Content-Type": ctype})
            assert status == 400
            assert b" object at 0x" not in out, out
            message = json.loads(out)["error"]["message"]
            assert f"'{name}'" in message
            assert reason in message
            bodies.append(out.decode())
        for data, ctype in [
            (b"{}", "application/json"),
            (b"--x\r\n", "multipart/form-data"),
            (b"garbage", "multipart/form-data; boundary=zzz"),
        ]:
            status, _, out = await asyncio.to_thread(request, url, data, {"Content-Type": ctype})
            assert status == 400
            bodies.append(out.decode())
        for text in bodies:
            assert " object at 0x" not in text, text

    serve(recognizer, body)


def test_metrics_count_http_requests_and_upload_audio(recognizer: asrserve.Recognizer) -> None:
    async def body(_: AsrServer, base: str) -> None:
        payload, ctype = multipart({}, WAVS[0].read_bytes())
        url = base + "/v1/audio/transcriptions"
        status, _, _ = await asyncio.to_thread(request, url, payload, {"Content-Type": ctype})
        assert status == 200
        status, _, _ = await asyncio.to_thread(request, url, b"x", {"Content-Type": ctype})
        assert status == 400
        for path in ("/v1/models", "/no/such/path-1", "/no/such/path-2"):
            await asyncio.to_thread(request, base + path)
        status, _, out = await asyncio.to_thread(request, base + "/metrics")
        text = out.decode()
        route = 'route="/v1/audio/transcriptions"'
        assert prometheus.value(text, f'asrserve_http_requests_total{{{route},status="200"}}') == 1
        assert prometheus.value(text, f'asrserve_http_requests_total{{{route},status="400"}}') == 1
        requests = 'asrserve_http_requests_total{route="/v1/models",status="200"}'
        assert prometheus.value(text, requests) == 1
        # unknown paths share one label: a client cannot add series
        assert (
            prometheus.value(text, 'asrserve_http_requests_total{route="other",status="404"}') == 2
        )
        uploaded = prometheus.value(text, "asrserve_upload_audio_seconds_total")
        assert uploaded is not None
        assert uploaded == pytest.approx(read_wav(WAVS[0])[0].size / 16000, abs=0.01)

    serve(recognizer, body)
