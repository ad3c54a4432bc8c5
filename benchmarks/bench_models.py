"""Does loading a model stall the streams of another? Final latency of live
streams on one model, p50/p95, in rounds with nothing else happening and in
rounds during which the server loads another model.

``asrserve serve`` runs three models: ``live`` (the demo LSTM; its streams are
measured) and ``bigA``/``bigB`` (the 80M LSTM, the same files twice) with
``--max-loaded-models 2``: each "during" round opens a session naming the big
model that is not loaded, so the server unloads the other one and loads it
(about a second of CPU on a thread of its own) while the round's streams are
ending. Each round: N streams of ``live`` start spread over one clip length,
each sends the clip at real-time pace in 100 ms frames, then ``stop``; final
latency is ``stop`` sent → ``eof`` received. Rounds alternate before/during so
that machine noise hits both alike.

    python benchmarks/bench_models.py                 # 8 streams, 6 rounds each (~2 min)
    python benchmarks/bench_models.py --streams 16 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASRSERVE_SHARED", str(ROOT.parent / "shared")))
DEMO = ROOT / "asrserve" / "data" / "models" / "asrserve-tiny-lstm-synth-en"
BIG = SHARED / "models" / "bench-lstm-random-80m"
FRAME_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def live_stream(url: str, pcm: bytes, delay: float) -> float:
    """One paced stream; its final latency in seconds."""
    await asyncio.sleep(delay)
    step = int(16000 * FRAME_S) * 2
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le"}))
        t0 = time.monotonic()
        for i, begin in enumerate(range(0, len(pcm), step)):
            await ws.send(pcm[begin : begin + step])
            await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_S - time.monotonic()))
        await ws.send('{"type": "stop"}')
        sent = time.monotonic()
        async for m in ws:
            if isinstance(m, str) and json.loads(m)["type"] == "eof":
                return time.monotonic() - sent
    raise RuntimeError("no eof")


async def load_other(url: str, name: str) -> float:
    """Make the server load ``name``: a session naming it; seconds until ``ready``."""
    t0 = time.monotonic()
    async with connect(url) as ws:
        start = {"type": "start", "sample_rate": 16000, "format": "s16le", "model": name}
        await ws.send(json.dumps(start))
        reply = json.loads(await ws.recv())
        if reply["type"] != "ready":
            raise RuntimeError(reply)
        took = time.monotonic() - t0
        await ws.send('{"type": "stop"}')
        async for _ in ws:
            pass
    return took


async def run(args: argparse.Namespace, port: int, pcm: bytes, clip_s: float) -> dict[str, list]:
    url = f"ws://127.0.0.1:{port}"
    out: dict[str, list] = {"before": [], "during": [], "load_s": []}
    big = ["bigA", "bigB"]
    await load_other(url, big[1])  # the first load is not measured
    for r in range(2 * args.rounds):
        during = r % 2 == 1
        delays = np.linspace(0, clip_s, args.streams, endpoint=False)
        tasks = [asyncio.create_task(live_stream(url, pcm, float(d))) for d in delays]
        if during:
            # the load starts while the first streams are ending
            await asyncio.sleep(clip_s + 0.2)
            out["load_s"].append(await load_other(url, big[(r // 2) % 2]))
        latencies = await asyncio.gather(*tasks)
        out["during" if during else "before"] += latencies
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each kind")
    ap.add_argument("--audio", type=Path, default=DEMO / "test_wavs" / "synth-0000.wav")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not BIG.is_dir():
        print(f"needs the 80M LSTM at {BIG}", file=sys.stderr)
        return 2
    x, rate = sf.read(str(args.audio), dtype="float32")
    assert rate == 16000, "a 16 kHz clip"
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    clip_s = len(x) / rate
    port = free_port()
    exe = Path(sys.executable).with_name("asrserve")
    cmd = [
        str(exe), "serve", "--model", f"live={DEMO}", "--model", f"bigA={BIG}",
        "--model", f"bigB={BIG}", "--max-loaded-models", "2", "--port", str(port),
        "--no-endpoint", "--max-connections", "256",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            out = asyncio.run(run(args, port, pcm, clip_s))
        finally:
            proc.terminate()
            proc.wait(10)
        print(log.read_text().count("loaded model"), "loads in the server log")
    load = os.getloadavg()
    print(f"{args.streams} live streams of a {clip_s:.1f} s clip, {args.rounds} rounds each; "
          f"load average {load[0]:.2f}")  # fmt: skip
    print(f"model load while streaming: {np.median(out['load_s']):.2f} s (median to ready)")
    print("| rounds | finals | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("before", "during"):
        ms = np.array(out[kind]) * 1000
        print(f"| {kind} | {ms.size} | {np.percentile(ms, 50):.0f} | "
              f"{np.percentile(ms, 95):.0f} | {ms.max():.0f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
