"""Conv-Emformer on ncnn (sherpa-ncnn model type 1): token parity with sherpa-ncnn.

The model is the real upstream sherpa-ncnn Conv-Emformer graph with random
weights (``shared/models/ncnn-conv-emformer-random-weights``, see its
SOURCE.md); the weights are generated once per machine into the pytest cache (the
``emformer_dir`` fixture in ``tests/conftest.py``).
Its ``reference_outputs.json`` holds sherpa-ncnn 2.1.15's tokens for the six
test wavs (whole file, then 0.5 s of zeros), fp16 and int8 sets, greedy and
modified beam search with 4 active paths.

- fp16 set: every wav matches the stored references (ids, timestamps, text)
  and sherpa-ncnn run live here.
- int8 set: compared with sherpa-ncnn run live. int8 results depend on the
  ncnn build and on the CPU's int8 kernels: sherpa-ncnn itself reproduces
  only some stored int8 references on other CPUs, and pip ``ncnn`` releases
  newer than 1.0.20250503 compute int8 differently from the ncnn inside the
  sherpa-ncnn wheel, so that test is an expected failure on those.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import asrserve
from asrserve.backends.ncnn import NcnnSession
from asrserve.errors import ModelLoadError
from asrserve.families.conv_emformer import ConvEmformerTransducer
from tests.conftest import CONV_EMFORMER, read_wav
from tests.reference import feed_batched

SOURCE = CONV_EMFORMER
WAVS = [f"{i}.wav" for i in range(6)]
LIVE_WAVS = ["1.wav", "2.wav"]  # the shortest: sherpa-ncnn live costs as much as we do
METHODS = {"greedy": "greedy_search", "modified_beam": "modified_beam_search"}
SET_FILES = {  # precision -> (encoder, joiner) stems; the decoder is always the fp16 one
    "fp16": ("encoder_jit_trace-pnnx.ncnn", "joiner_jit_trace-pnnx.ncnn"),
    "int8": ("encoder_jit_trace-pnnx.ncnn.int8", "joiner_jit_trace-pnnx.ncnn.int8"),
}
REF_TAIL_PADDING_S = 0.5
NCNN_INT8_LIKE_SHERPA = {"1.0.20250503"}  # pip ncnn releases seen to match sherpa-ncnn 2.1.15


def _ncnn_version() -> str:
    try:
        return importlib.metadata.version("ncnn")
    except importlib.metadata.PackageNotFoundError:
        return "?"


@dataclass(frozen=True)
class Decoded:
    ids: list[int]
    timestamps: list[float]
    text: str


class Runs:
    """One recognizer per set, decodes memoized by (set, method, wav)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._recs: dict[str, asrserve.Recognizer] = {}
        self._ours: dict[tuple[str, str, str], Decoded] = {}
        self._live: dict[tuple[str, str, str], Decoded] = {}
        self._sherpa: dict[tuple[str, str], Any] = {}

    def recognizer(self, precision: str) -> asrserve.Recognizer:
        if precision not in self._recs:
            self._recs[precision] = asrserve.load_model(
                self.model_dir,
                precision=precision,
                decoding=asrserve.DecodingConfig(beam=4),
                tail_padding_s=REF_TAIL_PADDING_S,
            )
        return self._recs[precision]

    def ours(self, precision: str, method: str, wav: str) -> Decoded:
        key = (precision, method, wav)
        if key not in self._ours:
            rec = self.recognizer(precision)
            x, sr = read_wav(SOURCE / "test_wavs" / wav)
            s = rec.create_stream(decoding=asrserve.DecodingConfig(method=method, beam=4))  # type: ignore[arg-type]
            s.accept_waveform(sr, x)
            s.input_finished()
            while rec.is_ready(s):
                rec.decode_stream(s)
            r = rec.get_result(s, is_final=True)
            self._ours[key] = Decoded(r.token_ids, r.timestamps, r.text)
        return self._ours[key]

    def live(self, precision: str, method: str, wav: str) -> Decoded:
        """sherpa-ncnn as the references were made: whole file, 0.5 s zeros, finish."""
        key = (precision, method, wav)
        if key not in self._live:
            rec = self._sherpa_recognizer(precision, method)
            x, sr = read_wav(SOURCE / "test_wavs" / wav)
            s = rec.create_stream()
            s.accept_waveform(sr, x)
            s.accept_waveform(sr, np.zeros(round(REF_TAIL_PADDING_S * sr), dtype=np.float32))
            s.input_finished()
            while rec.is_ready(s):
                rec.decode_stream(s)
            r = rec.get_result(s)
            self._live[key] = Decoded(list(r.tokens), [float(t) for t in r.timestamps], r.text)
        return self._live[key]

    def _sherpa_recognizer(self, precision: str, method: str) -> Any:
        import sherpa_ncnn

        if (precision, method) not in self._sherpa:
            d = self.model_dir
            encoder, joiner = SET_FILES[precision]
            decoder = "decoder_jit_trace-pnnx.ncnn"
            wrapper = sherpa_ncnn.Recognizer(
                tokens=str(d / "tokens.txt"),
                encoder_param=str(d / f"{encoder}.param"),
                encoder_bin=str(d / f"{encoder}.bin"),
                decoder_param=str(d / f"{decoder}.param"),
                decoder_bin=str(d / f"{decoder}.bin"),
                joiner_param=str(d / f"{joiner}.param"),
                joiner_bin=str(d / f"{joiner}.bin"),
                num_threads=1,
                decoding_method=METHODS[method],
                num_active_paths=4,
                enable_endpoint_detection=False,
            )
            self._sherpa[precision, method] = wrapper.recognizer  # streams made per wav
        return self._sherpa[precision, method]


