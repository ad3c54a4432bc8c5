"""Contextual biasing graph (Aho-Corasick over token ids) for hotwords.

A hypothesis that walks a hotword's tokens earns ``score`` per token; if it
leaves the phrase unfinished the partial bonus is taken back. This follows
the behaviour of icefall/sherpa-onnx contextual biasing.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from asrserve.errors import ConfigError

_PHRASE_SEPARATORS = re.compile(r"[/\r\n]")


def hotword_phrases(hotwords: str | Sequence[str]) -> list[str]:
    """The phrases of ``hotwords``: a list (or tuple) of phrases as given, or
    one string in sherpa-onnx's form, phrases separated by ``/`` or newlines
    (each stripped, empty ones dropped). Anything else, bytes or a list with
    a non-string item, is refused: a string must never be read letter by letter."""
    if isinstance(hotwords, str):
        return [p.strip() for p in _PHRASE_SEPARATORS.split(hotwords) if p.strip()]
    if isinstance(hotwords, bytes | bytearray | memoryview) or not isinstance(hotwords, Sequence):
        raise ConfigError(
            "hotwords must be a string of phrases separated by '/' or newlines, or a "
            f"list of phrase strings; got {type(hotwords).__name__}"
        )
    bad = [type(h).__name__ for h in hotwords if not isinstance(h, str)]
    if bad:
        raise ConfigError(f"hotwords: every phrase must be a string; got {', '.join(bad)}")
    return list(hotwords)


@dataclass(eq=False)
class ContextState:
    token: int
    token_score: float
    node_score: float
    output_score: float
    is_end: bool
    next: dict[int, ContextState] = field(default_factory=dict)
    fail: ContextState | None = None
    output: ContextState | None = None


class ContextGraph:
    """Built once per phrase list; states are shared, read-only after build."""

    def __init__(
        self, phrases: Sequence[Sequence[int]], default_score: float, scores: Sequence[float] = ()
    ) -> None:
        self.root = ContextState(-1, 0.0, 0.0, 0.0, False)
        self.root.fail = self.root
        self.num_tokens = sum(len(tokens) for tokens in phrases)
        """Token pieces over all phrases (what a server's cost budget counts)."""
        for i, tokens in enumerate(phrases):
            score = scores[i] if i < len(scores) and scores[i] != 0.0 else default_score
            self._add(tokens, score)
        self._fill_fail_output()

    def _add(self, tokens: Sequence[int], score: float) -> None:
        node = self.root
        last = len(tokens) - 1
        for j, tok in enumerate(tokens):
            child = node.next.get(tok)
            if child is None:
                is_end = j == last
                child = ContextState(
                    tok,
                    score,
                    node.node_score + score,
                    node.node_score + score if is_end else 0.0,
                    is_end,
                )
                node.next[tok] = child
            else:
                child.token_score = max(score, child.token_score)
                child.node_score = node.node_score + child.token_score
                child.is_end = j == last or child.is_end
                child.output_score = child.node_score if child.is_end else 0.0
            node = child

    def _step_fail(self, node: ContextState, tok: int) -> ContextState:
        fail = node.fail
        assert fail is not None
        if tok in fail.next:
            return fail.next[tok]
        fail = fail.fail
        assert fail is not None
        while tok not in fail.next:
            fail = fail.fail
            assert fail is not None
            if fail.token == -1:
                break
        return fail.next.get(tok, fail)

    def _fill_fail_output(self) -> None:
        queue: deque[ContextState] = deque()
        for child in self.root.next.values():
            child.fail = self.root
            queue.append(child)
        while queue:
            cur = queue.popleft()
            for tok, child in cur.next.items():
                fail = self._step_fail(cur, tok)
                child.fail = fail
                out: ContextState | None = fail
                while out is not None and not out.is_end:
                    out = out.fail
                    if out is not None and out.token == -1:
                        out = None
                child.output = out
                child.output_score += 0.0 if out is None else out.output_score
                queue.append(child)

    def forward_one_step(self, state: ContextState, token: int) -> tuple[float, ContextState]:
        """Advance by one emitted token; returns ``(score delta, next state)``.

        A completed phrase returns to the root and keeps its bonus.
        """
        if token in state.next:
            node = state.next[token]
            score = node.token_score
        else:
            assert state.fail is not None
            node = state.fail
            while token not in node.next:
                assert node.fail is not None
                node = node.fail
                if node.token == -1:
                    break
            node = node.next.get(token, node)
            score = node.node_score - state.node_score
        if node.output_score != 0:
            if node.is_end:
                output_score = node.node_score
            elif node.output is not None:
                output_score = node.output.node_score
            else:
                output_score = node.node_score
            return score + output_score - node.node_score, self.root
        return score + node.output_score, node
