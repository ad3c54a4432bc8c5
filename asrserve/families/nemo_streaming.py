"""NeMo cache-aware streaming FastConformer RNN-T in the Nemotron ONNX layout.

The layout of ``danielbodart/nemotron-speech-600m-onnx`` (NeMo's own
``model.export`` with ``cache_support``)::

    config.json                 every runtime parameter (read here; ONNX metadata as fallback)
    shared/tokens.txt           SentencePiece pieces, "piece id"; blank (the last id) unlisted
    shared/filterbank.bin       optional float32 [1, n_mels, n_fft/2 + 1] mel weights
    shared/preprocessor.config  key=value preprocessor parameters (used if config.json has none)
    fp32/ fp16/ int8-dynamic/ int8-static/
        encoder_model.onnx      audio_signal [N, n_mels, pre + chunk] (band-major log-mel),
                                length [N] int64, cache_last_channel [N, L, C, D],
                                cache_last_time [N, L, D, K], cache_last_channel_len [N] int64
                                -> outputs [N, D, T'], encoded_lengths [N], the three caches
                                   (``*_next``) to feed back
        decoder_model.onnx      decoder + joint: encoder_outputs [N, D, 1], targets [N, 1]
                                int32, target_length [N] int32, input_states_1/2 [P, N, H]
                                -> outputs [N, 1, 1, V], prednet_lengths, output_states_1/2

Each chunk reads ``pre_encode_cache_frames`` mel frames of the previous chunk
(zeros before the first) and ``chunk_mel_frames`` new ones; the stream's
features are left-padded with those zero frames, so the core's sliding
window (``chunk_size`` = pre + chunk, ``chunk_shift`` = chunk) is exactly that.
The search is the stateful-decoder RNN-T search of :mod:`asrserve.decoding.rnnt`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from asrserve.backends import BackendOptions, Session, open_session
from asrserve.config import DecodingConfig, normalize_method
from asrserve.core.recognizer import Recognizer
from asrserve.core.stream import FeatureSettings
from asrserve.decoding.rnnt import DecoderStates, RnntBeamSearch, RnntGreedySearch
from asrserve.decoding.search import Search
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import ModelLoadError
from asrserve.families.base import BatchedStates, FloatArray, State, StateSpec
from asrserve.families.load_options import LoadOptions
from asrserve.families.nemo_cache import check_cache_dims, encoder_feeds
from asrserve.features.nemo_mel import NemoMel, NemoMelConfig, load_mel_weights

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
_AUTO_ORDER = {
    # int8 MatMuls are the fastest on CPUs; fp16 on CPUs runs through casts
    "cpu": ("int8-dynamic", "int8-static", "fp32", "fp16"),
    "cuda": ("fp16", "int8-static", "fp32"),
    "coreml": ("fp32", "fp16"),
}
ENCODER_INPUTS = (
    "audio_signal",
    "length",
    "cache_last_channel",
    "cache_last_time",
    "cache_last_channel_len",
)
ENCODER_OUTPUTS = (
    "outputs",
    "encoded_lengths",
    "cache_last_channel_next",
    "cache_last_time_next",
    "cache_last_channel_next_len",
)
DECODER_INPUTS = ("encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2")
DECODER_OUTPUTS = ("outputs", "prednet_lengths", "output_states_1", "output_states_2")
_DTYPES: dict[str, type[np.generic]] = {
    "float": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
}


# --- layout ---------------------------------------------------------------------
def _precision_dirs(model_dir: Path) -> list[str]:
    return [p for p in PRECISIONS if (model_dir / p / "encoder_model.onnx").is_file()]


def probe(model_dir: Path) -> bool:
    """A directory with precision folders holding ``encoder_model.onnx`` and
    ``decoder_model.onnx``, or whose ``config.json`` describes a cache-aware encoder."""
    d = Path(model_dir)
    if any((d / p / "decoder_model.onnx").is_file() for p in _precision_dirs(d)):
        return True
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    enc = cfg.get("encoder") if isinstance(cfg, dict) else None
    return isinstance(enc, dict) and "pre_encode_cache_frames" in enc


class _Config:
    """``config.json`` lookups by dotted path, falling back to ONNX metadata,
    refusing a missing value by its name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise ModelLoadError(f"{path}: config.json not found (the export's runtime parameters)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path}: expected a JSON object")
        self.data: dict[str, Any] = data

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ModelLoadError(f"{self.path}: '{name}' must be an object")
        return value

    def get(self, dotted: str, meta: Mapping[str, str] | None = None) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is None and meta is not None:
            node = meta.get(dotted.rsplit(".", 1)[-1])
        if node is None:
            raise ModelLoadError(
                f"{self.path}: missing key '{dotted}' (and no ONNX metadata of that name)"
            )
        return node

    def get_int(self, dotted: str, meta: Mapping[str, str] | None = None) -> int:
        value = self.get(dotted, meta)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{self.path}: '{dotted}'={value!r} is not an integer") from None

    def get_shape(self, dotted: str, meta: Mapping[str, str] | None = None) -> tuple[int, ...]:
        value = self.get(dotted, meta)
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{self.path}: '{dotted}'={value!r} is not a shape") from None

    def io_names(self, section: str, kind: str, default: Sequence[str]) -> list[str]:
        """Tensor names in role order: the keys of ``section.kind`` when given."""
        value = self.section(section).get(kind)
        if isinstance(value, dict) and len(value) == len(default):
            return [str(k) for k in value]
        return list(default)


