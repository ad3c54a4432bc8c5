"""sherpa-onnx's own WebSocket clients against sherpa-onnx's server and asrserve's.

Runs ``sherpa-onnx-online-websocket-client`` (C++, from sherpa-onnx-bin) and,
when given, sherpa-onnx's Python example client
``python-api-examples/online-websocket-client-decode-file.py`` (from a checkout
of k2-fsa/sherpa-onnx; not shipped in any wheel, so not part of the test
suite) against ``sherpa-onnx-online-websocket-server`` and ``asrserve`` on
the same model files, and compares what each client prints: equal line by
line, with ``ys_probs`` within 1e-4 and the Python client's log timestamps
and its own argument dump left out.

    python benchmarks/sherpa_clients.py --model DIR \\
        [--python-client PATH/online-websocket-client-decode-file.py] \\
        [--method greedy|modified_beam] [WAV ...]

Without WAVs it builds a recording from the model's test_wavs (five clips
with 2.5 s pauses). Exit status 0 when every client printed the same.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sherpa_servers import (
    asrserve_server,
    cpp_client,
    probs,
    run_client,
    sherpa_server,
    without_probs,
)

_FINAL = re.compile(r"""["']is_final["']: (true|True)""")
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


async def python_client(script: Path, port: int, wav: Path) -> list[str]:
    """What sherpa-onnx's Python example client logs, without log times and
    the lines naming the port or its sending."""
    argv = [
        sys.executable,
        str(script),
        "--server-addr=127.0.0.1",
        f"--server-port={port}",
        "--seconds-per-message=0.001",
        str(wav),
    ]
    lines = [_LOG_TIME.sub("", ln) for ln in await run_client(argv, 120)]
    return [ln for ln in lines if ln and "server_port" not in ln and "Sending" not in ln]


def recording(model: Path, out: Path) -> Path:
    parts = []
    for w in sorted((model / "test_wavs").glob("*.wav"))[:5]:
        x, sr = sf.read(w, dtype="float32")
        parts += [np.zeros(int(2.5 * sr), np.float32), x]
    parts.append(np.zeros(40000, np.float32))
    sf.write(out, np.concatenate(parts), 16000, subtype="PCM_16")
    return out


def differences(ours: list[str], theirs: list[str]) -> list[str]:
    out = []
    if len(ours) != len(theirs):
        out.append(f"{len(ours)} lines from asrserve, {len(theirs)} from sherpa-onnx")
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        pa, pb = probs(a), probs(b)
        if without_probs(a) != without_probs(b):
            out.append(f"line {i}:\n  asrserve:   {a[:300]}\n  sherpa-onnx: {b[:300]}")
        elif len(pa) != len(pb) or not np.allclose(pa, pb, atol=1e-4):
            out.append(f"line {i}: ys_probs differ by more than 1e-4")
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", type=Path, required=True, help="dir with fp32 encoder/decoder/joiner.onnx"
    )
    ap.add_argument(
        "--python-client", type=Path, help="sherpa-onnx's online-websocket-client-decode-file.py"
    )
    ap.add_argument("--method", default="greedy", choices=["greedy", "modified_beam"])
    ap.add_argument("wavs", nargs="*", type=Path, help="16-bit mono 16 kHz WAVs")
    args = ap.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        wavs = args.wavs or [recording(args.model, Path(tmp) / "recording.wav")]
        clients = [("C++ client", cpp_client)]
        if args.python_client:
            script = args.python_client

            async def py(port: int, wav: Path) -> list[str]:
                return await python_client(script, port, wav)

            clients.append(("Python client", py))
        printed: dict[str, list[list[str]]] = {}
        for name, server in (
            ("sherpa-onnx", sherpa_server(args.model, args.method, Path(tmp))),
            ("asrserve", asrserve_server(args.model, args.method)),
        ):
            async with server as port:
                printed[name] = [await run(port, w) for _, run in clients for w in wavs]
        labels = [f"{c} on {w.name}" for c, _ in clients for w in wavs]
        runs = zip(labels, printed["asrserve"], printed["sherpa-onnx"], strict=True)
        for label, ours, theirs in runs:
            diff = differences(ours, theirs)
            failed += bool(diff)
            finals = sum(bool(_FINAL.search(ln)) for ln in theirs)
            verdict = "identical" if not diff else f"{len(diff)} differences"
            print(f"{label} ({args.method}): {len(theirs)} lines, {finals} finals: {verdict}")
            print(f"  sherpa-onnx's last line: {theirs[-1][:160] if theirs else ''}")
            for d in diff[:5]:
                print("  " + d)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
