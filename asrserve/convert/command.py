"""The ``asrserve convert`` subcommand: ``convert whisper CT2_DIR --out DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run_convert"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a foreign checkpoint into a model directory asrserve serves",
        description="Convert a model from another runtime's format into ONNX files asrserve "
        "(and sherpa-onnx) load. Needs the 'onnx' package (pip install 'asrserve[convert]').",
    )
    kinds = p.add_subparsers(dest="convert_kind", required=True, metavar="KIND")
    w = kinds.add_parser(
        "whisper",
        help="CTranslate2 Whisper (faster-whisper's model.bin) to sherpa-onnx's Whisper layout",
        description="Read a CTranslate2 Whisper directory (model.bin or model.bin.part1..N, "
        "config.json, vocabulary.txt/.json) and write NAME-encoder.onnx, NAME-decoder.onnx and "
        "NAME-tokens.txt as sherpa-onnx's export names them; --precision int8 adds "
        "NAME-*.int8.onnx (onnxruntime dynamic quantization of the MatMul weights), fp16 adds "
        "NAME-*.fp16.onnx (float32 inputs and outputs). Load the result with "
        "'asrserve transcribe --model OUT'.",
    )
    w.add_argument("ct2_dir", type=Path, metavar="CT2_DIR", help="the CTranslate2 model directory")
    w.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the files go")
    w.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="also write graphs of this precision beside the fp32 ones",
    )
    w.add_argument(
        "--name",
        default=None,
        help="file name prefix and model_type suffix (default: from the model's size, "
        "e.g. tiny.en, base, large-v3)",
    )
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from asrserve.convert.whisper_ct2 import convert_whisper

    logging.getLogger("asrserve").setLevel(logging.INFO)  # a line per file written
    done = convert_whisper(args.ct2_dir, args.out, precision=args.precision, name=args.name)
    for path in sorted(done.encoder.parent.glob(f"{done.name}-*")):
        print(path, file=sys.stdout)
    return 0
