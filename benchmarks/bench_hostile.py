"""Hostile clients: the server's memory, CPU and live-stream latency under each attack.

For every attack a fresh ``asrserve serve`` (the built-in demo model, the
server's defaults unless ``--server-arg`` adds flags) runs as a subprocess on
127.0.0.1 with a free port. One well-behaved live stream speaks the asrserve
JSON dialect with endpointing on: the demo clips, each followed by 2 s of
silence, looped, in 100 ms pieces paced at real time. Two seconds into it an
attacker process (this script, ``--attacker NAME``) starts; the live stream
runs on until the attack and a window of ``--window-s`` seconds from its start
are over, then finishes its utterance, sends ``stop`` and waits for ``eof``.

Per attack one row: what was sent, how the server answered the attacker, the
server's peak RSS (``/proc/PID/status`` VmRSS every 0.1 s) and idle RSS, its CPU
seconds (``/proc/PID/stat`` utime + stime) over the window, the live stream's
p95 final latency (arrival time - wall time the audio at the final's ``end``
was sent) and its finals (non-empty finals / utterances sent), the worst
``/healthz`` time during the row (probed every 0.5 s), and the streams still
open on the server after the row.

Attacks: ``flood`` (``{"type": "A" * 1_000_000}`` frames, never reading),
``idle`` (500 silent TCP connections + one header dripped a byte a second),
``wav1hz`` (50 uploads whose WAV header says 1 Hz), ``fields`` (5 POSTs of
25,000 form fields), ``drop`` (200 WebSocket clients: start + 1 s of audio,
then RST), ``frames`` (64 unmasked frames + 64 ``start`` with beam 64 and
1,000 hotwords), ``baseline`` (no attack). Loopback only; every attack is
bounded in count and time (about 4 minutes in all on 2 cores). Run from the
repository root:

    .venv/bin/python benchmarks/bench_hostile.py --markdown
    .venv/bin/python benchmarks/bench_hostile.py --only flood,baseline --json out.json
    .venv/bin/python benchmarks/bench_hostile.py --markdown --server-arg=--max-connections-per-ip=8
    git archive HEAD | tar -x -C /tmp/snap && \
        .venv/bin/python benchmarks/bench_hostile.py --markdown --source /tmp/snap
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
WAVS = sorted((ROOT / "asrserve/data/models/asrserve-tiny-lstm-synth-en/test_wavs").glob("*.wav"))
HOST = "127.0.0.1"  # loopback only
RATE = 16000
PIECE_S = 0.1
GAP_S = 2.0  # silence after each clip: more than the default rule 2 (1.2 s)
ATTACKS = ("flood", "idle", "wav1hz", "fields", "drop", "frames", "baseline")
SENT = {
    "flood": 'WebSocket text frames {"type": "A"*1,000,000} (1 MB each), never reading; '
    "cap 1,500 frames or 15 s",
    "idle": "500 TCP connections that send nothing + 1 header dripped 1 byte/s; held 20 s",
    "wav1hz": "50 × POST /v1/audio/transcriptions, a 2 kB WAV whose header says "
    "1 Hz × 1,000 samples",
    "fields": "5 × POST of 25,000 tiny form fields `prompt=x` (1.5 MB each)",
    "drop": "200 WebSocket clients at once: start + 1 s of audio, then RST (SO_LINGER 0)",
    "frames": "64 × unmasked frame after ready + 64 × start with beam 64 and 1,000 hotwords "
    "(8 at a time)",
    "baseline": "nothing",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- WebSocket bytes by hand (the attackers need frames no library sends) ----------------
def ws_frame(opcode: int, payload: bytes, key: bytes | None = b"\0\0\0\0") -> bytes:
    """One final frame; ``key=None``: unmasked (illegal from a client)."""
    n = len(payload)
    mask_bit = 0 if key is None else 0x80
    if n < 126:
        head = bytes([0x80 | opcode, mask_bit | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, mask_bit | 127]) + n.to_bytes(8, "big")
    if key is None:
        return head + payload
    if key != b"\0\0\0\0":
        a = np.frombuffer(payload, np.uint8)
        k = np.frombuffer(key * (n // 4 + 1), np.uint8)[:n]
        payload = (a ^ k).tobytes()
    return head + key + payload


def handshake(port: int, timeout: float = 10.0) -> tuple[socket.socket, int, bytes]:
    """Open a WebSocket at ``/``: (socket, HTTP status, bytes read past the head)."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return sock, status, rest


