"""NeMo Parakeet TDT, offline, in the onnx-asr directory layout.

A model directory (e.g. ``istupakov/parakeet-tdt-0.6b-v3-onnx``) holds::

    config.json                 {"model_type": "nemo-conformer-tdt", "features_size": 128,
                                 "subsampling_factor": 8, ["max_tokens_per_step": 10]}
    vocab.txt                   "piece id" per line, "<blk>" (the blank) last
    nemo128.onnx                the mel preprocessor (optional here: see ``features``)
    encoder-model[.int8|.fp16].onnx
        audio_signal float32 (B, n_mels, T), length int64 (B)
        -> outputs float32 (B, D, T'), encoded_lengths int64 (B)
    decoder_joint-model[.int8|.fp16].onnx
        encoder_outputs float32 (B, D, 1), targets int32 (B, 1), target_length int32 (B),
        input_states_1, input_states_2 float32 (layers, B, hidden)
        -> outputs float32 (B, 1, 1, vocab + durations), prednet_lengths,
           output_states_1, output_states_2

The encoder sees a whole utterance at once (full attention), so audio is not
streamed through it: each stream runs Silero VAD on its audio as it
arrives, and a speech segment becomes *ready* when it ends (or reaches
``VadConfig.max_segment_s``, cut at a pause where possible), or at input end.
:meth:`TdtRecognizer.decode_streams` decodes one ready segment per stream,
the segments of all streams in one preprocessor, one encoder and one batched
greedy TDT search. A decoded segment is an endpoint: the server sends one
final per VAD segment (:meth:`~TdtRecognizer.get_result` then
:meth:`~TdtRecognizer.reset`). With endpointing disabled, segments
accumulate into one growing result instead.

Memory per stream is bounded: audio is kept only from where the next segment
can start (the open speech segment, or a little before the present).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.audio import to_float32
from asrserve.backends import BackendOptions, Session, open_session
from asrserve.config import DecodingConfig, EndpointConfig, FeatureConfig, normalize_method
from asrserve.core.events import Result
from asrserve.core.recognizer import audio_pieces, load_input
from asrserve.core.segments import Segment, joined, segments
from asrserve.core.stream import InputRate
from asrserve.decoding.hotwords import hotword_phrases
from asrserve.decoding.tdt import JointState, TdtGreedySearch, TdtJoint
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import AudioFormatError, ConfigError, ModelLoadError
from asrserve.families.load_options import LoadOptions
from asrserve.vad import SileroVad, SpeechSegment, VadConfig, VoiceActivityDetector, find_vad_model

log = logging.getLogger("asrserve")

FloatArray = npt.NDArray[np.float32]
MODEL_TYPE = "nemo-conformer-tdt"
_ENCODER = "encoder-model"
_DECODER = "decoder_joint-model"
_ENC_IN = ("audio_signal", "length")
_ENC_OUT = ("outputs", "encoded_lengths")
_DEC_IN = ("encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2")
_DEC_OUT = ("outputs", "output_states_1", "output_states_2")
_HOP = 160  # NeMo's 10 ms hop at 16 kHz
_FEATURES = ("auto", "onnx", "nemo_mel")


# --- layout -------------------------------------------------------------------------
def _read_config(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return obj


def probe(model_dir: Path) -> bool:
    """An onnx-asr NeMo directory: ``config.json`` with a ``nemo-conformer-*``
    model type, or (config missing) a ``decoder_joint-model*.onnx``.
    Non-TDT NeMo types are claimed too, to be refused by name."""
    if not model_dir.is_dir():
        return False
    try:
        cfg = _read_config(model_dir)
    except ModelLoadError:
        return any(model_dir.glob(f"{_DECODER}*.onnx"))
    if cfg is None:
        return any(model_dir.glob(f"{_DECODER}*.onnx"))
    return str(cfg.get("model_type", "")).startswith("nemo-conformer-")


def _pick(model_dir: Path, role: str, precision: str, provider: str) -> Path:
    """``{role}[.int8|.fp16].onnx`` for ``precision``; ``auto``: int8 first on
    CPUs, fp16 first on accelerators; an explicit precision without its own
    file falls back to fp32."""
    files = {
        "int8": model_dir / f"{role}.int8.onnx",
        "fp16": model_dir / f"{role}.fp16.onnx",
        "fp32": model_dir / f"{role}.onnx",
    }
    if precision == "auto":
        order = ["int8", "fp32", "fp16"] if provider == "cpu" else ["fp16", "fp32", "int8"]
    else:
        order = [precision, "fp32"]
    for prec in order:
        if files[prec].is_file():
            return files[prec]
    have = sorted(p.name for p in model_dir.glob(f"{role}*.onnx"))
    raise ModelLoadError(
        f"{model_dir}: no {precision} {role} file ({role}[.int8|.fp16].onnx; "
        f"found {', '.join(have) or 'none'})"
    )


def _check_names(session: Session, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    have_in = {t.name for t in session.inputs}
    have_out = {t.name for t in session.outputs}
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing:
        raise ModelLoadError(
            f"{session.path}: not an onnx-asr NeMo TDT graph: missing {', '.join(missing)} "
            f"(inputs {sorted(have_in)}, outputs {sorted(have_out)})"
        )


_NP_TYPES = {"float": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64}


def _dtype(session: Session, name: str) -> Any:
    t = next(t for t in session.inputs if t.name == name)
    if t.dtype not in _NP_TYPES:
        raise ModelLoadError(f"{session.path}: input {name} has unsupported type {t.dtype}")
    return _NP_TYPES[t.dtype]


# --- the model ------------------------------------------------------------------------
class _Joint:
    """The ``decoder_joint`` graph as a :class:`~asrserve.decoding.tdt.TdtJoint`."""

    state_batch_axis = 1

    def __init__(self, session: Session, enc_dim: int) -> None:
        self.session = session
        _check_names(session, _DEC_IN, _DEC_OUT)
        names = [t.name for t in session.outputs]
        self._out = [names.index(n) for n in _DEC_OUT]
        shapes = {t.name: t.shape for t in session.inputs}
        state_shapes = [shapes["input_states_1"], shapes["input_states_2"]]
        if any(len(s) != 3 or s[0] is None or s[2] is None for s in state_shapes):
            raise ModelLoadError(
                f"{session.path}: decoder states must be (layers, batch, hidden) with fixed "
                f"layers and hidden, got {state_shapes}"
            )
        self._state_dims = [(int(s[0] or 0), int(s[2] or 0)) for s in state_shapes]
        self._enc_type = _dtype(session, "encoder_outputs")
        self._tgt_type = _dtype(session, "targets")
        self._len_type = _dtype(session, "target_length")
        self._state_types = [_dtype(session, "input_states_1"), _dtype(session, "input_states_2")]
        self.enc_dim = enc_dim

    def init_state(self, batch: int) -> JointState:
        return tuple(
            np.zeros((layers, batch, hidden), np.float32) for layers, hidden in self._state_dims
        )

    def run(
        self, encoder_frames: FloatArray, targets: npt.NDArray[np.int64], state: JointState
    ) -> tuple[FloatArray, JointState]:
        b = encoder_frames.shape[0]
        feeds = {
            "encoder_outputs": encoder_frames[:, :, None].astype(self._enc_type),
            "targets": targets.reshape(b, 1).astype(self._tgt_type),
            "target_length": np.ones(b, dtype=self._len_type),
            "input_states_1": state[0].astype(self._state_types[0], copy=False),
            "input_states_2": state[1].astype(self._state_types[1], copy=False),
        }
        outs = self.session.run(feeds)
        logits = np.asarray(outs[self._out[0]], dtype=np.float32).reshape(b, -1)
        s1 = np.asarray(outs[self._out[1]], dtype=np.float32)
        s2 = np.asarray(outs[self._out[2]], dtype=np.float32)
        return logits, (s1, s2)


Preprocess = Callable[[Sequence[FloatArray]], tuple[FloatArray, npt.NDArray[np.int64]]]


class OfflineTransducer(Protocol):
    """What :class:`TdtRecognizer` needs of a model: features, a whole-utterance
    encoder and a :class:`~asrserve.decoding.tdt.TdtJoint` (``durations`` empty:
    a plain RNN-T). :class:`TdtModel` is the onnx-asr layout;
    :class:`asrserve.families.nemo_offline.NemoOfflineModel` sherpa-onnx's."""

    vocab_size: int
    blank_id: int
    feature_dim: int
    subsampling_factor: int
    max_tokens_per_step: int
    durations: list[int]
    family: ClassVar[str]

    @property
    def encoder(self) -> Session: ...

    def graphs(self) -> dict[str, Session]:
        """The graphs by role, as :meth:`asrserve.families.base.EncoderModel.graphs`."""
        ...

    @property
    def joint(self) -> TdtJoint: ...

    @property
    def joint_batch_dependent(self) -> bool:
        """Rows of one joint call can change each other's results (dynamic
        quantization): the search then runs row by row."""
        ...

    def preprocess(
        self, audio: Sequence[FloatArray], /
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Clips → features (B, n_mels, T) padded with zeros, valid frames (B,)."""
        ...

    def encode(
        self, features: FloatArray, lengths: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """(B, n_mels, T), (B,) → encoder frames (B, T', D), valid lengths (B,)."""
        ...


class TdtModel:
    """Preprocessor + encoder + decoder_joint of one directory."""

    family: ClassVar[str] = "nemo_tdt"

    def __init__(
        self,
        encoder: Session,
        decoder_joint: Session,
        preprocess: Preprocess,
        *,
        vocab_size: int,
        blank_id: int,
        feature_dim: int,
        subsampling_factor: int,
        max_tokens_per_step: int,
        durations: Sequence[int] | None,
    ) -> None:
        self.encoder = encoder
        self.decoder_joint = decoder_joint
        self.preprocess = preprocess
        _check_names(encoder, _ENC_IN, _ENC_OUT)
        enc_out = {t.name: t.shape for t in encoder.outputs}
        dec_in = {t.name: t.shape for t in decoder_joint.inputs}
        enc_dim = dec_in["encoder_outputs"][1] or enc_out["outputs"][1]
        if enc_dim is None:
            raise ModelLoadError(f"{encoder.path}: the encoder output width is not fixed")
        names = [t.name for t in encoder.outputs]
        self._enc_out = [names.index(n) for n in _ENC_OUT]
        self._feat_type = _dtype(encoder, "audio_signal")
        self._len_type = _dtype(encoder, "length")
        self.joint = _Joint(decoder_joint, int(enc_dim))
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.feature_dim = feature_dim
        self.subsampling_factor = subsampling_factor
        self.max_tokens_per_step = max_tokens_per_step
        # one joint call tells how many duration scores follow the tokens
        probe_logits, _ = self.joint.run(
            np.zeros((1, int(enc_dim)), np.float32),
            np.array([blank_id], np.int64),
            self.joint.init_state(1),
        )
        n_durations = probe_logits.shape[1] - vocab_size
        if n_durations < 1:
            raise ModelLoadError(
                f"{decoder_joint.path}: {probe_logits.shape[1]} joint outputs leave no duration "
                f"scores after {vocab_size} tokens; is this an RNN-T rather than a TDT model?"
            )
        if durations is None:
            durations = list(range(n_durations))
        if len(durations) != n_durations:
            raise ModelLoadError(
                f"config.json lists {len(durations)} durations; the joint scores {n_durations}"
            )
        self.durations = list(durations)

    @property
    def joint_batch_dependent(self) -> bool:
        return self.decoder_joint.batch_dependent

    def graphs(self) -> dict[str, Session]:
        return {"encoder": self.encoder, "decoder_joint": self.decoder_joint}

    def encode(
        self, features: FloatArray, lengths: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """(B, n_mels, T), (B,) → encoder frames (B, T', D), valid lengths (B,)."""
        outs = self.encoder.run(
            {
                "audio_signal": features.astype(self._feat_type),
                "length": lengths.astype(self._len_type),
            }
        )
        enc = np.asarray(outs[self._enc_out[0]], dtype=np.float32)
        lens = np.asarray(outs[self._enc_out[1]], dtype=np.int64).reshape(-1)
        return np.ascontiguousarray(enc.transpose(0, 2, 1)), np.minimum(lens, enc.shape[2])


def _onnx_preprocessor(session: Session) -> Preprocess:
    _check_names(session, ("waveforms", "waveforms_lens"), ("features", "features_lens"))
    names = [t.name for t in session.outputs]
    fi, li = names.index("features"), names.index("features_lens")

    def run(batch: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        lens = np.array([x.size for x in batch], dtype=np.int64)
        wav = np.zeros((len(batch), int(lens.max())), dtype=np.float32)
        for i, x in enumerate(batch):
            wav[i, : x.size] = x
        outs = session.run({"waveforms": wav, "waveforms_lens": lens})
        return np.asarray(outs[fi], np.float32), np.asarray(outs[li], np.int64).reshape(-1)

    return run


def _nemo_mel_preprocessor(n_mels: int) -> Preprocess:
    from asrserve.features.nemo_mel import NemoMelConfig, offline_features

    cfg = NemoMelConfig(n_mels=n_mels, normalize="per_feature").validate()

    def run(batch: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        feats = [offline_features(x, cfg) for x in batch]
        width = max(f.shape[1] for f, _ in feats)
        out = np.zeros((len(batch), n_mels, width), dtype=np.float32)
        for i, (f, _) in enumerate(feats):
            out[i, :, : f.shape[1]] = f
        return out, np.array([n for _, n in feats], dtype=np.int64)

    return run


# --- streams ---------------------------------------------------------------------------
@dataclass
class _Decoded:
    """One decoded VAD segment: where it starts (samples) and its tokens."""

    start: int
    end: int
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)


class TdtStream:
    """One audio stream of a :class:`TdtRecognizer` (created by its
    :meth:`~TdtRecognizer.create_stream`). Same surface as
    :class:`asrserve.Stream`: :meth:`accept_waveform`, :meth:`input_finished`."""

    def __init__(
        self,
        vad: VoiceActivityDetector,
        sample_rate: int,
        decoding: DecodingConfig,
        endpoint: EndpointConfig | None,
    ) -> None:
        self.vad = vad
        self.decoding = decoding
        self.endpoint = endpoint
        self.ready: deque[tuple[SpeechSegment, FloatArray]] = deque()
        self.decoded: list[_Decoded] = []  # since the last reset
        self.segment = 0
        self.segment_start_frame = 0
        self.num_processed_frames = 0
        self.num_samples = 0
        self._rate = sample_rate
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._input = InputRate(sample_rate)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def is_finished(self) -> bool:
        return self.vad.finished

    @property
    def duration(self) -> float:
        return self.num_samples / self._rate

    @property
    def buffered_samples(self) -> int:
        """Samples held: the audio buffer plus ready, undecoded segments."""
        return int(self._buffer.size + sum(x.size for _, x in self.ready))

    def accept_waveform(self, sample_rate: int, samples: npt.ArrayLike) -> None:
        """Append audio: float32 in [-1, 1] or int16, at any (fixed) sample rate."""
        if self.vad.finished:
            raise AudioFormatError("input_finished() was called; the stream takes no more audio")
        self._append(self._input.convert(sample_rate, samples))

    def input_finished(self) -> None:
        if self.vad.finished:
            return
        rest = self._input.flush()
        if rest is not None:
            self._append(rest)
        self._take(self.vad.input_finished())
        self._buffer = np.zeros(0, dtype=np.float32)
        if not self.ready and not self.vad.in_speech:
            self.num_processed_frames = self.num_samples // _HOP

    def cut_segment(self) -> None:
        """End the open VAD segment here, so it becomes ready to decode (the
        server calls this on a client's flush)."""
        self._take(self.vad.cut_now())

    def _append(self, x: FloatArray) -> None:
        if not x.size:
            return
        self._buffer = np.concatenate([self._buffer, x])
        self.num_samples += x.size
        self._take(self.vad.accept_waveform(x))
        keep = self.vad.keep_from
        if keep > self._buffer_start:
            self._buffer = self._buffer[keep - self._buffer_start :]
            self._buffer_start = keep
        if not self.ready and not self.vad.in_speech and not self.decoded:
            # silence: nothing undecoded before here
            self.num_processed_frames = max(self.num_processed_frames, keep // _HOP)

    def _take(self, segments: Iterable[SpeechSegment]) -> None:
        for seg in segments:
            lo = seg.start - self._buffer_start
            if lo < 0:
                raise AssertionError(f"VAD segment {seg} starts before the kept audio")
            self.ready.append((seg, self._buffer[lo : seg.end - self._buffer_start].copy()))


# --- the recognizer ------------------------------------------------------------------
class TdtRecognizer:
    """The :class:`asrserve.Recognizer` interface over a Parakeet TDT model
    and Silero VAD segmentation (see the module docstring)."""

    def __init__(
        self,
        model: OfflineTransducer,
        symbols: SymbolTable,
        vad: SileroVad,
        *,
        vad_config: VadConfig | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> None:
        self.model = model
        self.symbols = symbols
        self.vad = vad
        self.vad_config = (vad_config or VadConfig()).validate()
        self.decoding = (decoding or DecodingConfig()).validate()
        self.endpoint = (endpoint or EndpointConfig()).validate()
        self.feature_config = FeatureConfig(
            sample_rate=16000, num_bins=model.feature_dim, frame_shift_ms=10.0
        ).validate()
        self.frame_shift_s = _HOP / 16000
        self.output_frame_s = self.frame_shift_s * model.subsampling_factor
        self.tail_padding_s = 0.0
        self.isolate_batches = False
        """Decode stream by stream when the graphs are batch-dependent (int8)."""
        self._searches: dict[tuple[float, int], TdtGreedySearch] = {}
        self._search(self.decoding)

    # --- streams ------------------------------------------------------------------
    def create_stream(
        self,
        hotwords: Sequence[str] | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> TdtStream:
        cfg = (decoding or self.decoding).validate()
        if hotword_phrases(hotwords or ()) or cfg.hotwords:
            raise ConfigError("hotwords are not supported by the TDT model (greedy search only)")
        self._search(cfg)
        detector = VoiceActivityDetector(self.vad, self.vad_config)
        return TdtStream(
            detector, self.feature_config.sample_rate, cfg, (endpoint or self.endpoint).validate()
        )

    def check_language(self, language: str) -> None:
        """Any: a transducer has the language it was trained on and takes no prompt."""

    def check_hotwords(self, phrases: Sequence[str], default_score: float) -> int:
        """Refuse hotwords (greedy search only); 0 token pieces otherwise."""
        if phrases:
            raise ConfigError("hotwords are not supported by the TDT model (greedy search only)")
        return 0

    def is_ready(self, stream: TdtStream) -> bool:
        """A VAD segment has closed and waits to be decoded."""
        return bool(stream.ready)

    def backlog_s(self, stream: TdtStream) -> float:
        """Seconds of audio in closed VAD segments not decoded yet."""
        return sum(seg.end - seg.start for seg, _ in stream.ready) / self._rate

    def decoded_s(self, stream: TdtStream) -> float:
        """Seconds of audio the last :meth:`decode_streams` decoded for ``stream``
        (one VAD segment)."""
        return (
            (stream.decoded[-1].end - stream.decoded[-1].start) / self._rate
            if stream.decoded
            else 0.0
        )

    @property
    def batch_dependent(self) -> bool:
        """Whether a stream's result can depend on its batch mates (int8 graphs
        with per-tensor dynamic activation scales)."""
        return any(g.batch_dependent for g in self.model.graphs().values())

    def decode_streams(self, streams: Iterable[TdtStream]) -> int:
        """Decode one ready segment of every ready stream in one batch.

        Returns how many streams were advanced."""
        ready = [s for s in streams if s.ready]
        if not ready:
            return 0
        if self.isolate_batches and len(ready) > 1 and self.batch_dependent:
            # no stream's audio may touch another's result
            return sum(self.decode_streams([s]) for s in ready)
        items = [s.ready.popleft() for s in ready]
        tokens = self._recognize([x for _, x in items], [s.decoding for s in ready])
        for s, (seg, _), (toks, frames) in zip(ready, items, tokens, strict=True):
            if not s.decoded:
                s.segment_start_frame = seg.start // _HOP
            s.decoded.append(_Decoded(seg.start, seg.end, toks, frames))
            s.num_processed_frames = max(s.num_processed_frames, seg.end // _HOP)
        return len(ready)

    def decode_stream(self, stream: TdtStream) -> None:
        """Decode one ready VAD segment of one stream (one step per call, as
        sherpa-onnx's ``decode_stream``; loop while :meth:`is_ready`)."""
        self.decode_streams([stream])

    def _recognize(
        self, audio: Sequence[FloatArray], configs: Sequence[DecodingConfig]
    ) -> list[tuple[list[int], list[int]]]:
        """Token ids and their encoder frames for each segment's samples."""
        m = self.model
        out: list[tuple[list[int], list[int]]] = [([], []) for _ in audio]
        keep = [i for i, x in enumerate(audio) if x.size >= 2 * _HOP]
        if not keep:
            return out
        # Graphs with per-tensor dynamic activation quantization give a row a
        # result that depends on the rest of the batch: run those row by row,
        # so a segment decodes the same alone, batched, in the server or the CLI.
        if m.encoder.batch_dependent:
            encoded = [self._encode([audio[i]]) for i in keep]
            width = max(e.shape[1] for e, _ in encoded)
            enc = np.zeros((len(keep), width, encoded[0][0].shape[2]), dtype=np.float32)
            for row, (e, _) in enumerate(encoded):
                enc[row, : e.shape[1]] = e[0]
            enc_lens = np.concatenate([n for _, n in encoded])
        else:
            enc, enc_lens = self._encode([audio[i] for i in keep])
        groups: dict[tuple[float, int], list[int]] = {}
        for row, i in enumerate(keep):
            groups.setdefault(self._search_key(configs[i]), []).append(row)
        per_row = m.joint_batch_dependent
        for key, rows in groups.items():
            search = self._searches[key]
            batches = [[r] for r in rows] if per_row else [rows]
            for b in batches:
                sub = enc if len(b) == len(keep) else enc[b]
                for row, h in zip(b, search.decode(sub, enc_lens[b]), strict=True):
                    out[keep[row]] = (h.tokens, h.frames)
        return out

    def _encode(self, audio: Sequence[FloatArray]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        return self.model.encode(*self.model.preprocess(audio))

    # --- results and endpoints ----------------------------------------------------------
    def token_ids(self, stream: TdtStream) -> list[int]:
        return [t for d in stream.decoded for t in d.tokens]

    def _segment_result(
        self, segments: Sequence[_Decoded], segment: int, start: float, is_final: bool
    ) -> Result:
        texts: list[str] = []
        pieces: list[str] = []
        ids: list[int] = []
        stamps: list[float] = []
        for d in segments:
            text, p = self.symbols.decode(d.tokens)
            if text.strip():
                texts.append(text.strip())
            pieces += p
            offset = d.start / self.feature_config.sample_rate
            for t, f in zip(d.tokens, d.frames, strict=True):
                if self.symbols[t] != "<unk>":
                    ids.append(t)
                    stamps.append(round(offset + f * self.output_frame_s, 3))
        return Result(
            text=" ".join(texts),
            tokens=pieces,
            token_ids=ids,
            timestamps=stamps,
            segment=segment,
            start_time=round(start, 3),
            is_final=is_final,
        )

    def get_result(self, stream: TdtStream, is_final: bool = False) -> Result:
        """The segments decoded since the last :meth:`reset` (one, when
        endpointing is on and the caller resets at each endpoint)."""
        if stream.decoded:  # where the first VAD segment starts, to the sample
            start = stream.decoded[0].start / self._rate
        else:
            start = stream.segment_start_frame * self.frame_shift_s
        return self._segment_result(stream.decoded, stream.segment, start, is_final)

    def is_endpoint(self, stream: TdtStream) -> bool:
        """A VAD segment was decoded since the last reset (endpointing on)."""
        rules = stream.endpoint or self.endpoint
        return rules.enabled and bool(stream.decoded)

    def reset(self, stream: TdtStream) -> None:
        if self.token_ids(stream):
            stream.segment += 1
        stream.decoded = []
        stream.segment_start_frame = stream.num_processed_frames

    # --- offline convenience -------------------------------------------------------------
    def recognize(self, audio: Sequence[npt.ArrayLike], sample_rate: int = 16000) -> list[Result]:
        """Each array decoded whole, as one utterance (no VAD), in one batch.

        Long arrays need care: the encoder attends over all of it at once."""
        from asrserve.audio import resample

        clips = [to_float32(np.asarray(a)) for a in audio]
        if sample_rate != self._rate:
            clips = [resample(x, sample_rate, self._rate) for x in clips]
        decoded = self._recognize(clips, [self.decoding] * len(clips))
        return [
            self._segment_result([_Decoded(0, x.size, t, f)], 0, 0.0, True)
            for x, (t, f) in zip(clips, decoded, strict=True)
        ]

    def transcribe_segments(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Iterator[Segment]:
        """One :class:`~asrserve.core.segments.Segment` per VAD segment with
        speech, lazily, as the audio is consumed ``chunk_seconds`` at a time."""
        samples, rate = load_input(audio, sample_rate, self._rate)
        stream = self.create_stream(endpoint=replace(self.endpoint, enabled=True))
        yield from segments(self, stream, audio_pieces(samples, rate, chunk_seconds, progress))

    def transcribe(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        hotwords: Sequence[str] | None = None,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Result:
        """The whole audio's transcript: the VAD segments' texts joined by
        spaces, tokens and (absolute) timestamps concatenated."""
        if hotwords:
            raise ConfigError("hotwords are not supported by the TDT model (greedy search only)")
        return joined(
            self.transcribe_segments(
                audio, sample_rate, chunk_seconds=chunk_seconds, progress=progress
            )
        )

    # --- helpers ----------------------------------------------------------------------------
    @property
    def _rate(self) -> int:
        return self.feature_config.sample_rate

    def _search_key(self, cfg: DecodingConfig) -> tuple[float, int]:
        # max_symbols_per_frame=1 is the streaming greedy default: TDT models
        # take their own limit (config.json max_tokens_per_step) instead
        limit = cfg.max_symbols_per_frame
        return (cfg.blank_penalty, self.model.max_tokens_per_step if limit == 1 else limit)

    def _search(self, cfg: DecodingConfig) -> TdtGreedySearch:
        if normalize_method(cfg.method) != "greedy":
            raise ConfigError("the TDT model supports greedy decoding only")
        key = self._search_key(cfg)
        search = self._searches.get(key)
        if search is None:
            m = self.model
            search = TdtGreedySearch(
                m.joint, m.vocab_size, m.blank_id, m.durations, key[1], blank_penalty=key[0]
            )
            self._searches[key] = search
        return search


def load_recognizer(
    model_dir: Path,
    options: LoadOptions,
    *,
    features: str = "auto",
    vad: VadConfig | None = None,
) -> TdtRecognizer:
    """Load an onnx-asr Parakeet TDT directory.

    ``features``: ``"onnx"`` runs the directory's ``nemo{n}.onnx``,
    ``"nemo_mel"`` asrserve's own NeMo mel, ``"auto"`` the graph when present.
    ``vad``: segmentation options and the Silero model path (default: see
    :func:`asrserve.vad.find_vad_model`)."""
    if features not in _FEATURES:
        raise ConfigError(f"features must be one of {_FEATURES}, got {features!r}")
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model directory not found")
    cfg = _read_config(model_dir)
    if cfg is None:
        raise ModelLoadError(f"{model_dir}: config.json not found (onnx-asr NeMo layout)")
    model_type = cfg.get("model_type")
    if model_type != MODEL_TYPE:
        raise ModelLoadError(
            f"{model_dir}: config.json model_type {model_type!r} is not supported "
            f"(this loader reads {MODEL_TYPE!r})"
        )
    try:
        n_mels = int(cfg.get("features_size", 80))
        subsampling = int(cfg.get("subsampling_factor", 8))
        max_tokens = int(cfg.get("max_tokens_per_step", 10))
        durations = [int(d) for d in cfg["durations"]] if "durations" in cfg else None
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir}/config.json: bad value ({exc})") from None
    if max_tokens < 1 or subsampling < 1 or n_mels < 1:
        raise ModelLoadError(f"{model_dir}/config.json: sizes must be positive")
    vocab_path = model_dir / "vocab.txt"
    if not vocab_path.is_file():
        raise ModelLoadError(f"{model_dir}: vocab.txt not found")
    symbols = SymbolTable.from_file(vocab_path)
    if sorted(symbols.id2sym) != list(range(len(symbols))):
        raise ModelLoadError(f"{vocab_path}: ids must be 0..{len(symbols) - 1} without gaps")
    blank = cfg.get("blank_id", symbols.get_id("<blk>"))
    blank_id = len(symbols) - 1 if blank is None else int(blank)

    precision = options.precision
    if precision in ("int8-dynamic", "int8-static"):
        precision = "int8"
    if precision not in ("auto", "int8", "fp16", "fp32"):
        raise ModelLoadError(f"unknown precision {options.precision!r}")
    backend: BackendOptions = options.backend
    encoder_path = _pick(model_dir, _ENCODER, precision, backend.provider)
    enc_prec = encoder_path.name.removeprefix(_ENCODER).removesuffix(".onnx").lstrip(".") or "fp32"
    decoder_path = _pick(model_dir, _DECODER, enc_prec, backend.provider)

    graph = model_dir / f"nemo{n_mels}.onnx"
    if features == "onnx" and not graph.is_file():
        raise ModelLoadError(f"{model_dir}: {graph.name} not found (features='onnx')")
    if features == "nemo_mel" or (features == "auto" and not graph.is_file()):
        preprocess = _nemo_mel_preprocessor(n_mels)
    else:
        preprocess = _onnx_preprocessor(open_session(graph, backend))
    model = TdtModel(
        open_session(encoder_path, backend),
        open_session(decoder_path, backend, per_row=True),
        preprocess,
        vocab_size=len(symbols),
        blank_id=blank_id,
        feature_dim=n_mels,
        subsampling_factor=subsampling,
        max_tokens_per_step=max_tokens,
        durations=durations,
    )
    vad_cfg = (vad or VadConfig()).validate()
    silero = SileroVad(find_vad_model(vad_cfg.model, model_dir), backend)
    log.debug("loaded %s (%s, %s)", model_dir, encoder_path.name, decoder_path.name)
    return TdtRecognizer(
        model,
        symbols,
        silero,
        vad_config=vad_cfg,
        decoding=options.decoding,
        endpoint=options.endpoint,
    )