def pick_precision(model_dir: Path, precision: str, provider: str = "cpu") -> str:
    present = _precision_dirs(model_dir)
    if precision == "auto":
        for p in _AUTO_ORDER.get(provider, PRECISIONS):
            if p in present:
                return p
        raise ModelLoadError(
            f"{model_dir}: no precision folder with encoder_model.onnx "
            f"(looked for {', '.join(PRECISIONS)})"
        )
    wanted = ("int8-dynamic", "int8-static") if precision == "int8" else (precision,)
    if not set(wanted) & set(PRECISIONS):
        raise ModelLoadError(
            f"unknown precision {precision!r} for a NeMo streaming model; "
            f"expected auto or one of {', '.join(PRECISIONS)}"
        )
    for p in wanted:
        if p in present:
            return p
    have = ", ".join(present) or "none"
    raise ModelLoadError(
        f"{model_dir}: no {precision} folder with encoder_model.onnx (present: {have})"
    )


# --- the model ----------------------------------------------------------------------
def _checked_names(session: Session, want: Sequence[str], kind: str) -> list[str]:
    have = [t.name for t in (session.inputs if kind == "inputs" else session.outputs)]
    missing = [n for n in want if n not in have]
    if missing:
        raise ModelLoadError(
            f"{session.path}: {kind} {missing} not in the graph (it has {have}); "
            "is this a NeMo cache-aware streaming RNN-T export?"
        )
    return list(want)


def _dtype(session: Session, name: str) -> type[np.generic]:
    info = next(t for t in session.inputs if t.name == name)
    return _DTYPES.get(info.dtype, np.float32)


