"""The family protocol and generic state batching.

A family turns metadata into geometry (chunk size and shift, state tensor
shapes) and runs the three transducer graphs. Its per-stream state is a
list of arrays whose meaning only the family knows; everyone else just
stacks and unstacks them along each tensor's batch axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from asrserve.backends.base import Session
from asrserve.backends.sessions import per_row_twin
from asrserve.config import DecodingConfig, normalize_method
from asrserve.decoding.beam import ModifiedBeamSearch
from asrserve.decoding.decoder_cache import DecoderCache
from asrserve.decoding.greedy import GreedySearch
from asrserve.decoding.search import Search
from asrserve.decoding.tokens import SymbolTable
from asrserve.errors import ModelLoadError

State = list[npt.NDArray[np.generic]]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StateSpec:
    """One encoder cache tensor: its shape for a single stream and batch axis."""

    name: str
    shape: tuple[int, ...]
    batch_axis: int
    dtype: type[np.generic] = np.float32

    def zeros(self) -> npt.NDArray[np.generic]:
        return np.zeros(self.shape, dtype=self.dtype)


def meta_int(meta: Mapping[str, str], key: str, where: str) -> int:
    try:
        return int(meta[key])
    except KeyError:
        raise ModelLoadError(f"{where}: metadata key {key!r} is missing") from None
    except ValueError:
        raise ModelLoadError(f"{where}: metadata {key}={meta[key]!r} is not an integer") from None


def meta_ints(meta: Mapping[str, str], key: str, where: str) -> list[int]:
    try:
        return [int(v) for v in meta[key].split(",") if v.strip()]
    except KeyError:
        raise ModelLoadError(f"{where}: metadata key {key!r} is missing") from None
    except ValueError:
        raise ModelLoadError(
            f"{where}: metadata {key}={meta[key]!r} is not a list of ints"
        ) from None


class EncoderModel(Protocol):
    """What the core needs of any streaming model: chunk geometry, opaque
    per-stream encoder state with batching, and the encoder run. The search
    that consumes ``encoder_out`` is the family's business (see
    :class:`asrserve.core.recognizer.Recognizer`'s ``search_factory``)."""

    family: ClassVar[str]
    """The family's name (``lstm``, ``zipformer2``, ``nemo_sherpa`` ...)."""
    chunk_size: int
    """Feature frames the encoder reads per chunk (including any left context)."""
    chunk_shift: int
    """Feature frames the stream advances per chunk."""
    subsampling_factor: int
    feature_dim: int
    vocab_size: int
    reset_encoder_on_endpoint: bool
    """At an endpoint the stream's encoder state restarts (sherpa-onnx's NeMo
    convention); otherwise it goes on into the next segment."""

    def graphs(self) -> dict[str, Session]:
        """The model's graphs by role (``encoder``, ``decoder``, ``joiner`` ...):
        what the self-check compares and the startup line reports."""
        ...

    def make_search(self, cfg: DecodingConfig, symbols: SymbolTable) -> Search:
        """The family's search for ``cfg`` (greedy or beam), over its decoder
        and joiner; ``symbols``: the token table (ids the search skips)."""
        ...

    def init_state(self) -> State: ...

    def stack_states(self, states: Sequence[State]) -> State: ...

    def unstack_states(self, batched: State) -> list[State]: ...

    def run_encoder(self, features: FloatArray, states: State) -> tuple[FloatArray, State]:
        """``features`` (N, chunk_size, feature_dim) → encoder_out (N, T', D), next states."""
        ...


class BatchedStates:
    """Per-stream states as lists of arrays described by ``state_specs``,
    stacked and split along each tensor's batch axis."""

    state_specs: list[StateSpec]
    reset_encoder_on_endpoint: bool = False

    def init_state(self) -> State:
        return [s.zeros() for s in self.state_specs]

    def stack_states(self, states: Sequence[State]) -> State:
        if len(states) == 1:
            return list(states[0])
        return [
            np.concatenate([s[i] for s in states], axis=spec.batch_axis)
            for i, spec in enumerate(self.state_specs)
        ]

    def unstack_states(self, batched: State) -> list[State]:
        """Each stream's own compact copy of its rows: a view would keep the
        whole batch's arrays alive for as long as any of its streams lives."""
        n = batched[0].shape[self.state_specs[0].batch_axis] if batched else 1
        if n == 1:
            return [list(batched)]
        out: list[State] = [[] for _ in range(n)]
        for t, spec in zip(batched, self.state_specs, strict=True):
            index: list[slice] = [slice(None)] * t.ndim
            for i in range(n):
                index[spec.batch_axis] = slice(i, i + 1)
                out[i].append(t[tuple(index)].copy())
        return out


