"""Audio at the edge: file decoding, sample-format conversion, resampling.

Files are decoded by libsndfile (soundfile: wav, flac, ogg, mp3) and, for what
it does not read (aac in m4a/mp4 or ADTS, opus in webm …), by PyAV (FFmpeg),
the format told by the content, never by the name. Everything past this
module sees mono float32 samples in [-1, 1] at the model's sample rate.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import numpy.typing as npt

from asrserve.errors import AudioFormatError, AudioLimitError

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream
    from av.container import InputContainer

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
    """Decode an audio file to mono float32: what libsndfile reads (wav, flac,
    ogg vorbis/opus, mp3) through it, anything else through PyAV (FFmpeg: aac in
    m4a/mp4 or ADTS, opus in webm …), chosen by content, not by name.

    Returns ``(samples, sample_rate)`` at the file's own rate; multi-channel
    audio is downmixed by averaging the channels.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioFormatError(f"{p}: no such audio file")
    return _decode(p, lambda reason: f"{p}: cannot decode audio ({reason})")


def decode_audio_bytes(data: bytes, name: str = "upload") -> tuple[FloatArray, int]:
    """:func:`read_audio` for an in-memory file (an upload)."""
    return _decode(
        data,
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


def _sf_open(data: bytes) -> Any:
    """A :class:`soundfile.SoundFile` over an upload; raises what libsndfile raises."""
    import io

    import soundfile as sf

    return sf.SoundFile(io.BytesIO(data))


def check_upload_header(data: bytes, name: str, max_audio_s: float) -> UploadHeader:
    """Read the header of an uploaded file and refuse, before decoding, what
    the limits do not allow: a sample rate outside
    [:data:`UPLOAD_MIN_RATE`, :data:`UPLOAD_MAX_RATE`], more than
    :data:`UPLOAD_MAX_CHANNELS` channels, more than ``max_audio_s`` seconds.

    A file libsndfile cannot open is asked of PyAV. Raises
    :class:`AudioFormatError` for a file neither opens and
    :class:`AudioLimitError` for a refused one."""
    try:
        f = _sf_open(data)
    except Exception as exc:  # libsndfile raises several types
        header = _av_header(data, _upload_message(name), exc)
    else:
        with f:
            frames = int(f.frames)
            header = UploadHeader(
                int(f.samplerate),
                int(f.channels),
                frames if 0 < frames < _UNKNOWN_FRAMES else None,
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


def _upload_message(name: str) -> Callable[[str], str]:
    return lambda reason: f"cannot decode audio of the uploaded file {name!r}: {reason}"


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
    :func:`read_audio` does, through libsndfile or else PyAV. Memory is one
    block, whatever the file's length; past ``max_audio_s`` seconds it stops
    with :class:`AudioLimitError` (for containers whose header gives no
    length, or gives a wrong one). Call :func:`check_upload_header` first."""
    message = _upload_message(name)
    try:
        f = _sf_open(data)
    except Exception as exc:  # libsndfile raises several types
        blocks = _rebuffer(_av_frames(data, message, exc), block_s)
    else:
        blocks = _sf_blocks(f, block_s, message)
    total = 0
    for rate, mono in blocks:
        total += mono.size
        if total > max_audio_s * rate:
            raise AudioLimitError(_too_long(name, max_audio_s), "audio_too_long", too_large=True)
        yield rate, mono


def _sf_blocks(
    f: Any, block_s: float, message: Callable[[str], str]
) -> Iterator[tuple[int, FloatArray]]:
    """Blocks of ``block_s`` seconds read from an open :class:`soundfile.SoundFile`
    (closed at the end), mono."""
    with f:
        rate, channels = int(f.samplerate), int(f.channels)
        block = max(1, round(block_s * rate))
        buf = np.empty((block, channels), dtype=np.float32)
        while True:
            try:
                got = f.read(block, dtype="float32", always_2d=True, out=buf)
            except Exception as exc:  # libsndfile raises several types
                raise AudioFormatError(message(decode_error_reason(exc))) from exc
            if len(got) == 0:
                return
            mono = got.mean(axis=1) if channels > 1 else got[:, 0].copy()
            yield rate, np.ascontiguousarray(mono, dtype=np.float32)


def _rebuffer(
    pieces: Iterator[tuple[int, FloatArray]], block_s: float
) -> Iterator[tuple[int, FloatArray]]:
    """Decoded frames (a few ms each, one rate throughout) regrouped into
    blocks of ``block_s`` seconds; the last may be shorter."""
    held: list[FloatArray] = []
    count = rate = block = 0
    for rate, piece in pieces:
        block = max(1, round(block_s * rate))
        held.append(piece)
        count += piece.size
        if count >= block:
            joined = np.concatenate(held)
            start = 0
            while joined.size - start >= block:
                yield rate, joined[start : start + block]
                start += block
            held = [joined[start:]] if start < joined.size else []
            count = joined.size - start
    if count:
        yield rate, np.concatenate(held)


def decode_error_reason(exc: BaseException) -> str:
    """Why libsndfile (through soundfile) refused a file, in its own words
    ("Format not recognised."), without the Python object it was handed: an
    upload would otherwise read ``Error opening <_io.BytesIO object at 0x…>``."""
    reason = getattr(exc, "error_string", None)  # soundfile.LibsndfileError
    if not isinstance(reason, str) or not reason.strip():
        reason = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the data", str(exc))
    return reason.strip() or type(exc).__name__


def _decode(source: Path | bytes, message: Callable[[str], str]) -> tuple[FloatArray, int]:
    """A whole file (a path or its bytes) through libsndfile, else PyAV.
    ``message``: the error's text for the reason it does not decode."""
    import soundfile as sf

    try:
        data, rate = sf.read(
            io.BytesIO(source) if isinstance(source, bytes) else str(source),
            dtype="float32",
            always_2d=True,
        )
    except Exception as exc:  # libsndfile raises several types
        pieces = [(r, x) for r, x in _av_frames(source, message, exc)]
        if not pieces:
            return np.zeros(0, dtype=np.float32), _av_header(source, message, exc).sample_rate
        return np.concatenate([x for _, x in pieces]), pieces[0][0]
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


# --- PyAV (FFmpeg): what libsndfile does not read ------------------------------

AV_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,aac,ogg,mp3,wav,w64,flac,aiff,caf,amr,asf"
"""FFmpeg demuxers PyAV may open: audio files only. Never a playlist or a list
of files (hls, concat …), which would have FFmpeg open other files or URLs an
upload names."""


class _AvFailure(Exception):  # noqa: N818 - carried to the one AudioFormatError
    """PyAV could not decode a file: ``reason``, and whether FFmpeg knew its
    container (so that its reason, not libsndfile's, is the one to give)."""

    def __init__(self, reason: str, recognised: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recognised = recognised


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's reason ("Invalid data found when processing input") without
    the file name or object PyAV appends."""
    text = getattr(exc, "strerror", None)
    if not isinstance(text, str) or not text.strip():
        text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the data", str(exc))
    return text.strip() or type(exc).__name__


def _sniff(head: bytes) -> str | None:
    """The container ``head`` (a file's first bytes) starts, among those only
    FFmpeg reads here: their problems are told in FFmpeg's words."""
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM/Matroska"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC (ADTS)"
    return None


def _mp4_problem(f: BinaryIO) -> str | None:
    """What is wrong with the top-level boxes of an MP4/M4A file: one the file
    ends inside (cut short), or no ``moov`` (its index, written last)."""
    import struct

    size = f.seek(0, io.SEEK_END)
    pos, seen = 0, set()
    while pos + 8 <= size:
        f.seek(pos)
        length, kind = struct.unpack(">I4s", f.read(8))
        if length == 1:
            wide = f.read(8)
            if len(wide) < 8:
                break
            (length,) = struct.unpack(">Q", wide)
        elif length == 0:  # to the end of the file
            length = size - pos
        if length < 8:
            return f"a malformed MP4 box header at byte {pos}"
        box = kind.decode("latin-1")
        if pos + length > size:
            return (
                f"truncated: the file ends {size - pos} bytes into its {box!r} box "
                f"of {length} bytes"
            )
        seen.add(box)
        pos += length
    if "moov" not in seen:
        return "no 'moov' box: the index of an MP4 file, written last (a recording cut short?)"
    return None


def _open_source(source: Path | bytes) -> BinaryIO:
    """A binary file over a path or bytes: PyAV is never given a name, which
    FFmpeg would read as a URL."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _av_failure(source: Path | bytes, exc: BaseException) -> _AvFailure:
    """Why PyAV could not open ``source``: FFmpeg's ``exc``, or for an MP4
    file whose boxes say more, what they say."""
    with _open_source(source) as f:
        kind = _sniff(f.read(12))
        problem = _mp4_problem(f) if kind == "MP4" else None
    if kind is None:
        return _AvFailure(_av_reason(exc), False)
    return _AvFailure(f"{kind} file: {problem or _av_reason(exc)}", True)


def _av_error(failure: _AvFailure, sf_exc: BaseException) -> str:
    """The reason to give for a file neither libsndfile nor PyAV decodes:
    FFmpeg's when it knew the container and libsndfile did not, else
    libsndfile's ("Format not recognised.", "Malformed 'fmt ' chunk." …)."""
    sf_reason = decode_error_reason(sf_exc)
    unrecognised = getattr(sf_exc, "code", None) == 1 or "not recognised" in sf_reason
    if not unrecognised:
        return sf_reason
    if failure.recognised:
        return failure.reason
    return f"{sf_reason} (neither libsndfile nor FFmpeg reads it: {failure.reason})"


@contextlib.contextmanager
def _av_stream(
    source: Path | bytes, message: Callable[[str], str], sf_exc: BaseException
) -> Iterator[tuple[InputContainer, AudioStream]]:
    """The PyAV input container over ``source`` and its first audio stream;
    :class:`AudioFormatError` (``message``) when there is none."""
    import av

    f = _open_source(source)
    try:
        try:
            container = av.open(f, "r", options={"format_whitelist": AV_FORMATS})
        except Exception as exc:  # FFmpegError, or what the file object raised
            failure = _av_failure(source, exc)
            raise AudioFormatError(message(_av_error(failure, sf_exc))) from exc
        with container:
            if not container.streams.audio:
                failure = _AvFailure(f"no audio track in the {container.format.name} file", True)
                raise AudioFormatError(message(_av_error(failure, sf_exc))) from sf_exc
            yield container, container.streams.audio[0]
    finally:
        f.close()


def _av_header(
    source: Path | bytes, message: Callable[[str], str], sf_exc: BaseException
) -> UploadHeader:
    """:class:`UploadHeader` from what FFmpeg read of the container. A length
    only where the container stores one (mp4, ogg, mkv); raw streams (ADTS,
    mp3) have FFmpeg estimate it from the bit rate, which is no length."""
    with _av_stream(source, message, sf_exc) as (container, stream):
        ctx = stream.codec_context
        frames = None
        raw = container.format.name in ("aac", "mp3", "amr")
        if not raw and stream.duration and stream.time_base and ctx.sample_rate:
            frames = max(1, round(float(stream.duration * stream.time_base) * ctx.sample_rate))
        elif not raw and container.duration and ctx.sample_rate:
            import av

            frames = max(1, round(container.duration / av.time_base * ctx.sample_rate))
        return UploadHeader(int(ctx.sample_rate), int(ctx.channels), frames)


def _av_frames(
    source: Path | bytes, message: Callable[[str], str], sf_exc: BaseException
) -> Iterator[tuple[int, FloatArray]]:
    """Decode ``source``'s first audio stream with PyAV, frame by frame:
    ``(sample_rate, mono float32)``. Data FFmpeg cannot decode (corrupt, or a
    file cut inside a frame) ends it with :class:`AudioFormatError`."""
    import av

    with _av_stream(source, message, sf_exc) as (container, stream):
        codec = stream.codec_context.name
        rate = 0
        done = 0  # samples decoded
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.samples == 0:
                        continue
                    if rate and frame.sample_rate != rate:
                        raise AudioFormatError(
                            message(
                                f"the sample rate changes from {rate} to "
                                f"{frame.sample_rate} Hz after {done / rate:.2f} s"
                            )
                        )
                    rate = frame.sample_rate
                    mono = _frame_mono(frame)
                    done += mono.size
                    yield rate, mono
        except av.error.FFmpegError as exc:
            at = f" after {done / rate:.2f} s" if rate else ""
            reason = f"corrupt or truncated {codec} data{at}: {_av_reason(exc)}"
            raise AudioFormatError(message(reason)) from exc


def _frame_mono(frame: AudioFrame) -> FloatArray:
    """One decoded PyAV audio frame as mono float32 in [-1, 1], channels averaged."""
    arr = frame.to_ndarray()
    channels = max(1, len(frame.layout.channels))
    if not frame.format.is_planar:  # packed: (1, samples × channels)
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind == "f":
        x = arr.astype(np.float32, copy=False)
    elif arr.dtype.kind == "u":  # u8: 128 is zero
        half = float(1 << (8 * arr.dtype.itemsize - 1))
        x = ((arr.astype(np.float32) - half) / half).astype(np.float32)
    else:
        x = (arr.astype(np.float32) / float(1 << (8 * arr.dtype.itemsize - 1))).astype(np.float32)
    mono = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    return np.ascontiguousarray(mono, dtype=np.float32)


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
