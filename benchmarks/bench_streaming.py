"""Streaming decode speed: asrserve vs sherpa-onnx vs the onnxruntime floor.

For every thread count and batch size N, N streams of the same audio are
decoded together (all audio fed, ``input_finished``, then batched decode
calls until nothing is ready) by

1. sherpa-onnx (the reference runtime, greedy search),
2. asrserve (greedy search, same feeding),
3. the "floor": only the onnxruntime work any runtime must do — asrserve's
   ``run_encoder`` over precomputed fbank chunks (states carried, batch
   stacked once) plus one ``run_joiner`` per output frame with a fixed,
   precomputed decoder output. No features, no decoder, no search.
4. the features alone: kaldi-native-fbank (the library sherpa-onnx's C++
   calls too) over every stream's audio, read back chunk by chunk as a
   stream reads it. Floor plus features is the "native" work both runtimes
   do; ``native/sherpa`` is the lowest asrserve/sherpa ratio that the same
   native libraries allow at zero Python cost.

Extra rows per thread count compare modified beam search (4 active paths,
single stream unless ``--beam-batches`` says more); its floor runs the joiner
on ``beam`` rows per stream and frame.

Model loading is outside the timed regions; feature extraction is inside
(1) and (2). Each cell is the best (``--stat median``: the median) of
``--repeat`` runs, taken interleaved
(sherpa, asrserve, floor, sherpa, ...) after one untimed warm-up run each,
which is also used to check that both runtimes produce the same tokens.

    python benchmarks/bench_streaming.py                 # full default run
    python benchmarks/bench_streaming.py --quick         # smoke run
    python benchmarks/bench_streaming.py --model DIR --audio WAV --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import asrserve
from asrserve.audio import load_audio
from asrserve.families import find_model_files
from asrserve.families.files import ModelFiles
from asrserve.features.kaldi_fbank import KaldiFbank

FloatArray = npt.NDArray[np.float32]

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", str(ROOT.parent / "shared")))
DEFAULT_MODEL = SHARED / "models" / "bench-lstm-random-80m"
FALLBACK_MODEL = SHARED / "models" / "asrserve-tiny-lstm-synth-en"
DEFAULT_AUDIO = SHARED / "models" / "test-audio-jfk" / "jfk.wav"

SAMPLE_RATE = 16000
TAIL_PADDING_S = 0.66  # what tests/reference.py feeds both runtimes
BEAM = 4
TARGET_VS_SHERPA = 0.90  # greedy, single stream
TARGET_VS_FLOOR = 1.10


@dataclass
class Row:
    model: str
    method: str
    threads: int
    n: int
    audio_s: float
    sherpa_s: float
    asrserve_s: float
    floor_s: float
    features_s: float
    rtf: float
    asrserve_vs_sherpa: float
    asrserve_vs_floor: float
    native_vs_sherpa: float  # (floor + features) / sherpa
    tokens_match: bool
    num_tokens: int
    first_diff: int | None  # first token index where asrserve and sherpa-onnx differ


# --- runners ------------------------------------------------------------------
def sherpa_recognizer(files: ModelFiles, threads: int, method: str) -> Any:
    import sherpa_onnx

    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(files.tokens),
        encoder=str(files.encoder),
        decoder=str(files.decoder),
        joiner=str(files.joiner),
        num_threads=threads,
        sample_rate=SAMPLE_RATE,
        feature_dim=80,
        decoding_method="modified_beam_search" if method == "modified_beam" else "greedy_search",
        max_active_paths=BEAM,
    )


def run_sherpa(rec: Any, audio: FloatArray, n: int) -> list[list[str]]:
    """Decode ``n`` streams of ``audio`` together; tokens of every stream."""
    pad = np.zeros(round(TAIL_PADDING_S * SAMPLE_RATE), dtype=np.float32)
    streams = [rec.create_stream() for _ in range(n)]
    for s in streams:
        s.accept_waveform(SAMPLE_RATE, audio)
        s.accept_waveform(SAMPLE_RATE, pad)
        s.input_finished()
    while ready := [s for s in streams if rec.is_ready(s)]:
        rec.decode_streams(ready)
    return [list(rec.get_result_all(s).tokens) for s in streams]


def run_asrserve(
    rec: asrserve.Recognizer,
    audio: FloatArray,
    n: int,
    decoding: asrserve.DecodingConfig,
) -> list[list[str]]:
    streams = [rec.create_stream(decoding=decoding) for _ in range(n)]
    for s in streams:
        s.accept_waveform(SAMPLE_RATE, audio)
        s.input_finished()  # adds rec.tail_padding_s (= TAIL_PADDING_S) of zeros
    while rec.decode_streams(streams):
        pass
    return [list(rec.get_result(s).tokens) for s in streams]


@dataclass
class FloorInputs:
    chunks: list[FloatArray]  # each (N, chunk_size, feature_dim), C-contiguous
    decoder_out: FloatArray  # (N * rows_per_stream, D)
    rows_per_stream: int


def fbank_chunks(rec: asrserve.Recognizer, audio: FloatArray) -> Iterator[FloatArray]:
    """Fbank of one stream of ``audio`` plus the tail padding, read back chunk by
    chunk the way :meth:`Recognizer.decode_streams` reads it (``is_ready``)."""
    m = rec.model
    fb = KaldiFbank(rec.feature_config)
    fb.accept_waveform(audio)
    fb.accept_waveform(np.zeros(round(rec.tail_padding_s * SAMPLE_RATE), dtype=np.float32))
    fb.input_finished()
    start = 0
    while start + m.chunk_size < fb.num_frames_ready:
        yield fb.get_frames(start, m.chunk_size)
        start += m.chunk_shift


def floor_inputs(
    rec: asrserve.Recognizer, audio: FloatArray, n: int, rows_per_stream: int
) -> FloorInputs:
    """Fbank chunks exactly as asrserve's streams see them, and a fixed decoder output."""
    m = rec.model
    chunks = [
        np.ascontiguousarray(np.broadcast_to(one, (n, *one.shape)))
        for one in fbank_chunks(rec, audio)
    ]
    ctx = np.asarray([[-1] * (m.context_size - 1) + [0]], dtype=np.int64)
    dec = m.run_decoder(ctx)
    rows = n * rows_per_stream
    return FloorInputs(chunks, np.ascontiguousarray(np.repeat(dec, rows, axis=0)), rows_per_stream)


