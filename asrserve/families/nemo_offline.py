"""NeMo offline transducers (Parakeet TDT and plain RNN-T) in sherpa-onnx's layout.

sherpa-onnx releases NeMo's non-streaming transducers (e.g.
``sherpa-onnx-nemo-parakeet-tdt-0.6b-v3-int8``, the FastConformer transducer
archives) as NeMo's own encoder / decoder / joint exports and a token list::

    tokens.txt              "piece id" lines, "<blk>" last (id = vocab_size)
    encoder[.int8].onnx     audio_signal (N, n_mels, T) float (band-major), length (N) int64
                            -> outputs (N, D, T'), encoded_lengths (N) int64
    decoder[.int8].onnx     targets (N, 1) int32, target_length (N) int32, LSTM h and c
                            (L, N, H) -> outputs (N, H, 1), lengths (unused), next h, c
    joiner[.int8].onnx      encoder_outputs (N, D, 1), decoder_outputs (N, H, 1)
                            -> logits (N, 1, 1, vocab_size + 1 [+ durations])

The encoder's metadata describes the model: ``model_type`` (``EncDecRNNTBPEModel``
or ``EncDecHybridRNNTCTCBPEModel``), ``vocab_size`` (blank not counted),
``subsampling_factor``, ``normalize_type`` (``per_feature`` or empty),
``pred_rnn_layers``, ``pred_hidden``, optionally ``feat_dim`` (default 80) and
``is_giga_am`` (refused here). As in sherpa-onnx, the model is TDT when the
``url`` key contains ``tdt``; the joiner must then score durations after the
tokens (duration ``i`` is the ``i``-th score), and must not otherwise. Only the
graphs' positions are relied on, not their tensor names. A directory is claimed
from the encoder metadata (one of those model types, without the cache-aware
streaming keys of :mod:`asrserve.families.nemo_sherpa`).

Features are sherpa-onnx's for these models: kaldi fbank mel energies (25 ms povey
window every 10 ms, pre-emphasis 0.97, no DC removal, no dither, librosa-style mel
banks from 0 Hz to 400 Hz below Nyquist, samples in [-1, 1]) over the whole
utterance. With ``normalize_type`` empty they are kaldi's log (``log(max(e,
FLT_EPSILON))``); with ``per_feature`` NeMo's ``log(e + 2^-24)``, then each band's
mean removed and divided by its population standard deviation plus 1e-5. (The
``2^-24`` guard is what sherpa-onnx 2.0.1 computes, measured through a probe
graph; the sherpa-onnx 1.13 sources normalise kaldi's log instead.)

Greedy search is sherpa-onnx's: the prediction network starts from zero
states reading the blank id; TDT emits up to 5 tokens per frame, RNN-T up to 10.
Everything past the graphs — Silero VAD segmentation, batching, results — is
:class:`asrserve.families.nemo_tdt.TdtRecognizer`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from asrserve.backends import BackendOptions, Session, open_session
from asrserve.config import FeatureConfig
from asrserve.decoding.decoder_memo import DecoderMemo
from asrserve.decoding.tdt import JointState
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import ModelLoadError
from asrserve.families.base import meta_int
from asrserve.families.files import pick_file, tokens_file
from asrserve.families.load_options import LoadOptions
from asrserve.families.nemo_sherpa import onnx_metadata
from asrserve.families.nemo_tdt import TdtRecognizer
from asrserve.vad import SileroVad, VadConfig, find_vad_model

log = logging.getLogger("asrserve")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

MODEL_TYPES = ("EncDecRNNTBPEModel", "EncDecHybridRNNTCTCBPEModel")
"""Encoder ``model_type`` values sherpa-onnx sends to its NeMo transducer code."""
_STREAMING_KEYS = ("window_size", "cache_last_channel_dim1")
TDT_MAX_TOKENS_PER_FRAME = 5
RNNT_MAX_SYMBOLS_PER_FRAME = 10
DEFAULT_FEAT_DIM = 80
LOG_GUARD = np.float32(2.0**-24)
"""NeMo's log zero guard, added to the mel energies of ``per_feature`` models."""
_NP_TYPES: dict[str, Any] = {"int32": np.int32, "int64": np.int64, "float": np.float32}


