"""NeMo cache-aware streaming FastConformer transducers in sherpa-onnx's layout.

sherpa-onnx exports these (``scripts/nemo/fast-conformer-hybrid-transducer-ctc/
export-onnx-transducer.py`` and the Nemotron streaming script) as NeMo's own
``encoder`` / ``decoder`` / ``joint`` exports with cache support::

    tokens.txt                "piece id" lines, "<blk>" last (id = vocab_size)
    encoder[.int8].onnx       audio_signal [N, n_mels, window] (band-major),
                              length [N] int64, cache_last_channel [N, L, C, D],
                              cache_last_time [N, L, D, K], cache_last_channel_len [N] int64
                              -> outputs [N, D, T'], encoded_lengths (unused), the three
                                 caches to feed back
    decoder[.int8].onnx       targets [N, 1] int32, target_length [N] int32 (= 1),
                              LSTM h and c [P, N, H] (NeMo names them e.g. "states.1",
                              "onnx::Slice_3") -> outputs [N, H, 1], lengths, next h, c
    joiner[.int8].onnx        encoder_outputs [N, D, 1], decoder_outputs [N, H, 1]
                              -> logits [N, 1, 1, vocab_size + 1]

Everything else is metadata on the encoder: ``vocab_size`` (blank not counted),
``window_size`` (feature frames per encoder run: chunk + pre-encode cache),
``chunk_shift``, ``subsampling_factor``, ``pred_rnn_layers``, ``pred_hidden``,
``cache_last_channel_dim1..3``, ``cache_last_time_dim1..3`` and ``normalize_type``
(ignored when streaming, as sherpa-onnx does). sherpa-onnx tells the layout from a
sherpa transducer by the decoder having more than one output; here the encoder's
``window_size`` and ``cache_last_channel_dim1`` keys claim the directory.

As in sherpa-onnx, the stream's kaldi fbank frames (Hann window, no DC removal,
librosa-style mel banks over 0-8000 Hz, no dither, samples in [-1, 1]) go to the
encoder ``window_size`` at a time, advancing ``chunk_shift``, with no left padding;
every output frame is decoded. Greedy search reads the prediction network only when
a token is emitted (up to 10 per frame); modified beam search is
:class:`asrserve.decoding.nemo_beam.NemoBeamSearch`.

Unlike sherpa-onnx, an endpoint restarts the search but keeps the encoder caches
(the core's :meth:`Recognizer.reset`); multilingual exports (a ``prompt_index``
input) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from asrserve.backends import BackendOptions, Session, open_session
from asrserve.config import DecodingConfig, FeatureConfig, normalize_method
from asrserve.core.recognizer import Recognizer
from asrserve.decoding.decoder_memo import DecoderMemo
from asrserve.decoding.nemo_beam import NemoBeamSearch
from asrserve.decoding.rnnt import DecoderStates, RnntGreedySearch
from asrserve.decoding.search import Search
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import ModelLoadError
from asrserve.families.base import BatchedStates, FloatArray, State, StateSpec, meta_int
from asrserve.families.files import pick_file
from asrserve.families.load_options import LoadOptions
from asrserve.families.nemo_cache import check_cache_dims, encoder_feeds
from asrserve.features.kaldi_fbank import KaldiFbank

MAX_SYMBOLS_PER_FRAME = 10
"""sherpa-onnx's fixed limit for NeMo transducers."""
_DTYPES: dict[str, type[np.generic]] = {"int32": np.int32, "int64": np.int64}
_CLAIM_KEYS = ("window_size", "cache_last_channel_dim1")


# --- layout -----------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7


