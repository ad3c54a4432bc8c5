"""The model options that every subcommand which loads a model shares
(``transcribe``, ``serve``, ``mic``, ``bulk``): their arguments, the
:class:`~asrserve.config.DecodingConfig` they make, and the checked load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asrserve.backends.base import PROVIDERS
from asrserve.config import DecodingConfig, normalize_method

if TYPE_CHECKING:
    from asrserve.core.interfaces import AnyRecognizer


def add_model_args(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The options that load a model; ``many``: ``--model`` repeats (``serve``)."""
    if many:
        p.add_argument(
            "--model",
            action="append",
            default=None,
            metavar="[NAME=]DIR",
            help="a model directory or catalog name, optionally named (NAME=DIR; else the "
            "directory's or catalog name); repeat to serve several, the first is the default "
            "(default: demo)",
        )
    else:
        p.add_argument(
            "--model", default=None, help="model directory or catalog name (default: demo)"
        )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16", "int8", "int8-dynamic", "int8-static"],
        help="which model files to load; auto: int8 where present, else fp32 "
        "(int8-dynamic/int8-static: NeMo export folders)",
    )
    p.add_argument("--num-threads", type=int, default=1, help="inference threads per model run")
    p.add_argument(
        "--provider",
        default="cpu",
        choices=PROVIDERS,
        help="onnxruntime execution provider",
    )
    p.add_argument(
        "--decoding",
        default="greedy",
        choices=["greedy", "beam"],
        help="search: greedy, or modified beam search (needed for --hotword)",
    )
    p.add_argument("--beam", type=int, default=4, help="active paths of beam search")
    p.add_argument(
        "--blank-penalty",
        type=float,
        default=0.0,
        help="subtracted from the blank logit: higher values drop fewer words",
    )
    p.add_argument(
        "--temperature-scale",
        type=float,
        default=2.0,
        help="divides the joiner logits for the per-token confidences (ys_probs) only, "
        "as sherpa-onnx's option",
    )
    p.add_argument(
        "--hotword",
        action="append",
        default=[],
        metavar="PHRASE",
        help="boost a phrase in beam search ('PHRASE :score' sets its own score); repeatable",
    )
    p.add_argument(
        "--language",
        default=None,
        metavar="CODE",
        help="Whisper: the spoken language (en, de, ...); default: detected per segment "
        "(multilingual models), en (English-only models)",
    )
    p.add_argument(
        "--task",
        default=None,
        choices=["transcribe", "translate"],
        help="Whisper: transcribe, or translate into English (multilingual models) "
        "(default: transcribe)",
    )
    p.add_argument(
        "--timestamps",
        action="store_const",
        const=True,
        default=None,
        help="Whisper: decode with its timestamp tokens (token times from the phrase "
        "bounds they give; tokens differ a little from decoding without them)",
    )
    p.add_argument(
        "--hotwords-score",
        type=float,
        default=1.5,
        help="score bonus per token of a --hotword phrase without its own score",
    )


def decoding_config(args: argparse.Namespace) -> DecodingConfig:
    return DecodingConfig(
        method=normalize_method(args.decoding),
        beam=args.beam,
        blank_penalty=args.blank_penalty,
        temperature_scale=args.temperature_scale,
        hotwords=tuple(args.hotword),
        hotwords_score=args.hotwords_score,
    ).validate()


DEMO_NOTICE = (
    "asrserve: note: using the built-in demo model ({name}), trained on synthetic speech only: "
    "it shows the plumbing works, real speech comes out as nonsense. For a real model: "
    "`asrserve models list`, `asrserve models pull NAME`, then --model NAME"
)


def warn_if_demo_model(model: str | None) -> None:
    """One line on stderr when ``model`` means the built-in demo model."""
    import asrserve

    if (
        model is None
        or model == asrserve.DEFAULT_MODEL
        or (
            Path(model).is_dir() and Path(model).resolve() == asrserve.builtin_model_dir().resolve()
        )
    ):
        print(DEMO_NOTICE.format(name=asrserve.DEFAULT_MODEL), file=sys.stderr)


def load_from_args(args: argparse.Namespace, **options: Any) -> AnyRecognizer:
    """The model of the model options, checked (its files must belong together);
    ``options`` go to :func:`asrserve.load_model`."""
    import asrserve
    from asrserve.core.selfcheck import check_model

    warn_if_demo_model(args.model)
    recognizer = asrserve.load_model(
        args.model,
        provider=args.provider,
        num_threads=args.num_threads,
        precision=args.precision,
        decoding=decoding_config(args),
        language=args.language,
        task=args.task,
        timestamps=args.timestamps,
        **options,
    )
    check_model(recognizer)
    return recognizer
