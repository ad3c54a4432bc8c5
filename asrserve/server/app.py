"""The asyncio server: sockets ↔ :mod:`protocol` ↔ :mod:`scheduler`.

This is the only asyncio module. aiohttp carries HTTP and WebSocket on one
port (probes, the browser page, and the streaming dialects). Decoding runs
on ``decode_threads`` threads that drain one shared pool of streams (see
:mod:`scheduler`); the event loop only moves frames into the pool, turns the
outcomes the threads hand back into messages, and answers HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, replace
from http import HTTPStatus

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from asrserve._compat import timeout
from asrserve.config import ServerConfig
from asrserve.core.interfaces import AnyRecognizer
from asrserve.core.selfcheck import check_model
from asrserve.errors import AsrServeError, ConfigError
from asrserve.logs import ACCESS_LOGGER, redact
from asrserve.server import event_loop
from asrserve.server.auth import (
    Quota,
    TokenStore,
    client_address,
    fingerprint,
    presented_token,
    trusted_networks,
)
from asrserve.server.connections import (
    ConnectionGate,
    Throttled,
    close_transport,
    quiet_loop_errors,
)
from asrserve.server.frames import MaskedWebSocketResponse
from asrserve.server.metrics import Metrics, render_metrics
from asrserve.server.models import (
    ModelEntry,
    ModelPool,
    ModelsBusyError,
    ServedModel,
    UnknownModelError,
    model_summary,
)
from asrserve.server.openai_api import (
    AUDIO_S_KEY,
    MODEL_KEY,
    TranscriptionsRoute,
    openai_error,
)
from asrserve.server.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    Audio,
    Close,
    Command,
    Flush,
    Send,
    SendError,
    Session,
    SessionConfig,
    Start,
    Stop,
    WireSession,
    session_cost,
)
from asrserve.server.realtime import RealtimeSession, opening_shape
from asrserve.server.scheduler import (
    Outcome,
    Outcomes,
    Scheduler,
    StreamSlot,
    fewer_malloc_arenas,
)
from asrserve.server.web import WEB_FILES, web_file

log = logging.getLogger("asrserve.server")
access_log = logging.getLogger(ACCESS_LOGGER)
"""One line per HTTP request and per WebSocket session (see :class:`_Access`)."""


_QUOTED = re.compile(r"""(bytearray\(|\bb['"]|['"]).*""", re.DOTALL)
"""Where aiohttp's parser starts quoting the request (line, header or value)."""


def parse_error_reason(exc: HttpProcessingError) -> str:
    """What a malformed request did wrong, for the log: aiohttp's message
    without the part of the request it quotes (which may hold a token in a
    query or an ``Authorization`` header), redacted and cut to 100
    characters; e.g. ``400 LineTooLong: Got more than 8190 bytes when reading``."""
    message = " ".join(_QUOTED.sub("", str(exc.message or "")).split()).strip(" :.^")
    message = redact(message)[:100]
    return f"{exc.code} {type(exc).__name__}" + (f": {message}" if message else "")


class _ClientErrorsAsInfo(logging.Filter):
    """aiohttp logs every malformed request (a client's fault, answered 400) at
    ERROR with a traceback; make that one INFO line that never quotes the
    request (see :func:`parse_error_reason`). Handler failures (500) keep
    their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s: %s"
            record.args = (str(remote)[:64], parse_error_reason(exc))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


http_log = logging.getLogger("asrserve.server.http")
"""aiohttp's server logger for our app (malformed requests as one INFO line)."""
http_log.addFilter(_ClientErrorsAsInfo())

_SHERPA_CLOSE_WAIT_S = 5.0
_HEARTBEAT_S = 20.0


class _ClosedError(Exception):
    """The WebSocket is closed (by either side)."""


class _Socket:
    """The few WebSocket operations the server needs, over aiohttp's."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None) -> None:
        self._ws = ws
        self._transport = transport
        self.closed = asyncio.Event()
        """Set once the receiving side saw the connection end."""
        self.sent_close: int | None = None

    @property
    def close_code(self) -> int | None:
        """The code of the closing handshake: the one this server sent, else
        the client's; None when the connection just dropped."""
        return self.sent_close if self.sent_close is not None else self._ws.close_code

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (a client that
        does not read cannot take one)."""
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    async def recv(self) -> str | bytes:
        msg = await self._ws.receive()
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return msg.data  # type: ignore[no-any-return]
        raise _ClosedError

    async def send(self, data: str | bytes) -> None:
        try:
            if isinstance(data, str):
                await self._ws.send_str(data)
            else:
                await self._ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            raise _ClosedError from exc

    async def close(self, code: int, reason: str) -> None:
        if self.sent_close is None and self._ws.close_code is None:
            self.sent_close = code
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.close(code=code, message=reason.encode()[:120])


def _text(status: HTTPStatus, text: str) -> web.Response:
    return web.Response(status=status.value, text=text, headers={"Cache-Control": "no-cache"})


def _wants_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = frozenset({"/healthz", "/readyz", "/"})
"""Plain GETs answered without a token (probes, the page and its /web/ assets);
a WebSocket upgrade always needs one."""


def _refuse(request: web.Request, status: HTTPStatus, message: str) -> web.Response:
    if request.path.startswith("/v1/"):
        return openai_error(status.value, message, code=status.phrase.lower().replace(" ", "_"))
    return _text(status, message + "\n")


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {config.tls_cert} / key {config.tls_key}: {exc}"
        ) from exc
    return ctx


@dataclass
class _Access:
    """What one request's access line says; a WebSocket session fills in the rest."""

    client: str
    method: str
    route: str  # the path only: a query may hold a token
    token: str  # fingerprint of the presented token, or "-"
    websocket: bool = False
    dialect: str = "-"
    audio_s: float = 0.0
    segments: int = 0
    close_code: int | None = None
    error: str = "-"

    def log(self, status: int, duration_s: float) -> None:
        if status >= 400 and self.error == "-":
            with contextlib.suppress(ValueError):
                self.error = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        fields: dict[str, object]
        if self.websocket:
            fields = {
                "client": self.client,
                "route": self.route,
                "dialect": self.dialect,
                "token": self.token,
                "audio_s": round(self.audio_s, 3),
                "segments": self.segments,
                "duration_s": round(duration_s, 3),
                "close_code": self.close_code,
                "error": self.error,
            }
            access_log.info("websocket session", extra={"fields": fields})
        else:
            fields = {
                "client": self.client,
                "method": self.method,
                "route": self.route,
                "status": status,
                "token": self.token,
                "duration_s": round(duration_s, 3),
                "error": self.error,
            }
            access_log.info("http request", extra={"fields": fields})


_COUNTED_ROUTES = frozenset(
    {"/v1/audio/transcriptions", "/v1/models", "/healthz", "/readyz", "/metrics", "/"}
)
"""Routes ``/metrics`` counts by name; any other path counts as ``other`` (a
client must not be able to add labels)."""

_ACCESS: ContextVar[_Access | None] = ContextVar("asrserve_access", default=None)
"""The access record of the request the current task handles (set by the
access middleware; handlers add what they know)."""


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """One line for an address that cannot be bound (in use, not ours …)."""
    if isinstance(exc, socket.gaierror) or not (isinstance(exc.errno, int) and exc.errno > 0):
        reason = exc.strerror or str(exc)
    else:
        reason = os.strerror(exc.errno)
    return ConfigError(f"cannot listen on {_url_host(host)}:{port}: {reason}")


class _Outbox:
    """A connection's outgoing queue, counted in messages and bytes (the
    server drops a client that lets either grow past its limit)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Send | Close | None] = asyncio.Queue()  # None: client gone
        self.bytes = 0

    def put_nowait(self, item: Send | Close | None) -> None:
        if isinstance(item, Send):
            self.bytes += len(item.data)
        self._queue.put_nowait(item)

    async def put(self, item: Send | Close | None) -> None:
        self.put_nowait(item)

    async def get(self) -> Send | Close | None:
        item = await self._queue.get()
        if isinstance(item, Send):
            self.bytes -= len(item.data)
        return item

    def qsize(self) -> int:
        return self._queue.qsize()


class _Connection:
    """One client: its protocol session, stream slot and outgoing queue."""

    def __init__(self, ws: _Socket, session: WireSession) -> None:
        self.ws = ws
        self.session = session
        self.slot: StreamSlot | None = None
        self.outbox = _Outbox()
        self.dropped = False  # cut for not reading (outbox over its limits)
        self.drained = asyncio.Event()
        self.end_code: tuple[int, str] | None = None  # close code after eof, if not normal
        self.audio_s = 0.0  # audio received, in seconds
        self.finals = 0  # final results sent
        self.error = "-"  # the last error code the client was told (access line)
        self.token: str | None = None  # the token it came with (auth on): SIGHUP may revoke it
        self.revoking: asyncio.Task[None] | None = None
        self.cost = 0.0  # against --max-total-cost, once its start is admitted
        self.model = ""  # the model's name (asked at connect, resolved; final at start)
        self.served: ServedModel | None = None  # the model in use, once started


@dataclass
class _Lanes:
    """What the server runs for one loaded model: its own scheduler (decode
    threads that batch only its streams) and what a default session costs."""

    scheduler: Scheduler
    default_cost: float


class AsrServer:
    """``async with AsrServer(recognizer, config) as server: await server.wait()``.

    ``recognizer`` is the default model, loaded; ``models`` (optional) configures
    more, by name, loaded on first use (its first entry is the default's)."""

    def __init__(
        self,
        recognizer: AnyRecognizer,
        config: ServerConfig | None = None,
        defaults: SessionConfig | None = None,
        *,
        model_name: str = "asrserve",
        models: ModelPool | None = None,
    ) -> None:
        self.config = (config or ServerConfig()).validate()
        self._rate = recognizer.feature_config.sample_rate
        self._summary = model_summary(recognizer)  # the default model's, for the ready line
        if models is None:
            models = ModelPool([ModelEntry(model_name, model_name, lambda: recognizer)])
        self.models = models
        self.model_name = models.default
        self.defaults = defaults or SessionConfig(
            sample_rate=self.config.sample_rate,
            decoding=recognizer.decoding,
            hotwords=recognizer.decoding.hotwords,
            endpoint=recognizer.endpoint,
        )
        self._model_metrics = {name: Metrics() for name in models.names}
        fewer_malloc_arenas()  # before any thread of ours allocates
        # outcomes handed over by the decode threads, taken on the event loop
        self._inbox: list[tuple[StreamSlot, list[Outcome]]] = []
        self._inbox_lock = threading.Lock()
        self._inbox_called = False  # a call to _take_inbox is scheduled
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: set[_Connection] = set()  # readers waiting for their backlog to drain
        self._conns: dict[int, _Connection] = {}  # by id(slot) once started
        self._open: set[_Connection] = set()
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._gate: ConnectionGate | None = None  # every connection, accept to close
        self._restore_loop_handler: Callable[[], None] | None = None
        self._accept_errors = Throttled(
            log,
            logging.WARNING,
            "cannot accept connections (out of file descriptors or memory); raise the "
            "open-file limit (ulimit -n) or lower --max-pending-connections/--max-connections",
        )
        self._body_timeouts = Throttled(
            log, logging.INFO, "closed uploads whose body did not arrive in time"
        )
        c = self.config
        self.tokens = TokenStore(c.auth_token_file) if c.auth_token_file else None
        self._per_ip = Quota(c.max_connections_per_ip)
        self._per_token = Quota(c.max_streams_per_token)
        self._trusted = trusted_networks(c.trusted_proxies)
        self._ssl = _ssl_context(c)
        self._uploads = ThreadPoolExecutor(c.upload_workers, thread_name_prefix="asrserve-upload")
        # sessions' hotwords are checked (compiled) here, one at a time, off the loop
        self._checks = ThreadPoolExecutor(1, thread_name_prefix="asrserve-hotwords")
        self._sweeper: asyncio.Task[None] | None = None
        models.bind(self._start_model, self._stop_model)
        models.add_loaded(models.default, recognizer)
        # uploads count as connections: beside the streams, and per client address
        self._transcriptions = TranscriptionsRoute(
            models,
            self._uploads,
            c,
            per_ip=self._per_ip,
            streams=lambda: len(self._open),
            refused=self._count_error,
        )

    # --- the models -----------------------------------------------------------
    def _start_model(self, name: str, recognizer: AnyRecognizer) -> _Lanes:
        """A model just loaded: its scheduler (started when the server is)."""
        if self.config.isolate_batches:
            recognizer.isolate_batches = True
        scheduler = Scheduler(
            recognizer,
            self.config.max_batch_size,
            self._model_metrics[name],
            max_wait_s=self.config.max_wait_ms / 1000.0,
        )
        if self._loop is not None:
            scheduler.start(self._hand_over, self.config.decode_threads)
        d = self.defaults
        pieces = recognizer.check_hotwords(d.hotwords, d.decoding.hotwords_score)
        # what a session with the server's defaults costs: never refused by the budget
        return _Lanes(scheduler, session_cost(d.decoding, pieces))

    @staticmethod
    def _stop_model(served: ServedModel) -> None:
        """An unloaded model: its decode threads end (blocking)."""
        lanes: _Lanes = served.parts
        lanes.scheduler.stop()

    def _metrics_of(self, model: str) -> Metrics:
        """A model's counters; the default's for ``""`` (no model chosen yet)."""
        return self._model_metrics.get(model) or self.metrics

    @property
    def metrics(self) -> Metrics:
        """The default model's counters (every model's are in ``/metrics``)."""
        return self._model_metrics[self.model_name]

    @property
    def scheduler(self) -> Scheduler:
        """The default model's scheduler (while it is loaded)."""
        served = self.models.get(self.model_name)
        assert served is not None, "the default model is not loaded"
        lanes: _Lanes = served.parts
        return lanes.scheduler

    async def _sweep_models(self) -> None:
        """Unload models idle past --model-ttl-s (checked every ttl/4, >= 1 s)."""
        every = max(1.0, self.models.ttl_s / 4)
        while True:
            await asyncio.sleep(every)
            try:
                await self.models.sweep()
            except Exception:  # never let the sweeper die silently
                log.exception("unloading idle models failed")

    # --- lifecycle ----------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions.handle)
        app.router.add_get("/v1/realtime", self._realtime)
        app.router.add_get("/{tail:.*}", self._websocket_or_page)

    @web.middleware
    async def _access(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """One access line per request, written when it ends (for a WebSocket:
        when its session ends). Never the token or the query: a fingerprint."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._trusted:
            # behind a trusted proxy the client is named by X-Forwarded-For:
            # from here on request.remote is that client (limits, logs)
            forwarded = request.headers.getall("X-Forwarded-For", [])
            client = client_address(request.remote, forwarded, self._trusted)
            if client != request.remote:
                request = request.clone(remote=client)
        token = presented_token(request.headers, request.query)
        info = _Access(
            client=request.remote or "?",
            method=request.method,
            route=request.path,
            token=fingerprint(token) if token else "-",
        )
        _ACCESS.set(info)
        status = HTTPStatus.INTERNAL_SERVER_ERROR.value
        transport = request.transport
        if self._gate is not None:
            self._gate.begin(transport)  # in a request: no header timeout
        body_timer = None
        if request.body_exists and not request.content.is_eof():
            body_timer = loop.call_later(
                self.config.body_timeout_s, self._body_timed_out, request, info
            )
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except ConnectionError as exc:
            # the client went away mid-request (a reset during an upload, a
            # body that timed out): nobody to answer, nothing to trace
            if info.error == "-":
                info.error = "client_gone"
            status = HTTPStatus.REQUEST_TIMEOUT.value if info.error == "body_timeout" else 499
            log.debug("%s %s from %s: connection lost: %s", request.method, request.path,
                      info.client, type(exc).__name__)  # fmt: skip
            return web.Response(status=status)
        except asyncio.CancelledError:
            if info.error == "-":
                info.error = "cancelled"
            raise
        finally:
            if body_timer is not None:
                body_timer.cancel()
            if self._gate is not None:
                self._gate.end(transport)
            info.log(status, loop.time() - started)
            if not info.websocket:
                route = request.path if request.path in _COUNTED_ROUTES else "other"
                self._metrics_of(request.get(MODEL_KEY, "")).count_request(
                    route, status, float(request.get(AUDIO_S_KEY, 0.0))
                )

    def _body_timed_out(self, request: web.Request, info: _Access) -> None:
        """A request body still unfinished ``body_timeout_s`` after its head:
        answer 408 and close (the handler's read then fails as a lost connection)."""
        transport = request.transport
        if request.content.is_eof() or transport is None or transport.is_closing():
            return
        info.error = "body_timeout"
        self.metrics.count_error("body_timeout")
        self._body_timeouts(f"{self.config.body_timeout_s:g} s")
        text = f"request body not received within {self.config.body_timeout_s:g} s\n".encode()
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {len(text)}\r\n\r\n".encode()
            + text
        )
        close_transport(transport)
        # a client that reads nothing would hold a closing socket open
        asyncio.get_running_loop().call_later(1.0, transport.abort)

    def _count_error(self, code: str, conn: _Connection | None = None) -> None:
        """Count an error in the metrics (the stream's model's; else the
        default's) and name it in the access line."""
        self._metrics_of(conn.model if conn is not None else "").count_error(code)
        if conn is not None:
            conn.error = code
        else:
            info = _ACCESS.get()
            if info is not None:
                info.error = code

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Origin allow-list and bearer tokens, before any handler (and so
        before any WebSocket upgrade or model work)."""
        origin = request.headers.get("Origin")
        allowed = self.config.allowed_origins
        if origin and allowed and origin not in allowed:
            self._count_error("forbidden_origin")
            return _refuse(request, HTTPStatus.FORBIDDEN, f"origin {origin!r} is not allowed")
        public = not _wants_upgrade(request) and (
            request.path in _PUBLIC or request.path.startswith("/web/")
        )
        if self.tokens is not None and not public:
            token = presented_token(request.headers, request.query)
            if not self.tokens.check(token):
                self._count_error("unauthorized")
                log.debug(
                    "refused %s %s from %s: %s",
                    request.method,
                    request.path,
                    request.remote,
                    "bad token " + fingerprint(token) if token else "no token",
                )
                resp = _refuse(request, HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")
                resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        return await handler(request)

    async def start(self) -> None:
        c = self.config
        app = web.Application(middlewares=[self._access, self._guard])
        self._routes(app)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0, logger=http_log
        )
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        # our own listener over aiohttp's protocol factory, so that every
        # connection is seen from accept to close (header timeout, pending cap)
        self._gate = ConnectionGate(
            handlers,
            max_pending=c.max_pending_connections,
            header_timeout_s=c.header_timeout_s,
            dropped=self.metrics.count_error,
        )
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                self._gate.protocol,
                c.host,
                c.port,
                ssl=self._ssl,
                backlog=128,
                ssl_handshake_timeout=c.header_timeout_s if self._ssl else None,
            )
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            self._uploads.shutdown(wait=False)
            self._checks.shutdown(wait=False)
            raise _listen_error(c.host, c.port, exc) from None
        self._restore_loop_handler = quiet_loop_errors(loop, self._accept_errors)
        self._loop = loop
        for served in self.models.loaded:
            lanes: _Lanes = served.parts
            lanes.scheduler.start(self._hand_over, self.config.decode_threads)
        if self.models.ttl_s:
            self._sweeper = asyncio.create_task(self._sweep_models())
        self._log_startup()

    def urls(self) -> list[str]:
        """``ws(s)://`` and ``http(s)://`` of every address listened on."""
        assert self._listener is not None
        s = "s" if self._ssl else ""
        out = []
        for address in (sock.getsockname() for sock in self._listener.sockets):
            where = f"{_url_host(str(address[0]))}:{address[1]}"
            out += [f"ws{s}://{where}", f"http{s}://{where}"]
        return out

    def _log_startup(self) -> None:
        """The one INFO line that says the server is ready, and where."""
        c = self.config
        family, precision = self._summary
        urls = self.urls()
        host = c.host if c.host not in ("0.0.0.0", "::", "") else "localhost"
        page = f"http{'s' if self._ssl else ''}://{_url_host(host)}:{self.port}/"
        log.info(
            "ready: listening on %s",
            " ".join(urls),
            extra={
                "fields": {
                    "model": self.model_name,
                    **({"models": self.models.names} if len(self.models.names) > 1 else {}),
                    "family": family,
                    "precision": precision,
                    "event_loop": event_loop.current(),
                    "page": page,
                    "urls": urls,
                },
                "text_skip": ("urls",),  # the text line has them in its message
            },
        )

    @property
    def port(self) -> int:
        assert self._listener is not None
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> AsrServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Refuse new streams (503, ``/readyz`` unready), finish every open
        stream (finals sent), close 1001, then stop listening."""
        if self._runner is None or self._stopping:
            return
        self._stopping = True
        for conn in list(self._open):
            conn.end_code = (CLOSE_GOING_AWAY, "server shutting down")
            if conn.slot is None:
                await conn.outbox.put(Close(CLOSE_GOING_AWAY, "server shutting down"))
            else:
                conn.slot.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            async with timeout(self.config.shutdown_timeout_s):
                while self._open:
                    await asyncio.sleep(0.02)
        if self._listener is not None:
            self._listener.close()
        if self._gate is not None:
            self._gate.close()
        await self._runner.cleanup()
        if self._restore_loop_handler is not None:
            self._restore_loop_handler()
        self._accept_errors.cancel()
        self._body_timeouts.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.models.close()
        self._uploads.shutdown(wait=True)
        self._checks.shutdown(wait=True)

    # --- HTTP ----------------------------------------------------------------
    async def _healthz(self, _: web.Request) -> web.Response:
        """Liveness: the process answers (also while draining)."""
        return _text(HTTPStatus.OK, "draining\n" if self._stopping else "ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Readiness: the model is loaded and new streams are taken."""
        if self._stopping:
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        if len(self._open) + self._transcriptions.active >= self.config.max_connections:
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "full\n")
        return _text(HTTPStatus.OK, "ready\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=render_metrics(self._model_metrics).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4", "Cache-Control": "no-cache"},
        )

    async def _models(self, _: web.Request) -> web.Response:
        """Every configured model, loaded or not (see :meth:`ModelPool.describe`)."""
        data = [self.models.describe(name) for name in self.models.names]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{id}``: the model, or OpenAI's 404 for another id."""
        wanted = request.match_info["model_id"]
        if wanted not in self.models.entries:
            shown = wanted if len(wanted) <= 64 else wanted[:64] + "…"
            known = ", ".join(repr(n) for n in self.models.names)
            return openai_error(
                404,
                f"The model {shown!r} does not exist; this server serves {known}",
                param="model",
                code="model_not_found",
            )
        return web.json_response(self.models.describe(wanted))

    def _refusal(self) -> web.Response | None:
        """Why a new stream cannot start now, as the HTTP answer to its upgrade."""
        if self._stopping:
            self._note("shutting_down")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "server is shutting down\n")
        if len(self._open) + self._transcriptions.active >= self.config.max_connections:
            self.metrics.rejected_total += 1
            self._note("full")
            n = self.config.max_connections
            return _text(
                HTTPStatus.SERVICE_UNAVAILABLE, f"server is full: {n} of {n} streams active\n"
            )
        return None

    async def _websocket_or_page(self, request: web.Request) -> web.StreamResponse:
        """WebSocket upgrades (any path), the browser page and its assets;
        any other plain GET is 404."""
        if not _wants_upgrade(request):
            if request.path in WEB_FILES:
                body, content_type = web_file(request.path)
                return web.Response(
                    body=body, headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
                )
            return _text(HTTPStatus.NOT_FOUND, f"no such page: {request.path}\n")
        # the model: /models/NAME (sherpa-onnx's clients cannot say it in the
        # stream), ?model=NAME, or the asrserve dialect's start; else the default
        model = request.query.get("model", "")
        if request.path.startswith("/models/"):
            model = request.path.removeprefix("/models/").strip("/")
        return await self._stream(request, None, model)

    @staticmethod
    def _note(code: str) -> None:
        """Name an error in the current request's access line (no metric)."""
        info = _ACCESS.get()
        if info is not None:
            info.error = code

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        """OpenAI Realtime transcription sessions (see :mod:`realtime`)."""
        if not _wants_upgrade(request):
            return openai_error(426, "connect with a WebSocket client", code="upgrade_required")
        intent = request.query.get("intent", "transcription")
        if intent != "transcription":
            msg = f"intent {intent!r} is not supported; this server does intent=transcription"
            return openai_error(400, msg, param="intent")
        model = request.query.get("model", self.model_name)
        shape = opening_shape(request.query, request.headers)
        session = RealtimeSession(replace(self.defaults, model=model), model, shape)
        return await self._stream(request, session, model)

    async def _stream(
        self, request: web.Request, session: WireSession | None, model: str = ""
    ) -> web.StreamResponse:
        """Admit (or refuse, before the upgrade), upgrade, and run one stream."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            self.models.resolve(model)
        except UnknownModelError as exc:
            self._count_error("model_not_found")
            if request.path.startswith("/v1/"):
                return openai_error(404, str(exc), param="model", code="model_not_found")
            return _text(HTTPStatus.NOT_FOUND, f"{exc}\n")
        address = request.remote or "?"
        # streams per token count only where tokens are required
        presented = presented_token(request.headers, request.query)
        token = fingerprint(presented or "") if self.tokens is not None else ""
        if self._per_ip.full(address):
            self._count_error("limit")
            n = self._per_ip.limit
            msg = f"too many connections from {address}: the limit is {n}\n"
            return _text(HTTPStatus.TOO_MANY_REQUESTS, msg)
        if token and self._per_token.full(token):
            self._count_error("limit")
            n = self._per_token.limit
            return _text(HTTPStatus.TOO_MANY_REQUESTS, f"too many streams for this token: {n}\n")
        ws = MaskedWebSocketResponse(
            max_msg_size=self.config.max_message_bytes, heartbeat=_HEARTBEAT_S, compress=False
        )
        self._per_ip.acquire(address)
        self._per_token.acquire(token)
        if self._gate is not None:
            self._gate.admit(request.transport)  # a stream now, not a pending connection
        access = _ACCESS.get()
        try:
            await ws.prepare(request)
            if access is not None:
                access.websocket = True
            socket_ = _Socket(ws, request.transport)
            await self._handle(
                socket_, session, access, token=presented if token else None, model=model
            )
        finally:
            self._per_ip.release(address)
            self._per_token.release(token)
        return ws

    def reload_tokens(self) -> None:
        """Reread the token file (SIGHUP); a bad file keeps the old tokens."""
        if self.tokens is None:
            return
        try:
            self.tokens.reload()
        except ConfigError as exc:
            log.error("auth: keeping the previous tokens: %s", exc)
            return
        revoked = [c for c in self._open if c.token is not None and not self.tokens.check(c.token)]
        for conn in revoked:
            self._revoke(conn)
        if revoked:
            log.info("auth: closed %d streams whose token was revoked", len(revoked))

    def _revoke(self, conn: _Connection) -> None:
        """End a stream whose token left the token file: no more input is
        taken or decoded, an error (not to sherpa clients), close 1008."""
        if conn.revoking is not None:
            return
        self._count_error("token_revoked", conn)
        conn.session.stop_input()
        if conn.slot is not None and not conn.slot.done:
            conn.slot.abandon()  # nothing more is decoded for it
        conn.revoking = asyncio.create_task(self._close_revoked(conn))

    async def _close_revoked(self, conn: _Connection) -> None:
        # straight to the socket, past any queued results: the stream ends now
        reason = "token revoked"
        told = conn.session.server_error(
            "token_revoked", "the token of this stream was revoked; stream closed"
        )
        with contextlib.suppress(_ClosedError):
            for message in told:
                await conn.ws.send(message.data)
        await conn.ws.close(CLOSE_POLICY, reason)

    # --- one connection -------------------------------------------------------
    async def _handle(
        self,
        ws: _Socket,
        session: WireSession | None = None,
        access: _Access | None = None,
        *,
        token: str | None = None,
        model: str = "",
    ) -> None:
        if session is None:
            session = Session(replace(self.defaults, model=model), self._rate)
        conn = _Connection(ws, session)
        conn.token = token
        conn.model = self.models.resolve(model)  # checked before the upgrade
        for cmd in session.opening():
            await self._apply(conn, cmd)
        self._open.add(conn)
        self._metrics_of(conn.model).active_streams += 1
        self._metrics_of(conn.model).connections_total += 1
        sender = asyncio.create_task(self._send_loop(conn))
        try:
            try:
                await self._receive_loop(conn)
            finally:
                ws.closed.set()
                # The client closed or vanished: whatever is queued before this
                # is still tried, then the sender stops instead of waiting for
                # an end of stream that will not come (no stop was sent).
                conn.outbox.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            if conn.slot is not None and not conn.slot.done:
                conn.slot.abandon()  # client vanished: drop, answer nobody
            if conn.slot is not None:
                self._conns.pop(id(conn.slot), None)
            self._paused.discard(conn)
            self._open.discard(conn)
            self._metrics_of(conn.model).active_streams -= 1
            if conn.served is not None:
                self.models.release(conn.served)
            if access is not None:
                access.dialect = session.dialect_name
                access.audio_s = conn.audio_s
                access.segments = conn.finals
                access.close_code = ws.close_code
                access.error = conn.error

    async def _receive_loop(self, conn: _Connection) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.max_session_s
        while True:
            remaining = deadline - loop.time()
            try:
                async with timeout(min(c.idle_timeout_s, max(remaining, 0))):
                    frame = await conn.ws.recv()
            except asyncio.TimeoutError:  # TimeoutError from 3.11 on
                expired = loop.time() >= deadline
                reason = (
                    f"session longer than {c.max_session_s:g} s"
                    if expired
                    else f"no message for {c.idle_timeout_s:g} s"
                )
                await self._end_on_limit(conn, reason)
                # keep reading so the client's close is seen; no more input is taken
                deadline = float("inf")
                continue
            except _ClosedError:
                return
            cmds = conn.session.receive(frame)
            if any(isinstance(cmd, Start) for cmd in cmds):
                cmds = await self._admit(conn, cmds)
            await self._apply_all(conn, cmds)
            # else an idle stream would keep its last frame alive twice (bytes
            # and samples) while this waits for the next one
            frame, cmds = b"", []
            if conn.dropped:  # cut for not reading: take nothing more from it
                return
            slot = conn.slot
            while slot is not None and self._backlogged(slot):
                # backpressure: stop reading until the decoder catches up
                conn.drained.clear()
                self._paused.add(conn)
                try:
                    # again, now that the decode threads see it paused: a step
                    # that ended just before would not have told it to go on
                    if self._backlogged(slot):
                        await conn.drained.wait()
                finally:
                    self._paused.discard(conn)

    async def _admit(self, conn: _Connection, cmds: list[Command]) -> list[Command]:
        """Check what a session's start asks for before it is answered
        (``ready``): hotwords the model cannot spell are ``bad_config`` naming
        the phrase, and so is a language it does not know. Their graph is
        built on a thread of its own (1,000 hotwords take a while), and kept
        for the decode thread."""
        start = next(cmd for cmd in cmds if isinstance(cmd, Start))
        cfg = start.config
        try:  # the model it asks for, loaded if it is not (other streams go on)
            served = await self.models.acquire(cfg.model or conn.model)
        except (UnknownModelError, ModelsBusyError) as exc:
            code = "busy" if isinstance(exc, ModelsBusyError) else "bad_config"
            return conn.session.refuse(code, str(exc))
        except AsrServeError as exc:  # its files: missing, truncated, foreign …
            log.error("model %r failed to load: %s", cfg.model or conn.model, exc)
            return conn.session.refuse("model_load_failed", str(exc), CLOSE_INTERNAL)
        self._move(conn, served)
        recognizer = served.recognizer
        lanes: _Lanes = served.parts
        pieces = 0
        if cfg.hotwords:
            loop = asyncio.get_running_loop()
            check = recognizer.check_hotwords
            try:
                pieces = await loop.run_in_executor(
                    self._checks, check, cfg.hotwords, cfg.decoding.hotwords_score
                )
            except ConfigError as exc:
                return conn.session.refuse("bad_config", str(exc))
        try:  # a language the model does not know is refused now
            recognizer.check_language(cfg.decoding.language)
        except ConfigError as exc:
            return conn.session.refuse("bad_config", str(exc))
        cost = session_cost(cfg.decoding, pieces)
        refusal = self._over_budget(cost, cfg.decoding.beam, pieces, lanes.default_cost)
        if refusal is not None:
            return conn.session.refuse(*refusal)
        conn.cost = cost  # no await since the budget was checked
        return cmds

    def _move(self, conn: _Connection, served: ServedModel) -> None:
        """The stream uses ``served`` (counted under its name from now on)."""
        conn.served = served
        if served.name != conn.model:
            self._metrics_of(conn.model).active_streams -= 1
            self._metrics_of(served.name).active_streams += 1
            conn.model = served.name

    def _over_budget(
        self, cost: float, beam: int, pieces: int, default_cost: float
    ) -> tuple[str, str, int] | None:
        """Why a session of ``cost`` is refused (code, message, close code), if it
        is: over --max-session-cost (bad_config), or over what --max-total-cost
        leaves (busy). Sessions that cost no more than the defaults pass."""
        c = self.config
        if cost <= default_cost:
            return None
        what = f"session cost {cost:g} (beam {beam} + {pieces} hotword pieces / 100)"
        if c.max_session_cost and cost > c.max_session_cost:
            msg = f"{what} is over this server's max-session-cost {c.max_session_cost:g}"
            return "bad_config", msg, CLOSE_UNSUPPORTED
        used = sum(conn.cost for conn in self._open)
        if c.max_total_cost and used + cost > c.max_total_cost:
            msg = (
                f"server busy: open sessions cost {used:g} of its max-total-cost "
                f"{c.max_total_cost:g}, this {what}; try again later or ask for less"
            )
            return "busy", msg, CLOSE_TRY_AGAIN
        return None

    async def _end_on_limit(self, conn: _Connection, reason: str) -> None:
        if conn.end_code is not None:
            return
        self._count_error("limit", conn)
        conn.end_code = (CLOSE_POLICY, reason)
        for message in conn.session.server_error("limit", f"{reason}; input ended"):
            await conn.outbox.put(message)
        if conn.slot is None:
            await conn.outbox.put(Close(CLOSE_POLICY, reason))
        else:
            conn.session.stop_input()
            conn.slot.stop()

    async def _apply_all(self, conn: _Connection, cmds: list[Command]) -> None:
        for cmd in cmds:
            await self._apply(conn, cmd)

    async def _apply(self, conn: _Connection, cmd: Command) -> None:
        if isinstance(cmd, Start):
            assert conn.served is not None, "a start is admitted before it is applied"
            lanes: _Lanes = conn.served.parts
            conn.slot = StreamSlot(cmd.config)
            self._conns[id(conn.slot)] = conn
            lanes.scheduler.add(conn.slot)
        elif isinstance(cmd, Send | Close):
            if isinstance(cmd, SendError):
                self._count_error(cmd.code, conn)
            await conn.outbox.put(cmd)
            self._check_outbox(conn)
            return
        elif conn.slot is not None:
            if isinstance(cmd, Audio):
                conn.audio_s += cmd.samples.size / conn.slot.config.sample_rate
                if conn.audio_s > self.config.max_audio_s:
                    limit = self.config.max_audio_s
                    await self._end_on_limit(conn, f"more than {limit:g} s of audio")
                    return
                conn.slot.push(cmd.samples)
            elif isinstance(cmd, Flush):
                conn.slot.flush()
            elif isinstance(cmd, Stop):
                conn.slot.stop()

    async def _send_loop(self, conn: _Connection) -> None:
        ws = conn.ws
        try:
            while True:
                cmd = await conn.outbox.get()
                if cmd is None:
                    return
                if isinstance(cmd, Send):
                    await ws.send(cmd.data)
                    if cmd.awaits_close:  # the client closes (sherpa's last frame)
                        with contextlib.suppress(asyncio.TimeoutError):
                            async with timeout(_SHERPA_CLOSE_WAIT_S):
                                await ws.closed.wait()
                        await ws.close(*(conn.end_code or (1000, "end of input")))
                        return
                else:
                    code, reason = cmd.code, cmd.reason
                    if conn.end_code is not None and code == 1000:
                        code, reason = conn.end_code
                    await ws.close(code, reason)
                    return
        except _ClosedError:
            return

    # --- outcomes from the decode threads ---------------------------------------
    def _hand_over(self, outcomes: Outcomes) -> None:
        """Decode threads: queue a round's outcomes for the event loop; one
        wake-up of the loop takes everything queued before it runs."""
        if not outcomes and not self._paused:
            return
        with self._inbox_lock:
            self._inbox += outcomes
            if self._inbox_called:
                return
            self._inbox_called = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                self._loop.call_soon_threadsafe(self._take_inbox)

    def _take_inbox(self) -> None:
        """The event loop: turn the decode threads' outcomes into messages and
        let paused readers go on once their backlog has drained."""
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._inbox_called = False
        for slot, outcomes in items:
            conn = self._conns.get(id(slot))
            if conn is not None:
                self._deliver(conn, outcomes)
        for conn in self._paused:
            if conn.slot is None or not self._backlogged(conn.slot):
                conn.drained.set()

    def _backlogged(self, slot: StreamSlot) -> bool:
        if slot.done or slot.abandoned:  # nothing will drain it any more
            return False
        return slot.pending_s + slot.backlog_s > self.config.max_backlog_s

    def _deliver(self, conn: _Connection, outcomes: list[Outcome]) -> None:
        session = conn.session
        for o in outcomes:
            cmds: list[Command]
            if o.kind == "error" and o.error is not None:
                cmds = session.error(o.error)
                for cmd in cmds:
                    if isinstance(cmd, SendError):
                        self._count_error(cmd.code, conn)
                if o.fatal:
                    code = CLOSE_UNSUPPORTED if isinstance(o.error, ConfigError) else CLOSE_INTERNAL
                    cmds.append(Close(code, str(o.error)[:120]))
            elif o.kind == "eof":
                cmds = session.eof(o.duration)
            elif o.result is not None:
                cmds = session.result(o.result, o.end_time, final=o.kind == "final", eof=o.last)
            else:
                cmds = []
            if o.kind == "final" and any(type(cmd) is Send for cmd in cmds):
                conn.finals += 1
            for cmd in cmds:
                if isinstance(cmd, Send | Close):
                    conn.outbox.put_nowait(cmd)
        self._check_outbox(conn)

    def _check_outbox(self, conn: _Connection) -> None:
        """Drop a client that does not read what it is sent (results, or the
        errors its own junk earns): past ``max_pending_messages`` queued or
        ``max_pending_bytes`` of them, rather than queue without end."""
        c = self.config
        box = conn.outbox
        if conn.dropped or (
            box.qsize() <= c.max_pending_messages and box.bytes <= c.max_pending_bytes
        ):
            return
        conn.dropped = True
        log.info(
            "dropping a client that does not read (%d messages, %d bytes queued)",
            box.qsize(),
            box.bytes,
        )
        self._count_error("slow_client", conn)
        if conn.slot is not None:
            conn.slot.abandon()
        conn.ws.abort()


async def run_server(
    recognizer: AnyRecognizer,
    config: ServerConfig,
    *,
    check: bool = True,
    model_name: str = "asrserve",
    models: ModelPool | None = None,
) -> None:
    """Check the model (unless the caller did), serve until SIGINT/SIGTERM,
    then shut down gracefully. A port that cannot be bound raises
    :class:`ConfigError` with one line."""
    if check:
        check_model(recognizer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsrServer(recognizer, config, model_name=model_name, models=models) as server:
        loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)
        await stop.wait()
        log.info("shutting down: finishing open streams")
