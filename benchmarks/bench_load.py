"""Load benchmark: real-time stream capacity vs sherpa-onnx, plus long fuzz and load runs.

Three modes (any combination; capacity when none is given):

- ``--capacity``: for asrserve and ``sherpa-onnx-online-websocket-server`` in one
  run, on the same model files, the largest number of concurrent streams paced
  at 1x real time whose p95 final latency (``Done`` sent -> final result) stays
  <= 500 ms, searched by doubling then bisection. This is ``bench_server.py``'s
  search (same servers, same load generator, same pass rule); this script runs
  it and keeps its JSON.
- ``--fuzz``: tests/server/test_fuzz.py's run with more frames (``--long``:
  50,000; ``--frames N``): hostile frames in all three dialects beside 8 good
  streams; reports frames, time, close codes, log problems, finals identical.
- ``--load``: tests/server/test_load.py's run with more rounds (``--long``: 10
  rounds of 200 streams, 100 dropped): per-run RSS before/peak/after.

    python benchmarks/bench_load.py --out load.json                 # capacity (~5 min)
    python benchmarks/bench_load.py --fuzz --long --out fuzz.json
    python benchmarks/bench_load.py --load --long --out rss.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.server.* and benchmarks' siblings
sys.path.insert(0, str(Path(__file__).resolve().parent))


def capacity(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import bench_server

    argv = ["--json", str(out)]
    if args.model is not None:
        argv += ["--model", str(args.model)]
    if args.quick:
        argv += ["--quick"]
    argv += args.server_args
    t0 = time.monotonic()
    rc = bench_server.main(argv)
    data: dict[str, Any] = json.loads(out.read_text())
    data["wall_s"] = time.monotonic() - t0
    data["exit_code"] = rc
    return data


def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    import asrserve
    from asrserve.config import EndpointConfig
    from tests.server import test_fuzz as tf

    n = args.frames or (50_000 if args.long else tf.CI_FRAMES)
    rec = asrserve.load_model(
        tf.exact_model(), precision="fp32", endpoint=EndpointConfig(enabled=False)
    )
    t0 = time.monotonic()
    run = tf.fuzz_run(rec, n, args.seed)
    s = run.stats
    result = {
        "frames_target": n,
        "frames": s.frames,
        "bytes": s.bytes,
        "connections": s.connections,
        "by_dialect": s.by_kind,
        "server_close_codes": {str(k): v for k, v in s.close_codes.items()},
        "fuzz_s": run.fuzz_s,
        "wall_s": time.monotonic() - t0,
        "good_finals_identical": run.good == run.clean,
        "healthy_after": run.healthy_after,
        "state_left": run.leftover,
        "log_problems": run.problems[:20],
        "seed": args.seed,
    }
    print(
        f"fuzz: {s.frames} frames ({s.bytes / 1e6:.1f} MB) over {s.connections} connections in "
        f"{run.fuzz_s:.1f} s; dialects {s.by_kind}; close codes {result['server_close_codes']}; "
        f"good finals identical: {result['good_finals_identical']}; log problems: "
        f"{len(run.problems)}; state left: {run.leftover}",
        flush=True,
    )
    return result


def load(args: argparse.Namespace) -> dict[str, Any]:
    from tests.server import test_load as tl

    rounds = 10 if args.long else 1
    n, n_drop = args.streams, args.streams // 2
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        report = tl.load_run(Path(tmp) / "server.log", n=n, n_drop=n_drop, rounds=rounds)
    print("load: " + tl.describe(report), flush=True)
    kept = [o for o in report.outcomes if o.drop is None]
    return {
        "rounds": rounds,
        "streams_per_round": n,
        "dropped_per_round": n_drop,
        "finished": sum(o.eof and not o.error for o in kept),
        "kept": len(kept),
        "rss_before_kb": report.rss_before_kb,
        "rss_peak_kb": report.rss_peak_kb,
        "rss_after_kb": report.rss_after_kb,
        "load_s": report.load_s,
        "log_problems": report.problems[:20],
        "latency_ms": sorted(round(o.latency_s * 1000) for o in kept if o.latency_s is not None),
        "errors": [asdict(o) for o in kept if o.error][:10],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--capacity", action="store_true", help="the capacity search (default)")
    p.add_argument("--fuzz", action="store_true", help="the fuzz run")
    p.add_argument("--load", action="store_true", help="the load/RSS run")
    p.add_argument("--long", action="store_true", help="fuzz 50,000 frames; load 10 rounds")
    p.add_argument("--frames", type=int, default=None, help="fuzz frames (overrides --long)")
    p.add_argument("--streams", type=int, default=200, help="load: streams per round")
    p.add_argument("--seed", type=int, default=20240611, help="fuzz seed")
    p.add_argument("--model", type=Path, default=None, help="capacity: model dir")
    p.add_argument("--quick", action="store_true", help="capacity: bench_server's smoke run")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "server_args", nargs="*", help="after --: more bench_server.py options (capacity)"
    )
    args = p.parse_args(argv)
    if not (args.capacity or args.fuzz or args.load):
        args.capacity = True
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        if args.capacity:
            results["capacity"] = capacity(args, Path(tmp) / "capacity.json")
    if args.fuzz:
        results["fuzz"] = fuzz(args)
    if args.load:
        results["load"] = load(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"# wrote {args.out}")
    ok = all(
        [
            results.get("fuzz", {}).get("good_finals_identical", True),
            not results.get("fuzz", {}).get("log_problems"),
            not results.get("load", {}).get("log_problems"),
        ]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
