"""Word error rate against reference transcripts (``trans.txt``: ``ID TEXT`` lines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asrserve.errors import ConfigError


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference words), case-insensitive."""
    r, h = ref.upper().split(), hyp.upper().split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1], len(r)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER in percent."""
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        e, n = word_errors(ref, hyp)
        errors, words = errors + e, words + n
    return 100.0 * errors / max(words, 1)


def read_references(path: Path) -> dict[str, str]:
    """``ID TEXT`` lines (a tab may separate them) as ``{ID: TEXT}``; ``ID`` is
    an utterance id (a file's stem) or a path. Blank lines and ``#`` comments
    are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read reference transcripts {path}: {exc}") from None
    refs: dict[str, str] = {}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, text = line.partition("\t") if "\t" in line else line.partition(" ")
        refs[key] = text.strip()
    if not refs:
        raise ConfigError(f"{path}: no reference transcripts in it")
    return refs


def reference_for(refs: dict[str, str], audio: str) -> str | None:
    """The reference of ``audio``: by its path as given, else by its stem."""
    return refs.get(audio, refs.get(Path(audio).stem))
