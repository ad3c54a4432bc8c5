"""Fbank frames: reference options, piece-size invariance, bounded memory."""

from __future__ import annotations

import inspect
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest

from asrserve.config import FeatureConfig
from asrserve.features.kaldi_fbank import KaldiFbank
from tests.conftest import read_wav


def _reference_frames(samples: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank configured independently, with sherpa-onnx's defaults."""
    import sherpa_onnx

    defaults = inspect.signature(sherpa_onnx.OnlineRecognizer.from_transducer).parameters
    opts = knf.FbankOptions()
    opts.frame_opts.dither = defaults["dither"].default
    opts.frame_opts.snip_edges = defaults["snip_edges"].default
    opts.frame_opts.samp_freq = float(defaults["sample_rate"].default)
    opts.mel_opts.num_bins = defaults["feature_dim"].default
    opts.mel_opts.low_freq = defaults["low_freq"].default
    opts.mel_opts.high_freq = defaults["high_freq"].default
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000.0, samples)
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def _ours(samples: np.ndarray, piece: int) -> np.ndarray:
    fb = KaldiFbank()
    for i in range(0, samples.size, piece):
        fb.accept_waveform(samples[i : i + piece])
    fb.input_finished()
    return fb.get_frames(0, fb.num_frames_ready)


@pytest.mark.parametrize("piece", [1, 160, 401, 1600, 10**7])
def test_frames_equal_reference_for_any_piece_size(tiny_wavs: list[Path], piece: int) -> None:
    x, sr = read_wav(tiny_wavs[0])
    assert sr == 16000
    want = _reference_frames(x)
    got = _ours(x, piece)
    assert got.shape == want.shape == (want.shape[0], 80)
    np.testing.assert_array_equal(got, want)


def test_defaults_are_the_trained_options() -> None:
    c = FeatureConfig()
    assert (c.sample_rate, c.num_bins, c.dither, c.snip_edges) == (16000, 80, 0.0, False)
    assert (c.low_freq, c.high_freq) == (20.0, -400.0)


def test_discarded_frames_are_gone_and_memory_is_bounded() -> None:
    fb = KaldiFbank()
    fb.accept_waveform(np.zeros(16000, dtype=np.float32))
    n = fb.num_frames_ready
    fb.discard_before(50)
    with pytest.raises(IndexError):
        fb.get_frames(10, 5)
    assert fb.get_frames(50, n - 50).shape == (n - 50, 80)
    with pytest.raises(IndexError):
        fb.get_frames(n - 1, 5)


def test_frames_survive_interleaved_reads_and_discards(tiny_wavs: list[Path]) -> None:
    """Reads, discards past what was read, and more audio, in any order: every
    frame read equals the reference, and a read frame is the caller's own copy."""
    x, _ = read_wav(tiny_wavs[0])
    want = _reference_frames(x)
    fb = KaldiFbank()
    pos = 0
    for i in range(0, x.size, 1234):
        fb.accept_waveform(x[i : i + 1234])
        ready = fb.num_frames_ready
        if ready > pos + 9:
            got = fb.get_frames(pos, 9)
            np.testing.assert_array_equal(got, want[pos : pos + 9])
            got[:] = 0  # the caller's copy
            pos += 4 if (i // 1234) % 3 else 13  # sometimes past what was read
            fb.discard_before(pos)
    fb.input_finished()
    np.testing.assert_array_equal(fb.get_frames(pos, fb.num_frames_ready - pos), want[pos:])
    with pytest.raises(IndexError):
        fb.get_frames(pos - 1, 2)


def test_frames_read_in_bulk_are_freed_as_they_are_discarded() -> None:
    """A large piece of audio moves its frames into the buffer at once; discarding
    most of them frees them (no view keeps the big block alive)."""
    fb = KaldiFbank()
    fb.accept_waveform(np.zeros(16000 * 10, dtype=np.float32))
    n = fb.num_frames_ready
    fb.get_frames(0, 9)
    fb.discard_before(n - 20)
    kept = fb._buf
    assert kept.base is None
    assert len(kept) <= 20 + 9
    assert fb.get_frames(n - 20, 9).shape == (9, 80)