def read_frames(
    sock: socket.socket, data: bytes, until: float, stop_on_ready: bool = False
) -> tuple[list[tuple[int, bytes]], bool]:
    """Server frames until it closes (True) or ``until`` passes (False)."""
    frames: list[tuple[int, bytes]] = []
    closed = False
    while True:
        while len(data) >= 2:
            opcode, n, at = data[0] & 0x0F, data[1] & 0x7F, 2
            if n >= 126:
                at = 4 if n == 126 else 10
                if len(data) < at:
                    break
                n = int.from_bytes(data[2:at], "big")
            if len(data) < at + n:
                break
            frames.append((opcode, data[at : at + n]))
            data = data[at + n :]
            if stop_on_ready and opcode == 1 and b'"ready"' in frames[-1][1]:
                return frames, False
        left = until - time.monotonic()
        if closed or left <= 0:
            return frames, closed
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionError, OSError):
            return frames, isinstance(sys.exc_info()[1], ConnectionError)
        if not chunk:
            closed = True
        data += chunk


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
    return None


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"median {1000 * v[len(v) // 2]:.0f} ms, max {1000 * v[-1]:.0f} ms"


def counts(c: Counter[Any]) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in c.most_common())


# --- the attacks (each runs in its own process: ``--attacker NAME``) -------------------
def attack_flood(port: int) -> dict[str, Any]:
    payload = json.dumps({"type": "A" * 1_000_000}).encode()
    frame = ws_frame(1, payload)  # zero mask key: the payload goes as is
    sock, status, _ = handshake(port)
    sock.setblocking(False)
    t0 = time.monotonic()
    deadline = t0 + 15.0
    frames = 0
    sent_in_frame = 0
    last_progress = t0
    outcome = "still open at the bound"
    while frames < 1500 and time.monotonic() < deadline:
        try:
            _, writable, _ = select.select([], [sock], [], 0.2)
            if writable:
                n = sock.send(frame[sent_in_frame : sent_in_frame + (1 << 20)])
                sent_in_frame += n
                last_progress = time.monotonic()
                if sent_in_frame == len(frame):
                    frames += 1
                    sent_in_frame = 0
        except (ConnectionError, OSError) as exc:
            outcome = f"connection cut after {frames} frames at {time.monotonic() - t0:.1f} s "
            outcome += f"({type(exc).__name__})"
            break
    took = time.monotonic() - t0
    stalled = time.monotonic() - last_progress
    # what the server had sent back (read for 2 s)
    sock.setblocking(True)
    got, closed = read_frames(sock, b"", time.monotonic() + 2.0)
    sock.close()
    codes = Counter(
        json.loads(p).get("code", "?") if op == 1 and p.startswith(b"{") else f"op{op}"
        for op, p in got
        if op != 8
    )
    answer = (
        f"HTTP {status}; {frames} frames ({frames * len(frame) / 1e6:.0f} MB) in {took:.1f} s; "
    )
    if outcome.startswith("connection cut"):
        answer += outcome
    elif stalled > 1.0:
        answer += f"sends stalled {stalled:.1f} s before the bound (server stopped reading)"
    else:
        answer += outcome
    size = sum(len(p) for _, p in got)
    answer += f"; then read in 2 s: {len(got)} frames, {size / 1e6:.1f} MB "
    answer += f"({counts(codes) or 'none'}), close {close_code(got)}"
    return {"answer": answer, "frames": frames, "seconds": took, "closed": closed}


