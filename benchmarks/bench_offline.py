"""Offline transcription of many files: ``asrserve transcribe`` vs the ``sherpa-onnx`` CLI.

Both commands get the same files (by default the tiny model's 30 test wavs and
jfk.wav, 118.7 s of audio) and one inference thread, and both decode them as a
batch of streams: sherpa-onnx's CLI all files at once, ``asrserve transcribe``
as a rolling batch of ``--batch`` streams (``asrserve.core.rolling``). What is
measured is each process's CPU time (user + system, from ``os.wait4``: startup,
model load and decoding, as a user pays it), and its wall time, in interleaved
runs (sherpa, asrserve, sherpa, ...) after one untimed warm-up of each, which
also compares the transcripts: with fp32 graphs both must give the same text,
tokens and timestamps for every file (sherpa-onnx is run with
``--left-padding=0 --right-padding=0.66``, the padding asrserve's streams get).
With dynamic int8 graphs a stream's result depends on its batch mates in both
runtimes, and the batches differ, so some transcripts may differ.

``--isolate`` adds ``asrserve transcribe --isolate-batches`` on the int8
configs, and compares both asrserve commands' transcripts with each file
decoded alone (``--batch 1``). The asrserve commands run with their bytecode
cached (``PYTHONPYCACHEPREFIX``), as an installed package runs.

A second table is in-process: the asrserve API on the same audio, CPU time of
the rolling batch (``transcribe_many``) against decoding the files one by one
(``transcribe_segments`` each), model load excluded.

    python benchmarks/bench_offline.py                  # 80M LSTM int8, tiny fp32 and int8
    python benchmarks/bench_offline.py --quick          # tiny fp32 only, one run
    python benchmarks/bench_offline.py --json out.json --repeat 5 --batch 32

Every figure is printed with the load average when it was taken (a shared
machine: compare ratios measured in the same run, not absolute seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", str(ROOT.parent / "shared")))
MODELS = SHARED / "models"
TINY = MODELS / "asrserve-tiny-lstm-synth-en"
BIG = MODELS / "bench-lstm-random-80m"
JFK = MODELS / "test-audio-jfk" / "jfk.wav"
TAIL_PADDING_S = 0.66  # what asrserve's streams add at input end
TARGET_VS_SHERPA = 0.90


@dataclass(frozen=True)
class Config:
    name: str
    model: Path
    precision: str  # fp32 | int8

    def graph(self, part: str) -> Path:
        suffix = ".int8.onnx" if self.precision == "int8" else ".onnx"
        return self.model / f"{part}{suffix}"


CONFIGS = {
    "lstm-80m-int8": Config("lstm-80m-int8", BIG, "int8"),
    "tiny-fp32": Config("tiny-fp32", TINY, "fp32"),
    "tiny-int8": Config("tiny-int8", TINY, "int8"),
}


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    load: float  # 1-minute load average just before the run


@dataclass
class Row:
    config: str
    tool: str
    runs: list[Run] = field(default_factory=list)

    @property
    def cpu(self) -> list[float]:
        return [r.cpu_s for r in self.runs]

    def summary(self) -> dict[str, Any]:
        cpu = self.cpu
        return {
            "config": self.config,
            "tool": self.tool,
            "cpu_median_s": round(statistics.median(cpu), 3),
            "cpu_min_s": round(min(cpu), 3),
            "cpu_max_s": round(max(cpu), 3),
            "wall_median_s": round(statistics.median(r.wall_s for r in self.runs), 3),
            "load": [round(r.load, 2) for r in self.runs],
            "runs": len(cpu),
        }


def loadavg() -> float:
    return os.getloadavg()[0]


def child_env(pycache: Path) -> dict[str, str]:
    """The commands' environment: Python bytecode is written (into ``pycache``)
    and read again, as an installed package's is; an environment that forbids
    writing it (``PYTHONDONTWRITEBYTECODE``) would make every asrserve run
    compile its modules anew, which no installed copy does."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def timed(cmd: Sequence[str], out: Path, err: Path, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to its end; its own CPU time (user + system) and wall time."""
    load = loadavg()
    with out.open("wb") as o, err.open("wb") as e:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=o, stderr=e, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.read_text()[-2000:]}")
    return Run(usage.ru_utime + usage.ru_stime, wall, load)


