"""The ``asrserve bulk`` subcommand: arguments → :func:`run_bulk` → a summary.

Exit status: 0 every input has a result, 1 some inputs failed (their lines carry
the error; rerun to retry them), 2 a usage error (bad INPUT, model, options).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from asrserve.config import DEFAULT_MAX_STREAMS, SPLIT_MODES, SplitConfig
from asrserve.model_args import add_model_args, decoding_config, warn_if_demo_model

EXIT_OK, EXIT_FAILED_INPUT = 0, 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bulk",
        help="transcribe many files into a JSONL file (resumable; process pool or Ray)",
        description=(
            "Transcribe every input of INPUT into one JSON line each in --out. Rerunning "
            "skips the ids already there without an error and retries the others. INPUT: "
            "a directory (audio files, recursive), a glob, a text file of paths or file:// "
            'URIs (or ID<TAB>AUDIO lines), or a JSONL manifest of {"audio": ..., "id": ...}.'
        ),
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help="a directory, a glob, a list of paths or URIs, or a JSONL manifest",
    )
    add_model_args(p)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="RESULTS.jsonl",
        help="results, one JSON line per input; ids already there are skipped",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: a process pool on this machine; ray: Ray actors",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes or Ray actors (default: local cores; the Ray cluster's CPUs "
        "/ --num-threads)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="'auto' joins the local machine's cluster, 'ray://HOST:10001' a remote one "
        "(default: start a Ray for this run)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="inputs each worker decodes together, as one batch of streams whose encoder runs "
        "once per chunk for all of them (1: one after another)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="inputs (or pieces of split ones) per worker call; fewer when there are too few "
        "to keep every worker busy (default: 2 x --batch)",
    )
    p.add_argument(
        "--isolate-batches",
        action="store_true",
        help="with int8 models that scale activations per batch, run each input's encoder "
        "chunk alone, so a result never depends on the inputs decoded beside it (slower)",
    )
    p.add_argument(
        "--split",
        default="auto",
        choices=SPLIT_MODES,
        help="long files: cut at pauses found by Silero VAD ('vad'), at fixed windows "
        "('fixed'), or not at all ('none'); 'auto': vad when silero_vad.onnx is found, "
        "else fixed",
    )
    d = SplitConfig()
    p.add_argument(
        "--split-min-s", type=float, default=d.min_duration_s, help="split files longer than this"
    )
    p.add_argument("--window-s", type=float, default=d.window_s, help="target piece length")
    p.add_argument(
        "--overlap-s",
        type=float,
        default=d.overlap_s,
        help="context decoded on each side of a piece (its words are dropped)",
    )
    p.add_argument(
        "--vad-model",
        default=None,
        help="silero_vad.onnx (default: the model folder, $ASRSERVE_VAD_MODEL, models/silero-vad/)",
    )
    p.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        help="also write the summary here as JSON (default: printed only)",
    )
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument(
        "--endpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="split each transcript into segments at pauses, as 'transcribe --endpointing' "
        "(each line's 'segments' lists them)",
    )
    p.set_defaults(func=run_bulk_command)


def split_config(args: argparse.Namespace) -> SplitConfig:
    """The split options, ``auto`` resolved to ``vad`` or ``fixed``."""
    import logging

    from asrserve.errors import AsrServeError
    from asrserve.vad import find_vad_model

    mode = args.split
    vad_model: str | None = None
    if mode in ("auto", "vad"):
        model_dir: Path | None = None
        if args.model is not None and Path(args.model).is_dir():
            model_dir = Path(args.model)
        try:
            vad_model = str(find_vad_model(args.vad_model, model_dir).resolve())
        except AsrServeError:
            if mode == "vad":
                raise
            logging.getLogger("asrserve.bulk").info("no Silero VAD model: fixed windows")
        if mode == "auto":
            mode = "vad" if vad_model else "fixed"
    return SplitConfig(
        mode=mode,
        min_duration_s=args.split_min_s,
        window_s=args.window_s,
        overlap_s=args.overlap_s,
        vad_model=vad_model,
    ).validate()


def run_bulk_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from asrserve.bulk.engines import Engine
    from asrserve.errors import ConfigError

    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {args.batch}")
    from asrserve.bulk.manifest import read_inputs
    from asrserve.bulk.runner import run_bulk
    from asrserve.bulk.worker import ModelSpec

    out = out or sys.stdout
    items = read_inputs(args.input)
    split = split_config(args)
    warn_if_demo_model(None if args.model is None else str(args.model))
    spec = ModelSpec(
        model=None if args.model is None else str(args.model),
        provider=args.provider,
        num_threads=args.num_threads,
        precision=args.precision,
        decoding=decoding_config(args),
        endpointing=args.endpointing,
        max_streams=args.batch,
        isolate_batches=args.isolate_batches,
        language=args.language,
        task=args.task,
        timestamps=args.timestamps,
    )
    if args.engine == "ray":
        from asrserve.bulk.engines.ray_engine import RayEngine, import_ray

        import_ray()  # a clear error before anything starts
        engine: Engine = RayEngine(
            spec, split, args.workers, address=args.ray_address, batch_size=args.batch_size
        )
    else:
        from asrserve.bulk.engines.local import LocalEngine

        engine = LocalEngine(spec, split, args.workers, batch_size=args.batch_size)
    summary = run_bulk(items, args.out, engine, split, progress=not args.no_progress)
    out.write(f"asrserve bulk: {summary.format()}\n")
    out.write(f"results: {args.out}\n")
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return EXIT_FAILED_INPUT if summary.failed else EXIT_OK
