"""Audio sources: mono float32 chunks delivered asynchronously.

A source is iterated with ``async for sample_rate, samples in source``; the
rate is fixed for the whole source and every source yields at least one
(possibly empty) chunk, so consumers always learn the rate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asrserve.audio import FloatArray, load_audio, read_audio
from asrserve.errors import AsrServeError, ConfigError

log = logging.getLogger("asrserve")

Chunk = tuple[int, FloatArray]


class AudioDeviceError(AsrServeError):
    """The microphone cannot be used: missing package, missing library or no device."""


class AudioSource(Protocol):
    """Anything ``async for rate, samples in source`` works on."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...


def _check_chunk(chunk_s: float) -> float:
    if not chunk_s > 0:
        raise ConfigError(f"chunk_s must be positive, got {chunk_s}")
    return chunk_s


class FileSource:
    """An audio file cut into ``chunk_s`` pieces.

    With ``realtime`` each chunk is delivered when a microphone would have
    delivered it (at the end of its audio); otherwise as fast as consumed.
    ``sample_rate=None`` keeps the file's own rate.
    """

    def __init__(
        self,
        path: str | Path,
        chunk_s: float = 0.1,
        realtime: bool = True,
        sample_rate: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.chunk_s = _check_chunk(chunk_s)
        self.realtime = realtime
        self.sample_rate = sample_rate

    def _read(self) -> Chunk:
        if self.sample_rate is None:
            samples, rate = read_audio(self.path)
            return rate, samples
        return self.sample_rate, load_audio(self.path, self.sample_rate)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        rate, samples = await asyncio.to_thread(self._read)
        step = max(1, round(self.chunk_s * rate))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # max(size, 1): an empty file still yields one (empty) chunk.
        for begin in range(0, max(samples.size, 1), step):
            chunk = samples[begin : begin + step]
            if self.realtime:
                await asyncio.sleep(max(0.0, t0 + (begin + chunk.size) / rate - loop.time()))
            yield rate, chunk


def _sounddevice() -> Any:
    """Import sounddevice, turning its absence (or PortAudio's) into a clear error."""
    try:
        import sounddevice
    except ImportError as exc:
        raise AudioDeviceError(
            "microphone needs the 'sounddevice' package: pip install 'asrserve[mic]'"
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioDeviceError(
            f"PortAudio library not found (apt install libportaudio2): {exc}"
        ) from exc
    return sounddevice


def list_devices() -> str:
    """PortAudio's device table (``>`` marks the default input)."""
    return str(_sounddevice().query_devices())


class MicrophoneSource:
    """Live audio from an input device until :meth:`stop` is called.

    ``device`` is a PortAudio index or name substring (``None``: the default
    input). Fails early, at construction, when no input device can be used.
    """

    def __init__(
        self, device: int | str | None = None, sample_rate: int = 16000, chunk_s: float = 0.1
    ) -> None:
        self._sd = _sounddevice()
        try:
            info = self._sd.query_devices(device, kind="input")
        except (ValueError, self._sd.PortAudioError) as exc:
            which = "" if device is None else f" {device!r}"
            raise AudioDeviceError(f"no audio input device{which}: {exc}") from exc
        self.device = device
        self.device_name = str(info["name"])
        self.sample_rate = sample_rate
        self.chunk_s = _check_chunk(chunk_s)
        self._stopped = False
        self._wake: Any = None

    def stop(self) -> None:
        """End the iteration after the audio already captured; safe from any thread."""
        self._stopped = True
        if self._wake is not None:
            self._wake()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[FloatArray | None] = asyncio.Queue()

        def callback(indata: Any, _frames: int, _time: Any, status: Any) -> None:
            if status:
                log.warning("microphone: %s", status)
            loop.call_soon_threadsafe(queue.put_nowait, np.array(indata[:, 0], np.float32))

        stream = None
        try:
            stream = self._sd.InputStream(
                device=self.device,
                samplerate=self.sample_rate,
                channels=1,
                dtype="float32",
                blocksize=max(1, round(self.chunk_s * self.sample_rate)),
                callback=callback,
            )
            stream.start()
        except (ValueError, self._sd.PortAudioError) as exc:
            if stream is not None:
                stream.close()
            raise AudioDeviceError(f"cannot open {self.device_name!r}: {exc}") from exc
        self._wake = lambda: loop.call_soon_threadsafe(queue.put_nowait, None)
        if self._stopped:  # stop() came first; checked after _wake is set, so nothing is lost
            # queued behind the blocks the callback already scheduled, not ahead of them
            loop.call_soon(queue.put_nowait, None)
        try:
            yield self.sample_rate, np.zeros(0, np.float32)
            while (chunk := await queue.get()) is not None:
                yield self.sample_rate, chunk
        finally:
            self._wake = None
            stream.close()  # stops capture, discarding what is still buffered
