"""``asrserve quantize``: convert a model directory, measure it, gate it.

The converted model is written to a temporary folder beside ``out``, measured
against the fp32 model it came from, then moved to ``out`` — or, when the
WER gate fails, to ``out/rejected`` (so nothing loadable sits at ``out``).

Streaming transducers (ONNX, ncnn) and Whisper (sherpa-onnx's layout) are
converted; :mod:`asrserve.quantize.graphs` names the files. Whisper's encoder
and decoder are both converted; its WER is scored on plain words
(:func:`~asrserve.quantize.evaluation.plain_words`), as it punctuates.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asrserve.core.interfaces import AnyRecognizer
from asrserve.core.recognizer import Recognizer
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.quantize.calibration import CalibrationSet, audio_files, record_feeds
from asrserve.quantize.evaluation import (
    Comparison,
    EvalItem,
    compare,
    output_cosine,
    plain_words,
    read_eval_list,
)
from asrserve.quantize.graphs import GraphSet, find_graphs
from asrserve.quantize.onnx_modes import MODES

NCNN_MODES = ("int8-static",)
REPORT_NAME = "quantize-report.json"
MAX_FEEDS = 512
"""Calibration feeds kept per graph (transducers)."""
WHISPER_MAX_FEEDS = {"encoder": 32, "decoder": 64}
"""Whisper's: a decoder feed holds the self-attention caches and shares its
segment's cross-attention keys and values (tiny.en: 5.5 MB + up to 18 MB)."""
_PROBE_FEEDS: dict[str, int | dict[str, int]] = {
    "transducer": 256,
    "whisper": {"encoder": 8, "decoder": 32},
}
"""Feeds per graph the report's output cosine is measured on."""


@dataclass
class QuantizeOptions:
    mode: str
    calib: list[Path] = field(default_factory=list)
    """Calibration audio files or folders."""
    eval_list: Path | None = None
    max_wer_increase: float | None = None
    exclude: list[str] = field(default_factory=list)
    method: str = "minmax"
    per_channel: bool | None = None
    """Per-output-channel weight scales; default: on for static modes, off for dynamic."""
    alpha: float = 0.5
    op_types: list[str] = field(default_factory=lambda: ["MatMul", "Gemm"])
    include_decoder: bool = False
    exclude_front_end: bool = True
    max_feeds: int | None = None
    """Calibration feeds kept per graph (``None``: :data:`MAX_FEEDS`, for
    Whisper :data:`WHISPER_MAX_FEEDS`)."""
    num_threads: int = 1
    overwrite: bool = False
    progress: bool = False

    def validate(self) -> QuantizeOptions:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.max_feeds is not None and self.max_feeds < 1:
            raise ConfigError("--max-calib-feeds must be at least 1")
        return self


@dataclass
class QuantizeResult:
    report: dict[str, Any]
    accepted: bool
    model_dir: Path


def _split_audio(
    calib: list[Path], eval_items: list[EvalItem] | None
) -> tuple[list[Path], list[EvalItem]]:
    """Calibration files and the held-out set the report measures on.

    With an eval list, all calibration audio calibrates; without one, the
    last fifth of the calibration files (at least one) is held out, unless
    there is only one file."""
    if eval_items is not None:
        return calib, eval_items
    if len(calib) < 2:
        return calib, [EvalItem(p, None) for p in calib]
    held = max(1, len(calib) // 5)
    return calib[:-held], [EvalItem(p, None) for p in calib[-held:]]


def _keep_float(graphs: GraphSet, model: Any, opts: QuantizeOptions) -> list[str]:
    """Nodes a family keeps in float beyond ``--exclude`` (exact names).

    Whisper: every MatMul without a constant second input: the attention
    products (activation by activation; static int8 of them cost the encoder's
    output most of its fidelity, and dynamic int8 leaves them float anyway) and
    the logits (``embedding @ x.T``: the embedding also feeds the token Gather,
    and a per-tensor int8 copy of it would serve both), and, unless
    ``--keep-front-end``, the encoder's convolutions."""
    if graphs.kind != "whisper":
        return []
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    keep = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in consts]
    if opts.exclude_front_end:
        keep += [n.name for n in model.graph.node if n.op_type == "Conv"]
    return keep


