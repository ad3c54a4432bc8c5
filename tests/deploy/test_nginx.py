"""The shipped nginx config in front of two real asrserve processes, on loopback.

The config under ``deploy/nginx/`` is used as shipped, with only addresses,
ports and file paths rewritten for the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import asrserve
from asrserve.config import EndpointConfig
from tests.conftest import ROOT, TINY_LSTM, read_wav

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
CONF = ROOT / "deploy" / "nginx" / "asrserve.conf"
# fp32: batching streams changes no token (the int8 demo model quantizes
# activations per batch, so its batched results may differ from single runs)
MODEL = TINY_LSTM
WAVS = sorted((MODEL / "test_wavs").glob("*.wav"))[:8]
BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx not installed (apt-get install nginx)"),
    pytest.mark.skipif(not MODEL.is_dir(), reason=f"shared model not found at {MODEL}"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.2)


def _connections(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(r"^asrserve_connections_total\{[^}]*\} (\d+)", text, flags=re.MULTILINE)
    assert found
    return int(found.group(1))


class Replica:
    def __init__(self, tmp: Path, name: str) -> None:
        self.port = _free_port()
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(BIN / "asrserve"),
                "serve",
                "--model",
                str(MODEL),
                "--precision",
                "fp32",
                "--port",
                str(self.port),
                "--max-streams",
                "32",
                "--shutdown-timeout-s",
                "30",
                "--no-endpoint",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    """Two replicas and nginx with the shipped config; yields (replicas, nginx port)."""
    replicas = [Replica(tmp_path, "a"), Replica(tmp_path, "b")]
    nginx_port = _free_port()
    conf = CONF.read_text()
    servers = "\n".join(
        f"        server 127.0.0.1:{r.port} max_fails=2 fail_timeout=5s;" for r in replicas
    )
    conf, n = re.subn(r"^\s*server asrserve:6006[^\n]*;", servers, conf, flags=re.MULTILINE)
    assert n == 1
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{nginx_port};")
    conf = conf.replace("/tmp/", f"{tmp_path}/")
    conf = conf.replace("error_log /dev/stderr", f"error_log {tmp_path}/nginx-error.log")
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = None
    try:
        for r in replicas:
            _wait_http(f"http://127.0.0.1:{r.port}/readyz")
        assert NGINX is not None
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_http(f"http://127.0.0.1:{nginx_port}/healthz")
        yield replicas, nginx_port
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        for r in replicas:
            r.stop()


@pytest.fixture(scope="module")
def offline() -> dict[Path, str]:
    rec = asrserve.load_model(MODEL, precision="fp32", endpoint=EndpointConfig(enabled=False))
    return {w: rec.transcribe(w).text for w in WAVS}


async def _stream(url: str, wav: Path, pace: float = 0.025) -> tuple[list[dict[str, Any]], int]:
    """One asrserve JSON session: 0.1 s chunks every ``pace`` s; returns the
    messages and the close code."""
    x, sr = read_wav(wav)
    msgs: list[dict[str, Any]] = []
    async with connect(url, open_timeout=20) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": sr}))
        msgs.append(json.loads(await ws.recv()))
        step = sr // 10
        with contextlib.suppress(ConnectionClosed):
            for i in range(0, x.size, step):
                await ws.send(x[i : i + step].astype("<f4").tobytes())
                await asyncio.sleep(pace)
            await ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                msgs.append(json.loads(m))
        return msgs, ws.close_code or 0


def _final_text(msgs: list[dict[str, Any]]) -> str:
    return " ".join(m["text"] for m in msgs if m["type"] == "final" and m["text"])


def test_sixteen_streams_spread_over_both_replicas(cluster: Any, offline: dict[Path, str]) -> None:
    replicas, port = cluster
    url = f"ws://127.0.0.1:{port}/"
    jobs = [WAVS[i % len(WAVS)] for i in range(16)]

    async def run() -> list[tuple[list[dict[str, Any]], int]]:
        async with asyncio.timeout(120):
            return await asyncio.gather(*(_stream(url, w) for w in jobs))

    results = asyncio.run(run())
    for wav, (msgs, code) in zip(jobs, results, strict=True):
        assert msgs[-1]["type"] == "eof", wav
        assert code == 1000
        assert _final_text(msgs) == offline[wav], wav
    served = [_connections(r.port) for r in replicas]
    assert sum(served) >= 16
    assert min(served) >= 4, served  # least_conn spreads concurrent streams


def test_sigterm_drains_one_replica_while_the_other_takes_new_streams(
    cluster: Any, offline: dict[Path, str]
) -> None:
    replicas, port = cluster
    url = f"ws://127.0.0.1:{port}/"
    a, b = replicas
    wav = max(WAVS, key=lambda w: w.stat().st_size)

    async def run() -> None:
        async with asyncio.timeout(120):
            # real-time pace: streams are open on both replicas when SIGTERM comes
            slow = [asyncio.create_task(_stream(url, wav, pace=0.1)) for _ in range(4)]
            await asyncio.sleep(1.0)
            before_b = _connections(b.port)
            a.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            fresh = await asyncio.gather(*(_stream(url, w) for w in WAVS[:4]))
            for w, (msgs, code) in zip(WAVS[:4], fresh, strict=True):
                assert code == 1000
                assert _final_text(msgs) == offline[w]
            assert _connections(b.port) - before_b >= 4  # all new streams went to b
            for msgs, code in await asyncio.gather(*slow):
                # streams on a: input ended by the drain, finals sent, close 1001;
                # streams on b: complete
                assert msgs[-1]["type"] == "eof"
                if code == 1001:  # cut by the drain: what it had sent was still finalized
                    assert any(m["type"] == "final" for m in msgs)
                else:
                    assert code == 1000
                    assert _final_text(msgs) == offline[wav]

    asyncio.run(run())
    assert a.proc.wait(timeout=30) == 0


def test_shipped_files_are_consistent() -> None:
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    k8s = (ROOT / "deploy" / "k8s" / "asrserve.yaml").read_text()
    assert "/readyz" in compose
    assert "path: /readyz" in k8s
    assert "path: /healthz" in k8s
    assert "preStop" in k8s
    assert "asrserve_active_streams" in k8s
    assert "least_conn" in CONF.read_text()
    # the images and manifests call flags the CLI has
    from asrserve.cli import build_parser

    args = build_parser().parse_args(
        ["serve", "--max-streams", "32", "--shutdown-timeout-s", "45", "--port", "6006"]
    )
    assert args.max_connections == 32
    assert args.shutdown_timeout_s == 45