# --- layout -------------------------------------------------------------------------
def _encoder_metadata(model_dir: Path) -> dict[str, str] | None:
    """Metadata of the first readable ``encoder*.onnx`` that names a model type."""
    for enc in sorted(model_dir.glob("encoder*.onnx")):
        try:
            meta = onnx_metadata(enc)
        except (OSError, ValueError):
            continue
        if "model_type" in meta:
            return meta
    return None


def probe(model_dir: Path) -> bool:
    """tokens.txt and encoder/decoder/joiner ONNX files whose encoder metadata
    names a NeMo transducer without cache-aware streaming keys."""
    d = Path(model_dir)
    if not d.is_dir() or not (d / "tokens.txt").is_file():
        return False
    if not all(any(d.glob(f"{role}*.onnx")) for role in ("encoder", "decoder", "joiner")):
        return False
    meta = _encoder_metadata(d)
    return (
        meta is not None
        and meta.get("model_type") in MODEL_TYPES
        and not any(k in meta for k in _STREAMING_KEYS)
    )


def _np_type(session: Session, index: int) -> Any:
    t = session.inputs[index]
    if t.dtype not in _NP_TYPES:
        raise ModelLoadError(f"{session.path}: input {t.name} has unsupported type {t.dtype}")
    return _NP_TYPES[t.dtype]


def _check_arity(session: Session, inputs: int, outputs: int, what: str) -> None:
    if len(session.inputs) != inputs or len(session.outputs) < outputs:
        names = [t.name for t in session.inputs]
        raise ModelLoadError(
            f"{session.path}: not a NeMo transducer {what}: expected {inputs} inputs and "
            f"{outputs} outputs, found inputs {names} and {len(session.outputs)} outputs"
        )


