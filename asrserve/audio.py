"""Audio at the edge: file decoding, sample-format conversion, resampling.

Everything past this module sees mono float32 samples in [-1, 1] at the
model's sample rate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import AudioFormatError, AudioLimitError

FloatArray = npt.NDArray[np.float32]


def to_float32(samples: npt.ArrayLike) -> FloatArray:
    """Convert int16 PCM or float samples to float32 in [-1, 1].

    int16 is scaled by 1/32768; float input is taken as already in [-1, 1].
    Non-finite values are refused rather than silently poisoning the stream.
    """
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise AudioFormatError(f"expected a 1-D array of samples, got shape {arr.shape}")
    if arr.dtype == np.int16:
        scaled: npt.NDArray[np.float32] = arr.astype(np.float32) / np.float32(32768.0)
        return scaled
    if arr.dtype.kind == "f":
        out = arr.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise AudioFormatError("samples contain NaN or infinity")
        return out
    raise AudioFormatError(f"unsupported sample dtype {arr.dtype}; use float32 or int16")


def resample(samples: FloatArray, from_rate: int, to_rate: int) -> FloatArray:
    """Resample a whole signal (soxr, high quality)."""
    if from_rate == to_rate:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Stateful resampler for audio arriving in pieces at a fixed input rate."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        import soxr

        self.from_rate = from_rate
        self.to_rate = to_rate
        self._rs = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality="HQ")

    def process(self, samples: FloatArray, last: bool = False) -> FloatArray:
        out = self._rs.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32), last=last)
        return np.asarray(out, dtype=np.float32)


def read_audio(path: str | Path) -> tuple[FloatArray, int]:
    """Decode wav/flac/ogg/mp3 (anything libsndfile reads) to mono float32.

    Returns ``(samples, sample_rate)``; multi-channel audio is downmixed by
    averaging the channels.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioFormatError(f"{p}: no such audio file")
    return _decode(str(p), lambda reason: f"{p}: cannot decode audio ({reason})")


def decode_audio_bytes(data: bytes, name: str = "upload") -> tuple[FloatArray, int]:
    """:func:`read_audio` for an in-memory file (an upload)."""
    import io

    return _decode(
        io.BytesIO(data),
        lambda reason: f"cannot decode audio of the uploaded file {name!r}: {reason}",
    )


UPLOAD_MIN_RATE = 8000
"""Lowest sample rate an upload may have: 8 kHz telephony. Below it there is
no speech band left, and a header saying 1 Hz turns each stored sample into
a second of audio to decode."""
UPLOAD_MAX_RATE = 384000
"""Highest sample rate an upload may have (the top rate of studio audio)."""
UPLOAD_MAX_CHANNELS = 8
"""Most channels an upload may have (7.1 surround); every one is read and averaged."""
_UNKNOWN_FRAMES = 1 << 62
"""libsndfile's frame count when a container does not say (SF_COUNT_MAX)."""


@dataclass(frozen=True)
class UploadHeader:
    """What a container's header says, read before any audio is decoded."""

    sample_rate: int
    channels: int
    frames: int | None  # None: the header does not say

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


def _open_upload(data: bytes, name: str) -> Any:
    import io

    import soundfile as sf

    try:
        return sf.SoundFile(io.BytesIO(data))
    except Exception as exc:  # libsndfile raises several types
        reason = decode_error_reason(exc)
        raise AudioFormatError(
            f"cannot decode audio of the uploaded file {name!r}: {reason}"
        ) from exc


def check_upload_header(data: bytes, name: str, max_audio_s: float) -> UploadHeader:
    """Read the header of an uploaded file and refuse, before decoding, what
    the limits do not allow: a sample rate outside
    [:data:`UPLOAD_MIN_RATE`, :data:`UPLOAD_MAX_RATE`], more than
    :data:`UPLOAD_MAX_CHANNELS` channels, more than ``max_audio_s`` seconds.

    Raises :class:`AudioFormatError` for a file libsndfile cannot open and
    :class:`AudioLimitError` for a refused one."""
    with _open_upload(data, name) as f:
        frames = int(f.frames)
        header = UploadHeader(
            int(f.samplerate), int(f.channels), frames if 0 < frames < _UNKNOWN_FRAMES else None
        )
    if not UPLOAD_MIN_RATE <= header.sample_rate <= UPLOAD_MAX_RATE:
        raise AudioLimitError(
            f"the uploaded file {name!r} has a sample rate of {header.sample_rate} Hz; "
            f"this server takes {UPLOAD_MIN_RATE} to {UPLOAD_MAX_RATE} Hz",
            "unsupported_sample_rate",
        )
    if header.channels > UPLOAD_MAX_CHANNELS:
        raise AudioLimitError(
            f"the uploaded file {name!r} has {header.channels} channels; "
            f"this server takes at most {UPLOAD_MAX_CHANNELS}",
            "too_many_channels",
        )
    seconds = header.duration_s
    if seconds is not None and seconds > max_audio_s:
        raise AudioLimitError(
            _too_long(name, max_audio_s, seconds), "audio_too_long", too_large=True
        )
    return header