class TransducerModel(BatchedStates):
    """Base of every transducer family.

    Call order per chunk: ``stack_states`` → ``run_encoder`` → search
    (``run_decoder`` / ``run_joiner``) → ``unstack_states``.
    Subclasses set the geometry and ``state_specs`` in ``__init__``.
    """

    family: ClassVar[str] = ""
    subsampling_factor: int = 4
    blank_id: int = 0
    initial_context_fill: int = -1
    """Id padding the decoder context of a fresh hypothesis (sherpa-onnx: -1)."""
    ignored_token_ids: frozenset[int] | None = None
    """Ids the search treats like blank; ``None``: blank and ``<unk>`` of tokens.txt."""
    reset_keeps_context: bool = True
    """After an endpoint the decoder context goes on from the last tokens
    (sherpa-onnx); ``False``: it restarts, only the first decoder output
    carries over (sherpa-ncnn)."""
    _decoder_cache: DecoderCache | None = None  # made on first use (decoder_cache)
    # per-row twins of dynamic int8 graphs (None where there are none, as for
    # every ncnn graph): the decoder cache runs all new contexts in one call,
    # greedy search's joiner gives each stream its own rows while isolate_rows
    # is on, and beam search quantizes each stream's paths as one batch (as
    # sherpa-onnx runs a stream), all streams in one call
    decoder_rows: Session | None = None
    joiner_rows: Session | None = None
    joiner_groups: Session | None = None
    _rows_alone = False  # see isolate_rows
    _shared_encoder: Session | None = None  # the original, while isolate_rows swapped it
    joiner_per_frame: bool = False
    """Beam search calls :meth:`run_joiner_frame` once per stream and frame
    (the reference's call shape) instead of one joiner run over all streams."""

    def __init__(self, encoder: Session, decoder: Session, joiner: Session) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.joiner = joiner
        self.decoder_rows = per_row_twin(decoder)
        self.joiner_rows = per_row_twin(joiner)
        self.joiner_groups = per_row_twin(joiner, grouped=True)
        where = f"{decoder.path}"
        self.context_size = meta_int(decoder.metadata, "context_size", where)
        self.vocab_size = meta_int(decoder.metadata, "vocab_size", where)
        self.feature_dim = 80
        self.chunk_size = 0
        self.chunk_shift = 0
        self.state_specs: list[StateSpec] = []
        self._x_name = encoder.inputs[0].name
        self._state_names = [i.name for i in encoder.inputs[1:]]
        self._y_name = decoder.inputs[0].name
        if len(joiner.inputs) != 2:
            raise ModelLoadError(
                f"{joiner.path}: a joiner has 2 inputs, found {len(joiner.inputs)}"
            )
        self._enc_name, self._dec_name = (t.name for t in joiner.inputs)

    def graphs(self) -> dict[str, Session]:
        return {"encoder": self.encoder, "decoder": self.decoder, "joiner": self.joiner}

    def isolate_rows(self, on: bool) -> None:
        """Give every row of a batch what it gets alone (``Recognizer.isolate_batches``):
        greedy search's joiner runs as its per-row rewrite, and an encoder that
        quantizes activations per batch is swapped for its per-row rewrite,
        when one can be made (see :mod:`asrserve.backends.row_quant`). Off,
        the joiner's batched call is the original's, as sherpa-onnx runs it
        (cheaper: the rewrite's extra nodes cost about as much as a small
        joiner), since the encoder's batch already moves the results."""
        from asrserve.backends.onnxruntime import OrtSession

        self._rows_alone = on
        enc = self.encoder
        if not on:
            if self._shared_encoder is not None:  # back to the cheaper original
                self.encoder, self._shared_encoder = self._shared_encoder, None
            return
        if isinstance(enc, OrtSession) and enc.batch_dependent:
            rows = OrtSession(enc.path, enc.options, per_row=True)
            if not rows.batch_dependent:
                self.encoder, self._shared_encoder = rows, enc

    @property
    def decoder_cache(self) -> DecoderCache:
        """Decoder outputs by context, shared by every search of the model."""
        if self._decoder_cache is None:
            self._decoder_cache = DecoderCache(
                self.run_decoder,
                self.context_size,
                batch_dependent=self.decoder.batch_dependent,
                run_rows=self._decoder_rows_runner(),
            )
        return self._decoder_cache

    def make_search(self, cfg: DecodingConfig, symbols: SymbolTable) -> Search:
        """sherpa's stateless-decoder searches: greedy or modified beam."""
        skip = self.ignored_token_ids
        if skip is None:
            skip = frozenset({self.blank_id, symbols.unk_id})
        if normalize_method(cfg.method) == "greedy":
            return GreedySearch(
                self.run_joiner_rows,
                self.decoder_cache,
                skip,
                cfg.blank_penalty,
                cfg.max_symbols_per_frame,
                context_fill=self.initial_context_fill,
                keep_context=self.reset_keeps_context,
                temperature=cfg.temperature_scale,
            )
        return ModifiedBeamSearch(
            self.run_joiner,
            self.decoder_cache,
            skip,
            cfg.beam,
            cfg.blank_penalty,
            per_stream=self.joiner_per_frame or self.joiner.batch_dependent,
            joiner_frame=self.run_joiner_frame,
            group_joiner=None if self.joiner_groups is None else self.run_joiner_groups,
            context_fill=self.initial_context_fill,
            keep_context=self.reset_keeps_context,
            temperature=cfg.temperature_scale,
        )

    def _check_states(self) -> None:
        """Compare ``state_specs`` with the encoder graph; refuse mismatches by name."""
        where = self.encoder.path
        if len(self._state_names) != len(self.state_specs):
            raise ModelLoadError(
                f"{where}: {self.family} metadata implies {len(self.state_specs)} state inputs, "
                f"the graph has {len(self._state_names)}"
            )
        if len(self.encoder.outputs) != len(self.state_specs) + 1:
            raise ModelLoadError(
                f"{where}: expected {len(self.state_specs) + 1} outputs, "
                f"found {len(self.encoder.outputs)}"
            )
        for spec, info in zip(self.state_specs, self.encoder.inputs[1:], strict=True):
            if len(info.shape) != len(spec.shape):
                raise ModelLoadError(
                    f"{where}: state {info.name} has rank {len(info.shape)}, "
                    f"metadata implies shape {spec.shape}"
                )
            for axis, (dim, want) in enumerate(zip(info.shape, spec.shape, strict=True)):
                if dim is not None and axis != spec.batch_axis and dim != want:
                    raise ModelLoadError(
                        f"{where}: state {info.name} dim {axis} is {dim}, metadata implies {want}"
                    )

    # --- graphs ---------------------------------------------------------
    def run_encoder(self, features: FloatArray, states: State) -> tuple[FloatArray, State]:
        """``features`` (N, chunk_size, feature_dim) → encoder_out (N, T', D), next states."""
        feeds: dict[str, npt.NDArray[np.generic]] = dict(
            zip(self._state_names, states, strict=True)
        )
        feeds[self._x_name] = features
        out = self.encoder.run(feeds)
        return out[0].astype(np.float32, copy=False), list(out[1:])

    def run_decoder(self, context: npt.NDArray[np.int64]) -> FloatArray:
        """``context`` (N, context_size) int64 → decoder_out (N, D)."""
        out = self.decoder.run({self._y_name: context})[0]
        return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)

    def run_joiner(self, encoder_out: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """(N, D) and (N, D) → logits (N, vocab_size)."""
        out = self.joiner.run({self._enc_name: encoder_out, self._dec_name: decoder_out})[0]
        return out.reshape(out.shape[0], -1)  # type: ignore[return-value]

    def run_joiner_rows(self, encoder_out: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """:meth:`run_joiner`, where each row's logits are what it gets alone
        while :meth:`isolate_rows` is on."""
        rows = self.joiner_rows
        if rows is None or not self._rows_alone or encoder_out.shape[0] == 1:
            return self.run_joiner(encoder_out, decoder_out)  # (one row: the same, and faster)
        out = rows.run({self._enc_name: encoder_out, self._dec_name: decoder_out})[0]
        return out.reshape(out.shape[0], -1)  # type: ignore[return-value]

    def run_joiner_groups(self, encoder_out: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """(S, P, D) and (S, P, D) → logits (S, P, vocab_size), each group of P
        rows what the original joiner gives them as one batch."""
        assert self.joiner_groups is not None
        feeds = {self._enc_name: encoder_out, self._dec_name: decoder_out}
        out = self.joiner_groups.run(feeds)[0]
        return out.reshape(*out.shape[:2], -1)  # type: ignore[return-value]

    def _decoder_rows_runner(self) -> Callable[[npt.NDArray[np.int64]], FloatArray] | None:
        """:meth:`run_decoder` on the per-row twin, where the decoder has one."""
        rows = self.decoder_rows
        if rows is None:
            return None

        def run(context: npt.NDArray[np.int64]) -> FloatArray:
            if context.shape[0] == 1:  # one row: the same, and faster
                return self.run_decoder(context)
            out = rows.run({self._y_name: context})[0]
            return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)

        return run

    def run_joiner_frame(self, encoder_frame: FloatArray, decoder_out: FloatArray) -> FloatArray:
        """One encoder frame (D,) against the P decoder rows (P, D) → logits (P, vocab_size)."""
        enc = np.repeat(encoder_frame[None, :], decoder_out.shape[0], axis=0)
        return self.run_joiner(enc, decoder_out)