# --- the graphs -------------------------------------------------------------------------
class _SplitJoint:
    """NeMo's decoder (LSTM prediction network) and joiner as one
    :class:`~asrserve.decoding.tdt.TdtJoint`: ``run`` reads ``targets`` from the
    state, then scores the encoder frames against the decoder output.

    Decoder outputs are remembered by (token, state), so a hypothesis that stays
    on blank does not re-run the prediction network for every frame (sherpa-onnx
    runs it only after an emitted token)."""

    state_batch_axis = 1

    def __init__(self, decoder: Session, joiner: Session, layers: int, hidden: int) -> None:
        _check_arity(decoder, 4, 4, "decoder (targets, target_length, h, c)")
        _check_arity(joiner, 2, 1, "joiner (encoder_outputs, decoder_outputs)")
        self.decoder, self.joiner = decoder, joiner
        self.layers, self.hidden = layers, hidden
        for info in decoder.inputs[2:]:
            shape = info.shape
            if len(shape) != 3 or shape[0] not in (None, layers) or shape[2] not in (None, hidden):
                raise ModelLoadError(
                    f"{decoder.path}: state {info.name} has shape {shape}; the encoder "
                    f"metadata says (pred_rnn_layers={layers}, N, pred_hidden={hidden})"
                )
        # a state input with a fixed batch of 1 cannot take several rows
        self.rows_alone = any(i.shape[1] == 1 for i in decoder.inputs[2:])
        self._dec_in = [t.name for t in decoder.inputs]
        dec_out = [t.name for t in decoder.outputs]
        self._dec_out = [dec_out[0], dec_out[2], dec_out[3]]
        self._target_type = _np_type(decoder, 0)
        self._length_type = _np_type(decoder, 1)
        self._join_in = [t.name for t in joiner.inputs]
        self._join_out = [joiner.outputs[0].name]
        self._memo = DecoderMemo(4096)

    @property
    def batch_dependent(self) -> bool:
        return self.rows_alone or self.decoder.batch_dependent or self.joiner.batch_dependent

    def init_state(self, batch: int) -> JointState:
        shape = (self.layers, batch, self.hidden)
        return (np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    def run_decoder(self, targets: IntArray, state: JointState) -> tuple[FloatArray, JointState]:
        """(P,) tokens and h, c (L, P, H) → decoder output (P, H), next h, c."""
        p = targets.shape[0]
        outs = self.decoder.run(
            {
                self._dec_in[0]: targets.reshape(p, 1).astype(self._target_type),
                self._dec_in[1]: np.ones(p, dtype=self._length_type),
                self._dec_in[2]: np.ascontiguousarray(state[0], dtype=np.float32),
                self._dec_in[3]: np.ascontiguousarray(state[1], dtype=np.float32),
            },
            self._dec_out,
        )
        dec = np.asarray(outs[0], dtype=np.float32).reshape(p, -1)
        return dec, (np.asarray(outs[1], np.float32), np.asarray(outs[2], np.float32))

    def run_joiner(self, encoder_frames: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """(P, D) and (P, H) → logits (P, vocab [+ durations])."""
        p = encoder_frames.shape[0]
        out = self.joiner.run(
            {
                self._join_in[0]: np.ascontiguousarray(encoder_frames[:, :, None]),
                self._join_in[1]: np.ascontiguousarray(decoder_out[:, :, None]),
            },
            self._join_out,
        )[0]
        return np.asarray(out, dtype=np.float32).reshape(p, -1)

    def _decoded(self, targets: IntArray, state: JointState) -> tuple[FloatArray, JointState]:
        def rows(miss: list[int]) -> tuple[FloatArray, list[FloatArray]]:
            groups = [[i] for i in miss] if self.batch_dependent else [miss]
            runs = [self.run_decoder(targets[g], (state[0][:, g], state[1][:, g])) for g in groups]
            dec = np.concatenate([r[0] for r in runs])
            return dec, [np.concatenate([r[1][k] for r in runs], axis=1) for k in range(2)]

        decoder_out, nxt = self._memo.outputs(targets, state, rows)
        return decoder_out, tuple(nxt)

    def run(
        self, encoder_frames: FloatArray, targets: IntArray, state: JointState
    ) -> tuple[FloatArray, JointState]:
        decoder_out, nxt = self._decoded(np.asarray(targets, dtype=np.int64), state)
        if self.batch_dependent and encoder_frames.shape[0] > 1:
            logits = np.concatenate(
                [
                    self.run_joiner(encoder_frames[i : i + 1], decoder_out[i : i + 1])
                    for i in range(encoder_frames.shape[0])
                ]
            )
        else:
            logits = self.run_joiner(encoder_frames, decoder_out)
        return logits, nxt


class NemoOfflineModel:
    """Features, encoder and split decoder/joiner of one sherpa-onnx NeMo
    directory: an :class:`~asrserve.families.nemo_tdt.OfflineTransducer`."""

    family: ClassVar[str] = "nemo_offline"

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        meta: Mapping[str, str] = encoder.metadata
        where = encoder.path
        model_type = meta.get("model_type", "")
        if model_type not in MODEL_TYPES:
            raise ModelLoadError(
                f"{where}: model_type {model_type!r} is not a NeMo transducer "
                f"(expected one of {', '.join(MODEL_TYPES)})"
            )
        if meta.get("is_giga_am", "0").strip() not in ("", "0"):
            raise ModelLoadError(f"{where}: GigaAM exports (is_giga_am=1) are not supported")
        _check_arity(encoder, 2, 2, "encoder (audio_signal, length)")
        self.encoder = encoder
        self.vocab_size = meta_int(meta, "vocab_size", where) + 1  # NeMo leaves out blank
        self.blank_id = self.vocab_size - 1
        self.subsampling_factor = meta_int(meta, "subsampling_factor", where)
        normalize = meta.get("normalize_type", "")
        self.normalize_type = "" if normalize == "NA" else normalize
        if self.normalize_type not in ("", "per_feature"):
            raise ModelLoadError(
                f"{where}: normalize_type {normalize!r} is not supported (per_feature or none)"
            )
        audio = encoder.inputs[0]
        if len(audio.shape) != 3:
            raise ModelLoadError(f"{where}: {audio.name} must be (N, n_mels, T), got {audio.shape}")
        feat_dim = int(meta["feat_dim"]) if meta.get("feat_dim", "").lstrip("-").isdigit() else -1
        self.feature_dim = feat_dim if feat_dim > 0 else (audio.shape[1] or DEFAULT_FEAT_DIM)
        if audio.shape[1] not in (None, self.feature_dim):
            raise ModelLoadError(
                f"{where}: {audio.name} has {audio.shape[1]} bins, metadata feat_dim is {feat_dim}"
            )
        self._audio_type = _np_type(encoder, 0)
        self._length_type = _np_type(encoder, 1)
        self._enc_in = [audio.name, encoder.inputs[1].name]
        self._enc_out = [encoder.outputs[0].name, encoder.outputs[1].name]
        layers = meta_int(meta, "pred_rnn_layers", where)
        hidden = meta_int(meta, "pred_hidden", where)
        self._joint = _SplitJoint(decoder, joiner, layers, hidden)
        enc_dim = joiner.inputs[0].shape[1] if len(joiner.inputs[0].shape) == 3 else None
        enc_dim = enc_dim or (encoder.outputs[0].shape[1] if encoder.outputs[0].shape else None)
        if enc_dim is None:
            raise ModelLoadError(f"{where}: the encoder output width is not fixed")
        self.is_tdt = "tdt" in meta.get("url", "")
        # one step tells how many scores the joiner gives
        dec, _ = self._joint.run_decoder(
            np.array([self.blank_id], np.int64), self._joint.init_state(1)
        )
        width = self._joint.run_joiner(np.zeros((1, int(enc_dim)), np.float32), dec).shape[1]
        if self.is_tdt and width <= self.vocab_size:
            raise ModelLoadError(
                f"{joiner.path}: the encoder url says TDT, but the joiner gives {width} scores "
                f"for {self.vocab_size} tokens and no durations"
            )
        if not self.is_tdt and width != self.vocab_size:
            raise ModelLoadError(
                f"{joiner.path}: the joiner gives {width} scores, the vocabulary has "
                f"{self.vocab_size} tokens (a TDT model's url must contain 'tdt')"
            )
        self.durations = list(range(width - self.vocab_size))
        self.max_tokens_per_step = (
            TDT_MAX_TOKENS_PER_FRAME if self.is_tdt else RNNT_MAX_SYMBOLS_PER_FRAME
        )
        self.features = FeatureConfig(num_bins=self.feature_dim, low_freq=0.0, dither=0.0)

    @property
    def joint(self) -> _SplitJoint:
        return self._joint

    @property
    def joint_batch_dependent(self) -> bool:
        return self._joint.batch_dependent

    def graphs(self) -> dict[str, Session]:
        return {
            "encoder": self.encoder,
            "decoder": self._joint.decoder,
            "joiner": self._joint.joiner,
        }

    def fbank(self, samples: FloatArray) -> FloatArray:
        """Whole-utterance features (T, n_mels) of 16 kHz samples in [-1, 1],
        normalised as the metadata says."""
        if self.normalize_type != "per_feature":
            return self._fbank(samples, log=True)
        # NeMo's log: log(mel + 2^-24) rather than kaldi's log(max(mel, FLT_EPSILON))
        mel = self._fbank(samples, log=False)
        if not mel.shape[0]:
            return mel
        return normalize_per_feature(np.log(mel + LOG_GUARD, dtype=np.float32))

    def _fbank(self, samples: FloatArray, *, log: bool) -> FloatArray:
        import kaldi_native_fbank as knf

        c = self.features
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = False
        opts.frame_opts.samp_freq = float(c.sample_rate)
        opts.frame_opts.frame_shift_ms = c.frame_shift_ms
        opts.frame_opts.frame_length_ms = c.frame_length_ms
        opts.frame_opts.window_type = "povey"
        opts.frame_opts.remove_dc_offset = False
        opts.mel_opts.num_bins = c.num_bins
        opts.mel_opts.low_freq = c.low_freq
        opts.mel_opts.high_freq = c.high_freq
        opts.mel_opts.is_librosa = True
        opts.use_log_fbank = log
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(float(c.sample_rate), np.asarray(samples, dtype=np.float32))
        fb.input_finished()
        out = np.empty((int(fb.num_frames_ready), c.num_bins), dtype=np.float32)
        for i in range(out.shape[0]):
            out[i] = fb.get_frame(i)
        return out

    def preprocess(self, audio: Sequence[FloatArray], /) -> tuple[FloatArray, IntArray]:
        feats = [self.fbank(x) for x in audio]
        lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
        out = np.zeros((len(feats), self.feature_dim, int(lengths.max())), dtype=np.float32)
        for i, f in enumerate(feats):
            out[i, :, : f.shape[0]] = f.T
        return out, lengths

    def encode(self, features: FloatArray, lengths: IntArray) -> tuple[FloatArray, IntArray]:
        outs = self.encoder.run(
            {
                self._enc_in[0]: features.astype(self._audio_type, copy=False),
                self._enc_in[1]: lengths.astype(self._length_type),
            },
            self._enc_out,
        )
        enc = np.asarray(outs[0], dtype=np.float32)
        lens = np.asarray(outs[1], dtype=np.int64).reshape(-1)
        return np.ascontiguousarray(enc.transpose(0, 2, 1)), np.minimum(lens, enc.shape[2])


def normalize_per_feature(x: FloatArray, eps: float = 1e-5) -> FloatArray:
    """sherpa-onnx's ``per_feature`` normalisation of (T, n_mels) frames: per band,
    ``(x - mean) / (sqrt(max(E[x^2] - mean^2, 0)) + eps)``, in float32.

    ``E[x^2] - mean^2`` loses digits to cancellation (log-mel values are far from
    0), so the order of the sums shows in the result; they are taken in the order
    of Eigen's column-wise sum over a row-major matrix (see :func:`_column_sums`),
    which brings the features closer to sherpa-onnx's (not always to the bit)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.float32(x.shape[0])
    mean = _column_sums(x) / n
    var = np.maximum(_column_sums(x * x) / n - mean * mean, np.float32(0))
    inv = np.float32(1) / (np.sqrt(var) + np.float32(eps))
    out: FloatArray = ((x - mean) * inv).astype(np.float32, copy=False)
    return out


def _column_sums(x: FloatArray) -> FloatArray:
    """Column sums of (T, C) float32 in Eigen's packet order: row 0, then groups of
    four rows added as ``(r1 + r2) + (r3 + r4)`` one group after another, then
    the remaining rows one by one."""
    groups = (x.shape[0] - 1) & ~3
    body = x[1 : 1 + groups].reshape(-1, 4, x.shape[1])
    quads = (body[:, 0] + body[:, 1]) + (body[:, 2] + body[:, 3])
    seq = np.concatenate([x[:1], quads, x[1 + groups :]])
    out: FloatArray = np.cumsum(seq, axis=0, dtype=np.float32)[-1]
    return out


# --- loading -------------------------------------------------------------------------
def _symbols(path: Path, model: NemoOfflineModel) -> SymbolTable:
    table = SymbolTable.from_file(path)
    blank = table.get_id("<blk>")
    if blank is None:
        raise ModelLoadError(f"{path}: no <blk> token (NeMo's blank, the last id)")
    if blank != model.blank_id or len(table) != model.vocab_size:
        raise ModelLoadError(
            f"{path}: {len(table)} tokens with <blk> at {blank}; the encoder metadata says "
            f"vocab_size {model.vocab_size - 1} + blank (<blk> last, id {model.blank_id})"
        )
    return table


def load_model(
    model_dir: Path, precision: str = "auto", backend: BackendOptions | None = None
) -> NemoOfflineModel:
    d = Path(model_dir)
    if precision in ("int8-dynamic", "int8-static"):
        precision = "int8"
    if precision not in ("auto", "int8", "fp16", "fp32"):
        raise ModelLoadError(f"unknown precision {precision!r}")
    opts = backend or BackendOptions()
    return NemoOfflineModel(
        open_session(pick_file(d, "encoder", precision), opts),
        open_session(pick_file(d, "decoder", precision), opts, small=True, per_row=True),
        open_session(pick_file(d, "joiner", precision), opts, small=True, per_row=True),
    )


def load_recognizer(
    model_dir: Path, options: LoadOptions, *, vad: VadConfig | None = None
) -> TdtRecognizer:
    """Load a sherpa-onnx NeMo offline transducer directory behind Silero VAD
    (``vad``: segmentation options and model path, see
    :func:`asrserve.vad.find_vad_model`)."""
    d = Path(model_dir)
    tokens = tokens_file(d)
    model = load_model(d, options.precision, options.backend)
    symbols = _symbols(tokens, model)
    vad_cfg = (vad or VadConfig()).validate()
    silero = SileroVad(find_vad_model(vad_cfg.model, d), options.backend)
    log.debug(
        "loaded %s (%s, %s)", d, "TDT" if model.is_tdt else "RNN-T", Path(model.encoder.path).name
    )
    return TdtRecognizer(
        model,
        symbols,
        silero,
        vad_config=vad_cfg,
        decoding=options.decoding,
        endpoint=options.endpoint,
    )
