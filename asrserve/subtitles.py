"""Subtitle cues (SRT / WebVTT) from token timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asrserve.core.events import Result
from asrserve.core.segments import Segment


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def words_with_times(result: Result, duration: float) -> list[tuple[str, float, float]]:
    """Join BPE pieces into words with (start, end) seconds."""
    words: list[tuple[str, float, float]] = []
    for piece, t in zip(result.tokens, result.timestamps, strict=True):
        if piece.startswith(" ") or not words:
            words.append((piece.strip(), t, t))
        else:
            w, s, _ = words[-1]
            words[-1] = (w + piece, s, t)
    # a word lasts until the next one starts (at most 1 s past its last token)
    out = []
    for i, (w, s, last) in enumerate(words):
        nxt = words[i + 1][1] if i + 1 < len(words) else duration
        out.append((w, s, min(nxt, last + 1.0, max(duration, last))))
    return out


def make_cues(
    result: Result, duration: float, max_chars: int = 42, max_gap: float = 0.8, max_len: float = 6.0
) -> list[Cue]:
    cues: list[Cue] = []
    cur: list[tuple[str, float, float]] = []
    for word in words_with_times(result, duration):
        if cur:
            text_len = len(" ".join(w for w, _, _ in cur)) + 1 + len(word[0])
            if (
                word[1] - cur[-1][2] > max_gap
                or text_len > max_chars
                or word[2] - cur[0][1] > max_len
            ):
                cues.append(Cue(cur[0][1], cur[-1][2], " ".join(w for w, _, _ in cur)))
                cur = []
        cur.append(word)
    if cur:
        cues.append(Cue(cur[0][1], cur[-1][2], " ".join(w for w, _, _ in cur)))
    return cues


def segment_cues(segments: Sequence[Segment]) -> list[Cue]:
    """Cues of each segment in turn: a cue never spans two segments, so the
    subtitles break where the transcript's segments (finals) do."""
    return [cue for seg in segments for cue in make_cues(seg.result, seg.end)]


def _ts(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: list[Cue]) -> str:
    blocks = [
        f"{i}\n{_ts(c.start, ',')} --> {_ts(c.end, ',')}\n{c.text}\n" for i, c in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: list[Cue]) -> str:
    blocks = [f"{_ts(c.start, '.')} --> {_ts(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)
