"""NeMo log-mel: the recipe written plainly in float64, piece-size invariance,
offline normalisation, mel weights against an independent table."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import pytest

from asrserve.errors import ConfigError, ModelLoadError
from asrserve.features.nemo_mel import (
    NemoMel,
    NemoMelConfig,
    load_mel_weights,
    log_mel,
    mel_weights,
    num_valid_frames,
    offline_features,
)
from tests.conftest import read_wav


def _audio(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t)
    x = tone + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


def _reference(x: np.ndarray, weights: np.ndarray, *, reflect: bool = False) -> np.ndarray:
    """NeMo's recipe, one frame at a time in float64: pre-emphasis, centre padding by
    n_fft/2, symmetric Hann window of 400 centred in 512, rfft, power, mel, log."""
    x = x.astype(np.float64)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(y, 256, mode="reflect" if reflect else "constant")
    n = np.arange(400)
    hann = np.zeros(512)
    hann[56 : 56 + 400] = 0.5 - 0.5 * np.cos(2 * np.pi * n / 399)
    frames = []
    for t in range(1 + len(x) // 160):
        seg = padded[t * 160 : t * 160 + 512] * hann
        spec = np.fft.rfft(seg)
        power = np.abs(spec) ** 2
        frames.append(np.log(weights.astype(np.float64) @ power + 2.0**-24))
    return np.stack(frames, axis=1)


def _onnx_asr_weights() -> np.ndarray:
    """onnx-asr's NeMo 128-band table (bins, mels), made by its authors from librosa."""
    import onnx_asr.preprocessors

    path = files(onnx_asr.preprocessors).joinpath("data").joinpath("fbanks.npz")
    with as_file(path) as f, np.load(f) as data:
        return np.asarray(data["nemo128"], dtype=np.float32)


def test_mel_weights_match_librosa_slaney_table() -> None:
    ours = mel_weights(NemoMelConfig())
    theirs = _onnx_asr_weights().T
    assert ours.shape == theirs.shape == (128, 257)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reflect", [False, True])
def test_frames_match_the_float64_recipe(reflect: bool) -> None:
    x = _audio(16000 + 77)
    cfg = NemoMelConfig(pad_mode="reflect" if reflect else "constant")
    ours = log_mel(x, cfg)
    ref = _reference(x, mel_weights(cfg), reflect=reflect)
    assert ours.shape == ref.shape == (128, 1 + x.size // 160)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_real_speech_matches_recipe(tiny_wavs: list[Path]) -> None:
    x, rate = read_wav(tiny_wavs[0])
    assert rate == 16000
    ours = log_mel(x)
    np.testing.assert_allclose(ours, _reference(x, mel_weights(NemoMelConfig())), atol=1e-4)


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("piece", [1, 159, 160, 400, 1111, 8960])
def test_any_pieces_give_the_same_frames(piece: int, reflect: bool) -> None:
    x = _audio(160 * 57 + 33, seed=piece)
    cfg = NemoMelConfig(pad_mode="reflect" if reflect else "constant")
    whole = log_mel(x, cfg)
    mel = NemoMel(cfg)
    got = []
    for i in range(0, x.size, piece):
        mel.accept_waveform(x[i : i + piece])
        # take what is ready and free it, as the recognizer does
        ready = mel.num_frames_ready
        start = sum(g.shape[0] for g in got)
        got.append(mel.get_frames(start, ready - start))
        mel.discard_before(ready)
    mel.input_finished()
    start = sum(g.shape[0] for g in got)
    got.append(mel.get_frames(start, mel.num_frames_ready - start))
    streamed = np.concatenate(got).T
    assert np.array_equal(streamed, whole)  # bit-exact


def test_random_pieces_bit_exact() -> None:
    rng = np.random.default_rng(7)
    x = _audio(16000 * 2 + 5)
    whole = log_mel(x)
    mel = NemoMel()
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 4000))
        mel.accept_waveform(x[i : i + n])
        i += n
    mel.input_finished()
    assert np.array_equal(mel.get_frames(0, mel.num_frames_ready).T, whole)


