"""Hostile clients on loopback: each probe is bounded in count and time, and
checks that the server answers with a 4xx (never a 500 or a traceback) and
never writes a token into its log."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

import asrserve
from asrserve.server.app import AsrServer
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
