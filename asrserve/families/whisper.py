"""OpenAI Whisper in sherpa-onnx's ONNX layout, offline behind Silero VAD.

A model directory holds one model's files, named as sherpa-onnx's
``scripts/whisper/export-onnx.py`` (and ``asrserve convert whisper``) names them::

    {name}-encoder[.int8|.fp16].onnx   mel float (N, n_mels, T)
                                       -> n_layer_cross_k, n_layer_cross_v
                                          (n_text_layer, N, T/2, n_text_state)
    {name}-decoder[.int8|.fp16].onnx   tokens int64 (N, n), in_n_layer_self_k_cache,
                                       in_n_layer_self_v_cache (n_text_layer, N, n_text_ctx,
                                       n_text_state), n_layer_cross_k, n_layer_cross_v,
                                       offset int64 (1)
                                       -> logits (N, n, n_vocab), out_n_layer_self_k_cache,
                                          out_n_layer_self_v_cache
    {name}-tokens.txt                  "base64(token bytes) id" per line (special tokens
                                       are not listed)

The encoder's metadata (``model_type`` ``whisper-…``, ``n_mels``, ``n_text_layer``,
``n_text_ctx``, ``n_text_state``, ``n_vocab``, ``sot``, ``eot``, ``translate``,
``no_timestamps``, ``is_multilingual``, ``sot_sequence``,
``all_language_tokens``/``codes``) describes the model, as sherpa-onnx reads it.

Recognition of one VAD segment is sherpa-onnx's (``offline-recognizer-whisper-impl.h``,
``offline-whisper-greedy-search-decoder.cc``):

* features: Whisper's log-mel (:mod:`asrserve.features.whisper_mel`, ``sherpa``
  framing) of at most 2950 frames (29.5 s; the rest is dropped), normalised
  over the segment, then 1000 frames of zeros appended (3000 at most) so that
  the model sees the speech end;
* the prompt: ``sot_sequence`` (``[sot]``, or ``[sot, language, task]`` for
  multilingual models: the language given, else the language token the
  decoder scores highest after ``sot``), then ``no_timestamps``;
* plain greedy search: the arg-max of the full vocabulary, nothing suppressed,
  until ``eot``, at most ``6 * seconds`` tokens (and ``n_text_ctx / 2``), or
  the self-attention cache is full.

``framing="openai"`` (Python API only) computes the features as faster-whisper
does instead: OpenAI's STFT framing, 160 zero samples appended before
normalising, zero frames up to 3000; the tokens are then faster-whisper's
greedy ones (``suppress_blank=False, suppress_tokens=[]``) on the same weights.

Whisper gives no token times without timestamp tokens: each token's time is
an even share of its VAD segment (an estimate, for subtitles and word lists).
Everything else (VAD segmentation, streams, endpoints, batching of streams)
is :class:`~asrserve.families.nemo_tdt.TdtRecognizer`'s.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from asrserve.backends import BackendOptions, Session, open_session
from asrserve.config import DecodingConfig, EndpointConfig, FeatureConfig, normalize_method
from asrserve.core.events import Result
from asrserve.decoding.hotwords import hotword_phrases
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.families.base import meta_int, meta_ints
from asrserve.families.files import pick_file
from asrserve.families.load_options import LoadOptions
from asrserve.families.nemo_sherpa import onnx_metadata
from asrserve.families.nemo_tdt import TdtRecognizer, TdtStream
from asrserve.features.whisper_mel import Framing, normalize, power_mel
from asrserve.vad import SileroVad, VadConfig, VoiceActivityDetector, find_vad_model

if TYPE_CHECKING:
    from asrserve.families.nemo_tdt import _Decoded

log = logging.getLogger("asrserve")

FloatArray = npt.NDArray[np.float32]

__all__ = [
    "WhisperModel",
    "WhisperRecognizer",
    "WhisperTokens",
    "load_recognizer",
    "model_name",
    "probe",
]

MAX_FRAMES = 3000
"""The encoder's 30 s window (10 ms frames)."""
MAX_SPEECH_FRAMES = MAX_FRAMES - 50
"""sherpa-onnx keeps at most this many frames of a segment (and drops the rest)."""
TAIL_PADDING_FRAMES = 1000
"""sherpa-onnx's zero frames after the speech (``--whisper-tail-paddings``)."""
TOKENS_PER_SECOND = 6
MAX_SEGMENT_S = 29.0
"""VAD segments are cut below the 29.5 s sherpa-onnx decodes."""
WHISPER_VAD = VadConfig(min_silence_s=2.0, pad_s=0.4, max_segment_s=MAX_SEGMENT_S)
"""Segmentation unless told otherwise: faster-whisper's (2 s of silence ends a
segment, 0.4 s of padding), so that Whisper sees whole sentences."""
_HOP = 160
_TASKS = ("transcribe", "translate")
_REQUIRED_META = ("n_mels", "n_text_layer", "n_text_ctx", "n_text_state", "n_vocab", "sot", "eot")
_DECODER_INPUTS = (
    "tokens",
    "in_n_layer_self_k_cache",
    "in_n_layer_self_v_cache",
    "n_layer_cross_k",
    "n_layer_cross_v",
    "offset",
)
_DECODER_OUTPUTS = ("logits", "out_n_layer_self_k_cache", "out_n_layer_self_v_cache")


