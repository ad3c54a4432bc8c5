"""Run sherpa-onnx (the reference) the way the parity tests compare against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TAIL_PADDING_S = 0.66


def sherpa_recognizer(
    model_dir: Path,
    encoder: str,
    decoder: str,
    joiner: str,
    method: str,
    **kwargs: Any,
) -> Any:
    import sherpa_onnx

    return sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(model_dir / "tokens.txt"),
        encoder=str(model_dir / encoder),
        decoder=str(model_dir / decoder),
        joiner=str(model_dir / joiner),
        num_threads=1,
        sample_rate=16000,
        feature_dim=80,
        decoding_method="modified_beam_search" if method == "modified_beam" else "greedy_search",
        max_active_paths=4,
        **kwargs,
    )


def sherpa_decode(
    rec: Any, samples: npt.NDArray[np.float32], rate: int, piece: int, hotwords: str | None = None
) -> tuple[list[str], list[float]]:
    """Feed ``piece`` samples at a time plus tail padding; return tokens and timestamps."""
    s = rec.create_stream(hotwords) if hotwords else rec.create_stream()
    for i in range(0, samples.size, piece):
        s.accept_waveform(rate, samples[i : i + piece])
        while rec.is_ready(s):
            rec.decode_stream(s)
    s.accept_waveform(rate, np.zeros(int(TAIL_PADDING_S * rate), dtype=np.float32))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    r = rec.get_result_all(s)
    return list(r.tokens), [float(t) for t in r.timestamps]


def asrserve_decode(
    rec: Any,
    samples: npt.NDArray[np.float32],
    rate: int,
    piece: int,
    hotwords: list[str] | None = None,
) -> tuple[list[str], list[float]]:
    s = rec.create_stream(hotwords=hotwords)
    for i in range(0, samples.size, piece):
        s.accept_waveform(rate, samples[i : i + piece])
        while rec.is_ready(s):
            rec.decode_stream(s)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode_stream(s)
    r = rec.get_result(s)
    return r.tokens, r.timestamps


def asrserve_decode_batched(
    rec: Any, audio: list[tuple[npt.NDArray[np.float32], int]]
) -> tuple[list[tuple[list[str], list[float]]], list[int]]:
    """Decode all clips together (see :func:`feed_batched`); return (tokens,
    timestamps) per clip and the batch sizes seen."""
    streams = [rec.create_stream() for _ in audio]
    batch_sizes = feed_batched(rec, audio, streams)
    results = [rec.get_result(s) for s in streams]
    return [(r.tokens, r.timestamps) for r in results], batch_sizes


def feed_batched(
    rec: Any, audio: list[tuple[npt.NDArray[np.float32], int]], streams: list[Any]
) -> list[int]:
    """Feed each clip to its stream unevenly, so the batch changes from chunk to
    chunk, decoding all streams together; return the batch sizes seen."""
    for i, ((x, sr), s) in enumerate(zip(audio, streams, strict=True)):
        s.accept_waveform(sr, x[: (i + 1) * 4000])
    batch_sizes = []
    while n := rec.decode_streams(streams):
        batch_sizes.append(n)
    for i, ((x, sr), s) in enumerate(zip(audio, streams, strict=True)):
        s.accept_waveform(sr, x[(i + 1) * 4000 :])
        s.input_finished()
    while n := rec.decode_streams(streams):
        batch_sizes.append(n)
    return batch_sizes


def sherpa_ncnn_recognizer(model_dir: Path, method: str, **kwargs: Any) -> Any:
    """sherpa-ncnn's Python recognizer on the upstream file names in ``model_dir``."""
    import sherpa_ncnn

    files = {
        f"{role}_{kind}": str(model_dir / f"{role}_jit_trace-pnnx.ncnn.{kind}")
        for role in ("encoder", "decoder", "joiner")
        for kind in ("param", "bin")
    }
    return sherpa_ncnn.Recognizer(
        tokens=str(model_dir / "tokens.txt"),
        **files,
        num_threads=1,
        decoding_method="modified_beam_search" if method == "modified_beam" else "greedy_search",
        num_active_paths=4,
        **kwargs,
    )


def sherpa_ncnn_decode(
    rec: Any, samples: npt.NDArray[np.float32], rate: int, piece: int
) -> tuple[list[int], list[float]]:
    """Like :func:`sherpa_decode`, on a fresh stream of the sherpa-ncnn recognizer;
    returns token ids and timestamps."""
    rec.stream = rec.recognizer.create_stream()  # the wrapper holds one stream
    for i in range(0, samples.size, piece):
        rec.accept_waveform(rate, samples[i : i + piece])  # decodes what is ready
    rec.accept_waveform(rate, np.zeros(int(TAIL_PADDING_S * rate), dtype=np.float32))
    rec.input_finished()
    return list(rec.tokens), [float(t) for t in rec.timestamps]


def sherpa_ncnn_mismatches(
    ref: Any, ours: Any, wavs: list[Path], piece_s: float | None
) -> list[tuple[str, str, str]]:
    """Decode ``wavs`` with sherpa-ncnn and asrserve in ``piece_s`` pieces (None:
    whole files); return (file, want, got) where tokens differ. Timestamps of
    equal token sequences must agree within 1 ms."""
    import soundfile as sf

    mismatches = []
    for wav in wavs:
        x, sr = sf.read(str(wav), dtype="float32")
        piece = x.size if piece_s is None else int(piece_s * sr)
        ids, want_ts = sherpa_ncnn_decode(ref, x, sr, piece)
        assert ids, f"reference produced nothing for {wav.name}"
        want = [ours.symbols.piece(i) for i in ids]
        got, got_ts = asrserve_decode(ours, x, sr, piece)
        if got != want:
            mismatches.append((wav.name, "".join(want), "".join(got)))
        else:
            np.testing.assert_allclose(got_ts, want_ts, atol=1e-3, err_msg=wav.name)
    return mismatches