def run_features(rec: asrserve.Recognizer, audio: FloatArray, n: int) -> int:
    """The features of ``n`` streams of ``audio`` (:func:`fbank_chunks`); returns chunks."""
    return sum(1 for _ in range(n) for _ in fbank_chunks(rec, audio))


def run_floor(rec: asrserve.Recognizer, inp: FloorInputs) -> int:
    """Encoder over all chunks plus one joiner call per output frame; returns frames."""
    m = rec.model
    n = inp.chunks[0].shape[0]
    states = m.stack_states([m.init_state() for _ in range(n)])
    dec = inp.decoder_out
    r = inp.rows_per_stream
    frames = 0
    for feats in inp.chunks:
        enc, states = m.run_encoder(feats, states)
        for t in range(enc.shape[1]):
            enc_t = enc[:, t, :]
            if r > 1:
                enc_t = np.repeat(enc_t, r, axis=0)
            m.run_joiner(np.ascontiguousarray(enc_t), dec)
            frames += 1
    return frames


def clear_decoder_cache(rec: asrserve.Recognizer) -> None:
    """Forget the decoder outputs the recognizer remembers (older versions
    keep them in one dict, ``_cache``)."""
    cache = rec.model.decoder_cache
    clear = getattr(cache, "clear", None)
    if callable(clear):
        clear()
    else:
        cache._cache.clear()


def first_difference(got: list[list[str]], want: list[list[str]]) -> int | None:
    """Smallest token index at which any stream of ``got`` differs from ``want``."""
    worst: int | None = None
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        i = next((k for k, (a, b) in enumerate(zip(g, w, strict=False)) if a != b), None)
        i = min(len(g), len(w)) if i is None else i
        worst = i if worst is None else min(worst, i)
    return worst


