"""Command line: ``asrserve transcribe | serve | client | mic | models | ncnn-meta | quantize |
healthcheck``.

Each subcommand is split into argument parsing and a ``run_*`` function
that returns the exit code, so tests call them without a subprocess.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

# Before numpy loads: its BLAS would start a thread per core (~0.05 CPU-s of
# start-up here) for the few small matrix products asrserve computes itself;
# the models' threads are onnxruntime's and ncnn's (--num-threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from asrserve.errors import AsrServeError

if TYPE_CHECKING:
    from asrserve.config import ServerConfig
    from asrserve.core.segments import Segment
    from asrserve.server.models import ModelPool

log = logging.getLogger("asrserve")

EXIT_OK, EXIT_FAILED_INPUT, EXIT_USAGE = 0, 1, 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, ``(default: X)``, unless
    the text says it already, the default is None (the text says what
    happens then), or the option is a flag (store_true/store_false: the flag
    itself is the value). An empty list reads ``(default: none)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (
            "(default" in text
            or d is None
            or d is argparse.SUPPRESS
            or isinstance(action, argparse._StoreConstAction | argparse._AppendConstAction)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return text
        if isinstance(d, list | tuple) and not d:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """:class:`HelpFormatter` for ``parser`` and all its subcommands."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_help_formatter(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asrserve", description="Streaming speech recognition.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    from asrserve import __version__

    parser.add_argument("--version", action="version", version=f"asrserve {__version__}")
    from asrserve.model_args import add_model_args
    from asrserve.settings import LayeredParser

    # LayeredParser: ``serve`` takes its defaults from the environment and --config
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, parser_class=LayeredParser),
    )

    t = sub.add_parser("transcribe", help="transcribe audio files offline")
    t.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV, FLAC, OGG …)")
    add_model_args(t)
    t.add_argument(
        "--format",
        default="text",
        choices=["text", "json", "srt", "vtt"],
        help="output: text, one JSON object per input, or subtitles",
    )
    t.add_argument("--output-dir", type=Path, default=None, help="write one file per input here")
    t.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    t.add_argument(
        "--endpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="split each transcript into segments at pauses (sherpa-onnx's endpoint rules, as "
        "the server and the HTTP API do); json lists them under 'segments', subtitles break "
        "between them. Parakeet TDT models segment by VAD either way",
    )
    t.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="TRANS",
        help="reference transcripts ('ID TEXT' lines, ID = a file's stem, as in trans.txt): "
        "show each beside its transcript and print the word error rate (default: none)",
    )
    from asrserve.config import DEFAULT_MAX_STREAMS

    t.add_argument(
        "--batch",
        type=_positive_int,
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="files decoded together, as one batch of streams whose encoder runs once per "
        "chunk for all of them (a file's slot goes to the next one when it ends); 1: one "
        "file after another",
    )
    t.add_argument(
        "--isolate-batches",
        action="store_true",
        help="with int8 models that scale activations per batch, run each file's encoder "
        "chunk alone, so a transcript never depends on the other files (slower)",
    )

    from asrserve.bulk.command import add_parser as add_bulk
    from asrserve.clients.commands import add_parsers
    from asrserve.convert.command import add_parser as add_convert
    from asrserve.ncnn_meta import add_parser as add_ncnn_meta
    from asrserve.quantize.command import add_parser as add_quantize

    add_parsers(sub)
    add_ncnn_meta(sub)
    add_quantize(sub)
    add_bulk(sub)
    add_convert(sub)

    sv = sub.add_parser(
        "serve",
        help="serve streaming recognition over WebSocket",
        description="Serve streaming recognition (WebSocket, HTTP, the browser page) on one "
        "port. Every option can also come from an environment variable ASRSERVE_<OPTION> "
        "(--max-connections: ASRSERVE_MAX_CONNECTIONS; flags: 1/0, true/false, yes/no; "
        "repeatable options: comma-separated) or from a TOML file (--config), whose keys are "
        "the option names; a flag beats the environment, which beats the file.",
    )
    assert isinstance(sv, LayeredParser)
    sv.layered = True
    add_model_args(sv, many=True)
    _add_server_args(sv)

    _add_healthcheck(sub)

    m = sub.add_parser("models", help="list or download known models")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="show the catalog")
    models_dir_help = (
        "where models are pulled to (default: $ASRSERVE_MODELS_DIR, else models/ of a "
        "writable checkout, else ~/.cache/asrserve/models)"
    )
    ml.add_argument("--models-dir", type=Path, default=None, help=models_dir_help)
    mp = msub.add_parser("pull", help="download a model from the catalog")
    mp.add_argument("name", help="a catalog name (see `asrserve models list`)")
    mp.add_argument("--models-dir", type=Path, default=None, help=models_dir_help)
    mp.add_argument(
        "--url", default=None, help="override the download URL (mirrors; default: the catalog's)"
    )
    mp.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    use_help_formatter(parser)
    return parser


