"""Audio at the edge: file decoding, sample-format conversion, resampling.

Everything past this module sees mono float32 samples in [-1, 1] at the
model's sample rate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.errors import AudioFormatError

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
