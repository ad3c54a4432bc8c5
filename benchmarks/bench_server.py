"""Server capacity: concurrent real-time streams at p95 final latency <= 500 ms.

Starts asrserve's WebSocket server (``asrserve serve``) and sherpa-onnx's C++
server (``sherpa-onnx-online-websocket-server``) on the same model files, with
the same thread budget, batch size, batching interval, tail padding, decoding
method and endpointing (off), and loads both through the same client dialect
(sherpa-onnx's: binary float32 frames, text ``Done``, JSON results, ``Done!``).

For a load level N, a separate load-generator process opens N connections,
starting at random offsets within the first second; each sends the clip in
100 ms frames at real-time pace, then ``Done``. Final latency is the time from
sending ``Done`` to receiving the result with ``"is_eof": true``. A level
passes when every stream finishes and the p95 final latency is <= 500 ms. Each
server's largest passing N is searched by doubling, then bisection; the two
searches alternate level by level so that machine noise hits both alike.

    python benchmarks/bench_server.py                   # default run (~5 min on 2 cores)
    python benchmarks/bench_server.py --quick           # smoke run (< 90 s)
    python benchmarks/bench_server.py --model DIR --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", str(ROOT.parent / "shared")))
DEFAULT_MODEL = SHARED / "models" / "bench-lstm-random-80m"
FALLBACK_MODEL = SHARED / "models" / "asrserve-tiny-lstm-synth-en"
DEFAULT_AUDIO = SHARED / "models" / "test-audio-jfk" / "jfk.wav"

SAMPLE_RATE = 16000
FRAME_S = 0.1  # client frame length; frames are sent at real-time pace
TAIL_PADDING_S = 0.66  # asrserve's default; sherpa-onnx is given the same (its default is 0.8)
BEAM = 4
TARGET_P95_MS = 500.0
TARGET_RATIO = 1.2  # asrserve max streams / sherpa-onnx max streams
TARGET_CPU_RATIO = 0.8  # asrserve / sherpa-onnx server CPU per stream
SERVERS = ("asrserve", "sherpa")
_EOF = re.compile(r'"is_eof"\s*:\s*true')


# --- load generator (runs in its own process) ------------------------------------------
@dataclass
class StreamResult:
    finished: bool = False  # is_eof result and Done! both received
    latency_s: float | None = None  # Done sent -> is_eof result received
    text: str = ""
    late_s: float = 0.0  # how far behind the real-time schedule Done was sent
    error: str = ""
    done_first: bool = False  # Done! arrived before the is_eof result
    # new-token latencies (ms) of the partials received before Done: arrival of the
    # first result holding a token - the wall time its audio (its timestamp) was captured
    partial_ms: list[float] = field(default_factory=list)


def _new_token_latencies(msg: str, seen: int, arrived: float, t0: float) -> tuple[int, list[float]]:
    """The token count of result ``msg`` and the latency (ms) of each token past
    the first ``seen``: ``arrived`` - (``t0`` + its timestamp)."""
    stamps = json.loads(msg).get("timestamps") or []
    fresh = [(arrived - t0 - float(t)) * 1000.0 for t in stamps[seen:]]
    return max(seen, len(stamps)), fresh


async def _one_stream(
    uri: str,
    frames: Sequence[bytes],
    start_at: float,
    realtime: bool,
    drain_s: float,
    partials: bool = False,
) -> StreamResult:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    res = StreamResult()
    done_at = math.inf
    t0 = math.inf  # wall time of audio time 0 (frame k holds audio up to t0 + (k + 1) * FRAME_S)
    got_done = asyncio.Event()
    tokens_seen = 0

    async def receive(ws: Any) -> None:
        # sherpa-onnx sends Done! and the is_eof result from different threads: either
        # may come first, so read until both are in.
        nonlocal tokens_seen
        async for msg in ws:
            if isinstance(msg, bytes):
                continue
            arrived = loop.time()
            if msg == "Done!":
                got_done.set()
                res.done_first = res.latency_s is None
            elif res.latency_s is None and _EOF.search(msg):
                res.latency_s = arrived - done_at
                res.text = str(json.loads(msg).get("text", ""))
            elif partials and arrived < done_at:
                tokens_seen, fresh = _new_token_latencies(msg, tokens_seen, arrived, t0)
                res.partial_ms += fresh
            if got_done.is_set() and res.latency_s is not None:
                return
        res.error = f"server closed ({ws.close_code}) before the is_eof result and Done!"

    try:
        async with connect(
            uri, compression=None, max_size=None, ping_interval=None, open_timeout=10
        ) as ws:
            reader = asyncio.create_task(receive(ws))
            t0 = loop.time()
            for k, frame in enumerate(frames):
                if realtime:  # frame k holds audio up to (k + 1) * FRAME_S
                    await asyncio.sleep(max(0.0, t0 + (k + 1) * FRAME_S - loop.time()))
                await ws.send(frame)
            done_at = loop.time()
            res.late_s = max(0.0, done_at - (t0 + len(frames) * FRAME_S)) if realtime else 0.0
            await ws.send("Done")
            try:
                async with asyncio.timeout(drain_s):
                    await reader
            except TimeoutError:
                res.error = f"no is_eof result and Done! within {drain_s:g} s of Done"
            reader.cancel()
    except Exception as exc:  # connection refused/closed: the stream did not finish
        res.error = f"{type(exc).__name__}: {exc}"[:200]
    res.finished = got_done.is_set() and res.latency_s is not None and not res.error
    return res


async def _load(spec: dict[str, Any]) -> list[StreamResult]:
    audio = np.fromfile(spec["audio"], dtype="<f4")
    step = round(FRAME_S * SAMPLE_RATE)
    frames = [audio[i : i + step].tobytes() for i in range(0, audio.size, step)]
    rng = random.Random(spec["seed"])
    base = asyncio.get_running_loop().time() + 0.2
    tasks = [
        _one_stream(
            spec["uri"],
            frames,
            base + rng.uniform(0.0, spec["stagger_s"]),
            spec["realtime"],
            spec["drain_s"],
            spec.get("partials", False),
        )
        for _ in range(spec["n"])
    ]
    return list(await asyncio.gather(*tasks))


def loadgen_main(spec_json: str) -> int:
    """Child-process entry point: run one load level, print the results as JSON."""
    spec = json.loads(spec_json)
    t0 = time.monotonic()
    results = asyncio.run(_load(spec))
    out = {
        "streams": [asdict(r) for r in results],
        "cpu_s": time.process_time(),
        "wall_s": time.monotonic() - t0,
    }
    print(json.dumps(out))
    return 0


# --- CPU accounting (Linux /proc) ------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def wait_idle(pid: int, timeout_s: float = 5.0, max_cores: float = 0.05) -> None:
    """Wait until the server uses under ``max_cores`` over a 0.25 s window."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = proc_cpu_s(pid)
        time.sleep(0.25)
        if proc_cpu_s(pid) - c0 < max_cores * 0.25:
            return


