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
    clients = {getattr(r, "fields", {}).get("client") for r in caplog.records}
    assert clients == {"127.0.0.1"}


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
