"""Many inputs as one rolling batch of streams (``asrserve.core.rolling``) give
each input the segments it gets alone: token for token, timestamp for
timestamp, with endpointing on and off, for inputs of very different lengths,
pieces of any size, and inputs that fail in the middle."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.config import EndpointConfig
from asrserve.core.rolling import (
    Decoded,
    array_pieces,
    decode_rolling,
    in_order,
    stream_factory,
    transcribe_many,
)
from asrserve.core.segments import Segment
from asrserve.core.stream import Stream
from asrserve.errors import AudioFormatError
from tests.conftest import FIXTURE_MODELS, SHARED_MODELS, read_wav

RATE = 16000
Audio = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def inputs(tiny_wavs: list[Path]) -> list[Audio]:
    """Seven inputs from 0.3 s to about 20 s: short clips, a long one made of
    four clips with pauses, silence, a sliver of speech."""
    clips = [read_wav(w)[0] for w in tiny_wavs[:8]]
    pause = np.zeros(int(1.5 * RATE), np.float32)
    long = np.concatenate([x for c in clips[4:8] for x in (c, pause)])
    silence = np.zeros(2 * RATE, np.float32)
    return [clips[0], long, clips[1], silence, clips[2][: int(0.3 * RATE)], clips[3], clips[2]]


@pytest.fixture(scope="module")
def fp32(tiny_lstm_dir: Path) -> asrserve.Recognizer:
    return asrserve.load_model(tiny_lstm_dir, precision="fp32")


def alone(rec: Any, xs: list[Audio]) -> list[list[Segment]]:
    return [list(rec.transcribe_segments(x, RATE)) for x in xs]


def batched(rec: Any, xs: list[Audio], piece_s: float, max_streams: int) -> list[Decoded]:
    pieces = (array_pieces(x, RATE, piece_s) for x in xs)
    return list(in_order(transcribe_many(rec, pieces, max_streams=max_streams)))


def without_probs(parts: list[Segment]) -> list[Segment]:
    return [replace(s, result=replace(s.result, ys_probs=[])) for s in parts]


@pytest.mark.parametrize(
    ("precision", "endpointing", "piece_s", "max_streams"),
    [
        ("fp32", False, 0.37, 3),
        ("fp32", True, 2.0, 8),
        ("int8", False, 2.0, 8),
        ("int8", True, 0.37, 3),
    ],
)
def test_batched_equals_one_by_one(
    tiny_lstm_dir: Path,
    inputs: list[Audio],
    precision: str,
    endpointing: bool,
    piece_s: float,
    max_streams: int,
) -> None:
    rec = asrserve.load_model(
        tiny_lstm_dir, precision=precision, endpoint=EndpointConfig(enabled=endpointing)
    )
    assert rec.batch_dependent == (precision == "int8")
    # dynamic int8 scales activations per batch: identical only stream by stream
    rec.isolate_batches = rec.batch_dependent
    want = alone(rec, inputs)
    assert [len(w) for w in want][:2] == [1, 4 if endpointing else 1]
    assert want[3] == []  # silence: no segment
    got = batched(rec, inputs, piece_s, max_streams)
    assert [d.index for d in got] == list(range(len(inputs)))
    assert all(d.ok for d in got)
    assert [d.duration for d in got] == [x.size / RATE for x in inputs]
    if precision == "fp32":  # all of it: texts, tokens, ids, timestamps, ys_probs, bounds
        assert [d.segments for d in got] == want
        return
    # int8: greedy search runs the (batch-dependent) int8 joiner over all rows
    # at once even with isolate_batches, so the confidences move by ~1e-3
    assert [without_probs(d.segments) for d in got] == [without_probs(w) for w in want]
    for d, w in zip(got, want, strict=True):
        for a, b in zip(d.segments, w, strict=True):
            np.testing.assert_allclose(a.result.ys_probs, b.result.ys_probs, atol=5e-3)


class _Broken:
    """Pieces that fail after ``good`` pieces (a file cut inside its data)."""

    def __init__(self, x: Audio, good: int) -> None:
        self.x, self.good = x, good

    def __iter__(self) -> Iterator[tuple[int, Audio]]:
        for i, piece in enumerate(array_pieces(self.x, RATE, 0.5)):
            if i == self.good:
                raise AudioFormatError("cut short")
            yield piece


def test_a_failing_input_fails_alone(fp32: asrserve.Recognizer, inputs: list[Audio]) -> None:
    rec = fp32
    changes_rate = [(RATE, inputs[0][:RATE]), (8000, inputs[0][:4000])]
    sources: list[Iterable[tuple[int, npt.ArrayLike]]] = [
        array_pieces(inputs[0], RATE),
        _Broken(inputs[1], good=3),  # mid-file, while others are active
        array_pieces(inputs[2], RATE),
        _Broken(inputs[5], good=0),  # does not open
        changes_rate,  # the stream refuses it
        [],  # no audio at all
        array_pieces(inputs[6], RATE),
    ]
    got = list(in_order(transcribe_many(rec, sources, max_streams=2)))
    assert [d.index for d in got] == list(range(7))
    assert [d.ok for d in got] == [True, False, True, False, False, True, True]
    assert str(got[1].error) == "cut short"
    assert isinstance(got[4].error, AudioFormatError)
    assert "sample rate changed" in str(got[4].error)
    assert (got[5].segments, got[5].duration) == ([], 0.0)
    ok = [inputs[0], inputs[2], inputs[6]]
    assert [got[i].segments for i in (0, 2, 6)] == alone(rec, ok)


class _FailsFor:
    """The recognizer, but ``decode_streams`` raises when a marked stream is in
    the batch (a model error): its batch mates fail with it, the rest go on."""

    def __init__(self, rec: asrserve.Recognizer) -> None:
        self.rec = rec
        self.marked: Stream | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rec, name)

    def decode_streams(self, streams: Iterable[Stream]) -> int:
        batch = list(streams)
        if any(s is self.marked for s in batch):
            raise RuntimeError("encoder failed")
        return self.rec.decode_streams(batch)


def test_a_failing_batch_fails_its_inputs_only(
    fp32: asrserve.Recognizer, inputs: list[Audio]
) -> None:
    rec = fp32
    wrapped = _FailsFor(rec)
    made: list[Stream] = []

    def new_stream() -> Stream:
        made.append(rec.create_stream())
        if len(made) == 2:
            wrapped.marked = made[-1]
        return made[-1]

    xs = [inputs[0], inputs[2], inputs[5], inputs[6]]
    got = list(
        in_order(
            decode_rolling(wrapped, (array_pieces(x, RATE) for x in xs), new_stream, max_streams=2)
        )
    )
    assert [d.ok for d in got] == [False, False, True, True]
    assert all(isinstance(d.error, RuntimeError) for d in got[:2])
    assert [d.segments for d in got[2:]] == alone(rec, xs[2:])


def test_other_recognizer_kinds_go_one_by_one(
    fp32: asrserve.Recognizer, inputs: list[Audio]
) -> None:
    rec = fp32

    class Foreign:  # a recognizer kind stream_factory does not know
        feature_config = rec.feature_config

        def transcribe_segments(self, audio: Audio, rate: int) -> Iterator[Segment]:
            return rec.transcribe_segments(audio, rate)

    foreign: Any = Foreign()
    assert stream_factory(foreign) is None
    xs = [inputs[0], inputs[4], inputs[5]]
    got = list(transcribe_many(foreign, (array_pieces(x, RATE) for x in xs)))
    assert [d.segments for d in got] == alone(rec, xs)
    assert [d.duration for d in got] == [x.size / RATE for x in xs]


def test_results_as_completed_and_in_order(fp32: asrserve.Recognizer, inputs: list[Audio]) -> None:
    rec = fp32
    xs = [inputs[1], inputs[0], inputs[2]]  # the long one first: it ends last
    done = list(
        transcribe_many(
            rec, (array_pieces(x, RATE) for x in xs), max_streams=3, clock=time.process_time
        )
    )
    assert [d.index for d in done][-1] == 0
    assert [d.index for d in in_order(done)] == [0, 1, 2]
    assert all(d.busy_s > 0 for d in done)
    assert done[-1].busy_s > max(d.busy_s for d in done[:-1])
    with pytest.raises(ValueError, match="max_streams"):
        list(transcribe_many(rec, [], max_streams=0))


TDT = FIXTURE_MODELS / "parakeet-tdt-tiny"
SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"


@pytest.mark.skipif(not SILERO.is_file(), reason="shared Silero VAD not found")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_vad_segmented_recognizer_batches_too(inputs: list[Audio], precision: str) -> None:
    from asrserve.backends.base import BackendOptions
    from asrserve.families import nemo_tdt
    from asrserve.families.layouts import LoadOptions
    from asrserve.vad import VadConfig

    rec = nemo_tdt.load_recognizer(
        TDT, LoadOptions(BackendOptions(), precision), vad=VadConfig(model=str(SILERO))
    )
    assert stream_factory(rec) is not None
    xs = [inputs[0], inputs[1][: 12 * RATE], inputs[3], inputs[5]]
    want = alone(rec, xs)
    assert sum(map(len, want)) >= 4
    got = batched(rec, xs, 0.7, 3)
    assert [d.segments for d in got] == want


NEMOTRON = FIXTURE_MODELS / "nemotron-tiny"


@pytest.mark.parametrize("precision", ["fp16", "int8-static", "int8-dynamic"])
def test_fp16_and_static_int8_batch_without_isolation(inputs: list[Audio], precision: str) -> None:
    rec = asrserve.load_model(NEMOTRON, precision=precision, endpoint=EndpointConfig(enabled=True))
    rec.isolate_batches = rec.batch_dependent
    assert rec.batch_dependent == (precision == "int8-dynamic")
    xs = [inputs[0], inputs[1][: 10 * RATE], inputs[4], inputs[5]]
    want = alone(rec, xs)
    assert sum(len(s.result.token_ids) for w in want for s in w) > 20
    assert [d.segments for d in batched(rec, xs, 0.5, 3)] == want