def wait_quiet(pids: Sequence[int], timeout_s: float, max_cores: float = 0.2) -> bool:
    """Wait until processes other than ``pids`` (and this one) use under ``max_cores``
    over a 0.5 s window; False if that did not happen within ``timeout_s``."""
    ours = [*pids, os.getpid()]
    deadline = time.monotonic() + timeout_s
    while True:
        c0, s0 = sum(map(proc_cpu_s, ours)), system_busy_s()
        time.sleep(0.5)
        if system_busy_s() - s0 - (sum(map(proc_cpu_s, ours)) - c0) < max_cores * 0.5:
            return True
        if time.monotonic() >= deadline:
            return False


# --- servers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH")
    return found


@dataclass
class Server:
    """A server process in its own process group, logging into ``log``."""

    name: str
    cmd: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: Path | None = None

    @property
    def is_asrserve(self) -> bool:
        return self.name != "sherpa"

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> float:
        """Start and wait until it accepts connections; returns the start-up seconds."""
        t0 = time.monotonic()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
            )
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if self.ready():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:g} s:\n{self.tail()}")

    def ready(self) -> bool:
        if self.is_asrserve:
            try:
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True  # sherpa-onnx listens only once the model is loaded
        return False

    def metrics(self) -> dict[str, float]:
        """asrserve's ``/metrics`` counters (empty for sherpa-onnx, which has none)."""
        if not self.is_asrserve:
            return {}
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            # unlabelled (servers before the model label), or labelled by model only
            if line and not line.startswith("#") and name.count("=") == name.count("{model="):
                key = name.partition("{")[0]
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def server_commands(
    args: argparse.Namespace, files: Any, ports: dict[str, int], logdir: Path
) -> dict[str, list[str]]:
    """Both command lines, with the same files and budget."""
    beam = args.decoding == "beam"
    asrserve = [
        find_bin("asrserve"),
        "serve",
        "--model",
        str(args.model),
        "--precision",
        args.precision,
        "--host",
        "127.0.0.1",
        "--port",
        str(ports["asrserve"]),
        "--decode-threads",
        str(args.sherpa_work_threads),
        "--num-threads",
        str(args.sherpa_intra_threads),
        "--max-batch-size",
        str(args.max_batch_size),
        *([] if args.asrserve_wait_ms is None else ["--max-wait-ms", str(args.asrserve_wait_ms)]),
        "--max-connections",
        str(args.max_streams + 8),
        "--decoding",
        args.decoding,
        "--beam",
        str(BEAM),
        "--no-endpoint",
    ]
    sherpa = [
        find_bin("sherpa-onnx-online-websocket-server"),
        f"--port={ports['sherpa']}",
        f"--tokens={files.tokens}",
        f"--encoder={files.encoder}",
        f"--decoder={files.decoder}",
        f"--joiner={files.joiner}",
        "--provider=cpu",
        f"--num-work-threads={args.sherpa_work_threads}",
        f"--num-threads={args.sherpa_intra_threads}",
        "--num-io-threads=1",
        f"--max-batch-size={args.max_batch_size}",
        f"--loop-interval-ms={max(1, round(args.batch_wait_ms))}",
        f"--sample-rate={SAMPLE_RATE}",
        f"--input-sample-rate={SAMPLE_RATE}",
        "--feat-dim=80",
        f"--decoding-method={'modified_beam_search' if beam else 'greedy_search'}",
        f"--max-active-paths={BEAM}",
        "--enable-endpoint=false",
        f"--end-tail-padding={TAIL_PADDING_S}",
        f"--log-file={logdir / 'sherpa-onnx.log'}",
    ]
    cmds = {"asrserve": asrserve, "sherpa": sherpa}
    if args.baseline_source is not None:  # the same options, another source tree
        port_at = asrserve.index(str(ports["asrserve"]))
        base = [sys.executable, "-m", "asrserve", *asrserve[1:], *shlex.split(args.baseline_args)]
        base[port_at + 2] = str(ports["baseline"])
        cmds = {"asrserve": asrserve, "baseline": base, "sherpa": sherpa}
    return cmds