def attack_idle(port: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    t0 = time.monotonic()
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(500):
        try:
            socks.append(socket.create_connection((HOST, port), timeout=5))
        except OSError:
            refused += 1
    for s in socks:
        s.setblocking(False)
    drip = socket.create_connection((HOST, port), timeout=5)
    drip.setblocking(False)
    header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: " + b"a" * 1000
    dripped = 0
    drip_answer = ""
    closed_at: dict[int, float] = {}
    answers: Counter[str] = Counter()
    t_drip = time.monotonic()
    end = t0 + 20.0
    while time.monotonic() < end:
        if not drip_answer and time.monotonic() >= t_drip + dripped:  # one byte a second
            try:
                drip.send(header[dripped : dripped + 1])
                dripped += 1
            except OSError as exc:
                drip_answer = f"cut after {dripped} bytes ({type(exc).__name__})"
        live = [s for s in socks if s.fileno() not in closed_at]
        wait = max(0.0, min(1.0, t_drip + dripped - time.monotonic()))
        readable, _, _ = select.select([*live, *([] if drip_answer else [drip])], [], [], wait)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if s is drip:
                first = data.split(b"\r\n", 1)[0].decode(errors="replace")
                took = time.monotonic() - t_drip
                drip_answer = f"{first or 'FIN'} after {dripped} bytes, {took:.1f} s"
                continue
            closed_at[s.fileno()] = time.monotonic() - t0
            answers[data.split(b"\r\n", 1)[0].decode(errors="replace") or "FIN"] += 1
    for s in [*socks, drip]:
        s.close()
    times = sorted(closed_at.values())
    answer = f"{len(socks)} opened ({refused} refused); server closed {len(times)} of them"
    if times:
        answer += f" ({counts(answers)}; first at {times[0]:.1f} s, last at {times[-1]:.1f} s)"
    answer += f"; drip: {drip_answer or f'{dripped} bytes in 20 s, no answer'}"
    return {"answer": answer, "opened": len(socks), "closed": len(times), "dripped": dripped}


def _post(port: int, body: bytes, ctype: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    req = urllib.request.Request(
        f"http://{HOST}:{port}/v1/audio/transcriptions", data=body, headers={"Content-Type": ctype}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, reply = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, reply = e.code, e.read()
    except OSError as e:
        return 0, type(e).__name__, time.monotonic() - t0
    took = time.monotonic() - t0
    try:
        err = json.loads(reply)["error"]
        code = err["code"] or repr(err["message"][:48])
    except (ValueError, KeyError, TypeError):
        code = "ok" if status == 200 else "?"
    return status, str(code), took


def _multipart(fields: list[tuple[str, str]], file: bytes | None, boundary: str) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields
    ]
    if file is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"'
            f"\r\nContent-Type: audio/wav\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def _posts(port: int, body: bytes, ctype: str, n: int, bound_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    replies = []
    for _ in range(n):
        if time.monotonic() - t0 > bound_s:
            break
        replies.append(_post(port, body, ctype))
    c = Counter(f"{s} {code}" for s, code, _ in replies)
    answer = f"{counts(c)} ({ms([t for _, _, t in replies])}); {len(body):,} B each"
    return {"answer": answer, "requests": len(replies), "statuses": dict(c)}


def attack_wav1hz(port: int) -> dict[str, Any]:
    frames = 1000
    data = bytes(2 * frames)
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)  # 1 Hz, mono, 16-bit
    wav = (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip
    body = _multipart([("model", "asrserve")], wav, "b1hz")
    return _posts(port, body, "multipart/form-data; boundary=b1hz", 50, 20.0)


def attack_fields(port: int) -> dict[str, Any]:
    body = _multipart([("prompt", "x")] * 25_000, None, "flood")
    return _posts(port, body, "multipart/form-data; boundary=flood", 5, 20.0)


def clip_s16(seconds: float) -> bytes:
    x, sr = sf.read(WAVS[0], dtype="int16")
    assert sr == RATE
    return bytes(np.asarray(x[: int(seconds * RATE)], dtype="<i2").tobytes())


def attack_drop(port: int) -> dict[str, Any]:
    audio = clip_s16(1.0)
    start = json.dumps({"type": "start", "format": "s16le", "sample_rate": RATE}).encode()
    t0 = time.monotonic()
    socks: list[socket.socket] = []
    statuses: Counter[str] = Counter()

    def one(_: int) -> socket.socket | None:
        try:
            sock, status, _rest = handshake(port)
        except OSError as exc:
            statuses[type(exc).__name__] += 1
            return None
        statuses[f"HTTP {status}"] += 1
        if status != 101:
            sock.close()
            return None
        return sock

    with ThreadPoolExecutor(32) as pool:
        socks = [s for s in pool.map(one, range(200)) if s is not None]
    sent = 0
    for sock in socks:
        try:
            sock.sendall(ws_frame(1, start, b"\1\2\3\4"))
            for i in range(0, len(audio), 3200):
                sock.sendall(ws_frame(2, audio[i : i + 3200], b"\1\2\3\4"))
            sent += 1
        except OSError:
            pass
    time.sleep(0.5)  # let the server take the audio in
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    took = time.monotonic() - t0
    answer = f"{counts(statuses)}; {sent} sent start + 1 s and were reset; {took:.1f} s"
    return {"answer": answer, "statuses": dict(statuses), "upgraded": len(socks)}


def attack_frames(port: int) -> dict[str, Any]:
    words = ["HELLO", "WORLD", "THE", "THERE", "SAID", "TIME"]
    hotwords = [f"{a} {b} {c}" for a in words for b in words for c in words][:200] * 5
    expensive = json.dumps(
        {"type": "start", "decoding": {"method": "modified_beam", "beam": 64}, "hotwords": hotwords}
    ).encode()
    plain = json.dumps({"type": "start"}).encode()
    key = b"\1\2\3\4"
    results: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def unmasked() -> tuple[str, str, float]:
        try:
            sock, status, rest = handshake(port)
            if status != 101:
                sock.close()
                return "unmasked", f"HTTP {status}", 0.0
            sock.sendall(ws_frame(1, plain, key))
            got, _ = read_frames(sock, rest, time.monotonic() + 10, stop_on_ready=True)
            t0 = time.monotonic()
            sock.sendall(ws_frame(2, bytes(320), None))
            got, _ = read_frames(sock, b"", time.monotonic() + 10)
            sock.close()
            return "unmasked", f"close {close_code(got)}", time.monotonic() - t0
        except OSError as exc:
            return "unmasked", type(exc).__name__, 0.0

    def costly() -> tuple[str, str, float]:
        try:
            sock, status, rest = handshake(port)
            if status != 101:
                sock.close()
                return "expensive", f"HTTP {status}", 0.0
            t0 = time.monotonic()
            sock.sendall(ws_frame(1, expensive, key))
            got, _ = read_frames(sock, rest, time.monotonic() + 20)
            took = time.monotonic() - t0
            sock.close()
            first: dict[str, Any] = next((json.loads(p) for op, p in got if op == 1), {})
            what = first.get("code") or first.get("type") or "-"
            return "expensive", f"{what} + close {close_code(got)}", took
        except OSError as exc:
            return "expensive", type(exc).__name__, 0.0

    def pair(_: int) -> None:
        a, b = unmasked(), costly()
        with lock:
            results.extend([a, b])

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pair, range(64)))
    took = time.monotonic() - t0
    parts = []
    for kind in ("unmasked", "expensive"):
        rows = [r for r in results if r[0] == kind]
        c = Counter(r[1] for r in rows)
        parts.append(f"{kind}: {counts(c)} ({ms([r[2] for r in rows if r[2] > 0])})")
    return {"answer": "; ".join(parts) + f"; {took:.1f} s", "seconds": took}