def _too_long(name: str, max_audio_s: float, seconds: float | None = None) -> str:
    held = f"{seconds:.1f} s of audio" if seconds is not None else "more audio than that"
    return (
        f"the uploaded file {name!r} holds {held}; this server takes at most "
        f"{max_audio_s:g} s per upload (--max-audio-s)"
    )


def upload_blocks(
    data: bytes, name: str, max_audio_s: float, block_s: float = 1.0
) -> Iterator[tuple[int, FloatArray]]:
    """Decode an upload block by block: ``(sample_rate, mono float32)`` of
    ``block_s`` seconds each (the last may be shorter), channels averaged as
    :func:`read_audio` does. Memory is one block, whatever the file's length;
    past ``max_audio_s`` seconds it stops with :class:`AudioLimitError` (for
    containers whose header gives no length, or gives a wrong one). Call
    :func:`check_upload_header` first."""
    with _open_upload(data, name) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        block = max(1, round(block_s * rate))
        limit = int(max_audio_s * rate)
        buf = np.empty((block, channels), dtype=np.float32)
        total = 0
        while True:
            try:
                got = f.read(block, dtype="float32", always_2d=True, out=buf)
            except Exception as exc:  # libsndfile raises several types
                reason = decode_error_reason(exc)
                raise AudioFormatError(
                    f"cannot decode audio of the uploaded file {name!r}: {reason}"
                ) from exc
            n = len(got)
            if n == 0:
                return
            total += n
            if total > limit:
                raise AudioLimitError(
                    _too_long(name, max_audio_s), "audio_too_long", too_large=True
                )
            mono = got.mean(axis=1) if channels > 1 else got[:, 0].copy()
            yield rate, np.ascontiguousarray(mono, dtype=np.float32)


def decode_error_reason(exc: BaseException) -> str:
    """Why libsndfile (through soundfile) refused a file, in its own words
    ("Format not recognised."), without the Python object it was handed: an
    upload would otherwise read ``Error opening <_io.BytesIO object at 0x…>``."""
    reason = getattr(exc, "error_string", None)  # soundfile.LibsndfileError
    if not isinstance(reason, str) or not reason.strip():
        reason = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the data", str(exc))
    return reason.strip() or type(exc).__name__


def _decode(source: Any, message: Callable[[str], str]) -> tuple[FloatArray, int]:
    """``message``: the error's text for libsndfile's reason."""
    import soundfile as sf

    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types
        raise AudioFormatError(message(decode_error_reason(exc))) from exc
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


_UNKNOWN_DATA_SIZE = 0x7FFFF000
"""A ``data`` chunk size at or above this is a placeholder, not a length:
writers that cannot seek back (a pipe) leave 0xFFFFFFFF (ffmpeg), 0x7FFFF000
(sox) or 0x7FFFFFFF (arecord)."""


def truncated_seconds(path: str | Path) -> float:
    """Seconds of audio the RIFF/WAVE header of ``path`` announces (its ``data``
    chunk size) that the file does not hold: a copy or download cut inside the
    audio data. libsndfile reads such a file without complaint, as a shorter
    one. 0.0 for a whole file, a file that is not RIFF/WAVE (RF64, FLAC …), a
    placeholder size (see ``_UNKNOWN_DATA_SIZE``) or a header that does not
    parse (decoding reports that)."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return 0.0
            size = os.fstat(f.fileno()).st_size
            rate = block_align = 0
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk_id, length = struct.unpack("<4sI", f.read(8))
                if chunk_id == b"fmt ":
                    fmt = f.read(min(length, 16))
                    if len(fmt) < 14:
                        return 0.0
                    rate, _, block_align = struct.unpack("<IIH", fmt[4:14])
                elif chunk_id == b"data":
                    held = size - (pos + 8)
                    if not rate or not block_align or length >= _UNKNOWN_DATA_SIZE:
                        return 0.0
                    missing = length // block_align - max(0, held) // block_align
                    return max(0, int(missing)) / int(rate)
                pos += 8 + length + (length & 1)  # chunks are padded to even sizes
    except (OSError, struct.error):
        return 0.0
    return 0.0


def truncation_warning(path: str | Path, missing_s: float) -> str:
    """The one-line warning for a file :func:`truncated_seconds` found cut short."""
    return (
        f"{path}: truncated: the file ends {missing_s:.3f} s before the end its WAV "
        "header gives; transcribed the audio it holds"
    )


def load_audio(path: str | Path, sample_rate: int) -> FloatArray:
    """Read a file and resample it to ``sample_rate``."""
    samples, rate = read_audio(path)
    return resample(samples, rate, sample_rate)
