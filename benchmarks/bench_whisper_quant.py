"""Whisper quantization on real speech, short clips and long-form: does int8 lose
accuracy on long audio, and does SmoothQuant win it back?

The claim comes from the Parakeet TDT SmoothQuant model card
(../shared/reference/004_*.txt): fully dynamic per-tensor int8 degrades once
one encoder pass runs past 20-30 s; SmoothQuant + static per-channel int8
tracks fp16. Whisper's encoder never sees more than a 30 s window (asrserve
cuts VAD segments at 29 s), so here "long-form" means minutes of speech
decoded as a stream of near-full windows, against the same speech decoded
clip by clip (short windows).

Model: Whisper tiny.en from PyPI converted into the tests' cache
(tests/whisper_models.py), or ``--model DIR`` (an fp32 converted directory,
e.g. base). Speech: JFK and pocketsphinx-testdata's LibriVox and card-game
clips with their transcripts, in two folds so that no model is scored on
audio it was calibrated on: A calibrates on LibriVox and is scored on JFK +
cards, B the other way round. Long-form audio per fold: its scored clips
joined with 0.6 s pauses, in shuffled orders (seeded), repeated to
``--minutes``; WER on plain words (``plain_words``), pooled over the folds.

Every model is written by ``asrserve quantize`` (Python API): fp16 and
int8-dynamic once, int8-static and int8-smoothquant once per fold (their
calibration audio), into ``--work`` (kept; ``--reuse`` skips existing ones).
``--calib-long`` calibrates on a long-form file made of the fold's calibration
clips instead (near-full windows, as the long-form test decodes), to tell
calibration that never saw a long window from the quantization itself.

    python benchmarks/bench_whisper_quant.py
    python benchmarks/bench_whisper_quant.py --model DIR --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asrserve.quantize.evaluation import plain_words  # noqa: E402
from asrserve.scoring import word_errors  # noqa: E402

MODES = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8-smoothquant")
CALIBRATED = ("int8-static", "int8-smoothquant")
GAP_S = 0.6
RATE = 16000


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str
    audio: np.ndarray


@dataclass(frozen=True)
class Fold:
    name: str
    calib: list[Path]
    scored: list[Clip]
    long_audio: np.ndarray
    long_text: str


def load_clips() -> tuple[list[Clip], list[Clip]]:
    """(LibriVox clips, JFK + card clips), each with its reference."""
    from tests.whisper_models import JFK, JFK_TEXT, pocketsphinx_clips

    def read(path: Path, text: str) -> Clip:
        x, sr = sf.read(str(path), dtype="float32")
        assert sr == RATE, path
        return Clip(path, text, np.asarray(x, np.float32))

    ps = pocketsphinx_clips()
    librivox = [read(c.path, c.text) for c in ps if "librivox" in str(c.path)]
    others = [read(JFK, JFK_TEXT), *(read(c.path, c.text) for c in ps if "cards" in str(c.path))]
    return librivox, others


def long_form(clips: Sequence[Clip], minutes: float, seed: int) -> tuple[np.ndarray, str]:
    """``clips`` joined with pauses, in shuffled rounds, until ``minutes`` long."""
    rng = random.Random(seed)
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    total = 0
    while total < minutes * 60 * RATE:
        order = list(clips)
        rng.shuffle(order)
        for c in order:
            pieces += [c.audio, gap]
            texts.append(c.text)
            total += c.audio.size + gap.size
    return np.concatenate(pieces), " ".join(texts)


def model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from tests.whisper_models import converted, tiny_en_ct2

    return converted(tiny_en_ct2(), "tiny.en")


def quantized(
    src: Path, work: Path, mode: str, fold: Fold | None, reuse: bool, alpha: float
) -> tuple[Path, dict[str, Any]]:
    """The model of ``mode`` (calibrated on ``fold``), written by ``asrserve quantize``."""
    from asrserve.quantize.pipeline import REPORT_NAME, QuantizeOptions, quantize_model

    out = work / (mode if fold is None else f"{mode}-{fold.name}")
    report = out / REPORT_NAME
    if reuse and report.is_file():
        return out, json.loads(report.read_text())
    lst = None
    if fold is not None:
        lst = work / f"eval-{fold.name}.txt"
        lst.write_text("".join(f"{c.path} {c.text}\n" for c in fold.scored))
    opts = QuantizeOptions(
        mode=mode,
        calib=list(fold.calib) if fold else [],
        eval_list=lst,
        alpha=alpha,
        overwrite=True,
    )
    t = time.perf_counter()
    result = quantize_model(src, out, opts)
    print(f"  quantize {out.name}: {time.perf_counter() - t:.0f} s", flush=True)
    return result.model_dir, result.report


@dataclass
class Score:
    errors: int = 0
    words: int = 0

    def add(self, ref: str, hyp: str) -> None:
        e, n = word_errors(plain_words(ref), plain_words(hyp))
        self.errors += e
        self.words += n

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(self.words, 1)


@dataclass
class Row:
    mode: str
    size_mb: float = 0.0
    short: Score = field(default_factory=Score)
    long: Score = field(default_factory=Score)
    long_vs_fp32: Score = field(default_factory=Score)
    long_s: float = 0.0
    audio_s: float = 0.0
    windows: list[float] = field(default_factory=list)


def transcribe(rec: Any, x: np.ndarray) -> tuple[str, float, list[float]]:
    """Text, decode seconds, and the VAD windows' lengths."""
    t = time.perf_counter()
    segments = list(rec.transcribe_segments(x, RATE, chunk_seconds=30.0))
    seconds = time.perf_counter() - t
    text = " ".join(s.result.text for s in segments if s.result.text)
    return text, seconds, [s.end - s.start for s in segments]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a converted fp32 Whisper directory")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--minutes", type=float, default=3.0, help="long-form length per fold")
    ap.add_argument("--work", type=Path, default=Path("/tmp/asrserve-bench-whisper-quant"))
    ap.add_argument("--reuse", action="store_true", help="keep models already in --work")
    ap.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here too")
    ap.add_argument(
        "--calib-long",
        action="store_true",
        help="calibrate on a long-form file of the calibration clips (not the clips one by one)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault(
        "ASRSERVE_VAD_MODEL", str(ROOT.parent / "shared/models/silero-vad/silero_vad.onnx")
    )
    import asrserve
    from asrserve.quantize.graphs import find_graphs

    src = model_dir(args.model)
    work = args.work / src.name
    work.mkdir(parents=True, exist_ok=True)
    librivox, others = load_clips()
    folds = []
    for i, (name, calib, scored) in enumerate((("A", librivox, others), ("B", others, librivox))):
        x, text = long_form(scored, args.minutes, seed=i)
        calib_files = [c.path for c in calib]
        if args.calib_long:
            path = work / f"calib-long-{name}.wav"
            sf.write(str(path), long_form(calib, args.minutes, seed=10 + i)[0], RATE)
            calib_files = [path]
        folds.append(Fold(name, calib_files, scored, x, text))
    long_s = sum(f.long_audio.size for f in folds) / RATE
    short_s = sum(c.audio.size for f in folds for c in f.scored) / RATE
    print(
        f"{src.name}: short {short_s:.1f} s in {sum(len(f.scored) for f in folds)} clips, "
        f"long-form {long_s / 60:.1f} min in {len(folds)} folds; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows: list[Row] = []
    fp32_long: dict[str, str] = {}
    loads: list[float] = []
    for mode in args.modes.split(","):
        row = Row(mode)
        sizes = []
        built: dict[str | None, Path] = {}
        for fold in folds:
            key = fold.name if mode in CALIBRATED else None
            if mode == "fp32":
                d = src
            elif key in built:
                d = built[key]
            else:
                d, _ = quantized(src, work, mode, fold if key else None, args.reuse, args.alpha)
                built[key] = d
            g = find_graphs(d, "fp32" if mode == "fp32" else "auto")
            sizes.append(sum(g.size(r) for r in g.roles))
            rec: Any = asrserve.load_model(d, num_threads=args.num_threads, language="en")
            for c in fold.scored:
                text, _, _ = transcribe(rec, c.audio)
                row.short.add(c.text, text)
            text, seconds, windows = transcribe(rec, fold.long_audio)
            loads.append(os.getloadavg()[0])
            row.long.add(fold.long_text, text)
            if mode == "fp32":
                fp32_long[fold.name] = text
            if fold.name in fp32_long:
                row.long_vs_fp32.add(fp32_long[fold.name], text)
            row.long_s += seconds
            row.audio_s += fold.long_audio.size / RATE
            row.windows += windows
            del rec
        row.size_mb = float(np.mean(sizes)) / 1e6
        rows.append(row)
        print(format_row(row), flush=True)
    print()
    print(table(rows, src.name, loads))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "mode": r.mode,
                        "size_mb": round(r.size_mb, 1),
                        "short_wer": round(r.short.wer, 2),
                        "long_wer": round(r.long.wer, 2),
                        "long_vs_fp32": round(r.long_vs_fp32.wer, 2),
                        "long_decode_s": round(r.long_s, 1),
                        "audio_s": round(r.audio_s, 1),
                    }
                    for r in rows
                ],
                indent=2,
            )
            + "\n"
        )
    return 0


def format_row(r: Row) -> str:
    return (
        f"| {r.mode:16} | {r.size_mb:7.1f} | {r.short.wer:6.2f} | {r.long.wer:6.2f} | "
        f"{r.long_vs_fp32.wer:6.2f} | {r.long_s:7.1f} | {r.audio_s / max(r.long_s, 1e-9):5.1f}x |"
    )


def table(rows: Sequence[Row], name: str, loads: Sequence[float]) -> str:
    w = rows[0].windows or [0.0]
    head = (
        f"Whisper {name}: WER % on plain words; long-form = {rows[0].audio_s / 60:.1f} min in "
        f"{len(w)} VAD windows of {np.mean(w):.1f} s on average (max {max(w):.1f} s); "
        f"load average {min(loads):.2f}-{max(loads):.2f}\n"
        "| precision        | enc+dec MB | short | long | long vs fp32 | long decode s | speed |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    return "\n".join([head, *(format_row(r) for r in rows)])


if __name__ == "__main__":
    sys.exit(main())
