"""Hostile clients on loopback: each probe is bounded in count and time, and
checks that the server answers with a 4xx (never a 500 or a traceback) and
never writes a token into its log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asrserve
from asrserve.config import ServerConfig
from asrserve.server.app import AsrServer
from tests import prometheus
from tests.server.test_fuzz import (
    BINARY,
    PING,
    REALTIME,
    WAVS,
    Frame,
    Good,
    encode,
    run_good,
    text,
)
from tests.server.test_http import TOKEN, recognizer, request, serve

__all__ = ["recognizer"]  # the module-scoped fixture, shared with test_http


def raw_request(port: int, head: bytes, timeout: float = 10.0) -> bytes:
    """Send ``head`` (request line and headers, no body) as is; return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_undecodable_bearer_token_is_refused_without_a_traceback(
    recognizer: asrserve.Recognizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{TOKEN}\n")

    async def body(server: AsrServer, _: str) -> None:
        for value in (
            b"Bearer \xff",
            b"Bearer \xed\xa0\x80",
            b"Bearer " + TOKEN.encode() + b"\xff",
        ):
            head = (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: " + value + b"\r\n\r\n"
            )
            reply = await asyncio.to_thread(raw_request, server.port, head)
            assert reply.split(b"\r\n", 1)[0].split()[1] == b"401", reply[:200]

    with caplog.at_level(logging.DEBUG, logger="asrserve"):
        serve(recognizer, body, auth_token_file=str(tokens))
    assert "Traceback" not in caplog.text
    assert TOKEN not in caplog.text


# --- 1. a client that sends junk and never reads --------------------------------------
def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _unread_socket(port: int, path: str = "/") -> tuple[asyncio.StreamReader, Any]:
    """A WebSocket connection whose client reads nothing after the handshake
    (a small receive buffer, so the server's replies back up quickly)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return reader, writer


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
@pytest.mark.parametrize("path", ["/", REALTIME])
def test_junk_with_echoed_values_from_a_client_that_never_reads_stays_bounded(
    recognizer: asrserve.Recognizer, path: str
) -> None:
    """300 frames of ``{"type": "A" * 1_000_000}`` (and an event_id as long on
    the realtime route), never reading the error each earns: the errors quote
    at most 64 characters, the server's memory stays bounded, and once the
    queue for it is past its limit the client is dropped; a well-behaved stream
    beside it gets its final."""
    junk = {"type": "A" * 1_000_000}
    if path == REALTIME:
        junk = {"type": "A" * 500_000, "event_id": "E" * 500_000}
    big = encode(text(json.dumps(junk)))
    small = encode(text(json.dumps({"type": "B" * 200})))
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    async def body(server: AsrServer, base: str) -> None:
        ws_base = base.replace("http", "ws", 1)
        good = asyncio.create_task(run_good(ws_base, Good("asrserve", (WAVS[0],)), 0.0))
        _, writer = await _unread_socket(server.port, path)
        before = _rss_bytes()
        sampler = threading.Thread(target=sample)
        sampler.start()
        sent_big = sent_small = 0
        dropped = False
        loop = asyncio.get_running_loop()
        try:
            for _ in range(300):
                writer.write(big)
                await writer.drain()
                sent_big += 1
            # then small junk until the server cuts us (bounded in time)
            deadline = loop.time() + 10.0
            while loop.time() < deadline:
                writer.write(small * 50)
                await writer.drain()
                sent_small += 50
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            dropped = True
        finally:
            stop.set()
            sampler.join()
            writer.transport.abort()
        growth = peak[0] - before
        print(
            f"{path}: sent {sent_big} big + {sent_small} small frames; RSS grew "
            f"{growth / 2**20:.0f} MiB (peak {peak[0] / 2**20:.0f} MiB); dropped={dropped}"
        )
        assert growth < 120 * 2**20, f"RSS grew {growth / 2**20:.0f} MiB"
        assert dropped, f"still connected after {sent_big} + {sent_small} junk frames"
        assert (
            prometheus.value(server.metrics.render(), 'asrserve_errors_total{code="slow_client"}')
            == 1
        )
        finals = await good
        assert finals, "the good stream got no final"
        assert finals[0][1], finals

    serve(recognizer, body, max_pending_messages=64)


def test_the_outbox_is_bounded_in_bytes_too(recognizer: asrserve.Recognizer) -> None:
    """Few but large queued messages (over ``max_pending_bytes``) drop the client."""
    from asrserve.server.app import _Connection
    from asrserve.server.protocol import Send, Session, SessionConfig

    class StuckSocket:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    async def main() -> None:
        server = AsrServer(recognizer, ServerConfig(port=0, max_pending_bytes=10_000))
        ws = StuckSocket()
        conn = _Connection(ws, Session(SessionConfig()))  # type: ignore[arg-type]
        await server._apply(conn, Send("x" * 6000))
        assert not ws.aborted
        await server._apply(conn, Send("x" * 6000))
        assert ws.aborted
        assert conn.outbox.bytes == 12_000
        await conn.outbox.get()
        assert conn.outbox.bytes == 6000

    asyncio.run(main())


# --- 2. connections that send nothing, or drip ------------------------------------------
def _open_for(
    sock: socket.socket, limit_s: float, drip: bytes = b"", every_s: float = 0.2
) -> float:
    """Seconds until the server closes ``sock`` (sending ``drip`` a byte at a
    time every ``every_s`` meanwhile); ``limit_s`` if it is still open then."""
    start = time.monotonic()
    sock.settimeout(every_s)
    i = 0
    while time.monotonic() - start < limit_s:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except OSError:  # reset, or a TLS alert
            return time.monotonic() - start
        if drip:
            try:
                sock.sendall(drip[i % len(drip) : i % len(drip) + 1])
            except OSError:
                return time.monotonic() - start
            i += 1
    return limit_s


def test_idle_and_dripping_connections_are_closed_after_the_header_timeout(
    recognizer: asrserve.Recognizer, tmp_path: Path
) -> None:
    """With --header-timeout-s 1: a socket that sends nothing, a request head
    dripped a byte at a time, a keep-alive connection idle after its answer,
    and (TLS) a handshake never started or idle after it are all closed within
    the timeout plus a margin (aiohttp alone left them open for an hour)."""
    pytest.importorskip("cryptography")
    from tests.server.test_http import _self_signed

    cert, key = _self_signed(tmp_path)

    def plain(port: int) -> dict[str, float]:
        out = {}
        with socket.create_connection(("127.0.0.1", port)) as s:
            out["idle"] = _open_for(s, 6.0)
        with socket.create_connection(("127.0.0.1", port)) as s:
            out["dripped head"] = _open_for(
                s, 6.0, drip=b"GET /healthz HTTP/1.1\r\nX-a: " + b"b" * 99
            )
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            out["keep-alive idle"] = _open_for(s, 6.0)
        return out

    def tls(port: int) -> dict[str, float]:
        out = {}
        with socket.create_connection(("127.0.0.1", port)) as s:
            out["no TLS handshake"] = _open_for(s, 6.0)
        ctx = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            out["idle after TLS handshake"] = _open_for(s, 6.0)
        return out

    results: dict[str, float] = {}

    async def body_plain(server: AsrServer, _: str) -> None:
        results.update(await asyncio.to_thread(plain, server.port))

    async def body_tls(server: AsrServer, _: str) -> None:
        results.update(await asyncio.to_thread(tls, server.port))

    serve(recognizer, body_plain, header_timeout_s=1.0)
    serve(recognizer, body_tls, header_timeout_s=1.0, tls_cert=str(cert), tls_key=str(key))
    print({k: round(v, 2) for k, v in results.items()})
    for what, seconds in results.items():
        assert 0.8 <= seconds < 2.5, f"{what}: open for {seconds:.1f} s"


def test_a_slow_request_body_gets_408_after_the_body_timeout(
    recognizer: asrserve.Recognizer, caplog: pytest.LogCaptureFixture
) -> None:
    def slow_post(port: int) -> tuple[float, bytes]:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            )
            start = time.monotonic()
            reply = b""
            s.settimeout(0.2)
            while time.monotonic() - start < 8.0:
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    s.sendall(b"x")  # a byte every 0.2 s: never idle, never done
                    continue
                except OSError:
                    break
                if not data:
                    break
                reply += data
            return time.monotonic() - start, reply

    async def body(server: AsrServer, _: str) -> None:
        took, reply = await asyncio.to_thread(slow_post, server.port)
        print(f"slow body closed after {took:.2f} s: {reply[:40]!r}")
        assert took < 3.0, f"open for {took:.1f} s"
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert (
            prometheus.value(server.metrics.render(), 'asrserve_errors_total{code="body_timeout"}')
            == 1
        )

    with caplog.at_level(logging.DEBUG):
        serve(recognizer, body, body_timeout_s=1.5, header_timeout_s=1.0)
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_idle_connections_past_the_pending_cap_are_dropped_and_probes_still_answer(
    recognizer: asrserve.Recognizer,
) -> None:
    """--max-pending-connections 8 and 40 idle sockets: the oldest idle ones are
    closed at once (long before the header timeout), /healthz answers, and a
    stream (admitted, so not pending) runs to its final meanwhile."""

    async def body(server: AsrServer, base: str) -> None:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
        try:
            await asyncio.sleep(0.5)
            closed = 0
            for s in idle:
                s.setblocking(False)
                try:
                    closed += s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
            status, _, text_ = await asyncio.to_thread(request, base + "/healthz")
            assert (status, text_) == (200, b"ok\n")
            ws_base = base.replace("http", "ws", 1)
            finals = await run_good(ws_base, Good("asrserve", (WAVS[0],)), 0.0)
            assert finals
            print(f"{closed} of 40 idle sockets closed; /healthz 200")
            assert closed >= 40 - 8, closed
            assert server._gate is not None
            assert server._gate.pending <= 8
            errors = 'asrserve_errors_total{code="too_many_pending"}'
            assert prometheus.value(server.metrics.render(), errors)
        finally:
            for s in idle:
                s.close()

    serve(recognizer, body, max_pending_connections=8, header_timeout_s=30.0)


_LIMITED_SERVER = """
import asyncio, resource, sys
import asrserve
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.logs import configure
from asrserve.server.app import AsrServer

configure("info", "text")
recognizer = asrserve.load_model(sys.argv[1], endpoint=EndpointConfig(enabled=False))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))

