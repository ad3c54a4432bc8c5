"""Live transcription with the built-in model, fed from files and a fake microphone."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import asrserve
from asrserve.audio import read_audio
from asrserve.clients import sources
from asrserve.clients.commands import add_parsers
from asrserve.clients.mic import LiveDisplay, transcribe_local
from asrserve.clients.sources import FileSource, MicrophoneSource
from asrserve.core.recognizer import Recognizer
from tests.clients.test_sources import FakeSoundDevice
from tests.conftest import BUILTIN

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
CLEAR = "\r\x1b[K"


@pytest.fixture(scope="module")
def plain() -> Recognizer:
    return asrserve.load_model(BUILTIN)


@pytest.fixture(scope="module")
def endpointing() -> Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=asrserve.EndpointConfig(enabled=True))


def live(rec: Recognizer, path: Path, out: io.StringIO) -> list[str]:
    source = FileSource(path, realtime=False)
    return asyncio.run(asyncio.wait_for(transcribe_local(rec, source, LiveDisplay(out, True)), 10))


@pytest.mark.parametrize("wav", WAVS, ids=lambda p: p.stem)
def test_live_final_equals_offline_transcript(plain: Recognizer, wav: Path) -> None:
    out = io.StringIO()
    want = plain.transcribe(wav).text
    assert want
    assert live(plain, wav, out) == [want]
    shown = out.getvalue()
    partials = shown[: -len(want) - 1].split(CLEAR)[1:]
    assert len(partials) >= 3  # the partial line was rewritten as audio came in
    assert all(want.startswith(p.rstrip()) or p == want for p in partials)
    assert shown.endswith(f"{CLEAR}{want}\n")


def test_endpoints_split_segments(
    plain: Recognizer, endpointing: Recognizer, tmp_path: Path
) -> None:
    a, rate = read_audio(WAVS[0])
    b, _ = read_audio(WAVS[2])
    path = tmp_path / "two.wav"
    sf.write(path, np.concatenate([a, np.zeros(2 * rate, np.float32), b]), rate)
    out = io.StringIO()
    finals = live(endpointing, path, out)
    assert len(finals) == 2
    assert finals[0] == plain.transcribe(WAVS[0]).text
    assert " ".join(finals) == " ".join(plain.transcribe(path).text.split())
    assert out.getvalue().count("\n") == 2


def test_display_without_terminal_prints_finals_only() -> None:
    out = io.StringIO()
    display = LiveDisplay(out)  # StringIO is not a tty
    display.show({"type": "partial", "text": "HEL"})
    display.show({"type": "final", "text": " HELLO "}, prefix="a.wav: ")
    display.show({"type": "final", "text": ""})
    display.show({"type": "eof"})
    assert out.getvalue() == "a.wav: HELLO\n"


def test_display_rewrites_partial_only_when_it_changes() -> None:
    out = io.StringIO()
    display = LiveDisplay(out, partials=True)
    for text in ["A", "A", "AB", ""]:
        display.partial(text)
    display.final("ABC")
    assert out.getvalue() == f"{CLEAR}A{CLEAR}AB{CLEAR}ABC\n"  # "" cleared the line


def _mic_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asrserve")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["mic", *argv])


def test_mic_command_local_until_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], plain: Recognizer
) -> None:
    """The fake microphone plays a clip and some silence, then the user presses Ctrl-C."""
    audio, _ = read_audio(WAVS[1])
    sd = FakeSoundDevice(np.concatenate([audio, np.zeros(8000, np.float32)]))
    sd.after_audio = lambda: os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    made: list[MicrophoneSource] = []

    class Recorded(MicrophoneSource):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sources, "MicrophoneSource", Recorded)
    missed: list[str] = []

    def stop(why: str) -> None:  # ends the test if the Ctrl-C did not reach the mic command
        missed.append(why)
        made[0].stop()

    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop("default handler"))
    watchdog = threading.Timer(10, stop, ["timeout"])
    watchdog.start()
    try:
        args = _mic_args("--model", str(BUILTIN), "--device", "0")
        assert args.device == 0
        assert args.func(args) == 0
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGINT, previous)
    assert missed == []
    captured = capsys.readouterr()
    assert captured.out == plain.transcribe(WAVS[1]).text + "\n"
    assert "listening on 'Fake Mic' with a local model" in captured.err


def test_mic_command_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    args = _mic_args("--url", "ws://127.0.0.1:1")
    assert args.func(args) == 1
    assert "pip install 'asrserve[mic]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(np.zeros(0, np.float32)))
    args = _mic_args("--list-devices")
    assert args.func(args) == 0
    assert "Fake Mic" in capsys.readouterr().out