def server_names(args: argparse.Namespace) -> tuple[str, ...]:
    """The servers of a run, in the order their levels alternate."""
    return ("asrserve", "baseline", "sherpa") if args.baseline_source else SERVERS


# --- one load level ---------------------------------------------------------------------
@dataclass
class Level:
    server: str
    n: int
    finished: int
    nonempty: int  # streams whose final text is not empty
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    server_cores: float  # server CPU seconds / level wall seconds
    loadgen_cores: float
    other_cores: float  # the rest of the machine during the level
    max_late_ms: float  # worst client lag behind the real-time schedule
    passed: bool
    wall_s: float
    done_first: int  # streams that got Done! before their is_eof result
    errors: list[str] = field(default_factory=list)  # distinct stream errors, first few
    # asrserve /metrics over the level: batched decode calls, mean streams per call,
    # and the decode thread's busy share (decode seconds / level seconds)
    batches: int | None = None
    mean_batch: float | None = None
    decode_busy: float | None = None
    # new-token latency of the partials (see StreamResult.partial_ms), when measured
    partial_p50_ms: float | None = None
    partial_p95_ms: float | None = None
    partial_tokens: int = 0
    loadavg: float = 0.0  # 1-minute load average when the level started

    @property
    def cpu_per_stream(self) -> float:
        """Server cores per stream (CPU seconds per second of real-time audio)."""
        return self.server_cores / self.n


def run_loadgen(
    uri: str,
    audio_path: Path,
    n: int,
    args: argparse.Namespace,
    seed: int,
    realtime: bool = True,
    partials: bool = False,
) -> tuple[list[StreamResult], float, float]:
    """One level in a child process: (stream results, child CPU s, wall s)."""
    spec = {
        "uri": uri,
        "audio": str(audio_path),
        "n": n,
        "stagger_s": args.stagger_s if realtime else 0.0,
        "seed": seed,
        "realtime": realtime,
        # unpaced (the warm-up) a whole clip is decoded after Done: give it time
        "drain_s": args.drain_s if realtime else max(args.drain_s, 60.0),
        "partials": partials,
    }
    timeout = args.stagger_s + args.clip_len_s + spec["drain_s"] + 30.0
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    streams = [StreamResult(**s) for s in out["streams"]]
    return streams, float(out["cpu_s"]), float(out["wall_s"])


