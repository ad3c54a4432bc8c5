"""Compressed formats libsndfile does not read, decoded through PyAV: AAC in
m4a/mp4 and ADTS, Opus in WebM and Ogg. The files are encoded here, at test
time, with PyAV's encoders from the demo model's clips.

The demo model is a tiny LSTM that flips a word on tiny changes of its input
(even Opus at 128 kb/s changes a word of some clip), so transcripts of lossy
copies are held to a word error rate against the wav's, not to equality; the
decoding itself is held to the source waveform (SNR)."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.audio import (
    check_upload_header,
    decode_audio_bytes,
    read_audio,
    resample,
    upload_blocks,
)
from asrserve.cli import main
from asrserve.errors import AudioFormatError, AudioLimitError
from asrserve.scoring import word_errors
from asrserve.server.app import AsrServer
from asrserve.server.openai_api import transcribe_segments
from tests.conftest import BUILTIN, read_wav
from tests.server.test_http import multipart, recognizer, request, serve

__all__ = ["recognizer"]  # the module-scoped fixture of test_http

av = pytest.importorskip("av")

WAVS = sorted((BUILTIN / "test_wavs").glob("*.wav"))
FORMATS = {
    # name: (container, codec, sample rate, bit rate)
    "m4a": ("ipod", "aac", 16000, 128_000),
    "mp4": ("mp4", "aac", 16000, 128_000),
    "aac": ("adts", "aac", 16000, 128_000),
    "webm": ("webm", "libopus", 48000, 96_000),
    "opus": ("ogg", "libopus", 48000, 96_000),
}
MAX_WER = 0.25
"""Word error rate of the m4a/webm copies' transcripts against the wavs' over
the three clips (measured: 1 word of 14 for each)."""


def encode(x: npt.NDArray[np.float32], rate: int, name: str, channels: int = 1) -> bytes:
    """``x`` (``(samples,)`` or ``(samples, channels)``) encoded as ``name`` of
    :data:`FORMATS`, with timestamps, so that the muxer records the encoder's
    priming (mp4's edit list) as real encoders do."""
    import io

    container, codec, out_rate, bit_rate = FORMATS[name]
    layout = "mono" if channels == 1 else "stereo"
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate)
        stream.bit_rate = bit_rate
        stream.layout = layout
        size = stream.codec_context.frame_size or None
        rs = av.AudioResampler(stream.format.name, layout, out_rate, frame_size=size)
        done = 0
        for f in [*rs.resample(frame), *rs.resample(None)]:
            f.pts, f.time_base = done, Fraction(1, out_rate)
            done += f.samples
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """``(clip stem, format)`` → the clip encoded in that format."""
    root = tmp_path_factory.mktemp("formats")
    out = {}
    for wav in WAVS:
        x, rate = read_wav(wav)
        for name in FORMATS:
            path = root / f"{wav.stem}.{name}"
            path.write_bytes(encode(x, rate, name))
            out[wav.stem, name] = path
    return out


def aligned_snr_db(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32]) -> float:
    """SNR of ``y`` against ``x`` once ``y``'s leading delay (an encoder's
    priming left in a raw stream, at most 2048 samples) is cut."""
    head = x[:4000]
    lag = int(np.argmax(np.correlate(y[: head.size + 2048], head, "valid")))
    y = y[lag : lag + x.size]
    n = min(x.size, y.size)
    noise = float(np.sum((x[:n] - y[:n]) ** 2))
    return float(10 * np.log10(float(np.sum(x[:n] ** 2)) / max(noise, 1e-12)))


@pytest.mark.parametrize("name", list(FORMATS))
def test_decoding_gives_the_source_back(files: dict[tuple[str, str], Path], name: str) -> None:
    wav = WAVS[-1]
    x, rate = read_wav(wav)
    path = files[wav.stem, name]
    y, got_rate = read_audio(path)
    assert got_rate == FORMATS[name][2]
    assert y.dtype == np.float32
    # an AAC frame of priming (raw ADTS keeps it) and of padding at most
    assert y.size / got_rate == pytest.approx(x.size / rate, abs=0.13)
    assert aligned_snr_db(x, resample(y, got_rate, rate)) > 15.0
    z, z_rate = decode_audio_bytes(path.read_bytes(), name=path.name)
    assert z_rate == got_rate
    np.testing.assert_array_equal(z, y)


@pytest.mark.parametrize("name", list(FORMATS))
def test_uploads_decode_in_bounded_blocks(files: dict[tuple[str, str], Path], name: str) -> None:
    path = files[WAVS[-1].stem, name]
    data = path.read_bytes()
    header = check_upload_header(data, "blob", max_audio_s=60)
    whole, rate = decode_audio_bytes(data)
    assert header.sample_rate == rate
    assert header.channels == 1
    if name == "aac":  # a raw stream: FFmpeg only estimates its length
        assert header.frames is None
    else:
        assert header.duration_s == pytest.approx(whole.size / rate, abs=0.13)
    blocks = list(upload_blocks(data, "blob", max_audio_s=60, block_s=0.5))
    assert {r for r, _ in blocks} == {rate}
    assert all(b.size == rate // 2 for _, b in blocks[:-1])
    assert 0 < blocks[-1][1].size <= rate // 2
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), whole)


