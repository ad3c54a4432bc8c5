"""``asrserve convert whisper``: the graphs against a numpy Whisper on a tiny
random model, the interface sherpa-onnx's C++ reads, and the real tiny.en
against CTranslate2 itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from asrserve.convert.whisper_ct2 import WhisperDims, convert_whisper
from asrserve.errors import ModelLoadError
from tests.convert.ct2_synth import (
    EOT,
    N_MELS,
    NO_TIMESTAMPS,
    SOT,
    TEXT_CTX,
    D,
    Reference,
    write_ct2_dir,
    write_model_bin,
)

GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
"""OpenAI's whisper/assets/gpt2.tiktoken, which sherpa-onnx's export copies into tokens.txt."""


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    ct2 = tmp_path_factory.mktemp("ct2")
    weights = write_ct2_dir(ct2)
    out = tmp_path_factory.mktemp("onnx")
    convert_whisper(ct2, out, precision="int8")
    return ct2, out, weights


def run_decoder(
    dec: ort.InferenceSession,
    tokens: list[int],
    caches: tuple[np.ndarray, np.ndarray],
    cross: tuple[np.ndarray, np.ndarray],
    offset: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = dec.run(
        None,
        {
            "tokens": np.array([tokens], np.int64),
            "in_n_layer_self_k_cache": caches[0],
            "in_n_layer_self_v_cache": caches[1],
            "n_layer_cross_k": cross[0],
            "n_layer_cross_v": cross[1],
            "offset": np.array([offset], np.int64),
        },
    )
    return out[0], out[1], out[2]


def test_graphs_equal_numpy_whisper(synth: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    """Encoder keys/values and decoder logits, whole prompt then step by step
    through the caches, equal OpenAI's maths on the same weights."""
    _, out, weights = synth
    ref = Reference(weights)
    mel = np.random.default_rng(1).standard_normal((N_MELS, 40)).astype(np.float32)
    k, v = session(out / "custom-encoder.onnx").run(None, {"mel": mel[None]})
    assert k.shape == v.shape == (1, 1, 20, D)
    rk, rv = ref.encode(mel)
    np.testing.assert_allclose(k[0, 0], rk, atol=2e-4)
    np.testing.assert_allclose(v[0, 0], rv, atol=2e-4)

    dec = session(out / "custom-decoder.onnx")
    seq = [SOT, NO_TIMESTAMPS, 40, 41, 42, 7]
    want = ref.logits(seq, (rk, rv))
    zeros = np.zeros((1, 1, TEXT_CTX, D), np.float32)
    logits, ck, cv = run_decoder(dec, seq[:2], (zeros, zeros), (k, v), 0)
    np.testing.assert_allclose(logits[0], want[:2], atol=5e-4)
    for i in range(2, len(seq)):
        logits, ck, cv = run_decoder(dec, [seq[i]], (ck, cv), (k, v), i)
        assert logits.shape == (1, 1, len(ref.v["decoder/embeddings/weight"]))
        np.testing.assert_allclose(logits[0, 0], want[i], atol=5e-4)
    # the cache holds the keys of every position decoded, zeros after them
    assert np.all(ck[:, :, : len(seq)] != 0)
    assert np.all(ck[:, :, len(seq) :] == 0)