def measure_level(
    server: Server,
    n: int,
    audio_path: Path,
    args: argparse.Namespace,
    seed: int,
    all_pids: Sequence[int],
    partials: bool = False,
) -> Level:
    assert server.proc is not None
    pid = server.proc.pid
    wait_idle(pid)
    wait_quiet(all_pids, args.quiet_wait_s)
    loadavg = os.getloadavg()[0]
    m0 = server.metrics()
    srv0, sys0, t0 = proc_cpu_s(pid), system_busy_s(), time.monotonic()
    streams, gen_cpu, _ = run_loadgen(server.uri, audio_path, n, args, seed, partials=partials)
    wall = time.monotonic() - t0
    srv_cpu, sys_cpu = proc_cpu_s(pid) - srv0, system_busy_s() - sys0
    m1 = server.metrics()
    stats: dict[str, Any] = {}
    if m0 and m1:
        calls = m1["asrserve_batch_size_count"] - m0["asrserve_batch_size_count"]
        rows = m1["asrserve_batch_size_sum"] - m0["asrserve_batch_size_sum"]
        busy = m1["asrserve_decode_seconds_total"] - m0["asrserve_decode_seconds_total"]
        stats = {
            "batches": int(calls),
            "mean_batch": rows / calls if calls else None,
            "decode_busy": busy / wall,
        }
    lat = [s.latency_s for s in streams if s.finished and s.latency_s is not None]
    finished = sum(s.finished for s in streams)
    pct = (lambda q: float(np.percentile(lat, q)) * 1000.0) if lat else (lambda q: None)
    p95 = pct(95)
    errors = sorted({s.error for s in streams if s.error})[:3]
    part = [ms for s in streams for ms in s.partial_ms]
    if part:
        stats["partial_p50_ms"] = float(np.percentile(part, 50))
        stats["partial_p95_ms"] = float(np.percentile(part, 95))
        stats["partial_tokens"] = len(part)
    return Level(
        server=server.name,
        n=n,
        finished=finished,
        nonempty=sum(bool(s.text.strip()) for s in streams if s.finished),
        p50_ms=pct(50),
        p95_ms=p95,
        max_ms=max(lat) * 1000.0 if lat else None,
        server_cores=srv_cpu / wall,
        loadgen_cores=gen_cpu / wall,
        other_cores=max(0.0, sys_cpu - srv_cpu - gen_cpu) / wall,
        max_late_ms=max((s.late_s for s in streams), default=0.0) * 1000.0,
        passed=finished == n and p95 is not None and p95 <= args.p95_ms,
        wall_s=wall,
        done_first=sum(s.done_first for s in streams),
        errors=errors,
        loadavg=loadavg,
        **stats,
    )


# --- search -----------------------------------------------------------------------------
class Search:
    """From ``start``, grow N by ``grow`` (doubling by default) until a level fails
    (or ``cap``), or shrink it by ``grow`` until one passes; then bisect until the gap
    between the best pass and the lowest failure is within ``resolution`` x best."""

    def __init__(
        self, start: int, cap: int, max_levels: int, resolution: float, grow: float = 2.0
    ) -> None:
        self.next: int | None = min(start, cap)
        self.cap, self.max_levels, self.resolution, self.grow = cap, max_levels, resolution, grow
        self.best = 0  # largest passing N
        self.fail: int | None = None  # smallest failing N
        self.levels: list[Level] = []
        self.stopped = ""  # why the search ended early, if it did

    def record(self, level: Level) -> None:
        self.levels.append(level)
        n = level.n
        if level.passed:
            self.best = max(self.best, n)
        else:
            self.fail = n if self.fail is None else min(self.fail, n)
        if self.fail is None:
            self.next = (
                None if n >= self.cap else min(self.cap, max(n + 1, math.ceil(n * self.grow)))
            )
            if self.next is None:
                self.stopped = f"reached --max-streams {self.cap}"
        elif self.fail - self.best <= max(1, math.floor(self.best * self.resolution)):
            self.next = None
        elif self.best == 0:
            self.next = max(1, min(self.fail - 1, math.floor(self.fail / self.grow)))
        else:
            self.next = (self.best + self.fail) // 2
        if self.next is not None and len(self.levels) >= self.max_levels:
            self.next, self.stopped = None, f"--max-levels {self.max_levels} reached"

    def at_best(self) -> Level | None:
        return next((lv for lv in self.levels if lv.n == self.best and lv.passed), None)


class _Bench:
    """Runs levels on both servers, alternating between them."""

    def __init__(
        self,
        servers: dict[str, Server],
        audio_path: Path,
        args: argparse.Namespace,
        crashed: dict[str, str],
    ) -> None:
        self.servers, self.audio_path, self.args, self.crashed = servers, audio_path, args, crashed

    def level(self, name: str, n: int, seed: int, partials: bool = False) -> Level | None:
        """One level on one server, printed; None when the server is gone."""
        server = self.servers[name]
        if not server.alive():
            self.crashed[name] = server.tail()
            return None
        pids = [sv.proc.pid for sv in self.servers.values() if sv.proc is not None]
        lv = measure_level(server, n, self.audio_path, self.args, seed, pids, partials)
        print(format_level(lv), flush=True)
        if lv.batches is not None:
            print(
                f"#   {name} N={n}: {lv.batches} decode calls, "
                f"{lv.mean_batch or 0:.1f} streams per call, in decode_streams "
                f"{lv.decode_busy or 0:.0%} of the time",
                flush=True,
            )
        for err in lv.errors:
            print(f"#   {name} N={n}: {err}", flush=True)
        return lv

    def search_run(self, earlier: list[dict[str, Search]]) -> dict[str, Search]:
        """One capacity search per server, level by level in turn. After the first
        run a search starts at the median maximum so far and steps by 15 %."""
        a = self.args
        searches = {}
        for name in self.servers:
            bests = [run[name].best for run in earlier if run[name].best]
            start, grow = (int(np.median(bests)), 1.15) if bests else (a.start, 2.0)
            searches[name] = Search(start, a.max_streams, a.max_levels, a.resolution, grow)
        t_start = time.monotonic()
        while any(s.next is not None for s in searches.values()):
            for name, search in searches.items():
                n = search.next
                if n is None:
                    continue
                if time.monotonic() - t_start > a.time_budget_s:
                    search.next, search.stopped = None, "--time-budget-s reached"
                    continue
                lv = self.level(name, n, a.seed + n + 1000 * len(earlier))
                if lv is None:
                    search.next, search.stopped = None, "server exited"
                    continue
                search.record(lv)
        return searches

    def fixed_levels(self, ns: Sequence[int], repeat: int) -> list[Level]:
        """Each N, ``repeat`` times, both servers in turn (partials measured)."""
        out: list[Level] = []
        for r in range(repeat):
            for n in ns:
                for name in self.servers:
                    lv = self.level(name, n, self.args.seed + n + 1000 * r, partials=True)
                    if lv is not None:
                        out.append(lv)
        return out