def test_limits_hold_for_compressed_uploads(files: dict[tuple[str, str], Path]) -> None:
    stem = WAVS[-1].stem
    webm = files[stem, "webm"].read_bytes()
    with pytest.raises(AudioLimitError, match=r"holds 3\.\d s of audio") as refused:
        check_upload_header(webm, "long.webm", max_audio_s=1.0)
    assert refused.value.too_large
    adts = files[stem, "aac"].read_bytes()
    check_upload_header(adts, "long.aac", max_audio_s=1.0)  # no length to refuse by
    with pytest.raises(AudioLimitError, match="more audio than that"):
        list(upload_blocks(adts, "long.aac", max_audio_s=1.0))


def test_stereo_is_averaged(tmp_path: Path) -> None:
    x, rate = read_wav(WAVS[-1])
    both = np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / "stereo.m4a"
    path.write_bytes(encode(both, rate, "m4a", channels=2))
    y, got_rate = read_audio(path)
    assert got_rate == rate
    assert aligned_snr_db(0.75 * x, y) > 15.0


def test_the_format_is_read_from_the_content_not_the_name(
    files: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    source = files[WAVS[0].stem, "m4a"]
    want, rate = read_audio(source)
    for name in ("recording.wav", "recording", "blob.mp3"):
        (tmp_path / name).write_bytes(source.read_bytes())
        got, got_rate = read_audio(tmp_path / name)
        assert got_rate == rate
        np.testing.assert_array_equal(got, want)


def test_the_cli_transcribes_m4a_and_webm_as_the_wav(
    files: dict[tuple[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copies = [str(files[w.stem, name]) for name in ("m4a", "webm") for w in WAVS]
    assert main(["transcribe", "--format", "json", *map(str, WAVS), *copies]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    texts = {row["file"]: row["text"] for row in rows}
    for name in ("m4a", "webm"):
        errors = words = 0
        for w in WAVS:
            e, n = word_errors(texts[str(w)], texts[str(files[w.stem, name])])
            errors, words = errors + e, words + n
        assert words > 10
        assert errors / words <= MAX_WER, (name, texts)
    x, rate = read_wav(WAVS[-1])
    duration = {row["file"]: row["duration"] for row in rows}
    assert duration[str(files[WAVS[-1].stem, "webm"])] == pytest.approx(x.size / rate, abs=0.01)


def test_truncated_and_garbage_files_are_named_errors(
    files: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    stem = WAVS[-1].stem
    m4a = files[stem, "m4a"].read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(m4a[: len(m4a) * 6 // 10])
    with pytest.raises(AudioFormatError, match=r"cut\.m4a.*MP4 file: truncated: the file ends"):
        read_audio(cut)
    with pytest.raises(AudioFormatError, match=r"'cut\.m4a'.*MP4 file: truncated"):
        decode_audio_bytes(cut.read_bytes(), name="cut.m4a")
    with pytest.raises(AudioFormatError, match=r"'head\.m4a'.*MP4 file: .*'moov'"):
        check_upload_header(m4a[:40], "head.m4a", max_audio_s=60)
    adts = files[stem, "aac"].read_bytes()
    with pytest.raises(AudioFormatError, match=r"'cut\.aac'.*corrupt or truncated aac data after"):
        decode_audio_bytes(adts[: len(adts) // 2], name="cut.aac")
    with pytest.raises(AudioFormatError, match=r"'cut\.aac'.*corrupt or truncated aac data"):
        list(upload_blocks(adts[: len(adts) // 2], "cut.aac", max_audio_s=60))
    for data in (b"this is not audio", b"", bytes(4096), b"\x1a\x45\xdf\xa3" + bytes(64)):
        with pytest.raises(AudioFormatError, match=r"'x\.webm'") as err:
            decode_audio_bytes(data, name="x.webm")
        assert " object at 0x" not in str(err.value)
        reason = str(err.value)
        assert "Format not recognised" in reason or "WebM/Matroska file" in reason


def test_the_cli_names_a_truncated_file(
    files: dict[tuple[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m4a = files[WAVS[0].stem, "m4a"].read_bytes()
    cut = tmp_path / "memo.m4a"
    cut.write_bytes(m4a[: len(m4a) // 2])
    assert main(["transcribe", str(cut), str(files[WAVS[0].stem, "webm"])]) == 1
    out, err = capsys.readouterr()
    assert f"{cut}: cannot decode audio (MP4 file: truncated" in err
    assert out.strip()  # the other file was transcribed


def test_a_webm_upload_through_the_openai_endpoint(
    recognizer: asrserve.Recognizer, files: dict[tuple[str, str], Path]
) -> None:
    webm = files[WAVS[-1].stem, "webm"].read_bytes()
    x, rate = decode_audio_bytes(webm)
    want = transcribe_segments(recognizer, x, rate).text
    assert want

    async def body(server: AsrServer, base: str) -> None:
        url = base + "/v1/audio/transcriptions"
        # a browser's MediaRecorder upload is often named "blob", without extension
        for name in ("recording.webm", "blob"):
            payload, ctype = multipart({"model": "tiny-lstm"}, webm, filename=name)
            status, _, out = await asyncio.to_thread(request, url, payload, {"Content-Type": ctype})
            assert status == 200, out
            assert json.loads(out) == {"text": want}
        m4a = files[WAVS[-1].stem, "m4a"].read_bytes()
        payload, ctype = multipart({}, m4a[: len(m4a) // 2], filename="memo.m4a")
        status, _, out = await asyncio.to_thread(request, url, payload, {"Content-Type": ctype})
        assert status == 400
        error = json.loads(out)["error"]
        assert error["code"] == "invalid_audio"
        assert "'memo.m4a'" in error["message"]
        assert "truncated" in error["message"]

    serve(recognizer, body)
