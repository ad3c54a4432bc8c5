"""Client WebSocket frames must be masked (RFC 6455 section 5.1).

aiohttp's frame reader (3.9 to 3.14 at least) unmasks a masked frame and
takes an unmasked one as it is, with no option to refuse it; the RFC says a
server must close the connection on an unmasked client frame (1002, protocol
error). :class:`MaskedWebSocketResponse` puts a small frame-header check in
front of aiohttp's reader: it follows frame boundaries (header, length,
mask; payloads are skipped, never copied) and, at the first frame without the
mask bit, fails the reader's queue with a protocol error, so that aiohttp
itself sends close 1002 and ``receive()`` ends.

This needs two private attributes of aiohttp's request handler
(``_payload_parser``, ``_message_tail``) and of the response (``_reader``, the
queue its reader fills); where they are missing the check is
skipped with one warning instead of breaking the server
(``tests/server/test_limits.py`` fails then).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_websocket import WebSocketError, WebSocketWriter, WSCloseCode
from aiohttp.web_request import BaseRequest

log = logging.getLogger("asrserve.server")

_REASON = "client frames must be masked (RFC 6455 5.1)"
_warned: set[str] = set()  # once per process


class _MaskCheck:
    """Feeds aiohttp's reader, refusing the first unmasked frame."""

    def __init__(self, reader: Any, queue: Any) -> None:
        self._reader = reader
        self._queue = queue  # where the reader puts messages (and errors)
        self._head = bytearray()  # the current frame's header so far
        self._skip = 0  # payload bytes of the current frame still to pass
        self._failed = False

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return True, b""
        if not self._all_masked(data):
            self._failed = True
            self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, _REASON))
            return True, b""
        result: tuple[bool, bytes] = self._reader.feed_data(data)
        return result

    def _all_masked(self, data: bytes) -> bool:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            held = len(self._head)  # a header begun in an earlier read
            head = self._head + data[i : i + _MAX_HEADER] if held else data[i : i + _MAX_HEADER]
            found = _header(head)
            if found is None:  # the header goes on in the next read
                self._head += data[i:]
                return True
            size, payload = found
            if payload < 0:
                return False
            self._head.clear()
            self._skip = payload
            i += size - held
        return True


_MAX_HEADER = 14  # 2 bytes, a 64-bit length, the mask key


def _header(head: bytes | bytearray) -> tuple[int, int] | None:
    """(header size, payload length) of the frame header ``head`` starts with;
    None while it holds less than the whole header; payload -1: not masked."""
    if len(head) < 2:
        return None
    if not head[1] & 0x80:
        return 2, -1
    code = head[1] & 0x7F
    ext = 2 if code == 126 else 8 if code == 127 else 0
    if len(head) < 2 + ext + 4:
        return None
    return 2 + ext + 4, int.from_bytes(head[2 : 2 + ext], "big") if ext else code


class MaskedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, closing 1002 on an unmasked client frame."""

    def _post_start(
        self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        handler: Any = request.protocol
        # bytes that came with the upgrade request are fed to the reader when
        # it is installed: hold them back and pass them through the check
        tail = getattr(handler, "_message_tail", b"")
        if tail:
            handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        reader = getattr(handler, "_payload_parser", None)
        queue = getattr(self, "_reader", None)
        if reader is None or queue is None or not hasattr(queue, "set_exception"):
            if not _warned:
                _warned.add("mask")
                log.warning("this aiohttp has no reader to check frame masks in: not checked")
            if tail and reader is not None:
                reader.feed_data(tail)
            return
        check = _MaskCheck(reader, queue)
        handler._payload_parser = check
        if tail:
            eof, _ = check.feed_data(tail)
            if eof:  # as aiohttp does for its own protocol errors, once the 101 is out
                asyncio.get_running_loop().call_soon(handler.close)