def _convert_onnx(
    graphs: GraphSet, work: Path, opts: QuantizeOptions, calib: CalibrationSet | None
) -> dict[str, Any]:
    from asrserve.quantize import onnx_modes
    from asrserve.quantize.smoothquant import smooth_model

    details: dict[str, Any] = {"excluded": {}, "smoothquant": {}}
    suffix = ".fp16.onnx" if opts.mode == "fp16" else ".int8.onnx"
    whisper = graphs.kind == "whisper"
    for role, src in graphs.paths.items():
        if role == "decoder" and not whisper and opts.mode != "fp16" and not opts.include_decoder:
            # small, and sensitive: kept fp32
            shutil.copy2(src, work / graphs.output_name(role, ".onnx"))
            continue
        dst = work / graphs.output_name(role, suffix)
        if opts.mode == "fp16":
            details["excluded"][role] = onnx_modes.to_fp16(src, dst, exclude=opts.exclude)
            continue
        model: Any = onnx_modes.load_fp32(src)
        keep = _keep_float(graphs, model, opts)
        if opts.mode == "int8-dynamic":
            details["excluded"][role] = onnx_modes.int8_dynamic(
                model,
                dst,
                op_types=opts.op_types,
                per_channel=bool(opts.per_channel),
                exclude=opts.exclude,
                keep_float=keep,
                name=src.name,
            )
            continue
        assert calib is not None
        feeds = calib.feeds[role]
        if opts.mode == "int8-smoothquant":
            # Whisper: nodes kept float are left unsmoothed (no Mul in front of them)
            model, summary = smooth_model(model, feeds, alpha=opts.alpha, exclude=keep)
            details["smoothquant"][role] = asdict(summary)
        details["excluded"][role] = onnx_modes.int8_static(
            model,
            dst,
            feeds,
            method=opts.method,
            op_types=opts.op_types,
            per_channel=opts.per_channel is not False,
            exclude=opts.exclude,
            keep_float=keep,
            exclude_front_end=opts.exclude_front_end and not whisper,
            # Whisper: only MatMul inputs are quantized. A quantized output is
            # rounded on the scale of its largest value: the encoder's last MLP
            # reaches ~300 on long windows, and rounding its every output on that
            # scale cost the encoder's output most of its fidelity (cosine 0.90)
            float_outputs=whisper,
            progress=opts.progress,
            name=src.name,
        )
    return details


def _convert_ncnn(
    graphs: GraphSet, work: Path, opts: QuantizeOptions, calib: CalibrationSet
) -> dict[str, Any]:
    from asrserve.quantize.ncnn_int8 import quantize_ncnn_int8

    summary = quantize_ncnn_int8(
        graphs.model_dir, work, calib, exclude=opts.exclude, progress=opts.progress
    )
    return {
        "excluded": {role: net.kept_float for role, net in summary.nets.items()},
        "ncnn_int8": {
            role: {"quantized": net.quantized, "bottom_scales": net.bottom_scales}
            for role, net in summary.nets.items()
        },
    }


def _feed_limit(graphs: GraphSet, opts: QuantizeOptions) -> int | dict[str, int]:
    if opts.max_feeds is not None:
        return opts.max_feeds
    return dict(WHISPER_MAX_FEEDS) if graphs.kind == "whisper" else MAX_FEEDS


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise ConfigError(f"{out}: not empty; pass --overwrite or choose another --out")


