"""The ``asrserve quantize`` subcommand: arguments → :func:`quantize_model`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asrserve.quantize.onnx_modes import CALIBRATION_METHODS, MODES, QUANTIZABLE_OPS

EXIT_GATE_FAILED = 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "quantize",
        help="convert an fp32 model to fp16 or int8 and report what it cost",
        description=(
            "Convert the fp32 model in MODEL_DIR and measure the result against it "
            "(sizes, output cosine, WER, decode speed). Streaming transducers (ONNX: every "
            "mode; ncnn: int8-static) and Whisper in sherpa-onnx's layout (encoder and decoder, "
            "written as NAME-encoder.int8.onnx / .fp16.onnx ...; WER on plain words). "
            f"Exit status {EXIT_GATE_FAILED} when --max-wer-increase is exceeded "
            "(the model is then written to OUT/rejected)."
        ),
    )
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="the fp32 model to convert")
    p.add_argument("--to", dest="mode", required=True, choices=MODES, help="target precision")
    p.add_argument(
        "--out", type=Path, required=True, metavar="OUT_DIR", help="where the new model goes"
    )
    p.add_argument(
        "--calib",
        nargs="+",
        type=Path,
        default=[],
        metavar="AUDIO",
        help="calibration audio files or folders, streamed through the fp32 model "
        "(int8-static and smoothquant need them)",
    )
    p.add_argument(
        "--eval",
        dest="eval_list",
        type=Path,
        default=None,
        metavar="LIST",
        help="lines 'AUDIO TEXT' (AUDIO: a path or an id with ID.wav beside the list) "
        "(default: no WER against references)",
    )
    p.add_argument(
        "--max-wer-increase",
        type=float,
        default=None,
        metavar="POINTS",
        help="fail when WER rises by more than this many points (without --eval: "
        "WER against the fp32 transcripts of held-out calibration audio) (default: no gate)",
    )
    p.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="NODE_PATTERN",
        help="node (ncnn: layer) names to keep in float, fnmatch patterns",
    )
    p.add_argument(
        "--method",
        default="minmax",
        choices=CALIBRATION_METHODS,
        help="how calibration turns activation ranges into scales",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    chan = p.add_mutually_exclusive_group()
    chan.add_argument(
        "--per-channel",
        dest="per_channel",
        action="store_true",
        default=None,
        help="weight scales per output channel (default: the mode's choice)",
    )
    chan.add_argument(
        "--per-tensor",
        dest="per_channel",
        action="store_false",
        help="one weight scale per tensor",
    )
    p.add_argument(
        "--op-types",
        default="MatMul,Gemm",
        help=f"ONNX ops to quantize, comma-separated, from {','.join(QUANTIZABLE_OPS)}",
    )
    p.add_argument(
        "--include-decoder",
        action="store_true",
        help="transducers: quantize the decoder too (Whisper's decoder always is)",
    )
    p.add_argument(
        "--keep-front-end",
        action="store_true",
        help="quantize the convolutional subsampling front-end too (excluded by default; "
        "Whisper: the encoder's two convolutions)",
    )
    p.add_argument(
        "--max-calib-feeds",
        type=int,
        default=None,
        help="feeds kept per graph (default: 512; Whisper: 32 encoder windows, "
        "64 decoder steps, as a decoder step's feed holds its caches)",
    )
    p.add_argument(
        "--num-threads", type=int, default=1, help="inference threads for calibration and eval"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.set_defaults(func=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from asrserve.quantize.pipeline import QuantizeOptions, format_report, quantize_model

    options = QuantizeOptions(
        mode=args.mode,
        calib=list(args.calib),
        eval_list=args.eval_list,
        max_wer_increase=args.max_wer_increase,
        exclude=list(args.exclude),
        method=args.method,
        per_channel=args.per_channel,
        alpha=args.alpha,
        op_types=[o.strip() for o in args.op_types.split(",") if o.strip()],
        include_decoder=args.include_decoder,
        exclude_front_end=not args.keep_front_end,
        max_feeds=args.max_calib_feeds,
        num_threads=args.num_threads,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    result = quantize_model(args.model_dir, args.out, options)
    print(format_report(result.report))
    return 0 if result.accepted else EXIT_GATE_FAILED
