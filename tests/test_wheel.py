"""The built wheel works alone: installed (not editable) into a fresh venv of
the oldest and the newest supported Python, run from a folder with no checkout
around it, it finds its demo model and catalog, transcribes, and serves.

Slow (one wheel build, one venv per interpreter, dependencies from the pip
cache or the package index), so everything runs in one test per interpreter.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

PYENV = Path.home() / ".pyenv" / "versions"
#: The oldest and the newest Python that pyproject.toml declares.
VERSIONS = ("3.10", "3.13")
DEMO_CLIP = "synth-0000.wav"


def _interpreter(version: str) -> str | None:
    """A Python ``version`` that runs (pyenv's shims may exist and refuse)."""
    candidates = [str(d / "bin" / "python3") for d in sorted(PYENV.glob(f"{version}.*"))]
    candidates += [c for c in [shutil.which(f"python{version}")] if c]
    for c in candidates:
        probe = subprocess.run(
            [c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return c
    return None


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRSERVE_")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _ok(
        _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
            cwd=out,
            timeout=600,
        )
    )
    (found,) = out.glob("asrserve-*.whl")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("version", VERSIONS)
def test_wheel_installs_and_runs_alone(version: str, wheel: Path, tmp_path: Path) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter on this machine")
    venv = tmp_path / "venv"
    _ok(_run([python, "-m", "venv", str(venv)], cwd=tmp_path))
    bin_ = venv / "bin"
    _ok(_run([str(bin_ / "pip"), "install", "-q", str(wheel)], cwd=tmp_path, timeout=600))
    work = tmp_path / "elsewhere"  # no checkout, no models/ beside the working folder
    work.mkdir()
    asrserve = str(bin_ / "asrserve")

    assert _ok(_run([asrserve, "--version"], cwd=work)).startswith("asrserve ")
    assert "transcribe" in _ok(_run([str(bin_ / "python"), "-m", "asrserve", "--help"], cwd=work))

    location = _ok(
        _run(
            [str(bin_ / "python"), "-c", "import asrserve; print(asrserve.builtin_model_dir())"],
            cwd=work,
        )
    )
    demo = Path(location.strip())
    assert str(demo).startswith(str(venv)), demo  # the installed copy, not the checkout
    clip = demo / "test_wavs" / DEMO_CLIP

    done = _run([asrserve, "transcribe", str(clip)], cwd=work)
    assert _ok(done).strip(), "empty transcript"
    assert "synthetic speech" in done.stderr  # the demo-model notice

    listing = _ok(_run([asrserve, "models", "list"], cwd=work))
    assert "asrserve-tiny-lstm-synth-en" in listing
    assert "sherpa-onnx-lstm-en-2023-02-17" in listing

    # the server (Python 3.10 had no asyncio.timeout): one session, then SIGTERM
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRSERVE_")}
    server = subprocess.Popen(
        [asrserve, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (
            _run(
                [asrserve, "healthcheck", "--port", str(port), "--path", "/readyz"], cwd=work
            ).returncode
            != 0
        ):
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.3)
        streamed = _ok(
            _run(
                [asrserve, "client", "--url", f"ws://127.0.0.1:{port}", "--fast", str(clip)],
                cwd=work,
                timeout=60,
            )
        )
        offline = _ok(_run([asrserve, "transcribe", str(clip)], cwd=work))
        assert offline.strip() in streamed, (streamed, offline)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    log = server.stdout.read() if server.stdout else ""
    assert "Traceback" not in log, log