def quantize_model(model_dir: Path, out: Path, options: QuantizeOptions) -> QuantizeResult:
    """Convert ``model_dir``'s fp32 model as ``options`` say; see the module doc."""
    import asrserve

    opts = options.validate()
    _prepare_out(out, opts.overwrite)
    graphs = find_graphs(model_dir, "fp32")
    ncnn = graphs.backend == "ncnn"
    if ncnn and opts.mode not in NCNN_MODES:
        raise ConfigError(
            f"{model_dir}: an ncnn model; ncnn quantization is --to int8-static "
            "(KL-calibrated ncnn int8); ncnn already stores weights as fp16 by default"
        )
    if opts.max_wer_increase is not None and not (opts.eval_list or opts.calib):
        raise ConfigError("--max-wer-increase needs audio to measure on: pass --eval or --calib")
    eval_items = read_eval_list(opts.eval_list) if opts.eval_list else None
    calib_audio, held_out = _split_audio(audio_files(opts.calib), eval_items)
    needs_calib = opts.mode in ("int8-static", "int8-smoothquant")
    if needs_calib and not calib_audio:
        raise ConfigError(f"--to {opts.mode} needs calibration audio (--calib FILE_OR_DIR ...)")

    reference = _checked(
        asrserve.load_model(model_dir, precision="fp32", num_threads=opts.num_threads), model_dir
    )
    calib = (
        record_feeds(
            reference,
            calib_audio,
            max_feeds=_feed_limit(graphs, opts),
            progress=opts.progress,
            copy=graphs.kind != "whisper",  # Whisper's feeds are never changed after a run
        )
        if needs_calib
        else None
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = _work_dir(out)
    try:
        for side in graphs.side_files:
            shutil.copy2(side, work / side.name)
        if ncnn:
            assert calib is not None
            details = _convert_ncnn(graphs, work, opts, calib)
        else:
            details = _convert_onnx(graphs, work, opts, calib)
        report = _measure(reference, graphs, work, opts, held_out, details)
        report["calibration"] = (
            {
                "files": calib.files,
                "seconds": round(calib.seconds, 2),
                "feeds": {k: len(v) for k, v in calib.feeds.items()},
            }
            if calib is not None
            else None
        )
        increase = report["eval"]["wer_increase"] if report.get("eval") else None
        accepted = opts.max_wer_increase is None or (
            increase is not None and increase <= opts.max_wer_increase
        )
        report["gate"] = {
            "max_wer_increase": opts.max_wer_increase,
            "wer_increase": increase,
            "accepted": accepted,
        }
        final = out if accepted else out / "rejected"
        report["output"] = str(final)
        (work / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        if accepted and out.exists():
            shutil.rmtree(out)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work), str(final))
    finally:
        if work.exists():
            shutil.rmtree(work)
    return QuantizeResult(report, accepted, final)


def _work_dir(out: Path) -> Path:
    """A new empty folder beside ``out``, renamed to the output at the end.

    Made with ``mkdir`` (the umask's ordinary mode, e.g. 0755), not
    ``tempfile.mkdtemp`` (always 0700): the rename keeps the mode, and a model
    folder only its creator can read is unusable by a container's user."""
    for _ in range(100):
        work = out.parent / f".{out.name}.{secrets.token_hex(4)}"
        try:
            work.mkdir()
        except FileExistsError:
            continue
        return work
    raise FileExistsError(f"no free temporary folder name beside {out}")


