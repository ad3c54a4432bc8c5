"""Server memory: RSS per idle open stream, and RSS after many streams came and went.

Starts asrserve's server and sherpa-onnx's C++ server in turn, on the same model
files and thread layout as ``bench_server.py``, and measures each one's VmRSS:

- **per idle stream**: after a warm-up (``--warm`` streams with the same audio),
  ``--streams`` connections each send ``--idle-audio-s`` of audio in 100 ms
  frames at real-time pace (so the server has created the stream and decoded
  its first chunks, as a live client would have it) and then stay open, idle;
  (RSS with them open - RSS before) / ``--streams``. Compared with the model's
  encoder state per stream (``init_state()``: what any server must keep).
- **churn**: ``--churn`` more streams (0.5 s of audio unpaced, ``Done``, read
  to ``Done!``, close), ``--wave`` at a time; RSS after every quarter of them.
  A server that frees what its streams held shows no growth past the warm-up.

    python benchmarks/bench_memory.py                  # 80M LSTM, ~2 min
    python benchmarks/bench_memory.py --model DIR --streams 200 --churn 1000 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

TARGET_EXTRA_KIB = 64  # per idle stream: the state plus at most this much
KIB = 1024


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0


async def _open_idle(uri: str, n: int, frames: list[bytes]) -> list[Any]:
    """``n`` connections that each sent ``frames`` at real-time pace (and read
    nothing yet)."""
    from websockets.asyncio.client import connect

    async def one() -> Any:
        ws = await connect(uri, compression=None, max_size=None, ping_interval=None)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, t0 + (k + 1) * bs.FRAME_S - loop.time()))
            await ws.send(frame)
        return ws

    socks = []
    for i in range(0, n, 50):  # in waves: a burst of handshakes is not what is measured
        socks += await asyncio.gather(*(one() for _ in range(min(50, n - i))))
    return socks


async def _finish(socks: list[Any], drain_s: float = 30.0) -> int:
    """``Done`` on every connection, read to ``Done!``, close; how many ended so."""

    async def one(ws: Any) -> bool:
        try:
            await ws.send("Done")
            async with asyncio.timeout(drain_s):
                async for msg in ws:
                    if msg == "Done!":
                        break
            await ws.close()
            return True
        except Exception:
            return False

    return sum(await asyncio.gather(*(one(ws) for ws in socks)))


async def _churn(uri: str, n: int, wave: int, audio: bytes) -> int:
    """``n`` short streams, ``wave`` at a time; how many finished."""
    from websockets.asyncio.client import connect

    async def one() -> bool:
        try:
            async with connect(uri, compression=None, max_size=None, ping_interval=None) as ws:
                await ws.send(audio)
                await ws.send("Done")
                async with asyncio.timeout(60):
                    async for msg in ws:
                        if msg == "Done!":
                            return True
        except Exception:
            return False
        return False

    done = 0
    for i in range(0, n, wave):
        done += sum(await asyncio.gather(*(one() for _ in range(min(wave, n - i)))))
    return done


def settle(pid: int) -> int:
    """RSS once the server is idle again (a little time for frees to land)."""
    bs.wait_idle(pid, timeout_s=10.0)
    time.sleep(1.0)
    return rss_kib(pid)


def measure(server: bs.Server, args: argparse.Namespace, audio: np.ndarray) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    step = round(bs.FRAME_S * bs.SAMPLE_RATE)
    idle = audio[: round(args.idle_audio_s * bs.SAMPLE_RATE)].astype("<f4")
    frames = [idle[i : i + step].tobytes() for i in range(0, idle.size, step)]
    short = audio[: bs.SAMPLE_RATE // 2].astype("<f4").tobytes()
    out: dict[str, Any] = {"rss_start_kib": rss_kib(pid)}

    async def warm_up() -> None:
        # the idle streams' own audio first: what it leaves in shared caches
        # (asrserve's decoder-output cache) is not a cost per stream
        await _finish(await _open_idle(server.uri, args.warm, frames))

    asyncio.run(warm_up())
    base = settle(pid)
    socks: list[Any] = []

    async def idle_phase() -> tuple[int, int]:
        nonlocal socks
        socks = await _open_idle(server.uri, args.streams, frames)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(bs.wait_idle, pid, 10.0)
        await asyncio.sleep(1.0)
        held = rss_kib(pid)
        ended = await _finish(socks)
        return held, ended

    held, ended = asyncio.run(idle_phase())
    out.update(
        rss_warm_kib=base,
        rss_idle_streams_kib=held,
        idle_streams=args.streams,
        idle_streams_ended=ended,
        per_idle_stream_kib=(held - base) / args.streams,
    )
    after_idle = settle(pid)
    points = [(0, after_idle)]
    churned = 0
    quarter = max(1, args.churn // 4)
    while churned < args.churn:
        n = min(quarter, args.churn - churned)
        asyncio.run(_churn(server.uri, n, args.wave, short))
        churned += n
        points.append((churned, settle(pid)))
    out.update(
        rss_after_idle_kib=after_idle,
        churn=args.churn,
        churn_rss_kib=points,
        churn_growth_kib=points[-1][1] - points[0][1],
    )
    return out


def state_bytes(model: Path, precision: str) -> int:
    """The encoder state one stream carries (``init_state()``), in bytes."""
    import asrserve

    rec = asrserve.load_model(model, precision=precision)
    return int(sum(np.asarray(a).nbytes for a in rec.model.init_state()))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=None, help="model dir (bench_server's default)")
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    p.add_argument("--threads", type=int, default=2, help="decode threads (both servers)")
    p.add_argument("--streams", type=int, default=200, help="idle streams held open")
    p.add_argument("--idle-audio-s", type=float, default=1.0, help="audio each sends first")
    p.add_argument(
        "--warm",
        type=int,
        default=2,
        help="streams sending the idle streams' audio before the baseline (few: a wave of "
        "them leaves freed memory that the idle streams would reuse, hiding their cost)",
    )
    p.add_argument("--churn", type=int, default=1000, help="short streams after the idle phase")
    p.add_argument("--wave", type=int, default=50, help="churn streams at a time")
    p.add_argument("--only", choices=bs.SERVERS, default=None, help="measure one server")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from asrserve.audio import load_audio
    from asrserve.families import find_model_files

    sargv = ["--threads", str(args.threads), "--precision", args.precision]
    sargv += ["--max-streams", str(max(args.streams, args.wave) + 8)]
    if args.model is not None:
        sargv += ["--model", str(args.model)]
    sargs = bs.parse_args(sargv)
    files = find_model_files(sargs.model, sargs.precision)
    audio = load_audio(sargs.audio, bs.SAMPLE_RATE).astype(np.float32)
    state = state_bytes(sargs.model, sargs.precision)
    results: dict[str, Any] = {
        "model": str(sargs.model),
        "state_bytes_per_stream": state,
        "loadavg_at_start": os.getloadavg()[0],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    print(
        f"# model {sargs.model} ({files.encoder.name}); encoder state per stream "
        f"{state / KIB:.1f} KiB; target per idle stream <= state + {TARGET_EXTRA_KIB} KiB = "
        f"{state / KIB + TARGET_EXTRA_KIB:.0f} KiB; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        ports = {name: bs.free_port() for name in bs.SERVERS}
        cmds = bs.server_commands(sargs, files, ports, Path(tmp))
        cmds["asrserve"] += ["--idle-timeout-s", "600"]  # idle on purpose
        for name in bs.SERVERS:
            if args.only and name != args.only:
                continue
            server = bs.Server(name, cmds[name], ports[name], Path(tmp) / f"{name}.out")
            try:
                server.start()
                r = measure(server, args, audio)
            finally:
                server.stop()
            results[name] = r
            growth = r["churn_growth_kib"]
            print(
                f"{name:<8}  RSS warm {r['rss_warm_kib'] / KIB:7.1f} MiB; "
                f"{r['idle_streams']} idle streams "
                f"+{(r['rss_idle_streams_kib'] - r['rss_warm_kib']) / KIB:.1f} MiB "
                f"= {r['per_idle_stream_kib']:.0f} KiB per stream ({r['idle_streams_ended']} ended "
                f"cleanly); churn {r['churn']}: "
                + " -> ".join(f"{kib / KIB:.1f}" for _, kib in r["churn_rss_kib"])
                + f" MiB ({'+' if growth >= 0 else ''}{growth / KIB:.1f} MiB); "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )  # fmt: skip
    if "asrserve" in results:
        per = results["asrserve"]["per_idle_stream_kib"]
        limit = state / KIB + TARGET_EXTRA_KIB
        print(
            f"# asrserve per idle stream {per:.0f} KiB vs state {state / KIB:.0f} KiB + "
            f"{TARGET_EXTRA_KIB}: {'met' if per <= limit else 'MISS'}"
            + (
                f"; sherpa-onnx {results['sherpa']['per_idle_stream_kib']:.0f} KiB"
                if "sherpa" in results
                else ""
            )
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
