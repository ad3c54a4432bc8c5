"""asrserve's sherpa dialect against ``sherpa-onnx-online-websocket-server``.

The same fp32 LSTM files in both servers, default endpoint rules (2.4 / 1.2 /
20 s), greedy search; one multi-utterance recording (test wavs with 2.5 s of
silence between them) sent by the same client to each. sherpa-onnx's server
runs as a subprocess on a loopback port, asrserve in-process; both are bounded
in time and stopped by the test.

sherpa-onnx sends a message after every decoded chunk; asrserve only when the
hypothesis changed, and no final for an endpoint that heard nothing (README,
"sherpa-onnx dialect"). So the finals (``is_final``) must be equal message by
message, and asrserve's partials must appear, in order, among sherpa-onnx's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import asrserve
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.server.app import AsrServer
from tests.conftest import read_wav

SHERPA_SERVER = shutil.which(
    "sherpa-onnx-online-websocket-server",
    path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
)
TAIL_PADDING_S = 0.8  # sherpa-onnx's server default (--end-tail-padding)
GAP_S = 2.5
PIECE_S = 0.1
TIMEOUT_S = 90
COMPARED = (
    "text",
    "tokens",
    "timestamps",
    "start_time",
    "segment",
    "is_final",
    "is_eof",
    "num_trailing_blanks",
)

pytestmark = pytest.mark.skipif(SHERPA_SERVER is None, reason="sherpa-onnx-bin not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recording(wavs: list[Path]) -> npt.NDArray[np.float32]:
    parts: list[npt.NDArray[np.float32]] = []
    for w in wavs:
        x, sr = read_wav(w)
        assert sr == 16000
        parts += [np.zeros(int(GAP_S * sr), np.float32), x]
    parts.append(np.zeros(int(GAP_S * 16000), np.float32))
    return np.concatenate(parts)


async def _session(url: str, x: npt.NDArray[np.float32]) -> list[dict[str, Any]]:
    """What a sherpa-onnx client hears: float32 pieces, ``Done``, until ``Done!``."""
    piece = int(PIECE_S * 16000)
    out: list[dict[str, Any]] = []
    async with connect(url, max_size=None) as ws:
        for i in range(0, x.size, piece):
            await ws.send(x[i : i + piece].astype("<f4").tobytes())
        await ws.send("Done")
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                if m == "Done!":
                    break
                out.append(json.loads(m))
    return out


async def _sherpa_messages(model: Path, x: npt.NDArray[np.float32], log: Path) -> list[Any]:
    port = _free_port()
    assert SHERPA_SERVER is not None
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [
                SHERPA_SERVER,
                f"--port={port}",
                f"--tokens={model / 'tokens.txt'}",
                f"--encoder={model / 'encoder.onnx'}",
                f"--decoder={model / 'decoder.onnx'}",
                f"--joiner={model / 'joiner.onnx'}",
                "--provider=cpu",
                "--num-work-threads=1",
                "--num-io-threads=1",
                "--num-threads=1",
                "--sample-rate=16000",
                "--feat-dim=80",
                "--decoding-method=greedy_search",
                f"--end-tail-padding={TAIL_PADDING_S}",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,  # it writes a log.txt of its own where it runs
        )
    try:
        for _ in range(200):  # wait until it listens (at most 20 s)
            assert proc.poll() is None, log.read_text()
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        return await _session(f"ws://127.0.0.1:{port}", x)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def _asrserve_messages(model: Path, x: npt.NDArray[np.float32]) -> list[Any]:
    rec = asrserve.load_model(
        model,
        precision="fp32",
        decoding=asrserve.DecodingConfig(method="greedy"),
        endpoint=EndpointConfig(enabled=True),  # the default rules
        tail_padding_s=TAIL_PADDING_S,
    )
    async with AsrServer(rec, ServerConfig(port=0)) as server:
        return await _session(f"ws://127.0.0.1:{server.port}", x)


def _key(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in COMPARED}


def test_sherpa_dialect_equals_sherpa_onnx_server(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], tmp_path: Path
) -> None:
    x = _recording(tiny_wavs[:5])

    async def main() -> tuple[list[Any], list[Any]]:
        async with asyncio.timeout(TIMEOUT_S):
            theirs = await _sherpa_messages(tiny_lstm_dir, x, tmp_path / "sherpa.log")
            ours = await _asrserve_messages(tiny_lstm_dir, x)
            return theirs, ours

    theirs, ours = asyncio.run(main())
    assert theirs
    assert ours
    for m in ours:  # every field sherpa-onnx sends, and nothing else
        assert set(m) == set(theirs[0]), (sorted(m), sorted(theirs[0]))

    # finals: equal one by one (sherpa-onnx's empty endpoints are not sent by asrserve)
    want_finals = [_key(m) for m in theirs if m["is_final"] and (m["text"] or m["is_eof"])]
    got_finals = [_key(m) for m in ours if m["is_final"]]
    assert len(want_finals) >= 5, want_finals  # the endpoints did fire
    assert [m["segment"] for m in want_finals[:-1]] == list(range(len(want_finals) - 1))
    assert got_finals == want_finals
    assert theirs[-1]["is_eof"]
    assert ours[-1]["is_eof"]

    # partials: asrserve's are sherpa-onnx's, in order, without the repeats
    want_partials = [_key(m) for m in theirs if not m["is_final"]]
    got_partials = [_key(m) for m in ours if not m["is_final"]]
    assert got_partials
    it = iter(want_partials)
    missing = [m for m in got_partials if not any(m == w for w in it)]
    assert not missing, missing[:3]

    # the timestamps are the segment's own (from its start_time), as sherpa-onnx sends them
    assert any(m["start_time"] > 0 and m["timestamps"] for m in got_finals)
    for m in got_finals:
        assert all(0 <= t < 25 for t in m["timestamps"])
