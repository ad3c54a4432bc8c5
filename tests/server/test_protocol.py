"""The session protocol without sockets: frames in, commands out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asrserve.core.events import Result
from asrserve.server.protocol import (
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    Audio,
    Close,
    Dialect,
    Flush,
    Send,
    SendError,
    Session,
    SessionConfig,
    Start,
    Stop,
)

SHERPA_KEYS = [
    "text", "tokens", "timestamps", "ys_probs", "lm_probs", "context_scores",
    "segment", "words", "num_trailing_blanks", "start_time", "is_final", "is_eof",
]  # fmt: skip


def _session() -> Session:
    return Session(SessionConfig(sample_rate=16000), model_sample_rate=16000)


def _messages(cmds: list[object]) -> list[dict[str, object]]:
    return [json.loads(c.data) for c in cmds if isinstance(c, Send) and c.data.startswith("{")]


def test_binary_first_speaks_sherpa_dialect() -> None:
    s = _session()
    x = np.linspace(-1, 1, 160, dtype=np.float32)
    cmds = s.receive(x.astype("<f4").tobytes())
    assert s.dialect is Dialect.SHERPA
    assert isinstance(cmds[0], Start)
    assert cmds[0].config.format == "f32le"
    assert isinstance(cmds[1], Audio)
    np.testing.assert_array_equal(cmds[1].samples, x)
    assert isinstance(s.receive("Done")[-1], Stop)
    res = Result(
        text="HI",
        tokens=["▁HI"],
        timestamps=[1.523],
        segment=2,
        start_time=1.234,
        num_trailing_blanks=7,
    )
    (partial,) = _messages(s.result(res, 2.0, final=False))
    assert list(partial) == SHERPA_KEYS
    assert partial["timestamps"] == [0.29]  # from the segment's start, as sherpa-onnx sends them
    assert partial["num_trailing_blanks"] == 7
    assert partial["start_time"] == 1.23
    assert partial["is_final"] is False
    (last,) = _messages(s.result(res, 2.0, final=True, eof=True))
    assert last["is_final"] is True
    assert last["is_eof"] is True
    assert s.eof(2.0) == [Send("Done!")]


def test_sherpa_messages_of_a_growing_result() -> None:
    """One session's results as a segment grows, a hypothesis is replaced (as
    beam search does) and a new segment starts: every message says the whole
    result, whatever the previous message rendered."""
    s = _session()
    s.receive(np.zeros(160, dtype="<f4").tobytes())

    def res(tokens: list[str], start: float = 0.5, segment: int = 0) -> Result:
        n = len(tokens)
        return Result(
            text="".join(tokens).replace("▁", " ").strip(),
            tokens=tokens,
            timestamps=[start + 0.04 * i for i in range(n)],
            ys_probs=[-0.5 * i for i in range(n)],
            segment=segment,
            start_time=start,
        )

    steps = [
        res(["▁A"]),
        res(["▁A", "B"]),
        res(["▁A", "B", '"Q\\']),  # quoted as std::quoted does
        res(["▁A", "C"]),  # replaced, not extended
        res([]),
        res(["▁A", "C"]),  # as before the empty one
        res(["▁D", "E"], start=2.0, segment=1),
    ]
    for r in steps:
        (msg,) = _messages(s.result(r, 0.0, final=False))
        assert msg["tokens"] == r.tokens
        assert msg["text"] == r.text
        assert msg["timestamps"] == [round(0.04 * i, 2) for i in range(len(r.tokens))]
        assert msg["ys_probs"] == [-0.5 * i for i in range(len(r.tokens))]
        assert msg["segment"] == r.segment


def test_sherpa_bad_frame_closes() -> None:
    s = _session()
    s.receive(np.zeros(4, dtype="<f4").tobytes())
    cmds = s.receive(b"\x00\x00\x00")
    assert isinstance(cmds[-1], Close)
    assert cmds[-1].code == CLOSE_UNSUPPORTED


def test_start_negotiates_and_replies_ready() -> None:
    s = _session()
    start = {
        "type": "start",
        "sample_rate": 8000,
        "format": "s16le",
        "decoding": {"method": "beam", "beam": 2},
        "hotwords": ["HELLO WORLD :2.0"],
        "endpointing": {"enabled": True, "rule2_min_trailing_silence": 0.5},
    }
    cmds = s.receive(json.dumps(start))
    assert isinstance(cmds[0], Start)
    cfg = cmds[0].config
    assert (cfg.sample_rate, cfg.format, cfg.decoding.method, cfg.decoding.beam) == (
        8000, "s16le", "modified_beam", 2,
    )  # fmt: skip
    assert cfg.hotwords == ("HELLO WORLD :2.0",)
    assert cfg.endpoint.rule2.min_trailing_silence == 0.5
    assert cfg.endpoint.rule1.min_trailing_silence == 2.4
    (ready,) = _messages(cmds)
    assert ready["type"] == "ready"
    assert ready["sample_rate"] == 8000
    pcm = np.array([0, 16384, -32768], dtype="<i2").tobytes()
    (audio,) = s.receive(pcm)
    assert isinstance(audio, Audio)
    np.testing.assert_allclose(audio.samples, [0.0, 0.5, -1.0])


@pytest.mark.parametrize(
    ("start", "needle"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": "16k"}, "sample_rate"),
        ({"format": "mp3"}, "format"),
        ({"decoding": {"method": "viterbi"}}, "viterbi"),
        ({"decoding": {"beam": 0}}, "beam"),
        ({"decoding": {"beams": 4}}, "beams"),
        ({"hotwords": ["X"]}, "modified_beam"),
        ({"hotwords": "X"}, "list"),
        ({"endpointing": {"rule9": 1}}, "rule9"),
        ({"endpointing": {"enabled": "yes"}}, "enabled"),
        ({"language": "en"}, "language"),
        ({"decoding": {"blank_penalty": 1e308}}, "blank_penalty"),
        ({"decoding": {"blank_penalty": float("nan")}}, "blank_penalty"),
        ({"hotwords_score": 1e308}, "hotwords_score"),
        ({"hotwords_score": float("inf")}, "hotwords_score"),
        ({"endpointing": {"rule1_min_trailing_silence": float("inf")}}, "rule1"),
    ],
)
def test_bad_start_is_named_and_closes(start: dict[str, object], needle: str) -> None:
    s = _session()
    cmds = s.receive(json.dumps({"type": "start", **start}))
    assert isinstance(cmds[0], SendError)
    assert cmds[0].code == "bad_config"
    assert needle in json.loads(cmds[0].data)["message"]
    assert isinstance(cmds[1], Close)
    assert cmds[1].code == CLOSE_UNSUPPORTED


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_message"),
        ('["start"]', "bad_message"),
        ('{"type": "pause"}', "bad_message"),
        ('{"type": "start"}', "bad_message"),  # start after start
        (b"\x01\x02\x03", "bad_audio"),  # odd-length s16le
    ],
)
def test_recoverable_errors_keep_the_session(frame: str | bytes, code: str) -> None:
    s = _session()
    s.receive(json.dumps({"type": "start", "format": "s16le"}))
    cmds = s.receive(frame)
    assert [type(c) for c in cmds] == [SendError]
    assert isinstance(cmds[0], SendError)
    assert cmds[0].code == code
    assert isinstance(s.receive(np.zeros(2, dtype="<i2").tobytes())[0], Audio)


def test_nan_samples_are_refused() -> None:
    s = _session()
    s.receive(json.dumps({"type": "start"}))
    (err,) = s.receive(np.array([0.1, np.nan], dtype="<f4").tobytes())
    assert isinstance(err, SendError)
    assert err.code == "bad_audio"
    assert "NaN" in json.loads(err.data)["message"]


def test_flush_stop_and_eof() -> None:
    s = _session()
    cmds = s.receive('{"type": "flush"}')  # no start: server defaults
    assert isinstance(cmds[0], Start)
    assert isinstance(cmds[-1], Flush)
    assert isinstance(s.receive('{"type": "stop"}')[-1], Stop)
    late = s.receive(np.zeros(2, dtype="<f4").tobytes())
    assert isinstance(late[0], SendError)
    res = Result(text="A B", tokens=["▁A", "▁B"], timestamps=[0.1, 0.2], segment=0)
    (final,) = _messages(s.result(res, 0.5, final=True, eof=True))
    assert final == {
        "type": "final", "segment": 0, "text": "A B", "tokens": ["▁A", "▁B"],
        "timestamps": [0.1, 0.2], "start": 0.0, "end": 0.5,
    }  # fmt: skip
    eof = s.eof(3.0)
    assert _messages(eof) == [{"type": "eof", "segments": 1, "duration": 3.0}]
    assert isinstance(eof[-1], Close)
    assert eof[-1].code == CLOSE_NORMAL


def test_empty_last_segment_sends_no_final() -> None:
    s = _session()
    s.receive('{"type": "start"}')
    r = Result(text="A", tokens=["▁A"], timestamps=[0.1])
    assert len(s.result(r, 0.9, final=True)) == 1
    # an empty last segment after an endpoint sends no empty final
    assert s.result(Result(segment=1), 1.2, final=True, eof=True) == []
    # but a stream that never said anything still gets its (empty) final
    fresh = _session()
    fresh.receive('{"type": "start"}')
    assert len(fresh.result(Result(), 0.5, final=True, eof=True)) == 1
