"""NeMo streaming transducers in sherpa-onnx's layout: parity with sherpa-onnx.

The fixture (``tests/fixtures/models/nemo-sherpa-tiny``, built by
``tests/fixtures/build_nemo_sherpa.py``) has random weights but the I/O names,
shapes, dtypes and encoder metadata of sherpa-onnx's NeMo exports, so sherpa-onnx
runs it through its NeMo transducer code (checked from its debug output).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import asrserve
from asrserve.errors import ModelLoadError
from asrserve.families import nemo_sherpa
from asrserve.families.layouts import find_layout
from asrserve.families.nemo_sherpa import SherpaNemoModel, onnx_metadata
from tests.conftest import FIXTURE_MODELS, SHARED_MODELS, read_wav
from tests.fixtures import build_nemo_sherpa as build
from tests.reference import (
    TAIL_PADDING_S,
    asrserve_decode,
    asrserve_decode_batched,
    sherpa_decode,
    sherpa_recognizer,
)

MODEL = FIXTURE_MODELS / "nemo-sherpa-tiny"
JFK = SHARED_MODELS / "test-audio-jfk" / "jfk.wav"
TINY_WAVS = SHARED_MODELS / "asrserve-tiny-lstm-synth-en" / "test_wavs"
METHODS = ["greedy", "modified_beam"]

pytest.importorskip("sherpa_onnx")


def _clips(n: int = 8) -> list[Path]:
    clips = sorted(TINY_WAVS.glob("*.wav"))[:n] + ([JFK] if JFK.exists() else [])
    if not clips:
        pytest.skip("no shared test audio")
    return clips


def _ours(method: str = "greedy", model_dir: Path = MODEL) -> asrserve.Recognizer:
    return asrserve.load_model(
        model_dir,
        decoding=asrserve.DecodingConfig(method=method),  # type: ignore[arg-type]
        tail_padding_s=TAIL_PADDING_S,
    )


def _ref(method: str) -> object:
    return sherpa_recognizer(MODEL, "encoder.onnx", "decoder.onnx", "joiner.onnx", method)


def _assert_same(
    got: tuple[list[str], list[float]], want: tuple[list[str], list[float]], name: str
) -> None:
    """sherpa-onnx leaves ``<unk>`` out of the tokens but keeps its timestamp;
    asrserve leaves out both, so ours are theirs less those timestamps."""
    assert got[0] == want[0], name
    assert len(got[1]) == len(got[0]), name
    stamps = iter(want[1])
    for t in got[1]:  # a subsequence, in order
        assert any(abs(t - s) < 1e-3 for s in stamps), name


def test_layout_is_claimed_and_geometry_comes_from_metadata() -> None:
    assert find_layout(MODEL).load is nemo_sherpa.load_recognizer
    rec = _ours()
    m = rec.model
    assert isinstance(m, SherpaNemoModel)
    assert (m.chunk_size, m.chunk_shift, m.subsampling_factor) == (
        build.WINDOW,
        build.CHUNK,
        build.SUBSAMPLING,
    )
    assert (m.vocab_size, m.blank_id, m.feature_dim) == (build.VOCAB, build.BLANK, build.N_MELS)
    assert m.decoder_state_shape == (build.PRED_LAYERS, 1, build.PRED_HIDDEN)
    assert [s.shape for s in m.state_specs] == [
        (1, build.LAYERS, build.CACHE_CHANNEL, build.DIM),
        (1, build.LAYERS, build.DIM, build.CACHE_TIME),
        (1,),
    ]
    assert rec.feature_config.num_bins == build.N_MELS


@pytest.mark.parametrize("other", ["zipformer2-tiny", "nemotron-tiny", "parakeet-tdt-tiny"])
def test_other_layouts_are_not_claimed(other: str) -> None:
    assert not nemo_sherpa.probe(FIXTURE_MODELS / other)


def test_metadata_scan_equals_onnxruntime() -> None:
    import onnxruntime as ort

    for name in ("encoder.onnx", "decoder.onnx", "joiner.onnx"):
        sess = ort.InferenceSession(str(MODEL / name), providers=["CPUExecutionProvider"])
        assert onnx_metadata(MODEL / name) == dict(sess.get_modelmeta().custom_metadata_map)
    assert onnx_metadata(MODEL / "encoder.onnx") == build.encoder_metadata()


def test_fixture_interface() -> None:
    """The I/O names, dtypes and shapes of sherpa-onnx's NeMo exports."""
    import onnxruntime as ort

    def io(name: str) -> tuple[list[tuple[str, str, list[object]]], list[str]]:
        s = ort.InferenceSession(str(MODEL / name), providers=["CPUExecutionProvider"])
        return [(i.name, i.type, i.shape) for i in s.get_inputs()], [
            o.name for o in s.get_outputs()
        ]

    enc_in, enc_out = io("encoder.onnx")
    assert [(n, t) for n, t, _ in enc_in] == [
        ("audio_signal", "tensor(float)"),
        ("length", "tensor(int64)"),
        ("cache_last_channel", "tensor(float)"),
        ("cache_last_time", "tensor(float)"),
        ("cache_last_channel_len", "tensor(int64)"),
    ]
    assert enc_in[0][2][1] == build.N_MELS
    assert enc_out == [
        "outputs",
        "encoded_lengths",
        "cache_last_channel_next",
        "cache_last_time_next",
        "cache_last_channel_next_len",
    ]
    dec_in, dec_out = io("decoder.onnx")
    assert [(n, t) for n, t, _ in dec_in] == [
        ("targets", "tensor(int32)"),
        ("target_length", "tensor(int32)"),
        ("states.1", "tensor(float)"),
        ("onnx::Slice_3", "tensor(float)"),
    ]
    assert dec_out == ["outputs", "prednet_lengths", "states", "162"]
    join_in, join_out = io("joiner.onnx")
    assert [n for n, _, _ in join_in] == ["encoder_outputs", "decoder_outputs"]
    assert join_out == ["outputs"]
    for f in MODEL.iterdir():
        assert f.stat().st_size < 5 * 1024 * 1024