def test_metadata_and_tokens(synth: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    _, out, _ = synth
    meta = session(out / "custom-encoder.onnx").get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "whisper-custom"
    expected = {
        "n_mels": "80",
        "n_audio_ctx": "30",
        "n_audio_state": str(D),
        "n_audio_head": "2",
        "n_audio_layer": "1",
        "n_vocab": "266",
        "n_text_ctx": str(TEXT_CTX),
        "n_text_state": str(D),
        "n_text_head": "2",
        "n_text_layer": "1",
        "sot": str(SOT),
        "sot_index": "0",
        "eot": str(EOT),
        "sot_sequence": str(SOT),
        "blank_id": "32",
        "is_multilingual": "0",
        "translate": "260",
        "transcribe": "261",
        "sot_lm": "262",
        "sot_prev": "263",
        "no_speech": "264",
        "no_timestamps": str(NO_TIMESTAMPS),
        "all_language_tokens": "258,259",
        "all_language_codes": "en,de",
        "non_speech_tokens": "1,2",
        "suppress_ids_begin": f"220,{EOT}",
    }
    assert {k: meta.get(k) for k in expected} == expected
    lines = (out / "custom-tokens.txt").read_text().splitlines()
    assert len(lines) == EOT
    assert lines[0] == "AA== 0"
    assert lines[32] == "IA== 32"  # the space byte


def test_interface_sherpa_onnx_reads(synth: tuple[Path, Path, dict[str, np.ndarray]]) -> None:
    """Names, element types and ranks of every precision's graphs, as
    csrc/offline-whisper-model.cc and the export script have them."""
    _, out, _ = synth
    for sfx in ("", ".int8"):
        enc = session(out / f"custom-encoder{sfx}.onnx")
        dec = session(out / f"custom-decoder{sfx}.onnx")
        assert [(i.name, i.type, len(i.shape)) for i in enc.get_inputs()] == [
            ("mel", "tensor(float)", 3)
        ]
        assert [(o.name, o.type, len(o.shape)) for o in enc.get_outputs()] == [
            ("n_layer_cross_k", "tensor(float)", 4),
            ("n_layer_cross_v", "tensor(float)", 4),
        ]
        assert [(i.name, i.type, len(i.shape)) for i in dec.get_inputs()] == [
            ("tokens", "tensor(int64)", 2),
            ("in_n_layer_self_k_cache", "tensor(float)", 4),
            ("in_n_layer_self_v_cache", "tensor(float)", 4),
            ("n_layer_cross_k", "tensor(float)", 4),
            ("n_layer_cross_v", "tensor(float)", 4),
            ("offset", "tensor(int64)", 1),
        ]
        assert [(o.name, o.type, len(o.shape)) for o in dec.get_outputs()] == [
            ("logits", "tensor(float)", 3),
            ("out_n_layer_self_k_cache", "tensor(float)", 4),
            ("out_n_layer_self_v_cache", "tensor(float)", 4),
        ]
    assert "MatMulInteger" in {n.op_type for n in _graph(out / "custom-decoder.int8.onnx")}


def _graph(path: Path) -> list:  # type: ignore[type-arg]
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def test_cli_fp16(synth: tuple[Path, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """``asrserve convert whisper --precision fp16``: fp16 weights, float32 I/O,
    logits close to fp32's."""
    from asrserve.cli import main

    ct2, out32, _ = synth
    code = main(["convert", "whisper", str(ct2), "--out", str(tmp_path), "--precision", "fp16"])
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "custom-decoder.fp16.onnx",
        "custom-decoder.onnx",
        "custom-encoder.fp16.onnx",
        "custom-encoder.onnx",
        "custom-tokens.txt",
    ]
    mel = np.random.default_rng(2).standard_normal((1, N_MELS, 40)).astype(np.float32)
    k32, _ = session(out32 / "custom-encoder.onnx").run(None, {"mel": mel})
    k16, _ = session(tmp_path / "custom-encoder.fp16.onnx").run(None, {"mel": mel})
    assert k16.dtype == np.float32
    np.testing.assert_allclose(k16, k32, atol=0.05 * float(np.abs(k32).max()))


def test_refusals(tmp_path: Path) -> None:
    ct2 = tmp_path / "ct2"
    weights = write_ct2_dir(ct2)
    with pytest.raises(ModelLoadError, match="not a directory"):
        convert_whisper(tmp_path / "nothing", tmp_path / "out")
    bad = dict(weights, **{"decoder/alibi": np.array(1, np.int8)})
    write_model_bin(ct2 / "model.bin", bad, {})
    with pytest.raises(ModelLoadError, match="alibi"):
        convert_whisper(ct2, tmp_path / "out")
    write_model_bin(ct2 / "model.bin", weights, {}, spec="TransformerSpec")
    with pytest.raises(ModelLoadError, match="TransformerSpec"):
        convert_whisper(ct2, tmp_path / "out")
    write_model_bin(ct2 / "model.bin", weights, {})
    (ct2 / "vocabulary.txt").write_text("a\nb\n")
    with pytest.raises(ModelLoadError, match="lists 2 tokens"):
        convert_whisper(ct2, tmp_path / "out")


def test_default_names() -> None:
    def dims(layers: int, width: int, text_layers: int, vocab: int, mels: int = 80) -> WhisperDims:
        return WhisperDims(mels, 1500, width, 6, layers, vocab, 448, width, 6, text_layers)

    assert dims(4, 384, 4, 51864).default_name() == "tiny.en"
    assert dims(6, 512, 6, 51865).default_name() == "base"
    assert dims(32, 1280, 32, 51866, 128).default_name() == "large-v3"
    assert dims(32, 1280, 4, 51866, 128).default_name() == "turbo"
    assert dims(12, 768, 4, 51864).default_name() == "distil-small.en"
    assert dims(3, 100, 3, 51864).default_name() == "custom"


# --- the real tiny.en ---------------------------------------------------------------------------
def test_tiny_en_files(whisper_tiny_en: Path) -> None:
    tokens = whisper_tiny_en / "tiny.en-tokens.txt"
    assert hashlib.sha256(tokens.read_bytes()).hexdigest() == GPT2_TIKTOKEN_SHA256
    meta = session(whisper_tiny_en / "tiny.en-encoder.onnx").get_modelmeta().custom_metadata_map
    assert meta["model_type"] == "whisper-tiny.en"
    got = {k: meta[k] for k in ("n_mels", "n_text_layer", "n_text_ctx", "n_vocab", "sot", "eot")}
    assert got == {
        "n_mels": "80",
        "n_text_layer": "4",
        "n_text_ctx": "448",
        "n_vocab": "51864",
        "sot": "50257",
        "eot": "50256",
    }
    assert (meta["no_timestamps"], meta["sot_sequence"], meta["blank_id"]) == (
        "50362",
        "50257",
        "220",
    )
    assert json.loads("[" + meta["non_speech_tokens"] + "]")[:3] == [1, 2, 7]


def test_tiny_en_logits_equal_ctranslate2(whisper_tiny_ct2: Path, whisper_tiny_en: Path) -> None:
    """The converted graphs give CTranslate2's own logits for the same mel, step by
    step along CTranslate2's greedy tokens."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    ref = ctranslate2.models.Whisper(str(whisper_tiny_ct2), device="cpu", intra_threads=1)
    rng = np.random.default_rng(3)
    mel = np.zeros((1, 80, 3000), np.float32)
    mel[0, :, :500] = rng.uniform(-1.0, 1.5, (80, 500)).astype(np.float32)
    prompt = [50257, 50362]
    got = ref.generate(
        ctranslate2.StorageView.from_array(mel),
        [prompt],
        beam_size=1,
        suppress_blank=False,
        suppress_tokens=[],
        return_logits_vocab=True,
        max_length=12,
    )[0]
    want = np.array(got.logits[0], np.float32)
    k, v = session(whisper_tiny_en / "tiny.en-encoder.onnx").run(None, {"mel": mel})
    dec = session(whisper_tiny_en / "tiny.en-decoder.onnx")
    zeros = np.zeros((4, 1, 448, 384), np.float32)
    logits, ck, cv = run_decoder(dec, prompt, (zeros, zeros), (k, v), 0)
    rows = [logits[0, -1]]
    for i, token in enumerate(got.sequences_ids[0][: len(want) - 1]):
        logits, ck, cv = run_decoder(dec, [token], (ck, cv), (k, v), len(prompt) + i)
        rows.append(logits[0, 0])
    np.testing.assert_allclose(np.stack(rows), want, atol=2e-3)
