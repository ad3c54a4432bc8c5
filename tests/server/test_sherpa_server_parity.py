"""asrserve's sherpa dialect against ``sherpa-onnx-online-websocket-server``.

The same fp32 LSTM files in both servers, default endpoint rules (2.4 / 1.2 /
20 s), greedy search and modified beam search with 4 paths; one
multi-utterance recording (test wavs with 2.5 s of silence between them) sent
by the same client to each, and (greedy) by sherpa-onnx's own C++ client
``sherpa-onnx-online-websocket-client``. Both servers run on loopback
(tests/sherpa_servers.py), bounded in time and stopped by the test.

Both send a message after every decoded chunk, a final at every endpoint
(empty ones too) and ``is_eof`` on the last, then ``Done!``: the messages,
and what sherpa-onnx's client prints of them, must be equal byte for byte
but for the last digits of ``ys_probs`` (two onnxruntime builds), which must
agree within 1e-4. ``benchmarks/sherpa_clients.py`` runs sherpa-onnx's
Python example client the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import read_wav
from tests.sherpa_servers import (
    SHERPA_CLIENT,
    SHERPA_SERVER,
    asrserve_server,
    cpp_client,
    probs,
    sherpa_server,
    without_probs,
)

GAP_S = 2.5
PIECE_S = 0.1
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    SHERPA_SERVER is None or SHERPA_CLIENT is None, reason="sherpa-onnx-bin not installed"
)


def _recording(wavs: list[Path]) -> npt.NDArray[np.float32]:
    parts: list[npt.NDArray[np.float32]] = []
    for w in wavs:
        x, sr = read_wav(w)
        assert sr == 16000
        parts += [np.zeros(int(GAP_S * sr), np.float32), x]
    parts.append(np.zeros(int(GAP_S * 16000), np.float32))
    return np.concatenate(parts)


async def _session(port: int, x: npt.NDArray[np.float32]) -> list[str]:
    """What a sherpa-onnx client hears: float32 pieces, ``Done``, until ``Done!``."""
    piece = int(PIECE_S * 16000)
    out: list[str] = []
    async with connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
        for i in range(0, x.size, piece):
            await ws.send(x[i : i + piece].astype("<f4").tobytes())
        await ws.send("Done")
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                assert isinstance(m, str)
                out.append(m)
                if m == "Done!":
                    break
    return out


def _assert_same(ours: list[str], theirs: list[str]) -> None:
    """Equal line by line, ``ys_probs`` within 1e-4."""
    assert [without_probs(m) for m in ours] == [without_probs(m) for m in theirs]
    for mine, want in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(probs(mine), probs(want), atol=1e-4)
    assert any(probs(m) for m in ours)


@pytest.mark.parametrize("method", ["greedy", "modified_beam"])
def test_sherpa_dialect_equals_sherpa_onnx_server(
    tiny_lstm_dir: Path, tiny_wavs: list[Path], tmp_path: Path, method: str
) -> None:
    x = _recording(tiny_wavs[:5])
    wav = tmp_path / "recording.wav"
    sf.write(wav, x, 16000, subtype="PCM_16")  # what sherpa-onnx's clients read
    x16, _ = read_wav(wav)

    async def main() -> tuple[list[list[str]], list[list[str]]]:
        runs: list[list[list[str]]] = []
        async with asyncio.timeout(TIMEOUT_S):
            for server in (sherpa_server(tiny_lstm_dir, method, tmp_path),
                           asrserve_server(tiny_lstm_dir, method)):  # fmt: skip
                async with server as port:
                    seen = [await _session(port, x16)]
                    if method == "greedy":  # the C++ client once, not per search
                        seen.append(await cpp_client(port, wav))
                    runs.append(seen)
        return runs[0], runs[1]

    theirs, ours = asyncio.run(main())
    messages = theirs[0]
    assert messages[-1] == "Done!"
    finals = [json.loads(m) for m in messages[:-1] if '"is_final": true' in m]
    assert len([m for m in finals if m["text"]]) >= 5  # the endpoints did fire
    assert any(not m["text"] for m in finals[:-1])  # and some heard nothing
    assert finals[-1]["is_eof"]
    for mine, want in zip(ours, theirs, strict=True):
        _assert_same(mine, want)
    if method == "greedy":
        printed = theirs[1]
        assert sum('"is_final": true' in ln for ln in printed) == len(finals)