def onnx_metadata(path: Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, read without parsing (or loading) the
    graph: a scan of the ModelProto's top-level fields that seeks over the rest."""
    out: dict[str, str] = {}
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        while f.tell() < size:
            head = f.read(10)
            tag, used = _varint(head, 0)
            f.seek(f.tell() - len(head) + used)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                head = f.read(10)
                _, used = _varint(head, 0)
                f.seek(f.tell() - len(head) + used)
            elif wire == 1:
                f.seek(8, 1)
            elif wire == 5:
                f.seek(4, 1)
            elif wire == 2:
                head = f.read(10)
                length, used = _varint(head, 0)
                f.seek(f.tell() - len(head) + used)
                if field != 14:  # metadata_props
                    f.seek(length, 1)
                    continue
                entry = f.read(length)
                key, value, pos = "", "", 0
                while pos < len(entry):
                    etag, pos = _varint(entry, pos)
                    elen, pos = _varint(entry, pos)
                    text = entry[pos : pos + elen].decode("utf-8", "replace")
                    pos += elen
                    if etag >> 3 == 1:
                        key = text
                    elif etag >> 3 == 2:
                        value = text
                out[key] = value
            else:
                raise ValueError(f"{path}: unexpected protobuf wire type {wire}")
    return out


def _roles_present(d: Path) -> bool:
    return all(any(d.glob(f"{role}*.onnx")) for role in ("encoder", "decoder", "joiner"))


def probe(model_dir: Path) -> bool:
    """encoder/decoder/joiner ONNX files and tokens.txt, the encoder's metadata
    describing a cache-aware NeMo encoder (``window_size``, cache dims)."""
    d = Path(model_dir)
    if not (d / "tokens.txt").is_file() or not _roles_present(d):
        return False
    for enc in sorted(d.glob("encoder*.onnx")):
        try:
            meta = onnx_metadata(enc)
        except (OSError, ValueError):
            continue
        return all(k in meta for k in _CLAIM_KEYS)
    return False


# --- the model ----------------------------------------------------------------------
def _dtype(session: Session, index: int) -> type[np.generic]:
    return _DTYPES.get(session.inputs[index].dtype, np.int32)


class SherpaNemoModel(BatchedStates):
    """Cache-aware encoder, LSTM prediction network and joiner as three graphs."""

    family: ClassVar[str] = "nemo_sherpa"
    reset_encoder_on_endpoint = True  # as sherpa-onnx does for NeMo models

    def graphs(self) -> dict[str, Session]:
        return {"encoder": self.encoder, "decoder": self.decoder, "joiner": self.joiner}

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        self.encoder, self.decoder, self.joiner = encoder, decoder, joiner
        meta: Mapping[str, str] = encoder.metadata
        where = encoder.path
        names = [t.name for t in encoder.inputs]
        if "prompt_index" in names:
            raise ModelLoadError(
                f"{where}: multilingual NeMo exports (a prompt_index input) are not supported"
            )
        if len(encoder.inputs) != 5 or len(encoder.outputs) != 5:
            raise ModelLoadError(
                f"{where}: a cache-aware NeMo encoder has 5 inputs and 5 outputs "
                f"(audio_signal, length, 3 caches), found {names}"
            )
        if len(decoder.inputs) != 4 or len(decoder.outputs) < 4:
            raise ModelLoadError(
                f"{decoder.path}: a NeMo LSTM decoder has 4 inputs (targets, target_length, "
                f"h, c) and 4 outputs, found {len(decoder.inputs)} and {len(decoder.outputs)}"
            )
        kind = decoder.metadata.get("streaming_model_type", "")
        if kind:
            raise ModelLoadError(f"{decoder.path}: streaming_model_type {kind!r} is not supported")
        if len(joiner.inputs) != 2:
            raise ModelLoadError(f"{joiner.path}: a joiner has 2 inputs")

        def key(name: str) -> int:
            return meta_int(meta, name, where)

        self.vocab_size = key("vocab_size") + 1  # NeMo's vocab_size leaves out blank
        self.blank_id = self.vocab_size - 1
        self.chunk_size = key("window_size")
        self.chunk_shift = key("chunk_shift")
        self.subsampling_factor = key("subsampling_factor")
        if not 0 < self.chunk_shift <= self.chunk_size:
            raise ModelLoadError(
                f"{where}: chunk_shift {self.chunk_shift} must be in 1..window_size "
                f"{self.chunk_size}"
            )
        feat = encoder.inputs[0].shape[1] if len(encoder.inputs[0].shape) == 3 else None
        if feat is None:
            raise ModelLoadError(f"{where}: {names[0]} must be [N, n_mels, T] with fixed n_mels")
        self.feature_dim = feat
        self.normalize_type = meta.get("normalize_type", "")
        channel = tuple(key(f"cache_last_channel_dim{i}") for i in (1, 2, 3))
        time = tuple(key(f"cache_last_time_dim{i}") for i in (1, 2, 3))
        self.state_specs = [
            StateSpec(names[2], (1, *channel), 0),
            StateSpec(names[3], (1, *time), 0),
            StateSpec(names[4], (1,), 0, _dtype(encoder, 4)),
        ]
        check_cache_dims(self.state_specs[:2], encoder.inputs[2:4], where, "metadata")
        self.decoder_state_shape = (key("pred_rnn_layers"), 1, key("pred_hidden"))
        self._len_dtype = _dtype(encoder, 1)
        self._target_dtype = _dtype(decoder, 0)
        self._target_len_dtype = _dtype(decoder, 1)
        self._dec_names = [t.name for t in decoder.inputs]
        self._dec_outputs = [t.name for t in decoder.outputs]
        self._enc_names = names
        self._join_names = [t.name for t in joiner.inputs]
        self._memo = DecoderMemo(1024)

    # --- graphs -------------------------------------------------------------------
    def run_encoder(self, features: FloatArray, states: State) -> tuple[FloatArray, State]:
        """``features`` (N, window, n_mels) → encoder_out (N, T', D), next caches."""
        feeds = encoder_feeds(self._enc_names, features, self.chunk_size, self._len_dtype, states)
        out = self.encoder.run(feeds)
        enc = np.ascontiguousarray(out[0].astype(np.float32, copy=False).transpose(0, 2, 1))
        return enc, [out[2], out[3], out[4]]

    def init_decoder_states(self) -> DecoderStates:
        return [np.zeros(self.decoder_state_shape, dtype=np.float32) for _ in range(2)]

    def run_decoder(
        self, tokens: npt.NDArray[np.int64], states: DecoderStates
    ) -> tuple[FloatArray, DecoderStates]:
        """(P,) tokens and h, c (L, P, H) → decoder output (P, H), next h, c."""
        if self.decoder.batch_dependent and tokens.shape[0] > 1:
            rows = [
                self.run_decoder(tokens[i : i + 1], [s[:, i : i + 1] for s in states])
                for i in range(tokens.shape[0])
            ]
            return (
                np.concatenate([r[0] for r in rows]),
                [np.concatenate([r[1][k] for r in rows], axis=1) for k in range(2)],
            )
        p = tokens.shape[0]
        feeds: dict[str, npt.NDArray[np.generic]] = {
            self._dec_names[0]: tokens.astype(self._target_dtype).reshape(p, 1),
            self._dec_names[1]: np.ones((p,), dtype=self._target_len_dtype),
            self._dec_names[2]: states[0],
            self._dec_names[3]: states[1],
        }
        out = self.decoder.run(feeds, self._dec_outputs[:1] + self._dec_outputs[2:4])
        dec = out[0].reshape(p, -1).astype(np.float32, copy=False)
        return dec, [s.astype(np.float32, copy=False) for s in out[1:3]]

    def run_joiner(self, encoder_frames: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """(P, D) and (P, H) → logits (P, vocab_size)."""
        if self.joiner.batch_dependent and encoder_frames.shape[0] > 1:
            return np.concatenate(
                [
                    self.run_joiner(encoder_frames[i : i + 1], decoder_out[i : i + 1])
                    for i in range(encoder_frames.shape[0])
                ]
            )
        p = encoder_frames.shape[0]
        out = self.joiner.run(
            {
                self._join_names[0]: np.ascontiguousarray(encoder_frames[:, :, None]),
                self._join_names[1]: np.ascontiguousarray(decoder_out[:, :, None]),
            }
        )[0]
        logits = out.reshape(p, -1)[:, : self.vocab_size]
        return logits.astype(np.float32, copy=False)

    def decoder_step(
        self, encoder_frames: FloatArray, tokens: npt.NDArray[np.int64], states: DecoderStates
    ) -> tuple[FloatArray, DecoderStates]:
        """The decoder+joint step of :class:`RnntGreedySearch`: logits (P, V) after
        reading ``tokens`` from ``states``, and the states after them. Decoder
        outputs are remembered by (token, states), so a hypothesis that stays on
        blank does not re-run the prediction network frame after frame."""

        def rows(miss: list[int]) -> tuple[FloatArray, Sequence[FloatArray]]:
            return self.run_decoder(tokens[miss], [s[:, miss] for s in states])

        decoder_out, next_states = self._memo.outputs(tokens, states, rows)
        return self.run_joiner(encoder_frames, decoder_out), next_states

    def make_search(self, cfg: DecodingConfig, symbols: SymbolTable) -> Search:
        if normalize_method(cfg.method) == "greedy":
            return RnntGreedySearch(
                self.decoder_step,
                self.init_decoder_states,
                self.blank_id,
                cfg.max_symbols_per_frame,
                blank_penalty=cfg.blank_penalty,
            )
        return NemoBeamSearch(
            self.run_decoder,
            self.run_joiner,
            self.init_decoder_states,
            self.blank_id,
            cfg.beam,
            max_symbols_per_frame=cfg.max_symbols_per_frame,
            blank_penalty=cfg.blank_penalty,
        )


# --- loading ------------------------------------------------------------------------
def feature_config(model: SherpaNemoModel) -> FeatureConfig:
    """sherpa-onnx's fbank settings for NeMo transducers; the rest are kaldi's
    defaults (25 ms frames every 10 ms, pre-emphasis 0.97, log power mel)."""
    return FeatureConfig(num_bins=model.feature_dim, low_freq=0.0, high_freq=8000.0, dither=0.0)


def new_features(config: FeatureConfig) -> KaldiFbank:
    return KaldiFbank(config, window_type="hann", remove_dc_offset=False, is_librosa=True)


def load_model(
    model_dir: Path, precision: str = "auto", backend: BackendOptions | None = None
) -> SherpaNemoModel:
    d = Path(model_dir)
    opts = backend or BackendOptions()
    return SherpaNemoModel(
        open_session(pick_file(d, "encoder", precision), opts),
        open_session(pick_file(d, "decoder", precision), opts, small=True, per_row=True),
        open_session(pick_file(d, "joiner", precision), opts, small=True, per_row=True),
    )


def _symbols(model_dir: Path, model: SherpaNemoModel) -> SymbolTable:
    table = SymbolTable.from_file(model_dir / "tokens.txt")
    if table.get_id("<blk>") not in (None, model.blank_id):
        raise ModelLoadError(
            f"{model_dir / 'tokens.txt'}: <blk> is id {table.get_id('<blk>')}, the model's "
            f"blank is the last id {model.blank_id}"
        )
    return table


def load_recognizer(model_dir: Path, options: LoadOptions) -> Recognizer:
    d = Path(model_dir)
    model = load_model(d, options.precision, options.backend)
    decoding = options.decoding or DecodingConfig()
    if decoding.max_symbols_per_frame == DecodingConfig.max_symbols_per_frame:
        # the sherpa default of 1 is for stateless decoders; sherpa-onnx lets a
        # NeMo transducer emit up to 10 tokens per frame
        decoding = replace(decoding, max_symbols_per_frame=MAX_SYMBOLS_PER_FRAME)
    features = feature_config(model)
    return Recognizer(
        model,
        _symbols(d, model),
        decoding=decoding,
        endpoint=options.endpoint,
        features=features,
        bpe_model=d / "bpe.model" if (d / "bpe.model").is_file() else None,
        tail_padding_s=options.tail_padding_s,
        feature_factory=lambda: new_features(features),
    )
