"""What a converted model costs: output similarity, WER and decode speed vs fp32."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrserve.audio import load_audio
from asrserve.config import DecodingConfig
from asrserve.core.interfaces import AnyRecognizer
from asrserve.errors import ConfigError
from asrserve.quantize.calibration import AUDIO_SUFFIXES, Feed
from asrserve.scoring import wer

_NUMBERS = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen", "twenty"),
)


def plain_words(text: str) -> str:
    """English text as plain words, to score a punctuating model (Whisper)
    against plain references: lower case, hyphens split words, punctuation but
    apostrophes dropped, numbers up to twenty spelled out, "mr" is "mister"."""
    t = re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " "))
    out = []
    for w in t.split():
        word = _NUMBERS[int(w)] if w.isdigit() and int(w) <= 20 else w
        out.append("mister" if word == "mr" else word)
    return " ".join(out)


@dataclass(frozen=True)
class EvalItem:
    audio: Path
    text: str | None


def read_eval_list(path: Path) -> list[EvalItem]:
    """Audio with reference texts, one per line: ``AUDIO TEXT...``.

    ``AUDIO`` is a path (relative to the list's folder) or an utterance id
    with ``<id>.wav`` beside the list (the ``trans.txt`` layout). Blank lines
    and ``#`` comments are skipped.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no such evaluation list")
    items: list[EvalItem] = []
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, text = line.partition(" ") if "\t" not in line else line.partition("\t")
        candidates = [path.parent / key, Path(key)]
        candidates += [path.parent / f"{key}{s}" for s in AUDIO_SUFFIXES]
        audio = next((c for c in candidates if c.is_file()), None)
        if audio is None:
            raise ConfigError(f"{path}:{no}: no audio file for {key!r}")
        items.append(EvalItem(audio, text.strip()))
    if not items:
        raise ConfigError(f"{path}: the evaluation list is empty")
    return items


def transcribe_all(recognizer: AnyRecognizer, audio: Sequence[Path]) -> tuple[list[str], float]:
    """Greedy transcripts of ``audio`` and the seconds spent decoding (audio
    loading excluded)."""
    rate = recognizer.feature_config.sample_rate
    clips = [load_audio(p, rate) for p in audio]
    texts: list[str] = []
    start = time.perf_counter()
    for samples in clips:
        stream = recognizer.create_stream(decoding=DecodingConfig(method="greedy"))
        stream.accept_waveform(rate, samples)
        stream.input_finished()
        while recognizer.decode_streams([stream]):
            pass
        texts.append(recognizer.get_result(stream, is_final=True).text)
    return texts, time.perf_counter() - start


def output_cosine(
    reference: AnyRecognizer, candidate: AnyRecognizer, feeds: dict[str, list[Feed]]
) -> dict[str, dict[str, float]]:
    """Per graph: mean and min cosine similarity of the first output, the
    candidate's against the reference's, over the same recorded feeds."""
    result: dict[str, dict[str, float]] = {}
    ref_graphs, cand_graphs = reference.model.graphs(), candidate.model.graphs()
    for role in ref_graphs:
        sims = []
        ref_session, cand_session = ref_graphs[role], cand_graphs[role]
        first = [ref_session.outputs[0].name]
        for feed in feeds.get(role, []):
            a = np.asarray(ref_session.run(feed, first)[0], dtype=np.float64).ravel()
            b = np.asarray(cand_session.run(feed, first)[0], dtype=np.float64).ravel()
            denom = float(np.linalg.norm(a) * np.linalg.norm(b))
            sims.append(float(a @ b) / denom if denom > 0 else float(np.array_equal(a, b)))
        if sims:
            result[role] = {"mean": float(np.mean(sims)), "min": float(np.min(sims))}
    return result


@dataclass
class Comparison:
    """fp32 vs converted on one audio set."""

    files: int
    wer_reference: float | None
    """fp32 WER vs the reference texts (``None`` without texts)."""
    wer_candidate: float | None
    wer_vs_fp32: float
    """The converted model's WER taking the fp32 transcripts as the truth."""
    speed_ratio: float
    """Decode time converted / fp32 (below 1: faster)."""
    seconds_fp32: float
    seconds_candidate: float

    @property
    def wer_increase(self) -> float:
        """Points of WER lost; against fp32's own transcripts without texts."""
        if self.wer_reference is not None and self.wer_candidate is not None:
            return self.wer_candidate - self.wer_reference
        return self.wer_vs_fp32


def compare(
    reference: AnyRecognizer,
    candidate: AnyRecognizer,
    items: Sequence[EvalItem],
    repeats: int = 2,
    normalize: Callable[[str], str] | None = None,
) -> Comparison:
    """Decode ``items`` with both models, alternating runs, best time of
    ``repeats``; ``normalize`` maps texts (references and transcripts) before
    scoring (e.g. :func:`plain_words`)."""
    audio = [i.audio for i in items]
    best = {"ref": float("inf"), "cand": float("inf")}
    hyps: dict[str, list[str]] = {}
    for _ in range(max(1, repeats)):
        for key, rec in (("ref", reference), ("cand", candidate)):
            hyps[key], seconds = transcribe_all(rec, audio)
            best[key] = min(best[key], seconds)
    texts = [i.text for i in items]
    has_refs = all(t is not None for t in texts)
    refs = [t or "" for t in texts]
    if normalize is not None:
        refs = [normalize(t) for t in refs]
        hyps = {k: [normalize(t) for t in v] for k, v in hyps.items()}
    return Comparison(
        files=len(items),
        wer_reference=wer(refs, hyps["ref"]) if has_refs else None,
        wer_candidate=wer(refs, hyps["cand"]) if has_refs else None,
        wer_vs_fp32=wer(hyps["ref"], hyps["cand"]),
        speed_ratio=best["cand"] / max(best["ref"], 1e-9),
        seconds_fp32=best["ref"],
        seconds_candidate=best["cand"],
    )
