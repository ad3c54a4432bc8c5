"""Cost curves: decode time and memory against audio length, server CPU against streams.

1. **Audio length** (the core alone): one file of each length in ``--lengths``
   (default 10 s, 60 s, 300 s, 30 min; the clip repeated with 1 s of silence
   between repeats, written as 16-bit WAV) is read block by block and fed to one
   stream through ``asrserve.core.segments.segments`` (endpointing on, as a long
   recording is transcribed), each length in a fresh process. Per length: wall and
   CPU seconds, seconds per audio hour, peak RSS (``ru_maxrss``) and RSS sampled
   every audio minute: decode time should grow linearly, memory not at all.
2. **Streams** (the server): ``bench_server.py --levels`` on the same model for
   asrserve and sherpa-onnx's server: server CPU per real-time stream at each N
   in ``--streams`` (medians of ``--repeat`` interleaved rounds).

Prints both as markdown tables and draws them into one PNG (``--plot``).

    python benchmarks/bench_cost.py                          # tiny LSTM, ~4 min on 2 cores
    python benchmarks/bench_cost.py --lengths 10,60 --no-server --plot /tmp/c.png
    python benchmarks/bench_cost.py --model DIR --streams 1,8,32 --repeat 3 --json cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

DEFAULT_LENGTHS = (10.0, 60.0, 300.0, 1800.0)
BLOCK_S = 1.0  # audio read and fed per piece


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_long_wav(path: Path, clip: np.ndarray, seconds: float, rate: int) -> None:
    """``clip`` then 1 s of silence, repeated to ``seconds``, as 16-bit WAV
    (written block by block: a 30 min file is never whole in memory)."""
    import soundfile as sf

    unit = np.concatenate([clip, np.zeros(rate, np.float32)])
    total = round(seconds * rate)
    with sf.SoundFile(str(path), "w", rate, 1, "PCM_16") as f:
        done = 0
        while done < total:
            n = min(unit.size, total - done)
            f.write(unit[:n])
            done += n


def one_length(model: Path, wav: Path, precision: str) -> dict[str, Any]:
    """Child process: decode ``wav`` through the core; times and memory."""
    import soundfile as sf

    import asrserve
    from asrserve.config import EndpointConfig
    from asrserve.core.segments import segments

    rec = asrserve.load_model(model, precision=precision, endpoint=EndpointConfig(enabled=True))
    info = sf.info(str(wav))
    rate = int(info.samplerate)
    samples: list[tuple[float, int]] = []  # (audio s fed, RSS KiB)

    def pieces() -> Iterator[tuple[int, np.ndarray]]:
        fed = 0.0
        next_sample = 60.0
        for block in sf.blocks(str(wav), blocksize=round(BLOCK_S * rate), dtype="float32"):
            yield rate, block
            fed += block.size / rate
            if fed >= next_sample:
                samples.append((fed, rss_kib()))
                next_sample += 60.0

    rss_loaded = rss_kib()
    stream = rec.create_stream()
    t0, c0 = time.perf_counter(), time.process_time()
    segs = tokens = 0
    for seg in segments(rec, stream, pieces()):
        segs += 1
        tokens += len(seg.result.token_ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "audio_s": info.frames / rate,
        "wall_s": wall,
        "cpu_s": cpu,
        "segments": segs,
        "tokens": tokens,
        "rss_loaded_kib": rss_loaded,
        "rss_end_kib": rss_kib(),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_per_minute_kib": samples,
    }


def lengths_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    from asrserve.audio import load_audio

    clip = load_audio(args.audio, bs.SAMPLE_RATE).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cost_") as tmp:
        for seconds in args.lengths:
            wav = Path(tmp) / f"long_{seconds:g}.wav"
            write_long_wav(wav, clip, seconds, bs.SAMPLE_RATE)
            load = os.getloadavg()[0]
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--one", str(wav),
                 "--model", str(args.model), "--precision", args.precision],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wav.unlink()
            if out.returncode != 0:
                raise RuntimeError(f"length {seconds:g} s failed:\n{out.stderr[-2000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["loadavg"] = load
            rows.append(row)
            per_min = row["rss_per_minute_kib"]
            drift = (per_min[-1][1] - per_min[0][1]) / 1024 if len(per_min) > 1 else 0.0
            print(
                f"# {row['audio_s']:7.0f} s audio: {row['wall_s']:7.2f} s wall, "
                f"{row['cpu_s']:7.2f} s CPU ({row['wall_s'] / row['audio_s'] * 3600:.0f} s per "
                f"audio hour); peak RSS {row['peak_rss_kib'] / 1024:.1f} MiB, RSS from minute 1 "
                f"to the end {drift:+.1f} MiB; {row['segments']} segments; load {load:.2f}",
                flush=True,
            )
    return rows


def streams_part(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_cost_") as tmp:
        out = Path(tmp) / "levels.json"
        argv = ["--model", str(args.model), "--precision", args.precision]
        argv += ["--levels", ",".join(str(n) for n in args.streams), "--repeat", str(args.repeat)]
        argv += ["--json", str(out), *args.server_args]
        rc = bs.main(argv)
        if rc != 0 or not out.is_file():
            raise RuntimeError(f"bench_server.py failed ({rc})")
        data: dict[str, Any] = json.loads(out.read_text())
    return data


def markdown(lengths: list[dict[str, Any]], streams: dict[str, Any] | None) -> str:
    lines = []
    if lengths:
        lines += [
            "| audio | decode wall s | CPU s | s per audio hour | peak RSS MiB "
            "| RSS minute 1 → end MiB | load |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in lengths:
            per_min = r["rss_per_minute_kib"]
            rss = f"{per_min[0][1] / 1024:.1f} → {per_min[-1][1] / 1024:.1f}" if per_min else "-"
            a = r["audio_s"]
            shown = f"{a / 60:.0f} min" if a >= 60 else f"{a:.0f} s"
            lines.append(
                f"| {shown} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                f"{r['wall_s'] / a * 3600:.0f} | {r['peak_rss_kib'] / 1024:.1f} | {rss} | "
                f"{r['loadavg']:.2f} |"
            )
    if streams:
        summary = streams["summary"]
        lines += [
            "",
            "| streams | asrserve CPU per stream | sherpa-onnx CPU per stream | asrserve/sherpa |",
            "|---|---|---|---|",
        ]
        for n, row in summary.items():

            def cell(name: str, row: dict[str, Any] = row) -> str:
                vals = row[name]["cpu_per_stream_all"]
                if not vals:
                    return "-"
                med = float(np.median(vals)) * 1000
                return f"{med:.1f} ms/s ({min(vals) * 1000:.1f}–{max(vals) * 1000:.1f})"

            ratio = row.get("cpu_ratio")
            lines.append(
                f"| {n} | {cell('asrserve')} | {cell('sherpa')} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} |"
            )
    return "\n".join(lines)


def plot(
    path: Path, model: Path, lengths: list[dict[str, Any]], streams: dict[str, Any] | None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = int(bool(lengths)) + int(bool(streams))
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    if lengths:
        audio = np.array([r["audio_s"] for r in lengths])
        wall = np.array([r["wall_s"] for r in lengths])
        slope = float(np.median(wall / audio))
        ax.loglog(audio, wall, "o-", label="decode wall time")
        ax.loglog(audio, slope * audio, ":", color="gray", label="linear (median s/s)")
        ax.set_xlabel("audio length (s)")
        ax.set_ylabel("decode time (s)")
        ax2 = ax.twinx()
        peak = [r["peak_rss_kib"] / 1024 for r in lengths]
        ax2.semilogx(audio, peak, "s--", color="C1", label="peak RSS")
        ax2.set_ylabel("peak RSS (MiB)", color="C1")
        ax2.set_ylim(0, max(peak) * 1.3)
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left")
        ax.set_title("one file, one stream, through the core")
        ax = axes[0][-1]
    if streams:
        summary = streams["summary"]
        ns = [int(n) for n in summary]
        for name, style in (("asrserve", "o-"), ("sherpa", "s--")):
            med = [float(np.median(summary[str(n)][name]["cpu_per_stream_all"])) for n in ns]
            ax.plot(ns, [m * 1000 for m in med], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("concurrent real-time streams")
        ax.set_ylabel("server CPU per stream (ms per s)")
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.set_title("server CPU per stream")
    fig.suptitle(f"asrserve cost curves: {model.name}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"# wrote {path}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=bs.FALLBACK_MODEL, help="model dir (tiny LSTM)")
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    p.add_argument("--audio", type=Path, default=bs.DEFAULT_AUDIO, help="clip to repeat")
    p.add_argument("--lengths", default=",".join(f"{v:g}" for v in DEFAULT_LENGTHS))
    p.add_argument("--streams", default="1,8,32", help="server levels (streams)")
    p.add_argument("--repeat", type=int, default=3, help="server: rounds of all levels")
    p.add_argument("--no-lengths", action="store_true", help="skip the audio-length part")
    p.add_argument("--no-server", action="store_true", help="skip the server part")
    p.add_argument("--plot", type=Path, default=Path("cost_curves.png"), help="PNG to write")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("server_args", nargs="*", help="after --: more bench_server.py options")
    args = p.parse_args(argv)
    args.lengths = [float(v) for v in str(args.lengths).split(",") if v.strip()]
    args.streams = [int(v) for v in str(args.streams).split(",") if v.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_length(args.model, args.one, args.precision)))
        return 0
    print(f"# model {args.model}; load {os.getloadavg()[0]:.2f}", flush=True)
    lengths = [] if args.no_lengths else lengths_part(args)
    streams = None if args.no_server else streams_part(args)
    print(markdown(lengths, streams))
    plot(args.plot, args.model, lengths, streams)
    if args.json is not None:
        payload = {"model": str(args.model), "lengths": lengths, "streams": streams}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