# --- output -----------------------------------------------------------------------------
_COLUMNS = (
    ("server", 8),
    ("N", 4),
    ("finished", 8),
    ("text", 5),
    ("p50 ms", 7),
    ("p95 ms", 7),
    ("max ms", 7),
    ("srv cpu", 7),
    ("gen cpu", 7),
    ("other", 5),
    ("result", 6),
)


def _line(cells: Sequence[str]) -> str:
    return "  ".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
        for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
    )


def header() -> str:
    return _line([name for name, _ in _COLUMNS])


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def format_level(lv: Level) -> str:
    return _line(
        [
            lv.server,
            str(lv.n),
            f"{lv.finished}/{lv.n}",
            f"{lv.nonempty}",
            _ms(lv.p50_ms),
            _ms(lv.p95_ms),
            _ms(lv.max_ms),
            f"{lv.server_cores:.2f}",
            f"{lv.loadgen_cores:.2f}",
            f"{lv.other_cores:.2f}",
            "pass" if lv.passed else "FAIL",
        ]
    )


def environment() -> dict[str, Any]:
    import onnxruntime

    import asrserve

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    def git(*cmd: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(ROOT), *cmd], capture_output=True, text=True, check=False
            )
        except OSError:
            return "?"
        return out.stdout.strip() if out.returncode == 0 else "?"

    return {
        "git": git("rev-parse", "--short", "HEAD"),
        "asrserve_tree_dirty": bool(git("status", "--porcelain", "--", "asrserve")),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": os.getloadavg()[0],
        "asrserve": asrserve.__version__,
        "onnxruntime": onnxruntime.__version__,
        "sherpa_onnx_bin": version("sherpa-onnx-bin"),
        "websockets": version("websockets"),
        "numpy": np.__version__,
    }