class NemoStreamingModel(BatchedStates):
    """Cache-aware FastConformer encoder + stateful RNN-T decoder/joint graph."""

    family: ClassVar[str] = "nemo_fastconformer"

    def graphs(self) -> dict[str, Session]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def __init__(self, encoder: Session, decoder: Session, cfg: _Config) -> None:
        self.encoder = encoder
        self.decoder = decoder  # the RNN-T decoder and joint in one graph
        em, dm = encoder.metadata, decoder.metadata
        self.enc_in = _checked_names(
            encoder, cfg.io_names("encoder", "inputs", ENCODER_INPUTS), "inputs"
        )
        self.enc_out = _checked_names(
            encoder, cfg.io_names("encoder", "outputs", ENCODER_OUTPUTS), "outputs"
        )
        self.dec_in = _checked_names(
            decoder, cfg.io_names("decoder", "inputs", DECODER_INPUTS), "inputs"
        )
        self.dec_out = _checked_names(
            decoder, cfg.io_names("decoder", "outputs", DECODER_OUTPUTS), "outputs"
        )
        self.pre_encode_frames = cfg.get_int("encoder.pre_encode_cache_frames", em)
        self.chunk_shift = cfg.get_int("encoder.chunk_mel_frames", em)
        self.chunk_size = self.chunk_shift + self.pre_encode_frames
        self.feature_dim = cfg.get_int("preprocessor.n_mels", em)
        self.vocab_size = cfg.get_int("decoder.vocab_size", dm)
        self.blank_id = cfg.get_int("decoder.blank_id", dm)
        if not 0 <= self.blank_id < self.vocab_size:
            raise ModelLoadError(
                f"{cfg.path}: blank_id {self.blank_id} outside vocab_size {self.vocab_size}"
            )
        start = cfg.section("decoder").get("start_token_id")
        self.start_id = self.blank_id if start is None else int(start)
        self.max_symbols_per_frame = int(cfg.section("decoder").get("max_symbols_per_frame", 10))
        channel = cfg.get_shape("encoder.cache_last_channel_shape", em)
        time = cfg.get_shape("encoder.cache_last_time_shape", em)
        if len(channel) != 4 or len(time) != 4:
            raise ModelLoadError(
                f"{cfg.path}: cache shapes must be [1, L, C, D] and [1, L, D, K], "
                f"got {list(channel)} and {list(time)}"
            )
        one = (1, *channel[1:]), (1, *time[1:])
        self.state_specs = [
            StateSpec(self.enc_in[2], one[0], 0),
            StateSpec(self.enc_in[3], one[1], 0),
            StateSpec(self.enc_in[4], (1,), 0, _dtype(encoder, self.enc_in[4])),
        ]
        infos = [next(t for t in encoder.inputs if t.name == n) for n in self.enc_in[2:4]]
        check_cache_dims(self.state_specs[:2], infos, encoder.path, "config.json")
        layers = cfg.get_int("decoder.prediction_layers", dm)
        hidden = cfg.get_int("decoder.prediction_hidden", dm)
        self.decoder_state_shape = (layers, 1, hidden)
        self._len_dtype = _dtype(encoder, self.enc_in[1])
        self._target_dtype = _dtype(decoder, self.dec_in[1])
        self._target_len_dtype = _dtype(decoder, self.dec_in[2])
        sub = cfg.section("encoder").get("subsampling_factor") or em.get("subsampling_factor")
        self.subsampling_factor = int(sub) if sub else self._measure_subsampling()

    def _measure_subsampling(self) -> int:
        """Output frames per chunk from one run on silence (config.json has no key for it)."""
        x = np.zeros((1, self.chunk_size, self.feature_dim), dtype=np.float32)
        out, _ = self.run_encoder(x, self.init_state())
        if out.shape[1] < 1:
            raise ModelLoadError(f"{self.encoder.path}: a chunk gave no encoder frames")
        return max(1, self.chunk_shift // int(out.shape[1]))

    def run_encoder(self, features: FloatArray, states: State) -> tuple[FloatArray, State]:
        """``features`` (N, chunk_size, n_mels) → encoder_out (N, T', D), next caches."""
        n = features.shape[0]
        feeds = encoder_feeds(self.enc_in, features, self.chunk_size, self._len_dtype, states)
        names = [t.name for t in self.encoder.outputs]
        out = dict(zip(names, self.encoder.run(feeds), strict=True))
        enc = out[self.enc_out[0]].astype(np.float32, copy=False)
        frames = int(np.min(out[self.enc_out[1]])) if n else 0
        encoder_out = np.ascontiguousarray(enc[:, :, :frames].transpose(0, 2, 1))
        return encoder_out, [out[k] for k in self.enc_out[2:]]

    def init_decoder_states(self) -> DecoderStates:
        return [np.zeros(self.decoder_state_shape, dtype=np.float32) for _ in range(2)]

    def decoder_step(
        self, encoder_frames: FloatArray, tokens: npt.NDArray[np.int64], states: DecoderStates
    ) -> tuple[FloatArray, DecoderStates]:
        """(P, D) frames, (P,) previous tokens, two (layers, P, hidden) states →
        logits (P, vocab_size), next states."""
        p = encoder_frames.shape[0]
        feeds: dict[str, npt.NDArray[np.generic]] = {
            self.dec_in[0]: encoder_frames[:, :, None],
            self.dec_in[1]: tokens.astype(self._target_dtype).reshape(p, 1),
            self.dec_in[2]: np.ones((p,), dtype=self._target_len_dtype),
            self.dec_in[3]: states[0],
            self.dec_in[4]: states[1],
        }
        names = [t.name for t in self.decoder.outputs]
        out = dict(zip(names, self.decoder.run(feeds), strict=True))
        logits = out[self.dec_out[0]].reshape(p, -1).astype(np.float32, copy=False)
        states_out = [out[self.dec_out[2]], out[self.dec_out[3]]]
        return logits, [s.astype(np.float32, copy=False) for s in states_out]

    def make_search(self, cfg: DecodingConfig, symbols: SymbolTable) -> Search:
        if normalize_method(cfg.method) == "greedy":
            search: type[RnntGreedySearch | RnntBeamSearch] = RnntGreedySearch
            limit = cfg.max_symbols_per_frame
        else:
            search, limit = RnntBeamSearch, cfg.beam
        return search(
            self.decoder_step,
            self.init_decoder_states,
            self.blank_id,
            limit,
            start_id=self.start_id,
            blank_penalty=cfg.blank_penalty,
        )


class LeftPaddedFeatures:
    """A feature extractor whose frame sequence starts with ``pad`` zero frames
    (the pre-encode cache of the first chunk)."""

    def __init__(self, inner: NemoMel, pad: int) -> None:
        self.inner = inner
        self.pad = pad

    @property
    def config(self) -> FeatureSettings:
        return self.inner.config

    @property
    def finished(self) -> bool:
        return self.inner.finished

    @property
    def num_frames_ready(self) -> int:
        return self.inner.num_frames_ready + self.pad

    def accept_waveform(self, samples: npt.NDArray[np.float32]) -> None:
        self.inner.accept_waveform(samples)

    def input_finished(self) -> None:
        self.inner.input_finished()

    def get_frames(self, start: int, count: int) -> FloatArray:
        zeros = max(0, min(self.pad - start, count))
        real = self.inner.get_frames(max(0, start - self.pad), count - zeros)
        if not zeros:
            return real
        return np.concatenate([np.zeros((zeros, self.inner.dim), dtype=np.float32), real])

    def discard_before(self, frame: int) -> None:
        self.inner.discard_before(max(0, frame - self.pad))


# --- loading ----------------------------------------------------------------------
def _read_key_values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _feature_config(model_dir: Path, cfg: _Config) -> NemoMelConfig:
    values: dict[str, Any] = {}
    legacy = model_dir / "shared" / "preprocessor.config"
    if legacy.is_file():
        values.update(_read_key_values(legacy))
    values.update(cfg.section("preprocessor"))
    if not values:
        raise ModelLoadError(f"{cfg.path}: no 'preprocessor' section and no {legacy}")
    rate = cfg.section("audio").get("sample_rate")
    if rate is not None and "sample_rate" not in cfg.section("preprocessor"):
        values["sample_rate"] = rate
    mel = NemoMelConfig.from_mapping(values, f"{cfg.path}: preprocessor")
    return replace(mel, dither=0.0)  # dither is a training-time augmentation


def _symbols(model_dir: Path, blank_id: int) -> SymbolTable:
    for p in (model_dir / "shared" / "tokens.txt", model_dir / "tokens.txt"):
        if p.is_file():
            table = SymbolTable.from_file(p)
            if blank_id not in table.id2sym:
                table = SymbolTable({**table.id2sym, blank_id: "<blk>"})
            return table
    raise ModelLoadError(f"{model_dir}: shared/tokens.txt not found")


def load_model(
    model_dir: Path, precision: str = "auto", backend: BackendOptions | None = None
) -> tuple[NemoStreamingModel, _Config, str]:
    d = Path(model_dir)
    opts = backend or BackendOptions()
    cfg = _Config(d / "config.json")
    prec = pick_precision(d, precision, opts.provider)
    enc_file = str(cfg.section("encoder").get("model_file", "encoder_model.onnx"))
    dec_file = str(cfg.section("decoder").get("model_file", "decoder_model.onnx"))
    encoder = open_session(d / prec / enc_file, opts)
    decoder = open_session(d / prec / dec_file, opts, small=True, per_row=True)
    return NemoStreamingModel(encoder, decoder, cfg), cfg, prec


def load_recognizer(model_dir: Path, options: LoadOptions) -> Recognizer:
    d = Path(model_dir)
    model, cfg, _ = load_model(d, options.precision, options.backend)
    features = _feature_config(d, cfg)
    if features.n_mels != model.feature_dim:
        raise ModelLoadError(
            f"{cfg.path}: preprocessor has {features.n_mels} mel bands, encoder wants "
            f"{model.feature_dim}"
        )
    fb = d / "shared" / "filterbank.bin"
    weights = load_mel_weights(fb, features) if fb.is_file() else None
    pad = model.pre_encode_frames
    decoding = options.decoding or DecodingConfig()
    if decoding.max_symbols_per_frame == DecodingConfig.max_symbols_per_frame:
        # 1 is the sherpa convention every caller inherits (the CLI has no option for
        # it); a NeMo model says its own limit in config.json
        decoding = replace(decoding, max_symbols_per_frame=model.max_symbols_per_frame)
    return Recognizer(
        model,
        _symbols(d, model.blank_id),
        decoding=decoding,
        endpoint=options.endpoint,
        features=features,
        tail_padding_s=options.tail_padding_s,
        feature_factory=lambda: LeftPaddedFeatures(NemoMel(features, weights), pad),
    )
