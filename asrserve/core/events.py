"""What the core hands to every transport."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