async def main():
    config = ServerConfig(port=0, max_pending_connections=int(sys.argv[3]), header_timeout_s=30.0)
    async with AsrServer(recognizer, config) as server:
        print(server.port, flush=True)
        await asyncio.sleep(float(sys.argv[4]))

asyncio.run(main())
"""


def _limited_server(nofile: int, pending: int, idle: int) -> tuple[list[bool], str]:
    """A server in a subprocess under ``ulimit -n nofile``; ``idle`` sockets
    that send nothing, then /healthz three times. Returns which probes
    answered 200, and the server's log."""
    from tests.conftest import BUILTIN

    proc = subprocess.Popen(
        [sys.executable, "-c", _LIMITED_SERVER, str(BUILTIN), str(nofile), str(pending), "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    socks = []
    answered = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(idle):
            s = socket.socket()
            s.settimeout(2.0)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                break
            socks.append(s)
        time.sleep(1.5)
        for _ in range(3):
            try:
                status = raw_request(
                    port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2.0
                )
            except OSError:
                status = b""
            answered.append(status.startswith(b"HTTP/1.1 200"))
    finally:
        for s in socks:
            s.close()
        _, log_text = proc.communicate(timeout=30)
    return answered, log_text


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE and EMFILE as on Linux")
def test_out_of_file_descriptors_is_one_line_and_a_low_pending_cap_keeps_probes_alive() -> None:
    """Under ``ulimit -n 128``: with a pending cap above the limit, 300 idle
    sockets run the server out of descriptors: the failing accept() is one
    WARNING line per 10 s, never a traceback per try (asyncio logs up to its
    backlog of them per wakeup); under ``ulimit -n 512`` with a cap of 32, 600 idle
    sockets (more than the limit) have the oldest idle ones closed instead and
    /healthz answers (with no cap it times out there). The room the cap needs:
    up to three of the listener's accept batches of 128 arrive before the
    oldest are closed (at 256 an accept() failed now and then)."""
    answered, log_text = _limited_server(128, 10_000, 300)
    lines = log_text.splitlines()
    accept_lines = [line for line in lines if "accept" in line]
    print(f"cap over the limit: /healthz {answered}; {len(lines)} log lines, "
          f"{len(accept_lines)} about accept(), {len(log_text)} bytes")  # fmt: skip
    assert "Traceback" not in log_text, log_text[-3000:]
    assert 1 <= len(accept_lines) <= 2, accept_lines[:5]
    assert len(lines) < 20, lines[:20]

    answered, log_text = _limited_server(512, 32, 600)
    print(f"cap 32: /healthz {answered}; log: {log_text.splitlines()[1:4]}")
    assert all(answered), answered
    assert "Traceback" not in log_text
    assert "accept" not in log_text


# --- 3. malformed requests that carry a token ------------------------------------------
_T = TOKEN.encode()
MALFORMED_WITH_TOKEN = {
    "request line over 8190 bytes": b"GET /?token=" + _T + b"&x=" + b"a" * 9000
    + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "\\x01 in Authorization": b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + _T
    + b"\x01\r\n\r\n",
    "oversized header": b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + _T
    + b"x" * 9000 + b"\r\n\r\n",
    "bad HTTP version": b"GET /?token=" + _T + b" HTTP/9.9\r\nHost: x\r\n\r\n",
    "space in the target": b"GET /a b?token=" + _T + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad method": b"G\x01T /?token=" + _T + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("what", list(MALFORMED_WITH_TOKEN))
def test_malformed_requests_never_log_their_token(
    recognizer: asrserve.Recognizer, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    """aiohttp's parse errors quote the request line or header; the INFO line
    names the error class and reason only: the token is in no record, raw or
    through the text and JSON formatters."""
    from asrserve.logs import make_formatter

    async def body(server: AsrServer, _: str) -> None:
        reply = await asyncio.to_thread(raw_request, server.port, MALFORMED_WITH_TOKEN[what])
        assert reply.startswith(b"HTTP/1.0 400") or reply.startswith(b"HTTP/1.1 400"), reply[:80]

    # aiohttp logs a bad method on a connection's first request at DEBUG only
    # (it is what TLS or other non-HTTP traffic looks like): set the level on
    # our logger itself, which other tests (the CLI's) leave at INFO
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="asrserve"):
        serve(recognizer, body, auth_token_file=None)
    refused = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    print(what, "->", refused[0].getMessage())
    formatted = [caplog.text] + [
        make_formatter(fmt).format(r) for fmt in ("text", "json") for r in caplog.records
    ]
    for text_ in formatted:
        assert TOKEN not in text_
        assert TOKEN[:8] not in text_  # not even cut short
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- 4. resets mid-request -------------------------------------------------------------
def _reset(s: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_a_reset_mid_upload_or_mid_stream_is_no_traceback(
    recognizer: asrserve.Recognizer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that resets its connection halfway through an upload, a
    WebSocket frame, a stream with results in flight or right after a ping
    costs at most one INFO/DEBUG line: no ERROR record, no traceback."""
    audio = np.zeros(16000, dtype=np.float32).tobytes()

    def upload(port: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + b"x"
            * 1000
        )
        time.sleep(0.3)
        _reset(s)

    def websocket(port: int, path: str, frames: list[bytes]) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        s.recv(4096)
        for f in frames:
            s.sendall(f)
        time.sleep(0.3)
        _reset(s)

    half_frame = encode(Frame(BINARY, audio))[:5000]
    start = encode(text(json.dumps({"type": "start"})))
    pings = [encode(Frame(PING, b"p" * 125))] * 200

    async def body(server: AsrServer, _: str) -> None:
        port = server.port
        await asyncio.to_thread(upload, port)
        await asyncio.to_thread(websocket, port, "/", [half_frame])
        await asyncio.to_thread(websocket, port, "/", [start, *[encode(Frame(BINARY, audio))] * 5])
        await asyncio.to_thread(websocket, port, "/", [start, *pings])
        await asyncio.to_thread(websocket, port, REALTIME, pings)
        await asyncio.sleep(0.5)
        assert not server._open

    with caplog.at_level(logging.DEBUG):
        serve(recognizer, body)
    assert "Traceback" not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