def timed(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    if setup is not None:
        setup()
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- one cell -----------------------------------------------------------------
def measure(
    label: str,
    method: str,
    threads: int,
    n: int,
    audio: FloatArray,
    sherpa: Any,
    ours: asrserve.Recognizer,
    repeat: int,
    warm_cache: bool = False,
    stat: str = "best",
) -> Row:
    def cold() -> None:
        # The recognizer memoises decoder outputs across streams; decoding the same
        # audio again would hit on every context, which sherpa-onnx cannot do.
        if not warm_cache:
            clear_decoder_cache(ours)

    decoding = asrserve.DecodingConfig(method=method, beam=BEAM)  # type: ignore[arg-type]
    inp = floor_inputs(ours, audio, n, BEAM if method == "modified_beam" else 1)
    # warm-up (untimed): lets onnxruntime size its buffers; also the parity check
    want = run_sherpa(sherpa, audio, n)
    cold()
    got = run_asrserve(ours, audio, n, decoding)
    run_floor(ours, inp)
    run_features(ours, audio, n)
    times: list[list[float]] = [[], [], [], []]
    for _ in range(repeat):
        runs = (
            lambda: run_sherpa(sherpa, audio, n),
            lambda: run_asrserve(ours, audio, n, decoding),
            lambda: run_floor(ours, inp),
            lambda: run_features(ours, audio, n),
        )
        for i, fn in enumerate(runs):
            times[i].append(timed(fn, cold if i == 1 else None))
    pick = min if stat == "best" else (lambda v: float(np.median(v)))
    sherpa_s, ours_s, floor_s, features_s = (pick(v) for v in times)
    audio_s = audio.size / SAMPLE_RATE
    return Row(
        model=label,
        method=method,
        threads=threads,
        n=n,
        audio_s=round(audio_s, 3),
        sherpa_s=sherpa_s,
        asrserve_s=ours_s,
        floor_s=floor_s,
        features_s=features_s,
        rtf=ours_s / (n * audio_s),
        asrserve_vs_sherpa=ours_s / sherpa_s,
        asrserve_vs_floor=ours_s / floor_s,
        native_vs_sherpa=(floor_s + features_s) / sherpa_s,
        tokens_match=got == want,
        num_tokens=len(want[0]),
        first_diff=first_difference(got, want),
    )


# --- output -------------------------------------------------------------------
_COLUMNS = (
    ("model", 28),
    ("method", 7),
    ("thr", 3),
    ("N", 3),
    ("sherpa s", 9),
    ("asrserve s", 10),
    ("floor s", 9),
    ("feat s", 7),
    ("RTF", 7),
    ("asr/sherpa", 10),
    ("asr/floor", 9),
    ("native/sherpa", 13),
    ("tokens", 12),
)


def header() -> str:
    return "  ".join(
        f"{name:>{w}}" if i > 1 else f"{name:<{w}}" for i, (name, w) in enumerate(_COLUMNS)
    )


def format_row(r: Row) -> str:
    cells = [
        r.model[-28:],
        "greedy" if r.method == "greedy" else f"beam{BEAM}",
        str(r.threads),
        str(r.n),
        f"{r.sherpa_s:.3f}",
        f"{r.asrserve_s:.3f}",
        f"{r.floor_s:.3f}",
        f"{r.features_s:.3f}",
        f"{r.rtf:.4f}",
        f"{r.asrserve_vs_sherpa:.2f}",
        f"{r.asrserve_vs_floor:.2f}",
        f"{r.native_vs_sherpa:.2f}",
        f"ok {r.num_tokens}" if r.tokens_match else f"WARN@{r.first_diff}/{r.num_tokens}",
    ]
    return "  ".join(
        f"{c:>{w}}" if i > 1 else f"{c:<{w}}"
        for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
    )


def target_notes(rows: Sequence[Row]) -> list[str]:
    notes = []
    for r in rows:
        if r.method == "greedy" and r.n == 1 and r.asrserve_vs_sherpa > TARGET_VS_SHERPA:
            notes.append(
                f"MISS threads={r.threads} N=1 greedy: asrserve/sherpa {r.asrserve_vs_sherpa:.3f}"
                f" > {TARGET_VS_SHERPA}"
            )
        if r.method == "greedy" and r.asrserve_vs_floor > TARGET_VS_FLOOR:
            notes.append(
                f"MISS threads={r.threads} N={r.n} greedy: asrserve/floor "
                f"{r.asrserve_vs_floor:.3f} > {TARGET_VS_FLOOR}"
            )
    return notes


def environment() -> dict[str, Any]:
    import onnxruntime
    import sherpa_onnx

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "asrserve": asrserve.__version__,
        "onnxruntime": onnxruntime.__version__,
        "sherpa_onnx": getattr(sherpa_onnx, "__version__", "?"),
        "numpy": np.__version__,
    }