def test_encoder_uses_its_caches() -> None:
    m = _ours().model
    assert isinstance(m, SherpaNemoModel)
    x = np.random.default_rng(0).normal(-8, 3, (1, m.chunk_size, m.feature_dim)).astype(np.float32)
    fresh = m.init_state()
    out1, warm = m.run_encoder(x, fresh)
    out2, _ = m.run_encoder(x, warm)
    assert out1.shape == (1, build.CHUNK // build.SUBSAMPLING, build.DIM)
    assert not np.allclose(out1, out2)
    for i in (0, 1):
        changed = [list(warm), list(warm)]
        changed[0][i] = fresh[i]
        assert not np.allclose(m.run_encoder(x, changed[0])[0], out2)


def test_sherpa_takes_the_nemo_code_path() -> None:
    """sherpa-onnx prints the NeMo model's encoder metadata from
    online-transducer-nemo-model.cc when debug is on."""
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from pathlib import Path; from tests.reference import sherpa_recognizer;"
        f"sherpa_recognizer(Path({str(MODEL)!r}), 'encoder.onnx', 'decoder.onnx', "
        "'joiner.onnx', 'greedy', debug=True)"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "online-transducer-nemo-model.cc" in log, log
    assert f"window_size={build.WINDOW}" in log
    assert f"feat_dim: {build.N_MELS}" in log


@pytest.mark.parametrize("method", METHODS)
def test_tokens_match_sherpa(method: str) -> None:
    ref, ours = _ref(method), _ours(method)
    total = 0
    # all clips: synth-0172 has sherpa-onnx's <unk> quirk, synth-0161 is too quiet to decode
    for clip in _clips(30):
        x, sr = read_wav(clip)
        want = sherpa_decode(ref, x, sr, 1600)
        total += len(want[0])
        _assert_same(asrserve_decode(ours, x, sr, 1600), want, clip.name)
    assert total > 300


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("piece_s", [0.01, 0.1, 1.0, None])
def test_piece_size_does_not_change_tokens(method: str, piece_s: float | None) -> None:
    ref, ours = _ref(method), _ours(method)
    for clip in _clips(2)[-2:]:
        x, sr = read_wav(clip)
        piece = x.size if piece_s is None else int(piece_s * sr)
        got = asrserve_decode(ours, x, sr, piece)
        _assert_same(got, sherpa_decode(ref, x, sr, piece), clip.name)
        assert got == asrserve_decode(ours, x, sr, 1600)


@pytest.mark.parametrize("method", METHODS)
def test_batched_streams_equal_single(method: str) -> None:
    ours = _ours(method)
    audio = [read_wav(c) for c in _clips(5)]
    alone = [asrserve_decode(ours, x, sr, 1600) for x, sr in audio]
    together, batch_sizes = asrserve_decode_batched(ours, audio)
    assert max(batch_sizes) == len(audio)
    for (tok_b, ts_b), (tok_a, ts_a) in zip(together, alone, strict=True):
        assert tok_b == tok_a
        assert ts_b == pytest.approx(ts_a, abs=1e-6)


def test_frames_emit_several_tokens() -> None:
    """The fixture exercises multi-symbol frames (NeMo greedy allows up to 10)."""
    ours = _ours()
    repeats = 0
    for clip in _clips():
        x, sr = read_wav(clip)
        _, stamps = asrserve_decode(ours, x, sr, 1600)
        repeats += len(stamps) - len(set(stamps))
    assert repeats > 0


def test_int8_files_are_picked_for_auto(tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d)
    for role in ("encoder", "decoder", "joiner"):
        shutil.copy(d / f"{role}.onnx", d / f"{role}.int8.onnx")
    rec = asrserve.load_model(d)
    m = rec.model
    assert isinstance(m, SherpaNemoModel)
    assert m.encoder.path.endswith("encoder.int8.onnx")
    assert asrserve.load_model(d, precision="fp32").model.encoder.path.endswith(  # type: ignore[attr-defined]
        "encoder.onnx"
    )


def test_blank_must_be_last(tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(MODEL, d)
    lines = (d / "tokens.txt").read_text(encoding="utf-8").splitlines()
    pieces = [line.rsplit(" ", 1)[0] for line in lines]
    pieces[0], pieces[-1] = pieces[-1], pieces[0]
    (d / "tokens.txt").write_text(
        "".join(f"{p} {i}\n" for i, p in enumerate(pieces)), encoding="utf-8"
    )
    with pytest.raises(ModelLoadError, match="<blk>"):
        asrserve.load_model(d)


def test_endpointed_segments_match_sherpa() -> None:
    """Greedy search on utterances split by silence: the same endpoints and the
    same tokens per segment (sherpa-onnx restarts the encoder caches and the
    prediction network at each endpoint, and counts every blank as trailing
    silence). Modified beam search gives the same tokens per segment but ends
    segments up to 0.2 s earlier than sherpa-onnx (see README)."""
    method = "greedy"
    clips = _clips(4)
    gap = np.zeros(int(2.0 * 16000), np.float32)
    pieces = []
    for wav in clips:
        x, sr = read_wav(wav)
        assert sr == 16000
        pieces += [x.astype(np.float32), gap]
    audio = np.concatenate(pieces)
    step = 1600

    ref = sherpa_recognizer(
        MODEL,
        "encoder.onnx",
        "decoder.onnx",
        "joiner.onnx",
        method,
        enable_endpoint_detection=True,
        rule1_min_trailing_silence=2.4,
        rule2_min_trailing_silence=1.2,
        rule3_min_utterance_length=20.0,
    )
    s = ref.create_stream()  # type: ignore[attr-defined]
    want: list[list[str]] = []
    for i in range(0, audio.size, step):
        s.accept_waveform(16000, audio[i : i + step])
        while ref.is_ready(s):  # type: ignore[attr-defined]
            ref.decode_stream(s)  # type: ignore[attr-defined]
            if ref.is_endpoint(s):  # type: ignore[attr-defined]
                tokens = list(ref.get_result_all(s).tokens)  # type: ignore[attr-defined]
                if tokens:
                    want.append(tokens)
                ref.reset(s)  # type: ignore[attr-defined]

    ours = asrserve.load_model(
        MODEL,
        decoding=asrserve.DecodingConfig(method=method),  # type: ignore[arg-type]
        endpoint=asrserve.EndpointConfig(enabled=True),
    )
    stream = ours.create_stream()
    got: list[list[str]] = []
    for i in range(0, audio.size, step):
        stream.accept_waveform(16000, audio[i : i + step])
        while ours.decode_streams([stream]):
            if ours.is_endpoint(stream):
                result = ours.get_result(stream, is_final=True)
                if result.tokens:
                    got.append(result.tokens)
                ours.reset(stream)
    assert len(want) >= 3, want
    assert got == want
