"""sherpa-onnx's WebSocket server and asrserve's side by side, on loopback,
for the parity tests and ``benchmarks/sherpa_clients.py``: the same model
files, default endpoint rules, sherpa-onnx's server defaults for tail padding.
Each server is stopped when its ``async with`` block ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asrserve
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.server.app import AsrServer


def sherpa_bin(name: str) -> str | None:
    """A sherpa-onnx-bin program, next to this Python or on PATH."""
    return shutil.which(name, path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


SHERPA_SERVER = sherpa_bin("sherpa-onnx-online-websocket-server")
SHERPA_CLIENT = sherpa_bin("sherpa-onnx-online-websocket-client")
TAIL_PADDING_S = 0.8  # sherpa-onnx's server default (--end-tail-padding)
SHERPA_METHODS = {"greedy": "greedy_search", "modified_beam": "modified_beam_search"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(200):  # at most 20 s
        assert proc.poll() is None, log.read_text()
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.asynccontextmanager
async def sherpa_server(model: Path, method: str, workdir: Path) -> AsyncIterator[int]:
    """``sherpa-onnx-online-websocket-server`` on the fp32 files of ``model``; its port."""
    assert SHERPA_SERVER is not None, "sherpa-onnx-bin is not installed"
    port = free_port()
    log = workdir / f"sherpa-server-{port}.log"
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
                f"--decoding-method={SHERPA_METHODS[method]}",
                "--max-active-paths=4",
                f"--end-tail-padding={TAIL_PADDING_S}",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workdir,  # it writes a log.txt of its own where it runs
        )
    try:
        await wait_listening(port, proc, log)
        yield port
    finally:
        stop(proc)


@contextlib.asynccontextmanager
async def asrserve_server(model: Path, method: str) -> AsyncIterator[int]:
    """asrserve's server, in this process, on the same files; its port."""
    rec = asrserve.load_model(
        model,
        precision="fp32",
        decoding=asrserve.DecodingConfig(method=method, beam=4),  # type: ignore[arg-type]
        endpoint=EndpointConfig(enabled=True),  # the default rules
        tail_padding_s=TAIL_PADDING_S,
    )
    async with AsrServer(rec, ServerConfig(port=0)) as server:
        yield server.port


_YS_PROBS = re.compile(r"""["']ys_probs["']: \[[^]]*\]""")
_NUMBER = re.compile(r"-?\d+\.\d+")


def without_probs(line: str) -> str:
    """``line`` with its ``ys_probs`` list blanked (compared apart, within a tolerance)."""
    return _YS_PROBS.sub("'ys_probs': [...]", line)


def probs(line: str) -> list[float]:
    m = _YS_PROBS.search(line)
    return [float(v) for v in _NUMBER.findall(m.group(0))] if m else []


async def run_client(argv: list[str], timeout_s: float) -> list[str]:
    """Run a client program; its output lines (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode().splitlines()


async def cpp_client(port: int, wav: Path, timeout_s: float = 60) -> list[str]:
    """What sherpa-onnx's C++ client prints for ``wav`` (16-bit mono 16 kHz) of
    what it hears, without what it says of its own sending (the command line,
    which names the port, and send progress, which interleaves by timing)."""
    assert SHERPA_CLIENT is not None, "sherpa-onnx-bin is not installed"
    argv = [
        SHERPA_CLIENT,
        "--server-ip=127.0.0.1",
        f"--server-port={port}",
        "--seconds-per-message=0.001",
        str(wav),
    ]
    lines = await run_client(argv, timeout_s)
    return [ln for ln in lines if ln and not any(w in ln for w in ("parse-options", "SendMessage"))]