def sherpa_cmd(cfg: Config, files: Sequence[Path], threads: int) -> list[str]:
    exe = Path(sys.executable).parent / "sherpa-onnx"
    return [
        str(exe),
        f"--tokens={cfg.model / 'tokens.txt'}",
        f"--encoder={cfg.graph('encoder')}",
        f"--decoder={cfg.graph('decoder')}",
        f"--joiner={cfg.graph('joiner')}",
        f"--num-threads={threads}",
        "--decoding-method=greedy_search",
        "--left-padding=0",
        f"--right-padding={TAIL_PADDING_S}",
        *map(str, files),
    ]


def asrserve_cmd(
    cfg: Config, files: Sequence[Path], threads: int, batch: int, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "asrserve",
        "transcribe",
        "--model",
        str(cfg.model),
        "--precision",
        cfg.precision,
        "--num-threads",
        str(threads),
        "--format",
        "json",
        "--no-progress",
        "--batch",
        str(batch),
        *extra,
        *map(str, files),
    ]


def sherpa_results(stderr: str) -> list[dict[str, Any]]:
    """The JSON result sherpa-onnx's CLI prints for each file, in file order."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{ "text"')]


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, int]:
    def stamps(r: dict[str, Any]) -> list[float]:
        return [round(float(t), 2) for t in r["timestamps"]]

    pairs = list(zip(ours, theirs, strict=True))
    return {
        "files": len(pairs),
        "same_text": sum(a["text"] == b["text"] for a, b in pairs),
        "same_tokens": sum(a["tokens"] == b["tokens"] for a, b in pairs),
        "same_timestamps": sum(stamps(a) == stamps(b) for a, b in pairs),
    }


def in_process(cfg: Config, files: Sequence[Path], threads: int, batch: int, repeat: int) -> Any:
    """CPU seconds of the asrserve API on ``files``: rolling batch vs one by one."""
    import asrserve
    from asrserve.audio import load_audio
    from asrserve.core.rolling import array_pieces, transcribe_many

    rec = asrserve.load_model(cfg.model, precision=cfg.precision, num_threads=threads)
    audio = [load_audio(f, 16000) for f in files]
    rows = {"one by one": Row(cfg.name, "api one by one"), "rolling": Row(cfg.name, "api rolling")}
    for _ in range(repeat):
        for kind, row in rows.items():
            load, t0, w0 = loadavg(), time.process_time(), time.perf_counter()
            if kind == "rolling":
                pieces = (array_pieces(x, 16000) for x in audio)
                for _done in transcribe_many(rec, pieces, max_streams=batch):
                    pass
            else:
                for x in audio:
                    for _seg in rec.transcribe_segments(x, 16000):
                        pass
            row.runs.append(Run(time.process_time() - t0, time.perf_counter() - w0, load))
            print(f"  {cfg.name:14s} {row.tool:16s} cpu {row.runs[-1].cpu_s:7.2f} s  "
                  f"load {load:.2f}", flush=True)  # fmt: skip
    return list(rows.values())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS)
    )
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each command")
    p.add_argument("--batch", type=int, default=None, help="asrserve --batch (default: its own)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--files", nargs="*", type=Path, default=None, help="default: 30 test wavs + jfk"
    )
    p.add_argument("--inproc-repeat", type=int, default=2, help="in-process runs (0: none)")
    p.add_argument(
        "--before",
        action="store_true",
        help="also time 'asrserve transcribe --batch 1' (one file after another, as before)",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="also time 'asrserve transcribe --isolate-batches' on the int8 configs, and "
        "compare both asrserve commands' transcripts with each file decoded alone",
    )
    p.add_argument("--quick", action="store_true", help="tiny-fp32, one run of each")
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = p.parse_args(argv)
    from asrserve.config import DEFAULT_MAX_STREAMS

    batch = args.batch or DEFAULT_MAX_STREAMS
    if args.quick:
        args.configs, args.repeat, args.inproc_repeat = "tiny-fp32", 1, 1
    files = args.files or [*sorted((TINY / "test_wavs").glob("*.wav")), JFK]
    import soundfile as sf

    audio_s = sum(sf.info(str(f)).duration for f in files)
    configs = [CONFIGS[c] for c in args.configs.split(",")]
    print(f"{len(files)} files, {audio_s:.1f} s of audio; {args.threads} thread(s); "
          f"asrserve --batch {batch}; {os.cpu_count()} CPUs; load {os.getloadavg()}")  # fmt: skip
    rows: list[Row] = []
    checks: dict[str, dict[str, int]] = {}
    vs_alone: dict[str, dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        env = child_env(Path(tmp) / "pycache")

        def transcripts(cmd: Sequence[str]) -> list[dict[str, Any]]:
            timed(cmd, out, err, env)
            return [json.loads(line) for line in out.read_text().splitlines()]

        for cfg in configs:
            cmds = {
                "sherpa-onnx": sherpa_cmd(cfg, files, args.threads),
                "asrserve": asrserve_cmd(cfg, files, args.threads, batch),
            }
            if args.before:
                cmds["asrserve --batch 1"] = asrserve_cmd(cfg, files, args.threads, 1)
            isolate = args.isolate and cfg.precision == "int8"
            if isolate:
                cmds["asrserve --isolate-batches"] = asrserve_cmd(
                    cfg, files, args.threads, batch, "--isolate-batches"
                )
            # warm-up (page cache, imports, bytecode, int8 rewrites) and the
            # transcripts' comparison
            timed(cmds["sherpa-onnx"], out, err)
            theirs = sherpa_results(err.read_text())
            ours = transcripts(cmds["asrserve"])
            checks[cfg.name] = compare(ours, theirs)
            print(f"{cfg.name}: transcripts vs sherpa-onnx {checks[cfg.name]}", flush=True)
            if isolate:
                alone = transcripts(asrserve_cmd(cfg, files, args.threads, 1))
                isolated = transcripts(cmds["asrserve --isolate-batches"])
                vs_alone[cfg.name] = {
                    "asrserve": compare(ours, alone),
                    "asrserve --isolate-batches": compare(isolated, alone),
                }
                print(f"{cfg.name}: vs each file alone {vs_alone[cfg.name]}", flush=True)
            mine = {tool: Row(cfg.name, tool) for tool in cmds}
            for _ in range(args.repeat):
                for tool, cmd in cmds.items():
                    run = timed(cmd, out, err, env)
                    mine[tool].runs.append(run)
                    print(f"  {cfg.name:14s} {tool:16s} cpu {run.cpu_s:7.2f} s  wall "
                          f"{run.wall_s:6.2f} s  load {run.load:.2f}", flush=True)  # fmt: skip
            rows += mine.values()
            if args.inproc_repeat > 0:
                rows += in_process(cfg, files, args.threads, batch, args.inproc_repeat)
    table = [r.summary() for r in rows]
    print()
    print("| config | what | CPU s median (min–max) | wall s median | load avg | ratio |")
    print("|---|---|---|---|---|---|")
    for cfg in configs:
        mine = {s["tool"]: s for s in table if s["config"] == cfg.name}
        ref = mine["sherpa-onnx"]["cpu_median_s"]
        alone = mine.get("api one by one", {}).get("cpu_median_s")
        for tool, s in mine.items():
            if tool.startswith("api"):
                ratio = f"{s['cpu_median_s'] / alone:.2f} of one by one" if alone else ""
            else:
                ratio = f"{s['cpu_median_s'] / ref:.2f} x sherpa-onnx"
            loads = f"{min(s['load']):.2f}–{max(s['load']):.2f}"
            cpu = f"{s['cpu_median_s']:.2f} ({s['cpu_min_s']:.2f}–{s['cpu_max_s']:.2f})"
            print(f"| {cfg.name} | {tool} | {cpu} | {s['wall_median_s']:.2f} | {loads} | {ratio} |")
    worst = max(
        s["cpu_median_s"] / next(
            t["cpu_median_s"] for t in table
            if t["config"] == s["config"] and t["tool"] == "sherpa-onnx"
        )
        for s in table if s["tool"] == "asrserve"
    )  # fmt: skip
    print(f"\nworst asrserve/sherpa-onnx CPU ratio {worst:.2f} (target <= {TARGET_VS_SHERPA})")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "files": [str(f) for f in files],
                    "audio_s": round(audio_s, 3),
                    "threads": args.threads,
                    "batch": batch,
                    "transcripts_vs_sherpa": checks,
                    "transcripts_vs_alone": vs_alone,
                    "rows": table,
                    "runs": [asdict(r) | {"config": r.config, "tool": r.tool} for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