def _measure(
    reference: AnyRecognizer,
    graphs: GraphSet,
    work: Path,
    opts: QuantizeOptions,
    held_out: Sequence[EvalItem],
    details: dict[str, Any],
) -> dict[str, Any]:
    import asrserve

    try:
        candidate = _checked(asrserve.load_model(work, num_threads=opts.num_threads), work)
    except ModelLoadError as exc:
        raise ModelLoadError(f"the converted model does not load: {exc}") from exc
    new = find_graphs(work)
    roles = graphs.roles
    report: dict[str, Any] = {
        "mode": opts.mode,
        "kind": graphs.kind,
        "source": str(graphs.model_dir),
        "backend": graphs.backend,
        "options": {
            "method": opts.method if opts.mode in ("int8-static", "int8-smoothquant") else None,
            "per_channel": opts.per_channel,
            "alpha": opts.alpha if opts.mode == "int8-smoothquant" else None,
            "op_types": opts.op_types,
            "exclude": opts.exclude,
            "float_outputs": graphs.kind == "whisper"
            and opts.mode in ("int8-static", "int8-smoothquant"),
        },
        "files": {r: new.paths[r].name for r in roles},
        "sizes": {r: {"source": graphs.size(r), "converted": new.size(r)} for r in roles},
        **details,
    }
    if not held_out:
        report["cosine"], report["eval"] = None, None
        return report
    whisper = graphs.kind == "whisper"
    probe = record_feeds(
        reference,
        [i.audio for i in held_out],
        max_feeds=_PROBE_FEEDS[graphs.kind],
        seed=1,
        copy=not whisper,
    )
    report["cosine"] = output_cosine(reference, candidate, probe.feeds)
    del probe
    result: Comparison = compare(
        reference, candidate, held_out, normalize=plain_words if whisper else None
    )
    report["eval"] = {
        **asdict(result),
        "wer_increase": result.wer_increase,
        "references": result.wer_reference is not None,
    }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The printed table."""
    lines = [f"asrserve quantize --to {report['mode']}: {report['output']}"]
    roles = list(report["files"])
    width = max(len(name) for name in report["files"].values())
    lines.append(
        f"{'graph':<8} {'file':<{width}} {'src MB':>8} {'new MB':>8} {'ratio':>6}  "
        "cosine mean / min"
    )
    cos = report.get("cosine") or {}
    total_before = total_after = 0
    for role in roles:
        size = report["sizes"][role]
        total_before += size["source"]
        total_after += size["converted"]
        c = cos.get(role)
        sim = f"{c['mean']:.5f} / {c['min']:.5f}" if c else "-"
        lines.append(
            f"{role:<8} {report['files'][role]:<{width}} {size['source'] / 1e6:>8.2f} "
            f"{size['converted'] / 1e6:>8.2f} {size['converted'] / size['source']:>6.2f}  {sim}"
        )
    lines.append(
        f"{'total':<8} {'':<{width}} {total_before / 1e6:>8.2f} {total_after / 1e6:>8.2f} "
        f"{total_after / total_before:>6.2f}"
    )
    ev = report.get("eval")
    if ev:
        if ev["references"]:
            lines.append(
                f"WER on {ev['files']} files: fp32 {ev['wer_reference']:.2f}%  "
                f"{report['mode']} {ev['wer_candidate']:.2f}%  ({ev['wer_increase']:+.2f} points)"
            )
        lines.append(f"WER against the fp32 transcripts: {ev['wer_vs_fp32']:.2f}%")
        lines.append(
            f"decode time {report['mode']} / fp32: {ev['speed_ratio']:.2f} "
            f"({ev['seconds_candidate']:.2f} s vs {ev['seconds_fp32']:.2f} s, best of 2)"
        )
    else:
        lines.append("no audio given: pass --eval or --calib to measure accuracy and speed")
    gate = report["gate"]
    if gate["max_wer_increase"] is not None:
        verdict = "passed" if gate["accepted"] else "FAILED: model written to rejected/"
        lines.append(
            f"gate: WER increase {gate['wer_increase']:+.2f} <= {gate['max_wer_increase']} points: "
            f"{verdict}"
        )
    return "\n".join(lines)


def _checked(recognizer: AnyRecognizer, model_dir: Path) -> AnyRecognizer:
    """The recognizer calibration and evaluation drive: a streaming transducer's
    or Whisper's."""
    from asrserve.families.whisper import WhisperRecognizer

    if not isinstance(recognizer, Recognizer | WhisperRecognizer):
        raise ModelLoadError(
            f"{model_dir}: quantize works on streaming transducer and Whisper models; "
            f"{recognizer.model.family} is not one"
        )
    return recognizer
