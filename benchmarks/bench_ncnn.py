"""ncnn backend speed: asrserve vs sherpa-ncnn, and asrserve's ncnn vs onnxruntime backends.

Rows (one thread everywhere, one stream at a time, each file fed whole plus
0.66 s of tail padding, then decoded to the end):

1. the tiny LSTM's ncnn export: asrserve vs sherpa-ncnn, greedy and modified
   beam search (4 paths), on its 30 test wavs;
2. the Conv-Emformer with random weights (upstream sherpa-ncnn graph), fp16
   and int8 sets, when asrserve has that family: asrserve vs sherpa-ncnn on
   its test wavs. Its ``.bin`` files are generated once into ``--cache-dir``;
3. the tiny LSTM in both formats: asrserve on ncnn vs asrserve on
   onnxruntime (fp32 ONNX).

Each cell is the best of ``--repeat`` runs taken interleaved (reference,
asrserve, reference, ...) after one untimed warm-up run each, which also
checks the token ids (``match``: files with identical tokens). asrserve's
decoder-output cache is cleared before every run. Model loading is not
timed; feature extraction is. ``ratio`` = asrserve / reference (target <= 1.0).

    python benchmarks/bench_ncnn.py                  # default run (about 2 minutes on 2 cores,
                                                     # plus ~30 s generating weights the first time)
    python benchmarks/bench_ncnn.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from bench_streaming import clear_decoder_cache

import asrserve
from asrserve.audio import load_audio
from asrserve.families import find_model_files

FloatArray = npt.NDArray[np.float32]
Clips = list[FloatArray]
Decode = Callable[[], list[list[int]]]

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", str(ROOT.parent / "shared")))
TINY_LSTM = SHARED / "models" / "asrserve-tiny-lstm-synth-en"
CONV_EMFORMER = SHARED / "models" / "ncnn-conv-emformer-random-weights"
SAMPLE_RATE = 16000
TAIL_PADDING_S = 0.66
BEAM = 4


@dataclass
class Row:
    model: str
    method: str
    reference: str
    audio_s: float
    reference_s: float
    asrserve_s: float
    match: str

    @property
    def ratio(self) -> float:
        return self.asrserve_s / self.reference_s


# --- runtimes ---------------------------------------------------------------------
def sherpa_ncnn(model_dir: Path, precision: str, method: str) -> Any:
    """sherpa-ncnn on exactly the files asrserve picks for ``precision``."""
    import sherpa_ncnn

    files = find_model_files(model_dir, precision)
    paths = {
        f"{role}_{kind}": str(getattr(files, role).with_suffix(f".{kind}"))
        for role in ("encoder", "decoder", "joiner")
        for kind in ("param", "bin")
    }
    return sherpa_ncnn.Recognizer(
        tokens=str(files.tokens),
        **paths,
        num_threads=1,
        decoding_method="modified_beam_search" if method == "modified_beam" else "greedy_search",
        num_active_paths=BEAM,
    )


def run_sherpa_ncnn(rec: Any, clips: Clips) -> list[list[int]]:
    pad = np.zeros(round(TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
    out = []
    for x in clips:
        rec.stream = rec.recognizer.create_stream()  # the wrapper holds one stream
        rec.accept_waveform(SAMPLE_RATE, x)
        rec.accept_waveform(SAMPLE_RATE, pad)
        rec.input_finished()
        out.append(list(rec.tokens))
    return out


def ours(model_dir: Path, precision: str, method: str) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir,
        precision=precision,
        decoding=asrserve.DecodingConfig(method=method, beam=BEAM),  # type: ignore[arg-type]
        tail_padding_s=TAIL_PADDING_S,
    )


def run_ours(rec: asrserve.Recognizer, clips: Clips) -> list[list[int]]:
    clear_decoder_cache(rec)  # sherpa-ncnn runs its decoder every time
    out = []
    for x in clips:
        s = rec.create_stream()
        s.accept_waveform(SAMPLE_RATE, x)
        s.input_finished()
        while rec.is_ready(s):
            rec.decode_stream(s)
        out.append(rec.get_result(s).token_ids)
    return out


# --- measuring --------------------------------------------------------------------
def timed(fn: Decode) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


STAT = {"best": min, "median": lambda v: float(np.median(v))}


def measure(
    label: str,
    method: str,
    reference: str,
    clips: Clips,
    ref: Decode,
    mine: Decode,
    repeat: int,
    stat: str = "best",
) -> Row:
    want, got = ref(), mine()  # warm-up, and the token check
    same = sum(a == b for a, b in zip(want, got, strict=True))
    ref_s: list[float] = []
    ours_s: list[float] = []
    for _ in range(repeat):
        ref_s.append(timed(ref))
        ours_s.append(timed(mine))
    audio_s = sum(x.size for x in clips) / SAMPLE_RATE
    pick = STAT[stat]
    row = Row(label, method, reference, audio_s, pick(ref_s), pick(ours_s), f"{same}/{len(clips)}")
    print(format_row(row), flush=True)
    return row


COLUMNS = (
    ("model", 30), ("method", 13), ("reference", 17), ("audio s", 7),
    ("ref s", 6), ("asrserve s", 10), ("ratio", 5), ("match", 5),
)  # fmt: skip


def _line(cells: Sequence[str]) -> str:
    """Text columns left-aligned, numbers right-aligned."""
    padded = [
        c.ljust(w) if i < 3 else c.rjust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS, strict=True))
    ]
    return "| " + " | ".join(padded) + " |"


def header() -> str:
    return (
        _line([c for c, _ in COLUMNS]) + "\n|" + "|".join("-" * (w + 2) for _, w in COLUMNS) + "|"
    )


def format_row(r: Row) -> str:
    return _line(
        [
            r.model, r.method, r.reference, f"{r.audio_s:.1f}", f"{r.reference_s:.2f}",
            f"{r.asrserve_s:.2f}", f"{r.ratio:.2f}", r.match,
        ]
    )  # fmt: skip


# --- models -----------------------------------------------------------------------
def wavs(folder: Path, limit: int | None) -> Clips:
    return [load_audio(p, SAMPLE_RATE) for p in sorted(folder.glob("*.wav"))[:limit]]


def conv_emformer_dir(cache: Path) -> Path | None:
    """The random-weight Conv-Emformer with its generated weights, or ``None``
    when asrserve has no Conv-Emformer family or the fixture is missing."""
    if importlib.util.find_spec("asrserve.families.conv_emformer") is None:
        print("(no asrserve.families.conv_emformer: Conv-Emformer rows skipped)")
        return None
    script = CONV_EMFORMER / "generate" / "make_weights.py"
    if not script.is_file():
        print(f"(no {script}: Conv-Emformer rows skipped)")
        return None
    out = cache / CONV_EMFORMER.name
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--repeat", type=int, default=2, help="timed runs per cell (best is kept)")
    p.add_argument("--stat", choices=sorted(STAT), default="best", help="or the median of them")
    p.add_argument("--conv-emformer-files", type=int, default=2, help="test wavs to decode")
    p.add_argument("--no-conv-emformer", action="store_true")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    p.add_argument(
        "--quick", action="store_true", help="repeat 1, 5 LSTM files, 1 Conv-Emformer file"
    )
    return p.parse_args(argv)


def vs_sherpa_ncnn(
    label: str,
    model_dir: Path,
    precision: str,
    method: str,
    clips: Clips,
    repeat: int,
    stat: str = "best",
) -> Row:
    ref, mine = sherpa_ncnn(model_dir, precision, method), ours(model_dir, precision, method)
    return measure(
        label,
        method,
        "sherpa-ncnn",
        clips,
        lambda: run_sherpa_ncnn(ref, clips),
        lambda: run_ours(mine, clips),
        repeat,
        stat,
    )


def vs_onnxruntime(method: str, clips: Clips, repeat: int, stat: str = "best") -> Row:
    ort, mine = ours(TINY_LSTM, "fp32", method), ours(TINY_LSTM / "ncnn", "auto", method)
    return measure(
        "tiny LSTM: ncnn vs onnxruntime",
        method,
        "asrserve ort fp32",
        clips,
        lambda: run_ours(ort, clips),
        lambda: run_ours(mine, clips),
        repeat,
        stat,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    lstm_clips = wavs(TINY_LSTM / "test_wavs", 5 if args.quick else None)
    load = os.getloadavg()
    print(
        f"1 thread, {args.stat} of {repeat}; ratio = asrserve / reference (target <= 1.0); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print(header())
    label = "tiny LSTM ncnn (fp16 weights)"
    for method in ("greedy", "modified_beam"):
        vs_sherpa_ncnn(label, TINY_LSTM / "ncnn", "auto", method, lstm_clips, repeat, args.stat)
    conv = None if args.no_conv_emformer else conv_emformer_dir(args.cache_dir)
    if conv is not None:
        clips = wavs(CONV_EMFORMER / "test_wavs", 1 if args.quick else args.conv_emformer_files)
        for precision, method in (
            ("fp16", "greedy"),
            ("fp16", "modified_beam"),
            ("int8", "greedy"),
        ):
            label = f"Conv-Emformer random ({precision})"
            vs_sherpa_ncnn(label, conv, precision, method, clips, repeat, args.stat)
    for method in ("greedy", "modified_beam"):
        vs_onnxruntime(method, lstm_clips, repeat, args.stat)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
