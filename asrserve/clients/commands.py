"""The ``client`` and ``mic`` subcommands.

``add_parsers`` adds both to the ``asrserve`` parser; each sets ``func`` to
its ``run_*`` function, which returns the exit code: 0 ok, 1 a runtime
failure (server, device, input), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from asrserve.errors import AsrServeError, ConfigError
from asrserve.model_args import add_model_args, load_from_args

DEFAULT_URL = "ws://127.0.0.1:6006"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _device(value: str) -> int | str:
    """A PortAudio device index, or a name substring."""
    return int(value) if value.isdigit() else value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``client`` and ``mic`` to the subcommands of the ``asrserve`` parser."""
    c = sub.add_parser("client", help="stream audio files to an asrserve server")
    c.add_argument("files", nargs="+", metavar="FILE", help="audio files to stream")
    c.add_argument("--url", default=DEFAULT_URL, help="server address")
    pace = c.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="send at audio speed (the default)",
    )
    pace.add_argument("--fast", dest="realtime", action="store_false", help="send at full speed")
    c.add_argument("--concurrency", type=_positive_int, default=1, help="files streamed at once")
    c.add_argument(
        "--format",
        default="text",
        choices=["text", "json"],
        help="text: finals as 'FILE: TEXT' as they come; json: one object per file, input order",
    )
    c.add_argument(
        "--audio-format",
        default="s16le",
        choices=["s16le", "f32le"],
        help="sample format of the frames sent",
    )
    c.add_argument(
        "--decoding",
        default=None,
        choices=["greedy", "beam"],
        help="search to ask for (default: the server's)",
    )
    c.add_argument(
        "--beam",
        type=int,
        default=None,
        help="active paths, with --decoding beam (default: the server's)",
    )
    c.add_argument(
        "--hotword",
        action="append",
        default=[],
        metavar="PHRASE",
        help="phrase to boost in beam search ('PHRASE :score'); repeatable",
    )
    c.add_argument(
        "--endpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="split results at pauses (default: the server's setting)",
    )
    c.set_defaults(func=run_client)

    m = sub.add_parser("mic", help="transcribe the microphone live, locally or via a server")
    m.add_argument(
        "--url",
        default=None,
        help="stream to this server instead of a local model (default: a local model)",
    )
    add_model_args(m)
    m.add_argument(
        "--device",
        type=_device,
        default=None,
        help="input device index or name (default: the system's default input)",
    )
    m.add_argument("--list-devices", action="store_true", help="show audio devices and exit")
    m.add_argument(
        "--sample-rate", type=_positive_int, default=16000, help="rate to record at (Hz)"
    )
    m.set_defaults(func=run_mic)


def _session_options(args: argparse.Namespace) -> dict[str, Any]:
    """``stream_to_server`` options from the decoding flags; unset ones are omitted."""
    from asrserve.config import normalize_method

    decoding: dict[str, Any] | None = None
    if args.decoding is not None:
        decoding = {"method": normalize_method(args.decoding)}
        if decoding["method"] == "modified_beam" and args.beam is not None:
            decoding["beam"] = args.beam
    return {"decoding": decoding, "hotwords": args.hotword or None}


def _fail(exc: AsrServeError) -> int:
    print(f"asrserve: error: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


def run_client(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``asrserve client``: stream files to a server and print what it recognises."""
    from asrserve.clients.mic import LiveDisplay
    from asrserve.clients.ws_client import Message, transcribe_files

    out = out or sys.stdout
    display = LiveDisplay(out)

    def show(path: str, msg: Message) -> None:
        if args.format == "text":
            display.show(msg, prefix=f"{path}: ")

    import asyncio

    try:
        results = asyncio.run(
            transcribe_files(
                args.url,
                args.files,
                realtime=args.realtime,
                concurrency=args.concurrency,
                on_message=show,
                format=args.audio_format,
                endpointing=args.endpointing,
                **_session_options(args),
            )
        )
    except AsrServeError as exc:
        return _fail(exc)
    display.clear()
    failed = 0
    for r in results:
        if r.error is not None:
            print(f"asrserve: error: {r.path}: {r.error}", file=sys.stderr)
            failed += 1
        elif args.format == "json":
            out.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    out.flush()
    return EXIT_FAILED if failed else EXIT_OK


def run_mic(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``asrserve mic``: live transcription until Ctrl-C."""
    import asyncio

    from asrserve.clients.mic import (
        LiveDisplay,
        stop_on_interrupt,
        transcribe_local,
        transcribe_remote,
    )
    from asrserve.clients.sources import MicrophoneSource, list_devices

    out = out or sys.stdout
    try:
        if args.list_devices:
            out.write(list_devices() + "\n")
            return EXIT_OK
        source = MicrophoneSource(args.device, sample_rate=args.sample_rate)
        display = LiveDisplay(out)
        if args.url is None:
            work = transcribe_local(_load_endpointing(args), source, display)
            where = "a local model"
        else:
            options = _session_options(args)
            work = transcribe_remote(args.url, source, display, endpointing=True, **options)
            where = args.url
        print(f"listening on {source.device_name!r} with {where}; Ctrl-C stops", file=sys.stderr)
        asyncio.run(stop_on_interrupt(source, work))
    except AsrServeError as exc:
        return _fail(exc)
    return EXIT_OK


def _load_endpointing(args: argparse.Namespace) -> Any:
    """The model of ``--model`` etc., with endpointing on so results come per utterance."""
    import asrserve

    return load_from_args(args, endpoint=asrserve.EndpointConfig(enabled=True))