# --- layout -------------------------------------------------------------------------------
def _prefixes(model_dir: Path) -> list[str]:
    """Names ``{name}`` with ``{name}-encoder*.onnx``, ``{name}-decoder*.onnx``
    and ``{name}-tokens.txt`` all present."""
    out = []
    for tokens in sorted(model_dir.glob("*-tokens.txt")):
        name = tokens.name.removesuffix("-tokens.txt")
        if any(model_dir.glob(f"{name}-encoder*.onnx")) and any(
            model_dir.glob(f"{name}-decoder*.onnx")
        ):
            out.append(name)
    return out


def probe(model_dir: Path) -> bool:
    """A ``{name}-encoder/-decoder/-tokens`` set whose encoder metadata names a
    Whisper model (``model_type`` ``whisper…``)."""
    d = Path(model_dir)
    return d.is_dir() and any(probe_name(d, name) for name in _prefixes(d))


def probe_name(model_dir: Path, name: str) -> bool:
    """Whether ``{name}``'s encoder metadata names a Whisper model."""
    for enc in sorted(model_dir.glob(f"{name}-encoder*.onnx")):
        try:
            if onnx_metadata(enc).get("model_type", "").startswith("whisper"):
                return True
        except (OSError, ValueError):
            continue
    return False


def model_name(model_dir: Path) -> str:
    """The ``{name}`` of the one Whisper model in ``model_dir`` (its files are
    ``{name}-encoder*.onnx``, ``{name}-decoder*.onnx``, ``{name}-tokens.txt``)."""
    d = Path(model_dir)
    names = [n for n in _prefixes(d) if probe_name(d, n)]
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise ModelLoadError(
            f"{d}: expected one Whisper model ({{name}}-encoder.onnx, {{name}}-decoder.onnx, "
            f"{{name}}-tokens.txt); found {found}"
        )
    return names[0]


