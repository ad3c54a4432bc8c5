"""The recognizer: turns ready feature chunks of many streams into results.

``decode_streams`` is the one batching operation: gather one chunk per
ready stream → stack caches → one encoder run → search per stream →
unstack caches.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.audio import load_audio, to_float32
from asrserve.config import (
    DecodingConfig,
    EndpointConfig,
    FeatureConfig,
    check_score,
    frames_to_seconds_f32,
    normalize_method,
)
from asrserve.core.built_result import NO_PARTS, BuiltResult, Parts
from asrserve.core.events import Result
from asrserve.core.segments import Segment, segments
from asrserve.core.stream import FeatureExtractor, FeatureSettings, Stream
from asrserve.decoding.hotwords import ContextGraph, hotword_phrases
from asrserve.decoding.search import Best, Search
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import ConfigError, ModelLoadError
from asrserve.families.base import EncoderModel
from asrserve.features.kaldi_fbank import KaldiFbank

log = logging.getLogger("asrserve")

"""Builds the search for one decoding configuration (a family's own search)."""
_DEFAULT_TAIL_PADDING_S = 0.66
_GRAPH_CACHE = 16  # hotword graphs kept for reuse (a server checks, then its decode thread builds)


class _AudioInput(Protocol):
    def accept_waveform(self, sample_rate: int, samples: npt.ArrayLike) -> None: ...

    def input_finished(self) -> None: ...


def load_input(
    audio: str | Path | npt.ArrayLike, sample_rate: int | None, rate: int
) -> tuple[npt.NDArray[np.float32], int]:
    """What ``transcribe`` reads: a file (decoded at the model's ``rate``) or
    an array at ``sample_rate``; the samples as float32 and their rate."""
    if isinstance(audio, str | Path):
        return load_audio(audio, rate), rate
    if sample_rate is None:
        raise ConfigError("sample_rate is required when transcribing an array")
    return to_float32(np.asarray(audio)), sample_rate


def feed_in_chunks(
    stream: _AudioInput,
    samples: npt.NDArray[np.float32],
    rate: int,
    chunk_seconds: float,
    progress: Callable[[float, float], None] | None,
) -> Iterator[None]:
    """Feed ``samples`` to ``stream`` ``chunk_seconds`` at a time, yielding after
    each chunk (the caller decodes there) and then calling ``progress(done_s,
    total_s)``; the stream's input is finished when the iteration ends."""
    step = max(1, int(chunk_seconds * rate))
    total = samples.size / rate
    for begin in range(0, samples.size, step):
        stream.accept_waveform(rate, samples[begin : begin + step])
        yield
        if progress is not None:
            progress(min(total, (begin + step) / rate), total)
    stream.input_finished()


def audio_pieces(
    samples: npt.NDArray[np.float32],
    rate: int,
    chunk_seconds: float,
    progress: Callable[[float, float], None] | None,
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``(rate, samples)`` pieces of ``chunk_seconds``, calling ``progress(done_s,
    total_s)`` once each piece is consumed (what :func:`asrserve.core.segments.segments` feeds)."""
    step = max(1, int(chunk_seconds * rate))
    total = samples.size / rate
    for begin in range(0, samples.size, step):
        yield rate, samples[begin : begin + step]
        if progress is not None:
            progress(min(total, (begin + step) / rate), total)


class Recognizer:
    """Shared by all streams of one model.

    Threads may call :meth:`decode_streams` concurrently on disjoint sets of
    streams (the model sessions and the decoder cache are thread-safe); a
    given stream is used by one thread at a time.

    The model brings its own search (``make_search``); kaldi fbank features
    are the default, other families pass ``feature_factory`` (a new
    extractor per stream, with ``features`` its settings).
    """

    def __init__(
        self,
        model: EncoderModel,
        symbols: SymbolTable,
        *,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
        features: FeatureSettings | None = None,
        bpe_model: str | Path | None = None,
        tail_padding_s: float | None = None,
        feature_factory: Callable[[], FeatureExtractor] | None = None,
    ) -> None:
        self.model = model
        self.symbols = symbols
        self._isolate_batches = False
        self.decoding = (decoding or DecodingConfig()).validate()
        self.endpoint = (endpoint or EndpointConfig()).validate()
        if feature_factory is None:
            fbank = features if isinstance(features, FeatureConfig) else None
            if features is not None and fbank is None:
                raise ConfigError("features other than kaldi fbank need a feature_factory")
            fbank_config = (fbank or FeatureConfig(num_bins=model.feature_dim)).validate()
            self.feature_config: FeatureSettings = fbank_config
            self._new_features: Callable[[], FeatureExtractor] = lambda: KaldiFbank(fbank_config)
        else:
            if features is None:
                raise ConfigError("a feature_factory comes with its features settings")
            self.feature_config = features
            self._new_features = feature_factory
        self.bpe_model = Path(bpe_model) if bpe_model else None
        if len(symbols) < model.vocab_size:
            # a token the table lacks would fail only when the model emits it;
            # more entries are fine (sherpa-ncnn's tables end with '#0 <vocab>')
            raise ModelLoadError(
                f"the token table has {len(symbols)} entries but the model's vocabulary "
                f"has {model.vocab_size}: tokens.txt does not belong to this model"
            )
        frame_s = self.feature_config.frame_shift_ms / 1000.0
        min_pad = (model.chunk_size + 2) * frame_s
        self.tail_padding_s = (
            max(_DEFAULT_TAIL_PADDING_S, min_pad) if tail_padding_s is None else tail_padding_s
        )
        self.frame_shift_s = frame_s
        self.output_frame_s = frame_s * model.subsampling_factor
        self._searches: dict[tuple[Any, ...], Search] = {}
        self._sp: Any = None
        self._graphs: OrderedDict[tuple[tuple[str, ...], float], ContextGraph] = OrderedDict()
        self._graphs_lock = threading.Lock()

    # --- streams ----------------------------------------------------------
    def create_stream(
        self,
        hotwords: str | Sequence[str] | None = None,
        decoding: DecodingConfig | None = None,
        endpoint: EndpointConfig | None = None,
    ) -> Stream:
        """A new stream; ``hotwords`` are phrases (optionally ``"PHRASE :score"``)
        boosted by modified beam search: a list, or one string of phrases
        separated by ``/`` or newlines as sherpa-onnx takes them; ``decoding``
        and ``endpoint`` override the recognizer's defaults for this stream."""
        cfg = (decoding or self.decoding).validate()
        phrases = hotword_phrases(hotwords if hotwords is not None else cfg.hotwords)
        search = self._search(cfg)
        graph = self.hotword_graph(phrases, cfg.hotwords_score) if phrases else None
        if graph is not None and not search.supports_hotwords:
            raise ConfigError("hotwords need decoding method 'modified_beam' (beam search)")
        state = search.initial(graph)
        stream = Stream(
            self._new_features(),
            self.model.init_state(),
            state,
            cfg,
            self.tail_padding_s,
        )
        stream.endpoint = (endpoint or self.endpoint).validate()
        stream.search_cache = (cfg, search)
        return stream

    def is_ready(self, stream: Stream) -> bool:
        chunk = self.model.chunk_size
        return stream.num_processed_frames + chunk < stream.features.num_frames_ready

    def backlog_s(self, stream: Stream) -> float:
        """Seconds of features the stream has that are not decoded yet."""
        unprocessed = stream.features.num_frames_ready - stream.num_processed_frames
        return max(0, unprocessed) * self.frame_shift_s

    def decoded_s(self, stream: Stream) -> float:
        """Seconds of audio one :meth:`decode_streams` call advances a stream (a chunk)."""
        return self.model.chunk_shift * self.frame_shift_s

    @property
    def isolate_batches(self) -> bool:
        """Keep every stream's encoder output what it is alone where the graph
        quantizes activations per batch (dynamic int8), so no client's audio
        can change another's transcript. Setting it swaps such an encoder and
        greedy search's joiner for their per-row rewrites (one batched call;
        the encoder about a third slower per call on the 80M LSTM); where none
        can be made, the encoder runs stream by stream (a server option; costs
        throughput)."""
        return self._isolate_batches

    @isolate_batches.setter
    def isolate_batches(self, value: bool) -> None:
        self._isolate_batches = value
        isolate_rows = getattr(self.model, "isolate_rows", None)
        if isolate_rows is not None:
            isolate_rows(value)

    @property
    def batch_dependent(self) -> bool:
        """Whether a stream's encoder output can depend on its batch mates (int8
        graphs with per-tensor dynamic activation scales); see ``isolate_batches``."""
        return self.model.graphs()["encoder"].batch_dependent

    def decode_streams(self, streams: Iterable[Stream]) -> int:
        """Run one chunk for every ready stream in a single encoder call.

        Returns how many streams were advanced.
        """
        ready = [s for s in streams if self.is_ready(s)]
        if not ready:
            return 0
        m = self.model
        size, shift = m.chunk_size, m.chunk_shift
        if len(ready) == 1:
            one = ready[0]
            feats = one.features.get_frames(one.num_processed_frames, size)[None]
        else:
            feats = np.stack([s.features.get_frames(s.num_processed_frames, size) for s in ready])
        if self.isolate_batches and len(ready) > 1 and self.batch_dependent:
            # one encoder run per stream: no stream's audio can touch another's result
            runs = [
                m.run_encoder(feats[i : i + 1], m.stack_states([s.encoder_state]))
                for i, s in enumerate(ready)
            ]
            encoder_out = np.concatenate([out for out, _ in runs])
            per_stream = [m.unstack_states(st)[0] for _, st in runs]
        else:
            states = m.stack_states([s.encoder_state for s in ready])
            encoder_out, next_states = m.run_encoder(feats, states)
            per_stream = m.unstack_states(next_states)
        for s, st in zip(ready, per_stream, strict=True):
            s.encoder_state = st
            s.num_processed_frames += shift
            s.features.discard_before(s.num_processed_frames)
            s.decoded_chunks += 1
        searches = [self._stream_search(s) for s in ready]
        first = searches[0]
        if all(x is first for x in searches):
            first.decode(encoder_out, [s.search_state for s in ready])
            return len(ready)
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(searches):
            groups.setdefault(id(x), []).append(i)
        for idx in groups.values():
            searches[idx[0]].decode(encoder_out[idx], [ready[i].search_state for i in idx])
        return len(ready)

    def decode_stream(self, stream: Stream) -> None:
        """Decode one chunk of one stream, when one is ready (as sherpa-onnx's
        ``decode_stream`` does): ``while rec.is_ready(s): rec.decode_stream(s)``
        with an endpoint check after each call sees every chunk's endpoint."""
        self.decode_streams([stream])

    # --- results and endpoints -------------------------------------------
    def _best(self, stream: Stream) -> Best:
        """The search's best hypothesis, remembered until the stream's next
        decoded chunk or a new search state (a reset)."""
        key = (stream.decoded_chunks, id(stream.search_state))
        cached = stream.best_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        best = self._stream_search(stream).tokens(stream.search_state)
        stream.best_cache = (key, best)
        return best

    def token_ids(self, stream: Stream) -> list[int]:
        """Token ids of the current segment's best hypothesis (cheap: no text)."""
        return list(self._best(stream).ids)

    def get_result(self, stream: Stream, is_final: bool = False) -> Result:
        """The current segment's result. Remembered per stream: while the best
        hypothesis' tokens, segment and trailing blanks stay the same, the same
        result comes back; when tokens were only appended, only their text is built."""
        best = self._best(stream)
        built = stream.result_cache
        start_frame = stream.segment_start_frame
        if (
            built is None
            or built.segment != stream.segment
            or built.start_frame != start_frame
            or (built.best is not best and not built.extends(best))
        ):
            built = BuiltResult(stream.segment, start_frame)
        if built.best is not best:
            first = len(built.ids)
            new = NO_PARTS
            if len(best.ids) > first:
                new = self._result_parts(best, start_frame, first)
            built.take(best, new)
        stream.result_cache = built
        r = built.result
        trailing_blanks = best.trailing_blanks
        if r is None or r.num_trailing_blanks != trailing_blanks or r.is_final != is_final:
            r = built.result = Result(
                text=built.text.strip(),
                tokens=built.tokens,
                token_ids=built.token_ids,
                timestamps=built.timestamps,
                segment=stream.segment,
                start_time=round(start_frame * self.frame_shift_s, 3),
                is_final=is_final,
                num_trailing_blanks=trailing_blanks,
                ys_probs=built.ys_probs if best.log_probs else [],
            )
        return r

    def _result_parts(self, best: Best, start_frame: int, first: int) -> Parts:
        """Pieces, ids, timestamps and confidences of ``best``'s tokens from
        index ``first`` on, ``<unk>`` left out."""
        ids, frames, _, log_probs = best
        start = start_frame * self.frame_shift_s
        kept = [i for i in range(first, len(ids)) if self.symbols[ids[i]] != "<unk>"]
        return Parts(
            [self.symbols.piece(ids[i]) for i in kept],
            [ids[i] for i in kept],
            [round(start + frames[i] * self.output_frame_s, 3) for i in kept],
            [log_probs[i] for i in kept] if log_probs else [],
        )

    def is_endpoint(self, stream: Stream) -> bool:
        rules = stream.endpoint or self.endpoint
        if not rules.enabled:
            return False
        trailing_blanks = self._best(stream).trailing_blanks
        frames = stream.num_processed_frames - stream.segment_start_frame
        # float32 products, as sherpa-onnx computes them (see EndpointRule.activated)
        shift = self.frame_shift_s
        trailing = frames_to_seconds_f32(trailing_blanks * self.model.subsampling_factor, shift)
        return rules.is_endpoint(trailing, frames_to_seconds_f32(frames, shift))

    def reset(self, stream: Stream) -> None:
        """Start a new segment: search restarts, the audio clock goes on, and
        so does the encoder cache unless the family restarts it at endpoints
        (``reset_encoder_on_endpoint``, as sherpa-onnx does for NeMo models)."""
        if self._best(stream).ids:
            stream.segment += 1
        search = self._stream_search(stream)
        stream.search_state = search.reset(stream.search_state)
        stream.best_cache = None
        stream.segment_start_frame = stream.num_processed_frames
        if self.model.reset_encoder_on_endpoint:
            stream.encoder_state = self.model.init_state()

    # --- offline convenience ---------------------------------------------
    def transcribe(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        hotwords: Sequence[str] | None = None,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Result:
        """Transcribe a file or an array through the streaming path.

        ``progress(done_s, total_s)`` is called as audio is consumed.
        """
        samples, rate = load_input(audio, sample_rate, self.feature_config.sample_rate)
        stream = self.create_stream(hotwords=hotwords)
        for _ in feed_in_chunks(stream, samples, rate, chunk_seconds, progress):
            while self.decode_streams([stream]):
                pass
        while self.decode_streams([stream]):
            pass
        return self.get_result(stream, is_final=True)

    def transcribe_segments(
        self,
        audio: str | Path | npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        hotwords: Sequence[str] | None = None,
        endpoint: EndpointConfig | None = None,
        chunk_seconds: float = 10.0,
        progress: Callable[[float, float], None] | None = None,
    ) -> Iterator[Segment]:
        """The audio's segments, lazily, each as soon as its endpoint is
        decoded (``endpoint``: the rules, default the recognizer's; with
        endpointing off, the whole audio is one segment). The same segments as
        every transport gives for the same audio: see :mod:`asrserve.core.segments`."""
        samples, rate = load_input(audio, sample_rate, self.feature_config.sample_rate)
        stream = self.create_stream(hotwords=hotwords, endpoint=endpoint)
        yield from segments(self, stream, audio_pieces(samples, rate, chunk_seconds, progress))

    # --- helpers ------------------------------------------------------------
    @staticmethod
    def _search_key(cfg: DecodingConfig) -> tuple[Any, ...]:
        method = normalize_method(cfg.method)
        if method == "greedy":
            return (method, cfg.blank_penalty, cfg.max_symbols_per_frame, cfg.temperature_scale)
        return (method, cfg.blank_penalty, cfg.beam, cfg.temperature_scale)

    def _stream_search(self, stream: Stream) -> Search:
        """The stream's search, remembered on the stream for its ``decoding``."""
        cached = stream.search_cache
        if cached is not None and cached[0] is stream.decoding:
            return cached[1]
        search = self._search(stream.decoding)
        stream.search_cache = (stream.decoding, search)
        return search

    def _search(self, cfg: DecodingConfig) -> Search:
        key = self._search_key(cfg)
        search = self._searches.get(key)
        if search is None:
            search = self._searches[key] = self.model.make_search(cfg, self.symbols)
        return search

    def encode_hotword(self, phrase: str) -> list[int]:
        """Token ids of a phrase: BPE (``bpe.model``) when the model has one,
        else whitespace-separated pieces looked up in ``tokens.txt``."""
        if self.bpe_model is not None:
            if self._sp is None:
                import sentencepiece as spm

                self._sp = spm.SentencePieceProcessor(model_file=str(self.bpe_model))
            pieces = self._sp.encode(phrase, out_type=str)
        else:
            pieces = phrase.split()
        ids = [self.symbols.get_id(p) for p in pieces]
        missing = [p for p, i in zip(pieces, ids, strict=True) if i is None]
        if missing:
            raise ConfigError(f"hotword {phrase!r}: pieces not in tokens.txt: {missing}")
        return [i for i in ids if i is not None]

    def check_language(self, language: str) -> None:
        """Any: a transducer has the language it was trained on and takes no prompt."""

    def check_hotwords(self, phrases: Sequence[str], default_score: float) -> int:
        """Build the hotword graph of ``phrases`` (or raise :class:`ConfigError`
        naming the first phrase the model cannot spell) and return its number
        of token pieces. The graph is kept for the next :meth:`create_stream`
        with the same phrases, so a server can check a session's hotwords
        before it answers, off its decode thread, without building them twice."""
        phrases = hotword_phrases(phrases)
        return self.hotword_graph(phrases, default_score).num_tokens if phrases else 0

    def hotword_graph(self, phrases: Sequence[str], default_score: float) -> ContextGraph:
        """The context graph of ``phrases`` (the last few are cached; graphs
        are read-only once built, so streams share them)."""
        key = (tuple(phrases), default_score)
        with self._graphs_lock:
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
                return graph
        graph = self._context_graph(phrases, default_score)
        with self._graphs_lock:
            self._graphs[key] = graph
            while len(self._graphs) > _GRAPH_CACHE:
                self._graphs.popitem(last=False)
        return graph

    def _context_graph(self, phrases: Sequence[str], default_score: float) -> ContextGraph:
        token_ids: list[list[int]] = []
        scores: list[float] = []
        for raw in phrases:
            phrase, score = raw.strip(), 0.0
            if " :" in phrase:
                phrase, _, s = phrase.rpartition(" :")
                try:
                    score = check_score(f"hotword {raw!r}: score", float(s))
                except ValueError:
                    raise ConfigError(f"hotword {raw!r}: score {s!r} is not a number") from None
            if phrase.strip():
                token_ids.append(self.encode_hotword(phrase.strip()))
                scores.append(score)
        return ContextGraph(token_ids, default_score, scores)
