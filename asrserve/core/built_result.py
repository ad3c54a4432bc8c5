"""The record behind ``Recognizer.get_result``: a stream's last result and the
hypothesis it was built from, so a chunk that adds no token costs nothing
and one that adds tokens builds only their parts."""

from __future__ import annotations

from typing import NamedTuple

from asrserve.core.events import Result
from asrserve.decoding.search import Best


class Parts(NamedTuple):
    """Text pieces and per-token fields of some tokens of a hypothesis."""

    tokens: list[str]
    token_ids: list[int]
    timestamps: list[float]
    ys_probs: list[float]


NO_PARTS = Parts([], [], [], [])


class BuiltResult:
    """A stream's last result and what it was built from (see ``get_result``).
    Lists a handed-out :class:`Result` holds are never changed: new tokens make
    new lists."""

    def __init__(self, segment: int, start_frame: int) -> None:
        self.segment = segment
        self.start_frame = start_frame
        self.best: Best | None = None
        self.ids: list[int] = []
        self.frames: list[int] = []
        self.log_probs: tuple[float, ...] = ()
        self.text = ""  # the pieces joined, unstripped
        self.tokens: list[str] = []
        self.token_ids: list[int] = []
        self.timestamps: list[float] = []
        self.ys_probs: list[float] = []
        self.result: Result | None = None

    def extends(self, best: Best) -> bool:
        """Whether ``best`` is this hypothesis with tokens appended (or the same)."""
        n = len(self.ids)
        if len(best.ids) == n:
            return (
                best.ids == self.ids
                and best.frames == self.frames
                and best.log_probs == self.log_probs
            )
        return (
            best.ids[:n] == self.ids
            and best.frames[:n] == self.frames
            and best.log_probs[:n] == self.log_probs[:n]
        )

    def take(self, best: Best, new: Parts) -> None:
        """Move on to ``best`` (which :meth:`extends` this), given the parts of
        its tokens past this one's."""
        if len(best.ids) != len(self.ids) or self.result is None:
            self.text += "".join(new.tokens)
            self.tokens = self.tokens + new.tokens
            self.token_ids = self.token_ids + new.token_ids
            self.timestamps = self.timestamps + new.timestamps
            self.ys_probs = self.ys_probs + new.ys_probs
            self.result = None
        self.best = best
        self.ids, self.frames, self.log_probs = best.ids, best.frames, best.log_probs