@pytest.fixture(scope="session")
def runs(emformer_dir: Path) -> Runs:
    return Runs(emformer_dir)


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    with (SOURCE / "reference_outputs.json").open(encoding="utf-8") as f:
        sets: dict[str, Any] = json.load(f)["sets"]
    return sets


def test_geometry_and_states_from_metadata(runs: Runs) -> None:
    model = runs.recognizer("fp16").model
    assert type(model) is ConvEmformerTransducer
    assert model.family == "ncnn-conv-emformer"
    assert (model.chunk_size, model.chunk_shift) == (32 + 8 + 11, 32)
    assert len(model.state_specs) == 12 * 4
    assert [s.shape for s in model.state_specs[:4]] == [
        (1, 32, 512),
        (1, 8, 512),
        (1, 8, 512),
        (1, 512, 30),
    ]
    states = model.stack_states([model.init_state(), model.init_state()])
    out, nxt = model.run_encoder(np.zeros((2, 51, 80), np.float32), states)
    assert out.shape == (2, 8, 512)
    assert [s.shape for s in nxt] == [s.shape for s in states]


@pytest.mark.parametrize("method", METHODS)
def test_fp16_matches_stored_sherpa_ncnn_references(
    runs: Runs, reference: dict[str, Any], method: str
) -> None:
    for wav in WAVS:
        want = reference["fp16"][wav][METHODS[method]]
        got = runs.ours("fp16", method, wav)
        assert got.ids == want["tokens"], wav
        assert got.timestamps == pytest.approx(want["timestamps"], abs=1e-3), wav
        assert got.text == want["text"].strip(), wav


@pytest.mark.parametrize("method", METHODS)
def test_fp16_matches_live_sherpa_ncnn(runs: Runs, method: str) -> None:
    for wav in LIVE_WAVS:
        want = runs.live("fp16", method, wav)
        got = runs.ours("fp16", method, wav)
        assert want.ids, wav
        assert got.ids == want.ids, wav
        assert got.timestamps == pytest.approx(want.timestamps, abs=1e-3), wav


@pytest.mark.xfail(
    _ncnn_version() not in NCNN_INT8_LIKE_SHERPA,
    reason=f"pip ncnn {_ncnn_version()} computes int8 layers differently from the ncnn "
    "built into sherpa-ncnn 2.1.15 (pip ncnn 1.0.20250503 matches it on every wav)",
    strict=False,
)
@pytest.mark.parametrize("method", METHODS)
def test_int8_matches_live_sherpa_ncnn(runs: Runs, reference: dict[str, Any], method: str) -> None:
    for wav in LIVE_WAVS:
        want = runs.live("int8", method, wav)
        got = runs.ours("int8", method, wav)
        assert want.ids, wav
        assert got.ids == want.ids, wav
        assert got.timestamps == pytest.approx(want.timestamps, abs=1e-3), wav
        # The stored int8 references hold wherever sherpa-ncnn reproduces them on this CPU.
        stored = reference["int8"][wav][METHODS[method]]["tokens"]
        if want.ids == stored:
            assert got.ids == stored, wav


def test_batched_streams_equal_single(runs: Runs) -> None:
    """Streams of different lengths and methods, fed unevenly, decoded together."""
    rec = runs.recognizer("fp16")
    jobs = [
        ("1.wav", "greedy"),
        ("2.wav", "modified_beam"),
        ("5.wav", "greedy"),
        ("1.wav", "modified_beam"),
    ]
    audio = [read_wav(SOURCE / "test_wavs" / wav) for wav, _ in jobs]
    streams = [
        rec.create_stream(decoding=asrserve.DecodingConfig(method=m, beam=4))  # type: ignore[arg-type]
        for _, m in jobs
    ]
    batch_sizes = feed_batched(rec, audio, streams)
    assert max(batch_sizes) == len(jobs)
    for (wav, method), s in zip(jobs, streams, strict=True):
        r = rec.get_result(s, is_final=True)
        alone = runs.ours("fp16", method, wav)
        assert r.token_ids == alone.ids, (wav, method)
        assert r.timestamps == pytest.approx(alone.timestamps, abs=1e-6), (wav, method)


def _fake_encoder(meta: dict[str, str], num_blobs: int) -> Any:
    names = [SimpleNamespace(name=f"in{i}") for i in range(num_blobs)]
    outs = [SimpleNamespace(name=f"out{i}") for i in range(num_blobs)]
    return SimpleNamespace(path="encoder.param", metadata=meta, inputs=names, outputs=outs)


def test_inconsistent_metadata_is_refused(emformer_dir: Path) -> None:
    decoder = NcnnSession(emformer_dir / "decoder_jit_trace-pnnx.ncnn.param")
    joiner = NcnnSession(emformer_dir / "joiner_jit_trace-pnnx.ncnn.param")
    meta = {"0": "1", "1": "12", "2": "32", "3": "31", "4": "8", "5": "32", "6": "8", "7": "512"}
    with pytest.raises(ModelLoadError, match="model type is 3"):
        ConvEmformerTransducer(_fake_encoder({**meta, "0": "3"}, 49), decoder, joiner)
    with pytest.raises(ModelLoadError, match="11 layers"):
        ConvEmformerTransducer(_fake_encoder({**meta, "1": "11"}, 49), decoder, joiner)
    with pytest.raises(ModelLoadError, match="'7' is missing"):
        ConvEmformerTransducer(_fake_encoder({k: meta[k] for k in "0123456"}, 49), decoder, joiner)
