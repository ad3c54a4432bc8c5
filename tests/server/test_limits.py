"""Limits a hostile client meets: per-IP caps behind a trusted proxy, tokens
revoked while their streams are open, hotwords the model cannot spell,
unmasked frames, and the cost budget of expensive settings.

Every test runs its own server on an ephemeral loopback port, bounded in
time (the ``serve`` helper of test_http) and in the number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import asrserve
from asrserve._compat import timeout
from asrserve.server.app import AsrServer
from asrserve.server.auth import client_address, trusted_networks
from tests.server.test_http import recognizer, serve

__all__ = ["recognizer"]  # the module-scoped fixture, shared with test_http


def _xff(value: str) -> dict[str, str]:
    return {"X-Forwarded-For": value}


# --- 1. per-IP caps behind a proxy ------------------------------------------------
def test_client_address_reads_x_forwarded_for_from_the_right() -> None:
    proxies = trusted_networks(["127.0.0.1", "10.0.0.0/8"])
    # the right-most entry not a trusted proxy is the client; what it wrote is ignored
    assert client_address("127.0.0.1", ["6.6.6.6, 203.0.113.5"], proxies) == "203.0.113.5"
    assert client_address("127.0.0.1", ["203.0.113.5, 10.1.2.3"], proxies) == "203.0.113.5"
    assert client_address("127.0.0.1", ["203.0.113.5", "10.1.2.3"], proxies) == "203.0.113.5"
    assert client_address("127.0.0.1", ["[2001:db8::1]:443"], proxies) == "2001:db8::1"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", ["10.0.0.1, 10.0.0.2"], proxies) == "10.0.0.1"
    # garbage written where a trusted proxy's entry should be: the proxy's own address
    assert client_address("127.0.0.1", ["nonsense"], proxies) == "127.0.0.1"
    # an untrusted peer cannot choose its address
    assert client_address("192.0.2.9", ["203.0.113.5"], proxies) == "192.0.2.9"
    assert client_address("127.0.0.1", ["203.0.113.5"], ()) == "127.0.0.1"


def test_per_ip_cap_counts_forwarded_clients_behind_a_trusted_proxy(
    recognizer: asrserve.Recognizer, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(_: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with (
            connect(ws_url, additional_headers=_xff("203.0.113.5")),
            connect(ws_url, additional_headers=_xff("198.51.100.7")),
        ):
            # the same client again (a spoofed left part changes nothing): capped
            for value in ("203.0.113.5", "6.6.6.6, 203.0.113.5"):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(ws_url, additional_headers=_xff(value)):
                        pass
                assert info.value.response.status_code == 429
                assert b"too many connections from 203.0.113.5" in info.value.response.body

    with caplog.at_level(logging.INFO, logger="asrserve.access"):
        serve(recognizer, body, max_connections_per_ip=1, trusted_proxies=("127.0.0.1/32",))
    clients = {getattr(r, "fields", {}).get("client") for r in caplog.records}
    assert {"203.0.113.5", "198.51.100.7"} <= clients
    assert "127.0.0.1" not in clients


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    recognizer: asrserve.Recognizer, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(_: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with connect(ws_url, additional_headers=_xff("203.0.113.5")):
            with pytest.raises(InvalidStatus) as info:
                async with connect(ws_url, additional_headers=_xff("198.51.100.7")):
                    pass
            assert info.value.response.status_code == 429
            assert b"too many connections from 127.0.0.1" in info.value.response.body

    with caplog.at_level(logging.INFO, logger="asrserve.access"):
        serve(recognizer, body, max_connections_per_ip=1, trusted_proxies=("10.0.0.0/8",))
    access = [r for r in caplog.records if r.name == "asrserve.access"]
    clients = {getattr(r, "fields", {}).get("client") for r in access}
    assert clients == {"127.0.0.1"}  # other loggers' records (a slow step on a busy machine) aside


# --- 2. a token revoked by SIGHUP ends its open streams -----------------------------
async def _drain(ws: Any) -> list[Any]:
    """Every message until the server closes (bounded by the test's timeout)."""
    out = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            msg = await ws.recv()
            out.append(json.loads(msg) if isinstance(msg, str) and msg.startswith("{") else msg)
    return out


def test_revoked_token_closes_its_streams_with_1008(
    recognizer: asrserve.Recognizer, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("kept-token\nrevoked-token\n")
    second = np.zeros(16000, np.float32).tobytes()

    async def body(server: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with (
            connect(ws_url + "/?token=revoked-token") as gone,
            connect(ws_url + "/?token=revoked-token") as gone_sherpa,
            connect(ws_url + "/?token=kept-token") as kept,
        ):
            for ws in (gone, kept):
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
                assert json.loads(await ws.recv())["type"] == "ready"
                await ws.send(second)
            await gone_sherpa.send(second)  # binary first: the sherpa dialect
            tokens.write_text("kept-token\n")
            server.reload_tokens()
            async with timeout(10):
                msgs = await _drain(gone)
                await _drain(gone_sherpa)
            assert gone.close_code == 1008
            assert gone.close_reason == "token revoked"
            errors = [m for m in msgs if isinstance(m, dict) and m["type"] == "error"]
            assert [e["code"] for e in errors] == ["token_revoked"]
            assert gone_sherpa.close_code == 1008
            # the kept token's stream goes on to its end
            await kept.send(second)
            await kept.send(json.dumps({"type": "stop"}))
            kinds = [m["type"] for m in await _drain(kept)]
            assert kinds[-1] == "eof"
            assert kept.close_code == 1000

    serve(recognizer, body, auth_token_file=str(tokens))


# --- 3. hotwords the model cannot spell are bad_config before ready ------------------
def test_hotword_pieces_not_in_tokens_are_bad_config_before_ready(
    recognizer: asrserve.Recognizer,
) -> None:
    beam = {"method": "modified_beam", "beam": 4}
    words = ["HELLO", "WORLD", "THE", "THERE", "SAID", "TIME"]
    fine = [f"{a} {b} {c}" for a in words for b in words for c in words][:200] * 5

    async def body(_: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with connect(ws_url) as ws:
            start = {"type": "start", "decoding": beam, "hotwords": ["HELLO", "中文 X"]}
            await ws.send(json.dumps(start))
            msgs = await _drain(ws)
        assert [m["type"] for m in msgs] == ["error"]
        assert msgs[0]["code"] == "bad_config"
        assert "'中文 X'" in msgs[0]["message"]
        assert ws.close_code == 1003
        # 1,000 hotwords the model can spell: ready, and a transcript
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "decoding": beam, "hotwords": fine}))
            assert json.loads(await ws.recv())["type"] == "ready"
            await ws.send(np.zeros(16000, np.float32).tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            kinds = [m["type"] for m in await _drain(ws)]
        assert kinds[-1] == "eof"
        assert "error" not in kinds

    serve(recognizer, body)


# --- 5. the cost budget of expensive settings ------------------------------------------
def test_expensive_sessions_are_refused_by_the_cost_budget_before_ready(
    recognizer: asrserve.Recognizer,
) -> None:
    words = ["HELLO", "WORLD", "THE", "THERE", "SAID", "TIME"]
    hotwords = [f"{a} {b} {c}" for a in words for b in words for c in words][:200] * 5

    def start(beam: int, phrases: list[str] | None = None) -> str:
        decoding = {"method": "modified_beam", "beam": beam}
        return json.dumps({"type": "start", "decoding": decoding, "hotwords": phrases or []})

    async def first(ws: Any, message: str) -> dict[str, Any]:
        await ws.send(message)
        reply: dict[str, Any] = json.loads(await ws.recv())
        return reply

    async def defaults(_: AsrServer, base: str) -> None:
        # the default budget refuses beam 64 with 1,000 hotwords, by name
        async with connect(base.replace("http", "ws")) as ws:
            reply = await first(ws, start(64, hotwords))
            await _drain(ws)
        assert reply["code"] == "bad_config"
        assert "max-session-cost 100" in reply["message"]
        assert ws.close_code == 1003

    serve(recognizer, defaults)

    async def total(server: AsrServer, base: str) -> None:
        ws_url = base.replace("http", "ws")
        async with connect(ws_url) as a, connect(ws_url) as b:
            assert (await first(a, start(40)))["type"] == "ready"
            assert (await first(b, start(40)))["type"] == "ready"
            async with connect(ws_url) as c:
                reply = await first(c, start(40))
                await _drain(c)
            assert reply["code"] == "busy"
            assert "max-total-cost 100" in reply["message"]
            assert c.close_code == 1013
            # a session at the server's defaults is never refused by the budget
            async with connect(ws_url) as d:
                assert (await first(d, json.dumps({"type": "start"})))["type"] == "ready"
            await a.close()
            async with timeout(5):  # the server sees a's and d's close a moment later
                while server.metrics.active_streams > 1:
                    await asyncio.sleep(0.02)
            # one expensive session gone: room again
            async with connect(ws_url) as e:
                assert (await first(e, start(40)))["type"] == "ready"

    serve(recognizer, total, max_total_cost=100)


# --- 4. unmasked client frames: close 1002 ------------------------------------------
_HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _frame(opcode: int, payload: bytes, mask: bytes | None) -> bytes:
    assert len(payload) < 126
    if mask is None:
        return bytes([0x80 | opcode, len(payload)]) + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _server_frames(sock: socket.socket, data: bytes = b"") -> list[tuple[int, bytes]]:
    """Frames the server sends after its 101 (``data``: what was read of it
    already), until it closes (or 10 s pass)."""
    with contextlib.suppress(ConnectionError, TimeoutError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    frames = []
    while len(rest) >= 2:
        opcode, n, at = rest[0] & 0x0F, rest[1] & 0x7F, 2
        if n >= 126:
            at = 4 if n == 126 else 10
            n = int.from_bytes(rest[2:at], "big")
        frames.append((opcode, rest[at : at + n]))
        rest = rest[at + n :]
    return frames


def _raw_session(port: int, first: bytes, then: bytes = b"") -> list[tuple[int, bytes]]:
    """Send ``first``; once the server said ``ready`` (if ``then``), ``then``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(first)
        data = b""
        while then and b'"ready"' not in data and (chunk := sock.recv(65536)):
            data += chunk
        sock.sendall(then)
        return _server_frames(sock, data)


def _long_frames(port: int, start: bytes, key: bytes) -> list[tuple[int, bytes]]:
    """A session whose audio comes in masked frames with 16- and 64-bit lengths."""
    big = np.zeros(40000, np.float32).tobytes()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_HANDSHAKE + _frame(1, start, key))
        for payload in (big[:200], big):
            n = len(payload)
            size = (
                bytes([0x80 | 126]) + n.to_bytes(2, "big")
                if n < 65536
                else bytes([0x80 | 127]) + n.to_bytes(8, "big")
            )
            sock.sendall(bytes([0x82]) + size + key + payload)  # zeros masked by key
        sock.sendall(_frame(1, json.dumps({"type": "stop"}).encode(), key))
        return _server_frames(sock)


def test_unmasked_client_frames_close_with_1002(recognizer: asrserve.Recognizer) -> None:
    key = b"\x01\x02\x03\x04"
    start = json.dumps({"type": "start"}).encode()
    audio = np.zeros(16, np.float32).tobytes()

    async def body(server: AsrServer, _: str) -> None:
        # masked: a session; then an unmasked frame: close 1002
        frames = await asyncio.to_thread(
            _raw_session, server.port, _HANDSHAKE + _frame(1, start, key), _frame(2, audio, None)
        )
        assert json.loads(frames[0][1])["type"] == "ready"
        assert frames[-1][0] == 8, [(op, p[:80]) for op, p in frames]
        assert int.from_bytes(frames[-1][1][:2], "big") == 1002
        # unmasked in the same packet as the upgrade request: no session at all
        frames = await asyncio.to_thread(
            _raw_session, server.port, _HANDSHAKE + _frame(1, start, None)
        )
        assert [op for op, _ in frames] == [8]
        assert int.from_bytes(frames[0][1][:2], "big") == 1002
        # masked frames of every length class pass
        frames = await asyncio.to_thread(_long_frames, server.port, start, key)
        kinds = [json.loads(p)["type"] for op, p in frames if op == 1 and p.startswith(b"{")]
        assert kinds[0] == "ready"
        assert "error" not in kinds
        assert frames[-1][0] == 8, [(op, p[:80]) for op, p in frames]
        assert int.from_bytes(frames[-1][1][:2], "big") == 1000

    serve(recognizer, body)