# --- main -------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=None, help=f"model dir (default {DEFAULT_MODEL})")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="wav file (any rate)")
    p.add_argument("--clip-s", type=float, default=None, help="use only the first S seconds")
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    p.add_argument("--decoding", default="greedy", choices=["greedy", "beam"])
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="decode threads per server: asrserve --decode-threads, sherpa --num-work-threads",
    )
    p.add_argument(
        "--sherpa-work-threads",
        type=int,
        default=None,
        help="sherpa-onnx --num-work-threads and asrserve --decode-threads (default: --threads)",
    )
    p.add_argument(
        "--sherpa-intra-threads",
        type=int,
        default=1,
        help="sherpa-onnx and asrserve --num-threads (onnxruntime threads per decode thread)",
    )
    p.add_argument("--max-batch-size", type=int, default=32, help="both servers")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="sherpa-onnx --loop-interval-ms (its default)",
    )
    p.add_argument(
        "--asrserve-wait-ms",
        type=float,
        default=None,
        help="asrserve --max-wait-ms (default: the server's own default)",
    )
    p.add_argument("--p95-ms", type=float, default=TARGET_P95_MS, help="pass threshold")
    p.add_argument("--start", type=int, default=2, help="first load level (streams)")
    p.add_argument("--max-streams", type=int, default=256, help="highest level tried")
    p.add_argument("--max-levels", type=int, default=10, help="levels per server at most")
    p.add_argument(
        "--resolution", type=float, default=0.1, help="bisect until gap <= this x best N"
    )
    p.add_argument("--stagger-s", type=float, default=1.0, help="stream starts spread over this")
    p.add_argument("--drain-s", type=float, default=5.0, help="wait this long after Done")
    p.add_argument(
        "--quiet-wait-s",
        type=float,
        default=15.0,
        help="before each level, wait up to this long for other processes to go idle",
    )
    p.add_argument("--time-budget-s", type=float, default=330.0, help="no level starts later")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="capacity searches per server, interleaved; the summary gives their median",
    )
    p.add_argument(
        "--levels",
        default=None,
        help="instead of searching: run these N (e.g. 1,8,32) on both servers in turn and "
        "report CPU per stream, final and new-token (partial) latency",
    )
    p.add_argument("--repeat", type=int, default=3, help="with --levels: rounds of all levels")
    p.add_argument(
        "--baseline-source",
        type=Path,
        default=None,
        help="also run asrserve from this source tree (e.g. a `git archive` of an older "
        "commit) with the same options, as a third server in the rotation",
    )
    p.add_argument(
        "--baseline-args",
        default="",
        help="more `asrserve serve` options for the --baseline-source server (e.g. "
        "'--event-loop asyncio' with --baseline-source . to compare one option)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the levels here")
    p.add_argument("--quick", action="store_true", help="tiny model, 4 s clip, 2 levels per server")
    p.add_argument("--loadgen", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.model = args.model or FALLBACK_MODEL
        args.clip_s = args.clip_s or 4.0
        args.start, args.max_levels, args.drain_s, args.time_budget_s = 8, 2, 3.0, 60.0
        args.quiet_wait_s = min(args.quiet_wait_s, 3.0)
    if args.model is None:
        args.model = DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else FALLBACK_MODEL
    if not args.model.is_dir():
        p.error(f"model directory not found: {args.model} (set ASRSERVE_SHARED?)")
    if not args.audio.is_file():
        p.error(f"audio file not found: {args.audio}")
    if args.levels is not None:
        try:
            args.levels = [int(v) for v in args.levels.split(",") if v.strip()]
        except ValueError:
            p.error(f"--levels takes N,N,... got {args.levels!r}")
        if not args.levels or min(args.levels) < 1:
            p.error("--levels needs N >= 1")
    if min(args.runs, args.repeat) < 1:
        p.error("--runs and --repeat must be >= 1")
    if args.sherpa_work_threads is None:
        args.sherpa_work_threads = args.threads
    counts = (args.threads, args.sherpa_work_threads, args.sherpa_intra_threads)
    if min(*counts, args.max_batch_size, args.start) < 1:
        p.error("thread counts, --max-batch-size and --start must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--loadgen"] and len(argv) == 2:
        return loadgen_main(argv[1])
    args = parse_args(argv)

    from asrserve.audio import load_audio
    from asrserve.families import find_model_files

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    files = find_model_files(args.model, args.precision)  # what `asrserve serve` loads
    audio = load_audio(args.audio, SAMPLE_RATE).astype(np.float32)
    if args.clip_s is not None:
        audio = audio[: round(args.clip_s * SAMPLE_RATE)]
    args.clip_len_s = audio.size / SAMPLE_RATE
    env = environment()
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        logdir = Path(tmp)
        audio_path = logdir / "audio.f32"
        audio.astype("<f4").tofile(audio_path)
        names = server_names(args)
        ports = {name: free_port() for name in names}
        cmds = server_commands(args, files, ports, logdir)
        servers = {
            name: Server(name, cmds[name], ports[name], logdir / f"{name}.out") for name in names
        }
        if args.baseline_source is not None:
            src = args.baseline_source.resolve()
            path = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            servers["baseline"].env = {**os.environ, "PYTHONPATH": path}
            servers["baseline"].cwd = src
        wait = "default" if args.asrserve_wait_ms is None else f"{args.asrserve_wait_ms:g}"
        print(
            f"# model {args.model}\n"
            f"#   files (both servers): {files.encoder.name}, {files.decoder.name}, "
            f"{files.joiner.name}, {files.tokens.name}\n"
            f"# audio {args.audio} ({args.clip_len_s:.2f} s), {FRAME_S * 1000:.0f} ms frames at "
            f"real-time pace, starts staggered over {args.stagger_s:g} s; tail padding "
            f"{TAIL_PADDING_S} s (both)\n"
            f"# threads: asrserve --decode-threads {args.sherpa_work_threads} --num-threads "
            f"{args.sherpa_intra_threads}; sherpa-onnx --num-work-threads "
            f"{args.sherpa_work_threads} --num-threads {args.sherpa_intra_threads}; "
            f"max batch {args.max_batch_size}; sherpa loop interval {args.batch_wait_ms:g} ms, "
            f"asrserve max wait {wait} ms; "
            f"{args.decoding}, endpointing off\n"
            f"# asrserve {env['asrserve']} at {env['git']}"
            f"{' + uncommitted asrserve/ changes' if env['asrserve_tree_dirty'] else ''}, "
            f"onnxruntime {env['onnxruntime']}; sherpa-onnx-bin "
            f"{env['sherpa_onnx_bin']} (bundles its own onnxruntime); {env['cpu_count']} CPUs, "
            f"load {env['loadavg_1m_at_start']:.2f}\n"
            f"# pass: all streams finish and p95 final latency <= {args.p95_ms:g} ms; "
            f"target asrserve/sherpa max streams >= {TARGET_RATIO}",
            flush=True,
        )
        for name in names:
            print(f"# {name}: {' '.join(cmds[name])}", flush=True)
        if args.baseline_source is not None:
            print(f"# baseline: asrserve from {args.baseline_source.resolve()}", flush=True)
        warm: dict[str, str] = {}
        crashed: dict[str, str] = {}
        bench = _Bench(servers, audio_path, args, crashed)
        runs: list[dict[str, Search]] = []
        fixed: list[Level] = []
        try:
            for name, server in servers.items():
                startup = server.start()
                streams, _, wall = run_loadgen(server.uri, audio_path, 1, args, 0, realtime=False)
                if not streams[0].finished:
                    raise RuntimeError(
                        f"{name} warm-up stream failed: {streams[0].error}\n{server.tail()}"
                    )
                warm[name] = streams[0].text
                print(
                    f"# {name}: ready in {startup:.1f} s; warm-up stream (unpaced) "
                    f"{wall:.2f} s, {len(streams[0].text.split())} words",
                    flush=True,
                )
            same = warm["asrserve"] == warm["sherpa"]
            print(
                f"# warm-up final texts {'identical' if same else 'DIFFER'}: "
                f"{warm['asrserve'][:60]!r}",
                flush=True,
            )
            print(header(), flush=True)
            if args.levels:
                fixed = bench.fixed_levels(args.levels, args.repeat)
            else:
                for r in range(args.runs):
                    if r:
                        print(f"# run {r + 1} of {args.runs}", flush=True)
                    runs.append(bench.search_run(runs))
        finally:
            for server in servers.values():
                server.stop()
        for name, tail in crashed.items():
            print(f"# {name} EXITED during the run; last log lines:\n{tail}")
        problems = log_problems(servers["asrserve"].log)
        if problems:
            print(f"# asrserve log: {len(problems)} error/traceback line(s), first ones:")
            print("\n".join(f"#   {line}" for line in problems[:8]))
        if args.levels:
            summary = summarize_fixed(fixed, args)
            levels = fixed
        else:
            summary = summarize_runs(runs, args)
            levels = [lv for run in runs for s in run.values() for lv in s.levels]
        if args.json is not None:
            payload = {
                "model": str(args.model),
                "files": {k: str(v) for k, v in vars(files).items() if v is not None},
                "audio": str(args.audio),
                "clip_s": args.clip_len_s,
                "settings": {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()
                    if k != "loadgen"
                },
                "commands": cmds,
                "environment": env,
                "warmup_texts_identical": warm.get("asrserve") == warm.get("sherpa"),
                "summary": summary,
                "levels": [asdict(lv) for lv in levels],
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
            print(f"# wrote {args.json}")
    return 0


def log_problems(log: Path) -> list[str]:
    """Lines of a server log that report errors or tracebacks."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    keys = ("Traceback", "ERROR", "Exception", "Error:")
    return [line for line in text.splitlines() if any(k in line for k in keys)]


def _spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median (min-max)`` of some values, or ``-``."""
    if not values:
        return "-"
    med = fmt.format(float(np.median(values)))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def summarize_runs(runs: list[dict[str, Search]], args: argparse.Namespace) -> dict[str, Any]:
    """Print each run's maxima and ratio, then their medians; return them for the JSON."""
    out: dict[str, Any] = {"runs": []}
    print(f"\n{'run':>3}  {'server':<8}  {'max N':>5}  {'p50 ms':>7}  {'p95 ms':>7}  "
          f"{'levels':>6}  {'load':>5}  note")  # fmt: skip
    ratios: list[float] = []
    for i, searches in enumerate(runs, 1):
        row: dict[str, Any] = {}
        for name, s in searches.items():
            lv = s.at_best()
            p50, p95 = (lv.p50_ms, lv.p95_ms) if lv else (None, None)
            load = float(np.mean([v.loadavg for v in s.levels])) if s.levels else 0.0
            note = (s.stopped + "; " if s.stopped else "") + (
                f"lowest failing N {s.fail}"
                if s.fail is not None
                else "no failing level: lower bound"
            )
            print(f"{i:>3}  {name:<8}  {s.best:>5}  {_ms(p50):>7}  {_ms(p95):>7}  "
                  f"{len(s.levels):>6}  {load:>5.2f}  {note}")  # fmt: skip
            row[name] = {
                "max_streams": s.best,
                "lowest_failing": s.fail,
                "p50_ms": p50,
                "p95_ms": p95,
                "levels": len(s.levels),
                "stopped": s.stopped,
                "loadavg_mean": load,
            }
        a, b = searches["asrserve"].best, searches["sherpa"].best
        row["ratio"] = a / b if b else None
        if b:
            ratios.append(a / b)
        if "baseline" in searches and b:
            row["baseline_ratio"] = searches["baseline"].best / b
        out["runs"].append(row)
    for name in runs[0] if runs else ():
        bests = [run[name].best for run in runs]
        out[name] = {"max_streams_median": float(np.median(bests)) if bests else None,
                     "max_streams": bests}  # fmt: skip
    out["ratio_median"] = float(np.median(ratios)) if ratios else None
    out["ratios"] = ratios
    loads = [lv.loadavg for run in runs for s in run.values() for lv in s.levels]
    out["loadavg"] = [min(loads), float(np.median(loads)), max(loads)] if loads else None
    med = out["ratio_median"]
    verdict = "n/a" if med is None else ("met" if med >= TARGET_RATIO else "MISS")
    print(
        f"# asrserve/sherpa max streams over {len(runs)} run(s): median "
        f"{_spread(ratios, '{:.2f}')} (target >= {TARGET_RATIO}: {verdict}); "
        f"asrserve {_spread([float(r['asrserve']['max_streams']) for r in out['runs']])}, "
        f"sherpa {_spread([float(r['sherpa']['max_streams']) for r in out['runs']])}; "
        + (
            f"baseline {_spread([float(r['baseline']['max_streams']) for r in out['runs']])} "
            f"(ratio {_spread([r['baseline_ratio'] for r in out['runs']], '{:.2f}')}); "
            if runs and "baseline" in runs[0]
            else ""
        )
        + f"resolution {args.resolution:g} x N; load average "
        + (f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-")
    )
    _warnings([lv for run in runs for s in run.values() for lv in s.levels])
    return out


def summarize_fixed(levels: list[Level], args: argparse.Namespace) -> dict[str, Any]:
    """Print the medians per server and N (CPU per stream, final and new-token
    latency) and the asrserve/sherpa CPU ratio; return them for the JSON."""
    out: dict[str, Any] = {}
    print(f"\n{'N':>4}  {'server':<8}  {'cpu/stream':>16}  {'final p50':>14}  "
          f"{'final p95':>14}  {'partial p50':>14}  {'partial p95':>14}  {'load':>9}")  # fmt: skip
    for n in args.levels:
        row: dict[str, Any] = {}
        for name in server_names(args):
            lvs = [lv for lv in levels if lv.n == n and lv.server == name]
            cpu = [lv.cpu_per_stream for lv in lvs]
            cell = {
                "cpu_per_stream": float(np.median(cpu)) if cpu else None,
                "cpu_per_stream_all": cpu,
                "final_p50_ms": [lv.p50_ms for lv in lvs],
                "final_p95_ms": [lv.p95_ms for lv in lvs],
                "partial_p50_ms": [lv.partial_p50_ms for lv in lvs],
                "partial_p95_ms": [lv.partial_p95_ms for lv in lvs],
                "passed": [lv.passed for lv in lvs],
                "loadavg": [lv.loadavg for lv in lvs],
            }
            row[name] = cell

            def vals(key: str, c: dict[str, Any] = cell) -> list[float]:
                return [float(v) for v in c[key] if v is not None]

            loads = vals("loadavg")
            load = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-"
            print(f"{n:>4}  {name:<8}  {_spread(cpu, '{:.4f}'):>16}  "
                  f"{_spread(vals('final_p50_ms')):>14}  {_spread(vals('final_p95_ms')):>14}  "
                  f"{_spread(vals('partial_p50_ms')):>14}  {_spread(vals('partial_p95_ms')):>14}  "
                  f"{load:>9}")  # fmt: skip
        a, b = row["asrserve"]["cpu_per_stream"], row["sherpa"]["cpu_per_stream"]
        row["cpu_ratio"] = a / b if a is not None and b else None
        if "baseline" in row:
            c = row["baseline"]["cpu_per_stream"]
            row["baseline_cpu_ratio"] = c / b if c is not None and b else None
        out[str(n)] = row
    ratios = ", ".join(
        f"N={n}: {out[str(n)]['cpu_ratio']:.2f}"
        for n in args.levels
        if out[str(n)]["cpu_ratio"] is not None
    )
    print(f"# server CPU per stream, asrserve/sherpa (medians of {args.repeat}): {ratios} "
          f"(target <= {TARGET_CPU_RATIO})")  # fmt: skip
    _warnings(levels)
    return out


def _warnings(levels: list[Level]) -> None:
    late = max((lv.max_late_ms for lv in levels), default=0.0)
    if late > 100:
        print(
            f"# WARN: the load generator fell up to {late:.0f} ms behind real time "
            f"(client-side CPU starvation); figures at that level are client-limited"
        )
    noisy = [lv for lv in levels if lv.other_cores > 0.25]
    if noisy:
        worst = max(lv.other_cores for lv in noisy)
        print(
            f"# WARN: other processes used > 0.25 cores (up to {worst:.2f}) during "
            f"{len(noisy)} level(s): " + ", ".join(f"{lv.server} N={lv.n}" for lv in noisy)
        )


if __name__ == "__main__":
    sys.exit(main())