# --- main ---------------------------------------------------------------------
def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=None, help=f"model dir (default {DEFAULT_MODEL})")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="wav file (any rate)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    p.add_argument("--threads", type=int_list, default=[1, 2], help="e.g. 1,2")
    p.add_argument("--batches", type=int_list, default=[1, 4, 16], help="e.g. 1,4,16")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs per cell")
    p.add_argument(
        "--stat",
        choices=["best", "median"],
        default="best",
        help="what a cell reports of its --repeat runs (default: the best)",
    )
    p.add_argument(
        "--beam-batches", type=int_list, default=[1], help="N of the beam rows (default 1)"
    )
    p.add_argument(
        "--warm-decoder-cache",
        action="store_true",
        help="keep asrserve's decoder-output cache between runs (default: cleared before each)",
    )
    p.add_argument("--no-beam", action="store_true", help="skip the modified beam search rows")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--quick", action="store_true", help="threads 1, batches 1,4, repeat 1")
    args = p.parse_args(argv)
    if args.quick:
        args.threads, args.batches, args.repeat = [1], [1, 4], 1
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.model is None:
        args.model = DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else FALLBACK_MODEL
    if not args.model.is_dir():
        p.error(f"model directory not found: {args.model} (set ASRSERVE_SHARED?)")
    if not args.audio.is_file():
        p.error(f"audio file not found: {args.audio}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()
    files = find_model_files(args.model, args.precision)
    audio = load_audio(args.audio, SAMPLE_RATE)
    label = args.model.name
    env = environment()
    print(
        f"# model {args.model} [{files.encoder.name}, {files.decoder.name}, {files.joiner.name}]\n"
        f"# audio {args.audio} ({audio.size / SAMPLE_RATE:.2f} s), tail padding "
        f"{TAIL_PADDING_S} s, {args.stat} of {args.repeat}, asrserve decoder cache "
        f"{'warm' if args.warm_decoder_cache else 'cleared before each run'}\n"
        f"# onnxruntime {env['onnxruntime']} (asrserve, floor); sherpa-onnx {env['sherpa_onnx']} "
        f"(bundles its own onnxruntime); {env['cpu_count']} CPUs\n"
        f"# targets: asrserve/sherpa <= {TARGET_VS_SHERPA} (greedy, N=1); "
        f"asrserve/floor <= {TARGET_VS_FLOOR}\n"
        f"# RTF = asrserve s / (N x audio s); floor = run_encoder + 1 run_joiner per frame;\n"
        f"# feat = kaldi-native-fbank alone; native = floor + feat (the C++ work both do)\n"
        f"# load average at the start: {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}",
        flush=True,
    )
    print(header(), flush=True)
    rows: list[Row] = []
    for threads in args.threads:
        ours = asrserve.load_model(
            args.model,
            num_threads=threads,
            precision=args.precision,
            decoding=asrserve.DecodingConfig(method="greedy"),
            tail_padding_s=TAIL_PADDING_S,
        )
        methods = [("greedy", args.batches)]
        if not args.no_beam:
            methods.append(("modified_beam", args.beam_batches))
        for method, batches in methods:
            reference = sherpa_recognizer(files, threads, method)
            for n in batches:
                row = measure(
                    label,
                    method,
                    threads,
                    n,
                    audio,
                    reference,
                    ours,
                    args.repeat,
                    args.warm_decoder_cache,
                    args.stat,
                )
                rows.append(row)
                print(format_row(row), flush=True)
            del reference
    load = os.getloadavg()
    print(f"# load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    notes = target_notes(rows)
    for line in notes or ["# all targets met"]:
        print(line if line.startswith("#") else f"# {line}")
    if any(not r.tokens_match for r in rows):
        print(
            "# WARN: asrserve and sherpa-onnx tokens differ (tokens column: WARN@first differing"
            " index/count). sherpa-onnx bundles a different onnxruntime build, whose dynamic-int8"
            " kernels round differently; random-weight models have near-tie logits."
        )
    if args.json is not None:
        payload = {
            "model": str(args.model),
            "files": {k: str(v) for k, v in asdict(files).items()},
            "audio": str(args.audio),
            "audio_s": audio.size / SAMPLE_RATE,
            "tail_padding_s": TAIL_PADDING_S,
            "repeat": args.repeat,
            "stat": args.stat,
            "loadavg_start": load_start,
            "loadavg_end": load,
            "warm_decoder_cache": args.warm_decoder_cache,
            "targets": {
                "asrserve_vs_sherpa": TARGET_VS_SHERPA,
                "asrserve_vs_floor": TARGET_VS_FLOOR,
            },
            "environment": env,
            "rows": [asdict(r) for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
