"""The default endpoint rules (2.4 / 1.2 / 20 s) in sherpa-onnx's float32
arithmetic: 240 frames of 10 ms are ``2.3999999f < 2.4f``, so rule 1 fires at
244 frames (the next 40 ms output frame), not at 240 as float64 would have it.
The end-to-end check against sherpa-onnx's own server on these defaults is
tests/server/test_sherpa_server_parity.py."""

from __future__ import annotations

from asrserve.config import EndpointConfig, frames_to_seconds_f32


def _fires(trailing_frames: int, utterance_frames: int) -> bool:
    rules = EndpointConfig(enabled=True)
    return rules.is_endpoint(
        frames_to_seconds_f32(trailing_frames, 0.01), frames_to_seconds_f32(utterance_frames, 0.01)
    )


def test_default_rules_in_float32() -> None:
    assert 240 * 0.01 >= 2.4  # float64 would end the segment here
    assert not _fires(240, 240)  # rule 1 (silence only): sherpa-onnx waits
    assert _fires(244, 244)
    assert not _fires(120, 400)  # rule 2 (after speech): 1.2 s is not reached at 120 frames
    assert _fires(124, 400)
    assert not _fires(0, 1996)  # rule 3: 20 s of utterance
    assert _fires(0, 2000)
    assert not _fires(0, 0)