def _add_server_args(p: argparse.ArgumentParser) -> None:
    from asrserve.config import ServerConfig
    from asrserve.logs import FORMATS, LEVELS
    from asrserve.server.event_loop import KINDS

    d = ServerConfig()
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML file of serve options, keys as the option names (port = 7000, "
        "max-connections = 8) (default: $ASRSERVE_CONFIG, else none)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="least severe messages logged (asrserve -v: debug)",
    )
    p.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text lines, or one JSON object per line (ts, level, logger, msg, fields)",
    )
    p.add_argument("--host", default=d.host, help="address to listen on (0.0.0.0: all IPv4)")
    p.add_argument("--port", type=int, default=d.port, help="port for HTTP and WebSocket")
    p.add_argument(
        "--sample-rate", type=int, default=d.sample_rate, help="rate clients send by default"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help="most streams one encoder call advances",
    )
    p.add_argument(
        "--max-wait-ms", type=float, default=d.max_wait_ms, help="pace of batched decode steps"
    )
    p.add_argument(
        "--max-loaded-models",
        type=int,
        default=d.max_loaded_models,
        help="models loaded at once (several --model): loading another unloads the least "
        "recently used idle one; one with open streams never is; 0: no limit",
    )
    p.add_argument(
        "--model-ttl-s",
        type=float,
        default=d.model_ttl_s,
        help="unload a model no stream or upload has used for this long (it loads again on "
        "its next use); 0: never",
    )
    p.add_argument(
        "--event-loop",
        default="auto",
        choices=KINDS,
        help="the event loop serving the connections: uvloop (less CPU per message), "
        "asyncio's own, or auto: uvloop where it is installed",
    )
    p.add_argument(
        "--decode-threads",
        type=int,
        default=d.decode_threads,
        help="threads decoding disjoint sets of streams, each with --num-threads inference threads",
    )
    p.add_argument(
        "--max-connections",
        "--max-streams",
        dest="max_connections",
        type=int,
        default=d.max_connections,
        help="streams this process takes; more get HTTP 503 (a balancer routes elsewhere)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=d.max_message_bytes,
        help="largest WebSocket frame; a larger one closes the connection with 1009",
    )
    p.add_argument(
        "--max-backlog-s",
        type=float,
        default=d.max_backlog_s,
        help="undecoded seconds per stream before its reads pause",
    )
    p.add_argument(
        "--idle-timeout-s",
        type=float,
        default=d.idle_timeout_s,
        help="seconds without a message before a stream's input is ended (close 1008)",
    )
    p.add_argument(
        "--max-session-s",
        type=float,
        default=d.max_session_s,
        help="longest stream in seconds of wall time; then its input is ended (close 1008)",
    )
    p.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=d.shutdown_timeout_s,
        help="on SIGTERM, how long open streams get to finish before they are cut",
    )
    p.add_argument(
        "--max-audio-s", type=float, default=d.max_audio_s, help="audio seconds per session"
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_bytes / 2**20,
        help="largest file POST /v1/audio/transcriptions takes (413 above)",
    )
    p.add_argument(
        "--upload-workers",
        type=int,
        default=d.upload_workers,
        help="threads transcribing uploads (POST /v1/audio/transcriptions), one upload each",
    )
    p.add_argument(
        "--max-queued-uploads",
        type=int,
        default=d.max_queued_uploads,
        help="uploads waiting for a worker; more get HTTP 429 with Retry-After",
    )
    p.add_argument(
        "--max-connections-per-ip", type=int, default=d.max_connections_per_ip, help="0: no limit"
    )
    p.add_argument(
        "--max-streams-per-token", type=int, default=d.max_streams_per_token, help="0: no limit"
    )
    p.add_argument(
        "--max-session-cost",
        type=float,
        default=d.max_session_cost,
        help="most one session may cost: its beam (greedy: 1) + its hotwords' token pieces / 100; "
        "more is bad_config before ready (0: no limit; sessions at the defaults' cost pass)",
    )
    p.add_argument(
        "--max-total-cost",
        type=float,
        default=d.max_total_cost,
        help="most all open sessions may cost together; a session that would pass it gets "
        "'busy' and close 1013 before ready (0: no limit; sessions at the defaults' cost pass)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a proxy (address or CIDR, repeatable) whose X-Forwarded-For names the client for "
        "per-IP limits and logs, read from the right; from other peers the header is ignored "
        "(default: none)",
    )
    p.add_argument(
        "--auth-token-file",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (or ?token=) with a token of this file; "
        "one per line, reloaded on SIGHUP (default: no tokens needed)",
    )
    p.add_argument(
        "--max-pending-messages",
        type=int,
        default=d.max_pending_messages,
        help="messages (results and errors) queued for a client that does not read before "
        "it is dropped",
    )
    p.add_argument(
        "--max-pending-bytes",
        type=int,
        default=d.max_pending_bytes,
        help="bytes of messages queued for a client that does not read before it is dropped",
    )
    p.add_argument(
        "--header-timeout-s",
        type=float,
        default=d.header_timeout_s,
        help="seconds a connection may be idle or sending its request head before it is "
        "closed (also the keep-alive idle time between requests; TLS handshakes too)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=d.body_timeout_s,
        help="seconds a request body (an upload) may take to arrive after its head; then "
        "408 and the connection is closed",
    )
    p.add_argument(
        "--max-pending-connections",
        type=int,
        default=d.max_pending_connections,
        help="connections that are not (yet) streams: idle, sending a request, probes, "
        "uploads; past it the oldest idle one is closed. Keep it and --max-connections "
        "well under the open-file limit (ulimit -n)",
    )
    p.add_argument(
        "--isolate-batches",
        action="store_true",
        help="with int8 models that scale activations per batch, run each stream's encoder "
        "chunk alone, so no client's audio can change another's transcript (slower)",
    )
    p.add_argument(
        "--tls-cert",
        default=None,
        help="PEM certificate: serve https:// and wss:// (default: plain http:// and ws://)",
    )
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser Origin allowed to connect (repeatable; default: any)",
    )
    p.add_argument("--no-endpoint", action="store_true", help="never end segments by silence")
    p.add_argument(
        "--rule1-min-trailing-silence",
        type=float,
        default=2.4,
        help="endpoint after this much silence, even if nothing was said (seconds)",
    )
    p.add_argument(
        "--rule2-min-trailing-silence",
        type=float,
        default=1.2,
        help="endpoint after this much silence following speech (seconds)",
    )
    p.add_argument(
        "--rule3-min-utterance-length",
        type=float,
        default=20.0,
        help="endpoint a segment this long regardless of silence (seconds)",
    )


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` of ``serve``'s options: every field from the
    option of the same name, but for the three whose options take other units
    or repeat."""
    from dataclasses import fields

    from asrserve.config import ServerConfig

    special: dict[str, Any] = {
        "max_upload_bytes": max(1, int(args.max_upload_mb * 2**20)),
        "trusted_proxies": tuple(args.trusted_proxy),
        "allowed_origins": tuple(args.allowed_origin),
    }
    values = {
        f.name: special[f.name] if f.name in special else getattr(args, f.name)
        for f in fields(ServerConfig)
    }
    return ServerConfig(**values).validate()


def run_serve(args: argparse.Namespace) -> int:
    from asrserve.config import EndpointConfig, EndpointRule
    from asrserve.errors import ConfigError
    from asrserve.logs import configure as configure_logging
    from asrserve.server import event_loop
    from asrserve.server.app import run_server

    config = server_config(args)
    loop_kind = event_loop.resolve(args.event_loop)  # before the model loads: missing uvloop
    endpoint = EndpointConfig(
        enabled=not args.no_endpoint,
        rule1=EndpointRule(False, args.rule1_min_trailing_silence, 0.0),
        rule2=EndpointRule(True, args.rule2_min_trailing_silence, 0.0),
        rule3=EndpointRule(False, 0.0, args.rule3_min_utterance_length),
    )
    configure_logging("debug" if args.verbose else args.log_level, args.log_format)
    models = served_models(args, endpoint)
    # the default model loads now (a bad one stops the server here); others on first use
    recognizer = models.entries[models.default].load()
    try:
        event_loop.run(run_server(recognizer, config, check=False, models=models), loop_kind)
    except ConfigError as exc:  # the address cannot be bound, the TLS files do not load …
        print(f"asrserve serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def served_models(args: argparse.Namespace, endpoint: Any) -> ModelPool:
    """``serve``'s models: every ``--model [NAME=]DIR`` (the demo model when
    none), named, each loaded with the same model options when first used."""
    import asrserve
    from asrserve.errors import ConfigError
    from asrserve.model_args import load_from_args
    from asrserve.server.models import ModelEntry, ModelPool

    entries = []
    for given in args.model or [None]:
        name, source = _named_model(given)
        if not name:
            raise ConfigError(f"--model {given!r}: the name before '=' is empty")
        one = argparse.Namespace(**{**vars(args), "model": source})
        # idle inference threads must not steal the event loop's core: no spinning
        load = functools.partial(load_from_args, one, endpoint=endpoint, spin=False)
        entries.append(ModelEntry(name, source or asrserve.DEFAULT_MODEL, load))
    return ModelPool(entries, max_loaded=args.max_loaded_models, ttl_s=args.model_ttl_s)


def _named_model(given: str | None) -> tuple[str, str | None]:
    """``NAME=DIR`` → (NAME, DIR); a directory or catalog name → (its name, it)."""
    import asrserve

    if given is None:
        return asrserve.DEFAULT_MODEL, None
    name, eq, source = given.partition("=")
    if eq and "/" not in name:
        return name.strip(), source
    return Path(given).name or given, given


def _render(
    fmt: str, path: str, parts: Sequence[Segment], duration: float, reference: str | None = None
) -> str:
    from asrserve.core.segments import joined
    from asrserve.subtitles import segment_cues, to_srt, to_vtt

    result = joined(parts)
    if fmt == "json":
        obj = {
            "file": path,
            "text": result.text,
            "tokens": result.tokens,
            "timestamps": result.timestamps,
            "duration": round(duration, 3),
            "segments": [seg.to_dict() for seg in parts],
        }
        if reference is not None:
            obj["reference"] = reference
        return json.dumps(obj, ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(segment_cues(parts))
    if fmt == "vtt":
        return to_vtt(segment_cues(parts))
    return f"{result.text}\n"


def _output_clash(files: Sequence[str], ext: str) -> str | None:
    """``--output-dir`` writes ``<stem>.<ext>`` per input: the first two
    different inputs that would write the same file, as an error message
    (None when every input has its own file)."""
    seen: dict[str, Path] = {}
    for f in files:
        p = Path(f)
        name = f"{p.stem}.{ext}"
        first = seen.setdefault(name, p)
        if first != p and first.resolve() != p.resolve():
            return (
                f"{first} and {p} would both be written to --output-dir as {name}; "
                "nothing was transcribed: give them separate runs or output directories"
            )
    return None


def _header_seconds(path: str) -> float:
    """A file's length from its header (0.0 when libsndfile cannot tell)."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception:  # PyAV formats, unreadable files: no length for the bar
        return 0.0
    return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0


class _NoBar:
    """What :func:`run_transcribe` uses of a tqdm bar, doing nothing."""

    n = 0.0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def refresh(self) -> None:
        return None

    def clear(self) -> None:
        return None


def _progress_bar(show: bool, total: float, files: Sequence[str]) -> Any:
    """A progress bar on stderr over ``total`` seconds of audio (drawn only on
    a terminal), or, ``show`` false, one that does nothing, without importing tqdm."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    name = Path(files[0]).name if len(files) == 1 else f"{len(files)} files"
    return tqdm(  # disable=None: only on a terminal
        total=round(total, 1), unit="s", desc=name, disable=None, leave=False, file=sys.stderr
    )


def run_transcribe(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Transcribe ``args.files`` as a rolling batch of ``args.batch`` streams
    (:func:`asrserve.core.rolling.transcribe_many`); outputs in the files' order."""
    out = out or sys.stdout
    from asrserve.audio import truncated_seconds, truncation_warning
    from asrserve.bulk.split import read_blocks
    from asrserve.core.rolling import in_order, transcribe_many
    from asrserve.model_args import load_from_args
    from asrserve.scoring import read_references, reference_for, word_errors

    ext = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}[args.format]
    clash = _output_clash(args.files, ext) if args.output_dir is not None else None
    if clash is not None:
        print(f"asrserve: error: {clash}", file=sys.stderr)
        return EXIT_USAGE
    refs = read_references(args.reference) if args.reference is not None else None
    from asrserve.config import EndpointConfig

    recognizer = load_from_args(args, endpoint=EndpointConfig(enabled=args.endpointing))
    recognizer.isolate_batches = args.isolate_batches
    failed = 0
    errors = words = scored = 0
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0 if args.no_progress else sum(_header_seconds(p) for p in args.files)
    show = total > 30.0  # short runs end before a bar says anything
    with _progress_bar(show, total, args.files) as bar:

        def consumed(seconds: float) -> None:
            bar.n = round(min(total, bar.n + seconds), 1)
            bar.refresh()

        inputs = (read_blocks(p, _BLOCK_S, consumed if show else None) for p in args.files)
        decoded = transcribe_many(recognizer, inputs, max_streams=args.batch)
        for d in in_order(decoded):
            path = args.files[d.index]
            if d.error is not None:
                reason = d.error if isinstance(d.error, AsrServeError) else _unexpected(d.error)
                bar.clear()
                print(f"asrserve: error: {reason}", file=sys.stderr)
                failed += 1
                continue
            missing = truncated_seconds(path)
            if missing > 0:
                bar.clear()
                print(f"asrserve: warning: {truncation_warning(path, missing)}", file=sys.stderr)
            parts = d.segments
            reference = reference_for(refs, path) if refs is not None else None
            if reference is not None:
                e, n = word_errors(reference, " ".join(seg.text for seg in parts))
                errors, words, scored = errors + e, words + n, scored + 1
            text = _render(args.format, path, parts, d.duration, reference)
            if args.output_dir is not None:
                (args.output_dir / f"{Path(path).stem}.{ext}").write_text(text, encoding="utf-8")
            elif args.format == "text" and len(args.files) > 1:
                out.write(f"{path}\t{text}")
            else:
                out.write(text)
            if reference is not None and args.format == "text" and args.output_dir is None:
                out.write(f"    reference: {reference}\n")
            out.flush()
    if refs is not None:
        summary = (
            f"WER {100.0 * errors / max(words, 1):.1f} % ({errors} errors in {words} words, "
            f"{scored} of {len(args.files)} files had a reference)\n"
        )
        (out if args.format == "text" and args.output_dir is None else sys.stderr).write(summary)
    return EXIT_FAILED_INPUT if failed else EXIT_OK


_BLOCK_S = 1.0
"""Seconds of a file read at a time by ``transcribe``."""


def _unexpected(exc: Exception) -> str:
    """A failure that is no :class:`AsrServeError`, named by its type."""
    return f"{type(exc).__name__}: {exc}"


def run_models(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from asrserve import catalog

    entries = catalog.load_catalog()
    models_dir = args.models_dir or catalog.default_models_dir()
    if args.models_command == "list":
        out.write(catalog.format_catalog(entries, models_dir) + "\n")
        return EXIT_OK
    entry = catalog.get_entry(args.name, entries)
    path = catalog.pull(entry, models_dir, progress=not args.no_progress, url=args.url)
    out.write(f"{path}\n")
    return EXIT_OK


def run_healthcheck(args: argparse.Namespace) -> int:
    """GET ``--path`` over http, then https (any certificate: this is a probe
    from inside the container, not a client)."""
    import ssl
    import urllib.request

    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    for scheme, ctx in (("http", None), ("https", insecure)):
        url = f"{scheme}://{args.host}:{args.port}{args.path}"
        try:
            with urllib.request.urlopen(url, timeout=args.timeout, context=ctx) as r:
                if r.status == 200:
                    return EXIT_OK
        except (OSError, ValueError):
            continue
    print(f"asrserve: no healthy server on {args.host}:{args.port}", file=sys.stderr)
    return EXIT_FAILED_INPUT


def run(args: argparse.Namespace) -> int:
    if args.command == "healthcheck":
        return run_healthcheck(args)
    if args.command == "transcribe":
        return run_transcribe(args)
    if args.command == "models":
        return run_models(args)
    if args.command == "serve":
        return run_serve(args)
    if args.command in ("client", "mic", "ncnn-meta", "quantize", "bulk", "convert"):
        code: int = args.func(args)
        return code
    raise AssertionError(args.command)


def _add_healthcheck(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    h = sub.add_parser(
        "healthcheck",
        help="exit 0 when a local server answers /healthz (the container's HEALTHCHECK)",
    )
    h.add_argument("--port", type=int, default=6006, help="the server's port")
    h.add_argument("--host", default="127.0.0.1", help="the server's address")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    h.add_argument("--path", default="/healthz", help="/healthz (alive) or /readyz (takes streams)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args)
    except AsrServeError as exc:
        print(f"asrserve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
