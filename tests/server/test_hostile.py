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
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import asrserve
from asrserve.config import ServerConfig
from asrserve.server.app import AsrServer
from tests.server.test_fuzz import REALTIME, WAVS, Good, encode, run_good, text
from tests.server.test_http import TOKEN, recognizer, serve

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
        assert 'asrserve_errors_total{code="slow_client"} 1' in server.metrics.render()
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