def attack_baseline(_port: int) -> dict[str, Any]:
    return {"answer": "-"}


ATTACKERS = {
    "flood": attack_flood,
    "idle": attack_idle,
    "wav1hz": attack_wav1hz,
    "fields": attack_fields,
    "drop": attack_drop,
    "frames": attack_frames,
    "baseline": attack_baseline,
}


# --- the server process -------------------------------------------------------------------
def asrserve_command(source: Path | None) -> list[str]:
    exe = Path(sys.executable).parent / "asrserve"
    if source is None and exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "asrserve"]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def rss_kb(self) -> int:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) if m else 0

    def cpu_s(self) -> float:
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def active_streams(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^asrserve_active_streams\{[^}]*\} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL)\b", line)
        ]

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, then kill after 15 s: (exit status, seconds to exit)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode, time.monotonic() - t0


def spawn(log: Path, extra: list[str], source: Path | None) -> Server:
    env = dict(os.environ)
    if source is not None:  # that tree's asrserve package comes first on the path
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(":")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*asrserve_command(source), "serve", "--host", HOST, "--port", "0", *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=source,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if m:
            return Server(proc, int(m.group(1)), log)
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server not listening after 90 s:\n{log.read_text()}")


class Monitor:
    """Peak VmRSS every 0.1 s; /healthz every 0.5 s (worst time, failures)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak_kb = 0
        self.health: list[float] = []
        self.health_failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._health)]

    def __enter__(self) -> Monitor:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.server.rss_kb())
            self._stop.wait(0.1)

    def _health(self) -> None:
        url = f"http://{HOST}:{self.server.port}/healthz"
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    r.read()
                self.health.append(time.monotonic() - t0)
            except urllib.error.HTTPError as e:
                self.health_failures[f"HTTP {e.code}"] += 1
            except OSError as e:
                self.health_failures[type(e.reason if hasattr(e, "reason") else e).__name__] += 1
            self._stop.wait(max(0.0, 0.5 - (time.monotonic() - t0)))


# --- the live stream ------------------------------------------------------------------------
@dataclass
class Live:
    utterances: int = 0
    finals: list[tuple[float, str]] = field(default_factory=list)  # (latency s, text)
    eof: bool = False
    close_code: int | None = None
    error: str = ""
    max_late_s: float = 0.0

    @property
    def got(self) -> int:
        return sum(1 for _, text in self.finals if text.strip())

    def p95_ms(self) -> float | None:
        lat = [x for x, text in self.finals if text.strip()]
        return float(np.percentile(lat, 95) * 1000) if lat else None


def live_audio() -> list[npt.NDArray[np.int16]]:
    """One cycle per clip: the clip, then GAP_S of silence, as int16."""
    cycles = []
    for wav in WAVS:
        x, sr = sf.read(wav, dtype="int16")
        assert sr == RATE, wav
        cycles.append(np.concatenate([x, np.zeros(int(GAP_S * RATE), np.int16)]))
    return cycles


async def live_stream(port: int, done: asyncio.Event, out: Live) -> None:
    from websockets.asyncio.client import connect

    piece = int(PIECE_S * RATE)
    cycles = live_audio()
    sent_at: list[float] = []  # wall time piece k was sent

    async def receive(ws: Any) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            now = time.monotonic()
            if msg["type"] == "final":
                k = max(0, math.ceil(msg["end"] / PIECE_S - 1e-6) - 1)
                latency = now - sent_at[min(k, len(sent_at) - 1)]
                out.finals.append((latency, msg["text"]))
            elif msg["type"] == "error":
                out.error = f"{msg['code']}: {msg['message'][:80]}"
            elif msg["type"] == "eof":
                out.eof = True

    start = {
        "type": "start",
        "sample_rate": RATE,
        "format": "s16le",
        "endpointing": {"enabled": True},
    }
    try:
        async with connect(f"ws://{HOST}:{port}/", max_size=2**24, open_timeout=20) as ws:
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
            reader = asyncio.create_task(receive(ws))
            t0 = time.monotonic()
            k = 0
            c = 0
            while not done.is_set() or c % len(cycles):  # whole rounds: the same clips
                audio = cycles[c % len(cycles)]
                c += 1
                out.utterances += 1
                for i in range(0, len(audio), piece):
                    due = t0 + k * PIECE_S
                    now = time.monotonic()
                    if due > now:
                        await asyncio.sleep(due - now)
                    out.max_late_s = max(out.max_late_s, time.monotonic() - due)
                    await ws.send(audio[i : i + piece].astype("<i2").tobytes())
                    sent_at.append(time.monotonic())
                    k += 1
            await ws.send(json.dumps({"type": "stop"}))
            try:
                await asyncio.wait_for(reader, 15)
            except asyncio.TimeoutError:
                out.error = out.error or "no eof within 15 s of stop"
                reader.cancel()
            out.close_code = ws.close_code
    except Exception as exc:  # the row reports it
        out.error = f"{type(exc).__name__}: {exc}"[:120]


# --- one row -------------------------------------------------------------------------------
@dataclass
class Row:
    attack: str
    sent: str
    answer: str = ""
    idle_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    window_s: float = 0.0
    attack_s: float = 0.0
    p95_ms: float | None = None
    finals: str = ""
    live_error: str = ""
    live_max_late_ms: float = 0.0
    healthz_worst_ms: float | None = None
    healthz_failures: dict[str, int] = field(default_factory=dict)
    active_after: float | None = None
    log_problems: list[str] = field(default_factory=list)
    server_exit: int | None = None
    server_stop_s: float = 0.0
    alive_after: bool = True


async def run_row(name: str, server: Server, window_s: float) -> Row:
    row = Row(name, SENT[name])
    row.idle_rss_mb = server.rss_kb() / 1024
    live = Live()
    done = asyncio.Event()
    with Monitor(server) as mon:
        stream = asyncio.create_task(live_stream(server.port, done, live))
        await asyncio.sleep(2.0)
        cpu0, t0 = server.cpu_s(), time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--attacker", name,
            "--port", str(server.port),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), 90)
            lines = stdout.decode(errors="replace").strip().splitlines()
            row.answer = json.loads(lines[-1])["answer"] if lines else f"rc {proc.returncode}"
        except asyncio.TimeoutError:
            proc.kill()
            row.answer = "attacker killed after 90 s"
        except (ValueError, KeyError) as exc:
            row.answer = f"attacker failed ({type(exc).__name__}), rc {proc.returncode}"
        row.attack_s = time.monotonic() - t0
        left = t0 + window_s - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
        row.window_s = time.monotonic() - t0
        row.cpu_s = server.cpu_s() - cpu0
        done.set()
        await asyncio.wait_for(stream, 60)
        await asyncio.sleep(1.0)
        row.active_after = await asyncio.to_thread(server.active_streams)
    row.peak_rss_mb = mon.peak_kb / 1024
    row.p95_ms = live.p95_ms()
    row.finals = f"{live.got}/{live.utterances}" + ("" if live.eof else ", no eof")
    row.live_error = live.error
    row.live_max_late_ms = live.max_late_s * 1000
    row.healthz_worst_ms = max(mon.health) * 1000 if mon.health else None
    row.healthz_failures = dict(mon.health_failures)
    row.alive_after = server.proc.poll() is None
    return row


def table(rows: list[Row], markdown: bool) -> str:
    head = [
        "attack", "sent", "server's answer", "RSS idle→peak MB", "server CPU-s",
        "live p95 final ms", "live finals", "/healthz worst ms", "streams left",
    ]  # fmt: skip
    lines = []
    for r in rows:
        health = f"{r.healthz_worst_ms:.0f}" if r.healthz_worst_ms is not None else "-"
        if r.healthz_failures:
            health += f" ({counts(Counter(r.healthz_failures))})"
        finals = r.finals + (f"; {r.live_error}" if r.live_error else "")
        lines.append(
            [
                r.attack,
                r.sent,
                r.answer,
                f"{r.idle_rss_mb:.0f} → {r.peak_rss_mb:.0f}",
                f"{r.cpu_s:.1f} / {r.window_s:.0f} s",
                f"{r.p95_ms:.0f}" if r.p95_ms is not None else "-",
                finals,
                health,
                "-" if r.active_after is None else f"{r.active_after:.0f}",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        return "\n".join(out)
    return "\n\n".join(
        "\n".join(f"  {h}: {c}" for h, c in zip(head, line, strict=True)) for line in lines
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--only", default=",".join(ATTACKS), help="comma-separated attacks to run")
    p.add_argument("--window-s", type=float, default=15.0, help="CPU window from attack start")
    p.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    p.add_argument(
        "--source",
        type=Path,
        default=None,
        help="run the server from this source tree (e.g. a `git archive HEAD` copy) "
        "with this Python; default: the installed asrserve",
    )
    p.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    p.add_argument("--attacker", choices=ATTACKS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.attacker:
        print(json.dumps(ATTACKERS[args.attacker](args.port)), flush=True)
        return 0
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in ATTACKS:
            p.error(f"unknown attack {n!r}; known: {', '.join(ATTACKS)}")
    flags = " ".join(args.server_arg) or "(none: the server's defaults)"
    print(f"# asrserve serve --host 127.0.0.1 --port 0 {' '.join(args.server_arg)}".rstrip())
    print(f"# extra flags: {flags}; demo model; fresh server per attack", flush=True)
    if args.source is not None:
        print(f"# server source: {args.source.resolve()}", flush=True)
    rows: list[Row] = []
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_hostile_") as tmp:
        for name in names:
            log = Path(tmp) / f"{name}.log"
            server = spawn(log, args.server_arg, args.source)
            try:
                time.sleep(1.0)  # let it settle before the idle RSS
                row = asyncio.run(run_row(name, server, args.window_s))
            finally:
                code, took = server.stop()
            row.server_exit, row.server_stop_s = code, took
            row.log_problems = server.log_problems()[:10]
            rows.append(row)
            print(f"\n[{name}] " + table([row], markdown=False).strip(), flush=True)
            extra = [
                f"attack {row.attack_s:.1f} s",
                f"live max late {row.live_max_late_ms:.0f} ms",
                f"server exit {row.server_exit} after SIGTERM in {row.server_stop_s:.1f} s",
            ]
            if not row.alive_after:
                extra.append("SERVER DIED during the row")
            if row.log_problems:
                extra.append(f"log problems: {row.log_problems[:3]}")
            print("  notes: " + "; ".join(extra), flush=True)
    print(f"\n# {len(rows)} attacks in {time.monotonic() - t_all:.0f} s")
    if args.markdown:
        print("\n" + table(rows, markdown=True))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0 if all(r.alive_after for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
