"""Whisper's log-mel: Slaney filters, the two framings, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from asrserve.features.whisper_mel import log_mel, mel_filters, normalize, power_mel


def chirp(seconds: float = 2.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)


def test_filters_are_slaney_mel() -> None:
    for n in (80, 128):
        f = mel_filters(n)
        assert f.shape == (n, 201)
        assert np.all(f >= 0)
        peaks = f.argmax(axis=1)
        assert np.all(np.diff(peaks) >= 0)  # rising centre frequencies
        # Slaney normalisation: a triangle's peak is 2 / (its width in Hz)
        assert f[0].max() > f[-1].max()


def test_filters_equal_faster_whisper() -> None:
    fe = pytest.importorskip("faster_whisper.feature_extractor")
    for n in (80, 128):
        np.testing.assert_allclose(mel_filters(n), fe.FeatureExtractor(feature_size=n).mel_filters)


def test_openai_framing_equals_faster_whisper() -> None:
    fe = pytest.importorskip("faster_whisper.feature_extractor")
    x = chirp()
    want = fe.FeatureExtractor(feature_size=80)(x, padding=0)  # (80, T)
    got = log_mel(x, 80, "openai")
    assert got.shape == (x.size // 160, 80)
    np.testing.assert_allclose(got, want.T, atol=1e-5)


def test_sherpa_framing_is_openai_framing_shifted_half_a_hop() -> None:
    """Kaldi's frame i starts 80 samples later than torch.stft's: dropping the
    first 80 samples lines the two up (away from the edges)."""
    x = chirp()
    sherpa = power_mel(x, 80, "sherpa")
    openai = power_mel(x[80:], 80, "openai")
    assert sherpa.shape[0] == (x.size + 80) // 160
    inner = slice(3, sherpa.shape[0] - 3)
    np.testing.assert_allclose(sherpa[inner], openai[inner], rtol=2e-3, atol=1e-6)


def test_normalize() -> None:
    p = np.array([[1e-12, 1.0], [100.0, 1e-3]], np.float32)
    got = normalize(p)
    # log10: [-12 → floored at 2 - 8 = -6, 0], [2, -3]; then (x + 4) / 4
    np.testing.assert_allclose(got, [[-0.5, 1.0], [1.5, 0.25]], atol=1e-6)
    assert normalize(np.zeros((0, 80), np.float32)).shape == (0, 80)
    with pytest.raises(ValueError, match="framing"):
        power_mel(chirp(0.1), 80, "kaldi")  # type: ignore[arg-type]
