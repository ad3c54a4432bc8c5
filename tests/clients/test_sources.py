"""File and microphone sources; the microphone is a fake ``sounddevice`` module."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from asrserve.audio import read_audio
from asrserve.clients.sources import (
    AudioDeviceError,
    AudioSource,
    Chunk,
    FileSource,
    MicrophoneSource,
    list_devices,
)
from asrserve.errors import AudioFormatError, ConfigError
from tests.conftest import BUILTIN

WAV = sorted((BUILTIN / "test_wavs").glob("*.wav"))[0]


async def _collect(source: AudioSource, limit: int | None = None) -> list[Chunk]:
    out: list[Chunk] = []
    async for item in source:
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def collect(source: AudioSource, limit: int | None = None) -> list[Chunk]:
    return asyncio.run(asyncio.wait_for(_collect(source, limit), 10))


def test_file_chunks_cover_the_file_at_its_own_rate() -> None:
    want, rate = read_audio(WAV)
    chunks = collect(FileSource(WAV, chunk_s=0.25, realtime=False))
    assert {r for r, _ in chunks} == {rate}
    sizes = [c.size for _, c in chunks]
    assert sizes[:-1] == [rate // 4] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= rate // 4
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), want)
    assert all(c.dtype == np.float32 for _, c in chunks)


def test_file_resampled_on_request() -> None:
    want, rate = read_audio(WAV)
    chunks = collect(FileSource(WAV, realtime=False, sample_rate=8000))
    assert {r for r, _ in chunks} == {8000}
    assert abs(sum(c.size for _, c in chunks) - want.size * 8000 / rate) <= 2


def test_realtime_paces_chunks_at_audio_speed(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(4000, np.float32), 16000)  # 0.25 s
    t0 = time.monotonic()
    chunks = collect(FileSource(path, chunk_s=0.05, realtime=True))
    elapsed = time.monotonic() - t0
    assert len(chunks) == 5
    assert 0.23 <= elapsed < 2.0
    t0 = time.monotonic()
    collect(FileSource(path, chunk_s=0.05, realtime=False))
    assert time.monotonic() - t0 < 0.2


def test_empty_file_still_announces_its_rate(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 22050)
    [(rate, chunk)] = collect(FileSource(path, realtime=False))
    assert (rate, chunk.size) == (22050, 0)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match="no such audio file"):
        collect(FileSource(tmp_path / "missing.wav"))
    with pytest.raises(ConfigError, match="chunk_s"):
        FileSource(WAV, chunk_s=0)


# --- microphone --------------------------------------------------------------


def test_missing_sounddevice_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # makes `import` raise ImportError
    with pytest.raises(AudioDeviceError, match=r"pip install 'asrserve\[mic\]'"):
        MicrophoneSource()
    with pytest.raises(AudioDeviceError, match="sounddevice"):
        list_devices()


class _NoPortAudio:
    """A meta-path finder that fails like sounddevice does without libportaudio."""

    def find_spec(self, name: str, *_args: Any) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


def test_missing_portaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioDeviceError, match=r"PortAudio library not found \(apt install"):
        MicrophoneSource()


class FakeSoundDevice(types.ModuleType):
    """Just enough of ``sounddevice``: one input device whose stream plays ``audio``."""

    class PortAudioError(Exception):
        pass

    def __init__(self, audio: npt.NDArray[np.float32], has_input: bool = True) -> None:
        super().__init__("sounddevice")
        self.audio = audio
        self.has_input = has_input
        self.after_audio: Callable[[], None] = lambda: None
        self.opened: dict[str, Any] = {}
        self.closed = threading.Event()

    def query_devices(self, device: Any = None, kind: str | None = None) -> Any:
        if kind is None:
            return "> 0 Fake Mic, ALSA (1 in, 0 out)"
        if not self.has_input:
            raise self.PortAudioError("Error querying device -1")
        return {"name": "Fake Mic", "max_input_channels": 1}

    def InputStream(self, **kwargs: Any) -> Any:  # noqa: N802 (sounddevice's name)
        self.opened = kwargs
        return _FakeStream(self, kwargs["callback"], kwargs["blocksize"])


class _FakeStream:
    def __init__(self, sd: FakeSoundDevice, callback: Callable[..., None], block: int) -> None:
        self.sd, self.callback, self.block = sd, callback, block
        self.thread = threading.Thread(target=self._play, daemon=True)

    def _play(self) -> None:
        audio = self.sd.audio
        for begin in range(0, audio.size - self.block + 1, self.block):
            if self.sd.closed.is_set():
                return
            self.callback(audio[begin : begin + self.block, None], self.block, None, None)
        self.sd.after_audio()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.sd.closed.set()
        self.thread.join(5)


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> FakeSoundDevice:
    audio, rate = read_audio(WAV)
    assert rate == 16000
    sd = FakeSoundDevice(audio)
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    return sd


def test_no_input_device(fake_sd: FakeSoundDevice) -> None:
    fake_sd.has_input = False
    with pytest.raises(AudioDeviceError, match="no audio input device 3"):
        MicrophoneSource(device=3)


def test_list_devices(fake_sd: FakeSoundDevice) -> None:
    assert "Fake Mic" in list_devices()


def test_microphone_delivers_blocks_until_stopped(fake_sd: FakeSoundDevice) -> None:
    mic = MicrophoneSource(sample_rate=16000, chunk_s=0.1)
    assert mic.device_name == "Fake Mic"
    fake_sd.after_audio = mic.stop
    chunks = collect(mic)
    opened = {k: v for k, v in fake_sd.opened.items() if k != "callback"}
    assert opened == {
        "device": None,
        "samplerate": 16000,
        "channels": 1,
        "dtype": "float32",
        "blocksize": 1600,
    }
    assert chunks[0][1].size == 0  # the rate is announced before any audio
    got = np.concatenate([c for _, c in chunks])
    n = fake_sd.audio.size // 1600 * 1600
    np.testing.assert_array_equal(got, fake_sd.audio[:n])
    assert {r for r, _ in chunks} == {16000}
    assert fake_sd.closed.is_set()


def test_microphone_closed_when_consumer_stops_early(fake_sd: FakeSoundDevice) -> None:
    chunks = collect(MicrophoneSource(), limit=3)
    assert len(chunks) == 3
    assert fake_sd.closed.is_set()