# --- tokens -----------------------------------------------------------------------------------
class WhisperTokens:
    """sherpa-onnx's Whisper ``tokens.txt``: each id's bytes, base64-encoded.
    Ids not listed (special and timestamp tokens) have no text."""

    def __init__(self, pieces: Mapping[int, bytes]) -> None:
        self.pieces = dict(pieces)

    @classmethod
    def from_file(cls, path: Path) -> WhisperTokens:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path}: cannot read tokens ({exc})") from exc
        pieces: dict[int, bytes] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise ModelLoadError(f"{path}:{lineno}: expected 'base64 id', got {line!r}")
            try:  # "=": the empty token of the multilingual vocabulary
                pieces[int(parts[1])] = (
                    b"" if parts[0] == "=" else base64.b64decode(parts[0], validate=True)
                )
            except binascii.Error:
                raise ModelLoadError(f"{path}:{lineno}: {parts[0]!r} is not base64") from None
        if not pieces:
            raise ModelLoadError(f"{path}: no tokens")
        return cls(pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def decode(self, token_ids: Sequence[int]) -> tuple[str, list[str]]:
        """``(text, pieces)``: one piece per id (ids without text give ``""``); a
        character whose bytes span tokens lands in the piece that completes it,
        so the pieces join to the text."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = [decoder.decode(self.pieces.get(t, b"")) for t in token_ids]
        if pieces:
            pieces[-1] += decoder.decode(b"", final=True)
        return "".join(pieces), pieces


# --- the model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WhisperMeta:
    """The encoder metadata sherpa-onnx reads."""

    n_mels: int
    n_text_layer: int
    n_text_ctx: int
    n_text_state: int
    n_vocab: int
    sot: int
    eot: int
    translate: int
    no_timestamps: int
    is_multilingual: bool
    sot_sequence: tuple[int, ...]
    languages: dict[str, int]

    @classmethod
    def read(cls, meta: Mapping[str, str], where: str) -> WhisperMeta:
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise ModelLoadError(f"{where}: not a Whisper encoder: no {', '.join(missing)}")
        multilingual = meta_int(meta, "is_multilingual", where) != 0
        languages: dict[str, int] = {}
        if multilingual:
            ids = meta_ints(meta, "all_language_tokens", where)
            codes = [c for c in meta.get("all_language_codes", "").split(",") if c]
            if len(ids) != len(codes):
                raise ModelLoadError(f"{where}: {len(ids)} language tokens, {len(codes)} codes")
            languages = dict(zip(codes, ids, strict=True))
        sot_sequence = tuple(meta_ints(meta, "sot_sequence", where))
        if not sot_sequence or (multilingual and len(sot_sequence) < 3):
            raise ModelLoadError(f"{where}: sot_sequence {sot_sequence} is too short")
        return cls(
            n_mels=meta_int(meta, "n_mels", where),
            n_text_layer=meta_int(meta, "n_text_layer", where),
            n_text_ctx=meta_int(meta, "n_text_ctx", where),
            n_text_state=meta_int(meta, "n_text_state", where),
            n_vocab=meta_int(meta, "n_vocab", where),
            sot=meta_int(meta, "sot", where),
            eot=meta_int(meta, "eot", where),
            translate=meta_int(meta, "translate", where),
            no_timestamps=meta_int(meta, "no_timestamps", where),
            is_multilingual=multilingual,
            sot_sequence=sot_sequence,
            languages=languages,
        )


class WhisperModel:
    """The encoder and decoder of one directory, and sherpa-onnx's recipe for
    a segment (features, prompt, greedy search)."""

    family: ClassVar[str] = "whisper"

    def __init__(
        self,
        encoder: Session,
        decoder: Session,
        *,
        framing: Framing = "sherpa",
        tail_padding_frames: int = TAIL_PADDING_FRAMES,
    ) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.meta = WhisperMeta.read(encoder.metadata, encoder.path)
        if framing not in ("sherpa", "openai"):
            raise ConfigError(f"framing must be 'sherpa' or 'openai', got {framing!r}")
        if tail_padding_frames < 0:
            raise ConfigError(f"tail_padding_frames must be >= 0, got {tail_padding_frames}")
        self.framing: Framing = framing
        self.tail_padding_frames = tail_padding_frames
        names = [t.name for t in encoder.inputs]
        if names != ["mel"] or [t.name for t in encoder.outputs][:2] != [
            "n_layer_cross_k",
            "n_layer_cross_v",
        ]:
            raise ModelLoadError(
                f"{encoder.path}: not a sherpa-onnx Whisper encoder (inputs {names})"
            )
        have_in = [t.name for t in decoder.inputs]
        have_out = [t.name for t in decoder.outputs]
        if have_in != list(_DECODER_INPUTS) or have_out[:3] != list(_DECODER_OUTPUTS):
            raise ModelLoadError(
                f"{decoder.path}: not a sherpa-onnx Whisper decoder "
                f"(inputs {have_in}, outputs {have_out})"
            )
        mel = encoder.inputs[0].shape
        if len(mel) != 3 or mel[1] not in (None, self.meta.n_mels):
            raise ModelLoadError(
                f"{encoder.path}: mel is {mel}, metadata n_mels {self.meta.n_mels}"
            )

    @property
    def feature_dim(self) -> int:
        return self.meta.n_mels

    def graphs(self) -> dict[str, Session]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    # --- one segment ------------------------------------------------------------------------
    def features(self, samples: FloatArray) -> tuple[FloatArray, int]:
        """16 kHz samples → mel (1, n_mels, T) for the encoder, and the number
        of speech frames in it (the rest is padding)."""
        n_mels = self.meta.n_mels
        if self.framing == "openai":
            # faster-whisper's window (OpenAI's but for the padding it normalises
            # over): 160 zero samples appended, the speech frames normalised with
            # that last frame, then zero frames up to 3000
            speech = samples[: MAX_FRAMES * _HOP]
            padded = np.concatenate([speech, np.zeros(_HOP, np.float32)])
            n = speech.size // _HOP
            mel = np.zeros((1, n_mels, MAX_FRAMES), np.float32)
            mel[0, :, :n] = normalize(power_mel(padded, n_mels, "openai"))[:n].T
            return mel, n
        power = power_mel(samples, n_mels, "sherpa")
        n = power.shape[0]
        if n > MAX_SPEECH_FRAMES:
            log.warning(
                "whisper: a %.1f s segment; only its first %.1f s are decoded",
                n / 100,
                MAX_SPEECH_FRAMES / 100,
            )
            n = MAX_SPEECH_FRAMES
        width = min(n + self.tail_padding_frames, MAX_FRAMES)
        mel = np.zeros((1, n_mels, width), np.float32)
        mel[0, :, :n] = normalize(power[:n]).T
        return mel, n

    def encode(self, mel: FloatArray) -> tuple[FloatArray, FloatArray]:
        """mel (N, n_mels, T) → cross-attention keys and values (L, N, T/2, d)."""
        k, v = self.encoder.run({"mel": mel}, ["n_layer_cross_k", "n_layer_cross_v"])
        return np.asarray(k, np.float32), np.asarray(v, np.float32)

    def _step(
        self,
        tokens: list[int],
        caches: tuple[FloatArray, FloatArray],
        cross: tuple[FloatArray, FloatArray],
        offset: int,
    ) -> tuple[FloatArray, tuple[FloatArray, FloatArray]]:
        """The last token's logits (n_vocab,) and the updated self-attention caches."""
        logits, k, v = self.decoder.run(
            {
                "tokens": np.array([tokens], dtype=np.int64),
                "in_n_layer_self_k_cache": caches[0],
                "in_n_layer_self_v_cache": caches[1],
                "n_layer_cross_k": cross[0],
                "n_layer_cross_v": cross[1],
                "offset": np.array([offset], dtype=np.int64),
            },
            list(_DECODER_OUTPUTS),
        )
        last = np.asarray(logits, np.float32)[0, -1]
        return last, (np.asarray(k, np.float32), np.asarray(v, np.float32))

    def _empty_caches(self) -> tuple[FloatArray, FloatArray]:
        m = self.meta
        shape = (m.n_text_layer, 1, m.n_text_ctx, m.n_text_state)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def detect_language(self, cross: tuple[FloatArray, FloatArray]) -> int:
        """The language token scored highest after ``sot`` (multilingual models)."""
        logits, _ = self._step([self.meta.sot], self._empty_caches(), cross, 0)
        ids = list(self.meta.languages.values())
        return ids[int(np.argmax(logits[ids]))]

    def prompt(self, cross: tuple[FloatArray, FloatArray], language: str, task: str) -> list[int]:
        """``sot_sequence`` with the language and task put in, then ``no_timestamps``."""
        tokens = list(self.meta.sot_sequence)
        if self.meta.is_multilingual:
            if language:
                if language not in self.meta.languages:
                    raise ConfigError(f"unknown language {language!r} for this Whisper model")
                tokens[1] = self.meta.languages[language]
            else:
                tokens[1] = self.detect_language(cross)
            if task == "translate":
                tokens[2] = self.meta.translate
        return [*tokens, self.meta.no_timestamps]

    def greedy(
        self,
        cross: tuple[FloatArray, FloatArray],
        num_frames: int,
        language: str,
        task: str,
        timestamps: bool = False,
    ) -> list[int]:
        """sherpa-onnx's greedy search over the encoder's keys and values;
        ``timestamps``: with Whisper's timestamp tokens (the prompt without
        ``no_timestamps``, each step's logits under :func:`timestamp_rules`)."""
        m = self.meta
        prompt = self.prompt(cross, language, task)
        if timestamps:
            prompt = prompt[:-1]
        logits, caches = self._step(prompt, self._empty_caches(), cross, 0)
        out: list[int] = []

        def pick(logits: FloatArray) -> int:
            if timestamps:
                timestamp_rules(logits, out, m, first=not out)
            return int(np.argmax(logits))

        best = pick(logits)
        offset = len(prompt)
        budget = min(int(num_frames / 100.0 * TOKENS_PER_SECOND), m.n_text_ctx // 2)
        for _ in range(budget):
            if best == m.eot:
                break
            out.append(best)
            logits, caches = self._step([best], caches, cross, offset)
            offset += 1
            if offset >= m.n_text_ctx - 1:
                break
            best = pick(logits)
        return out

    def decode(
        self,
        samples: FloatArray,
        language: str = "",
        task: str = "transcribe",
        timestamps: bool = False,
    ) -> list[int]:
        """One segment's token ids (special tokens included, as the search gives them)."""
        mel, frames = self.features(samples)
        if frames <= 0:
            return []
        return self.greedy(self.encode(mel), frames, language, task, timestamps)


MAX_INITIAL_TIMESTAMP = 50
"""The first timestamp token of a window is at most <|1.00|> (20 ms steps)."""
TIMESTAMP_S = 0.02


def timestamp_rules(
    logits: FloatArray, sampled: Sequence[int], m: WhisperMeta, first: bool
) -> None:
    """Whisper's rules for timestamp tokens, applied to one step's logits in
    place: ``no_timestamps`` never; a window starts with a timestamp (at most
    <|1.00|>); timestamps come in pairs (after text, a timestamp or the end;
    after a pair, text) and never go back; and when the timestamps together
    are likelier than the likeliest text token, a timestamp."""
    begin = m.no_timestamps + 1
    logits[m.no_timestamps] = -np.inf
    last_ts = len(sampled) >= 1 and sampled[-1] >= begin
    penultimate_ts = len(sampled) < 2 or sampled[-2] >= begin
    if last_ts:
        if penultimate_ts:
            logits[begin:] = -np.inf  # a pair just closed: text (or the end) follows
        else:
            logits[: m.eot] = -np.inf  # text then one timestamp: its pair, or the end
    stamps = [t for t in sampled if t >= begin]
    if stamps:
        # never back in time; after a closed pair, not the same time again
        floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
        logits[begin:floor] = -np.inf
    if first:
        logits[:begin] = -np.inf
        logits[begin + MAX_INITIAL_TIMESTAMP + 1 :] = -np.inf
    # log-probabilities: all timestamps together against the best text token
    shifted = logits - np.max(logits)
    logprobs = shifted - np.log(np.sum(np.exp(shifted)))
    with np.errstate(divide="ignore"):
        timestamp_mass = np.logaddexp.reduce(logprobs[begin:])
    if timestamp_mass > np.max(logprobs[:begin]):
        logits[:begin] = -np.inf


def timestamp_segments(
    ids: Sequence[int], m: WhisperMeta
) -> list[tuple[float, float | None, list[int]]]:
    """(start s, end s or None when unclosed, text token ids) per <|t0|> … <|t1|> span."""
    begin = m.no_timestamps + 1
    out: list[tuple[float, float | None, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for t in ids:
        if t < begin:
            if t != m.eot:
                text.append(t)
            continue
        at = (t - begin) * TIMESTAMP_S
        if start is None:
            start, text = at, []
        else:
            if text:
                out.append((start, at, text))
            start, text = None, []
    if start is not None and text:
        out.append((start, None, text))
    return out


# --- the recognizer ------------------------------------------------------------------------------
class WhisperRecognizer(TdtRecognizer):
    """:class:`~asrserve.families.nemo_tdt.TdtRecognizer`'s streams, VAD and
    results over a :class:`WhisperModel`: each VAD segment is decoded on its
    own, as sherpa-onnx decodes a Whisper stream.

    The transducer parts of the base class (its joint and TDT search) are
    replaced by :meth:`_recognize`; ``model`` is the Whisper model."""

    model: WhisperModel  # type: ignore[assignment]  # see the class docstring

    def __init__(
        self,
        model: WhisperModel,
        tokens: WhisperTokens,
        vad: SileroVad,
        *,
        language: str = "",
        task: str = "transcribe",
        timestamps: bool = False,
        vad_config: VadConfig | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> None:
        if task not in _TASKS:
            raise ConfigError(f"task must be one of {', '.join(_TASKS)}, got {task!r}")
        self.model = model
        self.check_language(language)
        if not model.meta.is_multilingual and task == "translate":
            raise ConfigError("task 'translate': this Whisper model is English-only")
        self.tokens = tokens
        self.language = language
        self.task = task
        self.timestamps = timestamps
        self.vad = vad
        cfg = (vad_config or WHISPER_VAD).validate()
        if cfg.max_segment_s > MAX_SEGMENT_S:
            cfg = replace(cfg, max_segment_s=MAX_SEGMENT_S).validate()
        self.vad_config = cfg
        self.decoding = (decoding or DecodingConfig()).validate()
        self._check_decoding(self.decoding)
        self.endpoint = (endpoint or EndpointConfig()).validate()
        self.feature_config = FeatureConfig(
            sample_rate=16000, num_bins=model.feature_dim, frame_shift_ms=10.0
        ).validate()
        self.frame_shift_s = _HOP / 16000
        self.output_frame_s = 2 * self.frame_shift_s
        self.tail_padding_s = 0.0
        self.isolate_batches = False

    def create_stream(
        self,
        hotwords: Sequence[str] | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> TdtStream:
        cfg = (decoding or self.decoding).validate()
        if hotword_phrases(hotwords or ()) or cfg.hotwords:
            raise ConfigError("hotwords are not supported by Whisper models (greedy search only)")
        self._check_decoding(cfg)
        self.check_language(cfg.language)
        detector = VoiceActivityDetector(self.vad, self.vad_config)
        return TdtStream(
            detector, self.feature_config.sample_rate, cfg, (endpoint or self.endpoint).validate()
        )

    def check_language(self, language: str) -> None:
        """A language the model can be prompted with (``""``: its default)."""
        meta = self.model.meta
        if meta.is_multilingual:
            if language and language not in meta.languages:
                raise ConfigError(
                    f"unknown language {language!r}; the model knows "
                    f"{', '.join(sorted(meta.languages))}"
                )
        elif language not in ("", "en"):
            raise ConfigError(f"language {language!r}: this Whisper model is English-only")

    def check_hotwords(self, phrases: Sequence[str], default_score: float) -> int:
        if phrases:
            raise ConfigError("hotwords are not supported by Whisper models (greedy search only)")
        return 0

    @staticmethod
    def _check_decoding(cfg: DecodingConfig) -> None:
        if normalize_method(cfg.method) != "greedy":
            raise ConfigError("Whisper models support greedy decoding only")

    def _recognize(
        self, audio: Sequence[FloatArray], configs: Sequence[DecodingConfig]
    ) -> list[tuple[list[int], list[int]]]:
        """Each segment's text token ids (special tokens left out); with
        timestamp tokens, each token's 20 ms frame in its segment (an even share
        of its phrase between two timestamps), else no frames."""
        out: list[tuple[list[int], list[int]]] = []
        for x, cfg in zip(audio, configs, strict=True):
            language = cfg.language or self.language
            ids = self.model.decode(x, language, self.task, self.timestamps)
            if not self.timestamps:
                out.append(([t for t in ids if t in self.tokens.pieces], []))
                continue
            toks: list[int] = []
            frames: list[int] = []
            end_s = x.size / self.feature_config.sample_rate
            for begin, end, phrase in timestamp_segments(ids, self.model.meta):
                text = [t for t in phrase if t in self.tokens.pieces]
                stop = min(end_s, end if end is not None else end_s)
                step = max(0.0, stop - begin) / max(1, len(text))
                toks += text
                frames += [round((begin + step * i) / TIMESTAMP_S) for i in range(len(text))]
            out.append((toks, frames))
        return out

    def _segment_result(
        self, segments: Sequence[_Decoded], segment: int, start: float, is_final: bool
    ) -> Result:
        texts: list[str] = []
        pieces: list[str] = []
        ids: list[int] = []
        stamps: list[float] = []
        rate = self.feature_config.sample_rate
        for d in segments:
            text, p = self.tokens.decode(d.tokens)
            if text.strip():
                texts.append(text.strip())
            pieces += p
            ids += d.tokens
            begin, span = d.start / rate, (d.end - d.start) / rate
            if len(d.frames) == len(d.tokens):  # from timestamp tokens
                stamps += [round(begin + f * TIMESTAMP_S, 3) for f in d.frames]
                continue
            # no token times without timestamp tokens: an even share of the segment each
            n = len(d.tokens)
            stamps += [round(begin + span * i / n, 3) for i in range(n)]
        return Result(
            text=" ".join(texts),
            tokens=pieces,
            token_ids=ids,
            timestamps=stamps,
            segment=segment,
            start_time=round(start, 3),
            is_final=is_final,
        )


# --- loading ----------------------------------------------------------------------------------
def load_model(
    model_dir: Path,
    precision: str = "auto",
    backend: BackendOptions | None = None,
    *,
    framing: Framing = "sherpa",
) -> tuple[WhisperModel, WhisperTokens]:
    d = Path(model_dir)
    name = model_name(d)
    if precision in ("int8-dynamic", "int8-static"):
        precision = "int8"
    if precision not in ("auto", "int8", "fp16", "fp32"):
        raise ModelLoadError(f"unknown precision {precision!r}")
    opts = backend or BackendOptions()
    model = WhisperModel(
        open_session(pick_file(d, f"{name}-encoder", precision), opts),
        open_session(pick_file(d, f"{name}-decoder", precision), opts),
        framing=framing,
    )
    tokens = WhisperTokens.from_file(d / f"{name}-tokens.txt")
    if max(tokens.pieces) >= model.meta.n_vocab:
        raise ModelLoadError(f"{d}: {name}-tokens.txt lists ids past n_vocab {model.meta.n_vocab}")
    return model, tokens


def load_recognizer(
    model_dir: Path,
    options: LoadOptions,
    *,
    language: str | None = None,
    task: str | None = None,
    framing: Framing = "sherpa",
    vad: VadConfig | None = None,
    timestamps: bool | None = None,
) -> WhisperRecognizer:
    """Load a sherpa-onnx Whisper directory behind Silero VAD.

    ``language``: a code (``en``, ``de`` …) for multilingual models, ``""`` to
    detect it per segment; ``task``: ``transcribe`` or ``translate`` (to English);
    both default to ``options.language``/``options.task`` (``asrserve
    --language/--task``), else detection and ``transcribe``;
    ``framing``: the feature framing (``sherpa``, or ``openai`` with 30 s
    windows as OpenAI and faster-whisper compute them); ``vad``: segmentation
    options (default :data:`WHISPER_VAD`; segments are cut at 29 s at most);
    ``timestamps``: decode with Whisper's timestamp tokens (default
    ``options.timestamps``, else without, as sherpa-onnx by default)."""
    if language is None:
        language = options.language or ""
    if task is None:
        task = options.task or "transcribe"
    if timestamps is None:
        timestamps = bool(options.timestamps)
    d = Path(model_dir)
    model, tokens = load_model(d, options.precision, options.backend, framing=framing)
    vad_cfg = (vad or WHISPER_VAD).validate()
    silero = SileroVad(find_vad_model(vad_cfg.model, d), options.backend)
    log.debug("loaded %s (%s)", d, Path(model.encoder.path).name)
    return WhisperRecognizer(
        model,
        tokens,
        silero,
        language=language,
        task=task,
        timestamps=timestamps,
        vad_config=vad_cfg,
        decoding=options.decoding,
        endpoint=options.endpoint,
    )
