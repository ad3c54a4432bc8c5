"""What the core hands to every transport: results, and the events of a
stream (:class:`Segment` at each endpoint and at input end, :class:`Partial`,
:class:`Eof`), decided in :mod:`asrserve.core.segments`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Result:
    """Recognition result of the current segment of a stream.

    ``timestamps`` are token start times in seconds from the start of the
    stream's audio; ``start_time`` is where the segment began.
    """

    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    segment: int = 0
    start_time: float = 0.0
    is_final: bool = False
    num_trailing_blanks: int = 0
    """Blank frames (encoder output frames) since the segment's last token, as
    sherpa-onnx counts them for its endpoint rules."""
    ys_probs: list[float] = field(default_factory=list)
    """Each token's log-probability (log-softmax of the joiner's logits divided
    by ``DecodingConfig.temperature_scale``), as sherpa-onnx reports them;
    empty for searches that do not compute them (NeMo models)."""

    def __str__(self) -> str:
        """The text, so ``print(rec.get_result(s))`` prints what sherpa-onnx's
        ``get_result`` (a string there) would."""
        return self.text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Segment:
    """A finished segment: its final result (text, tokens, token timestamps
    in seconds from the stream's start, ``start_time``) and where it ends (the
    audio decoded at its endpoint, never past the audio received)."""

    result: Result
    end: float
    last: bool = False
    """The stream's last segment: its input ended."""

    @property
    def text(self) -> str:
        return self.result.text

    @property
    def start(self) -> float:
        return self.result.start_time

    def to_dict(self) -> dict[str, Any]:
        """The segment as the CLI's and bulk's JSON carry it."""
        r = self.result
        return {
            "text": r.text,
            "start": r.start_time,
            "end": round(self.end, 3),
            "tokens": r.tokens,
            "timestamps": r.timestamps,
        }


@dataclass(frozen=True)
class Partial:
    """The open segment's hypothesis changed: its result so far and the audio
    decoded."""

    result: Result
    end: float


@dataclass(frozen=True)
class Eof:
    """The stream's input is decoded to the end (after its last segment)."""

    duration: float


Event = Segment | Partial | Eof
"""What a transport translates: a finished segment (a final), a partial, the end."""