def test_frames_become_ready_as_their_samples_arrive() -> None:
    mel = NemoMel()
    mel.accept_waveform(np.zeros(255, dtype=np.float32))
    assert mel.num_frames_ready == 0  # frame 0 needs samples [-256, 256)
    mel.accept_waveform(np.zeros(1, dtype=np.float32))
    assert mel.num_frames_ready == 1
    mel.accept_waveform(np.zeros(160, dtype=np.float32))
    assert mel.num_frames_ready == 2
    mel.input_finished()
    assert mel.num_frames_ready == 1 + 416 // 160
    with pytest.raises(IndexError):
        mel.get_frames(0, 5)


def test_discard_bounds_memory() -> None:
    mel = NemoMel()
    x = _audio(16000)
    for i in range(0, 16000 * 20, 1600):
        mel.accept_waveform(x[i % 16000 : i % 16000 + 1600])
        mel.discard_before(mel.num_frames_ready - 3)
    assert len(mel._frames) <= 13
    assert mel._samples.size <= 1600 + 512


def test_offline_per_feature_normalisation_matches_onnx_asr() -> None:
    from onnx_asr.preprocessors.numpy_preprocessor import NemoPreprocessorNumpy

    x = _audio(16000 * 2 + 123)
    cfg = NemoMelConfig(normalize="per_feature")
    feats, length = offline_features(x, cfg)
    assert length == num_valid_frames(x.size, cfg) == x.size // 160
    assert feats.shape == (128, 1 + x.size // 160)
    assert np.all(feats[:, length:] == 0)
    theirs, lens = NemoPreprocessorNumpy("nemo128")(x[None].copy(), np.array([x.size]))
    assert int(lens[0]) == length
    np.testing.assert_allclose(feats[:, :length], theirs[0][:, :length], atol=2e-3)
    # the same by the plain recipe
    ref = _reference(x, mel_weights(cfg))[:, :length]
    mean = ref.mean(axis=1, keepdims=True)
    std = np.sqrt(((ref - mean) ** 2).sum(axis=1, keepdims=True) / (length - 1))
    np.testing.assert_allclose(feats[:, :length], (ref - mean) / (std + 1e-5), atol=1e-4)


def test_offline_normalize_override() -> None:
    x = _audio(8000)
    raw, n = offline_features(x, NemoMelConfig(normalize="per_feature"), normalize=None)
    assert np.array_equal(raw, log_mel(x))
    norm, _ = offline_features(x, NemoMelConfig(), normalize="per_feature")
    np.testing.assert_allclose(norm[:, :n].mean(axis=1), 0.0, atol=1e-4)


def test_weights_from_file(tmp_path: Path) -> None:
    cfg = NemoMelConfig()
    w = _onnx_asr_weights().T[None]
    w.astype(np.float32).tofile(tmp_path / "filterbank.bin")
    loaded = load_mel_weights(tmp_path / "filterbank.bin", cfg)
    assert loaded.shape == (128, 257)
    x = _audio(4000)
    np.testing.assert_allclose(log_mel(x, cfg, loaded), log_mel(x, cfg), atol=1e-4)
    with pytest.raises(ModelLoadError, match="expected 1 x 80"):
        load_mel_weights(tmp_path / "filterbank.bin", NemoMelConfig(n_mels=80))


def test_config_from_both_spellings() -> None:
    export = {
        "n_mels": 128, "n_fft": 512, "hop_length": 160, "win_length": 400, "window": "hann",
        "preemph": 0.97, "dither": 1e-05, "normalize": None, "pad_to": 0, "mel_norm": "slaney",
        "mel_layout": "band_major",
    }  # fmt: skip
    nemo = {
        "sample_rate": 16000, "features": 80, "window_size": 0.025, "window_stride": 0.01,
        "window": "hann", "normalize": "per_feature", "n_fft": 512, "log": True,
    }  # fmt: skip
    a = NemoMelConfig.from_mapping(export)
    assert (a.n_mels, a.hop_length, a.win_length, a.preemph, a.normalize) == (
        128, 160, 400, 0.97, None,
    )  # fmt: skip
    b = NemoMelConfig.from_mapping(nemo)
    assert (b.n_mels, b.hop_length, b.win_length, b.normalize) == (80, 160, 400, "per_feature")
    assert b.frame_shift_ms == 10.0
    with pytest.raises(ModelLoadError, match="window"):
        NemoMelConfig.from_mapping({"window": "kaiser"})
    with pytest.raises(ConfigError):
        NemoMelConfig(win_length=1024).validate()
