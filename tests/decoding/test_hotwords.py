"""Contextual biasing: graph scores, and parity with sherpa-onnx hotwords."""

from __future__ import annotations

from pathlib import Path

import pytest

import asrserve
from asrserve.decoding.hotwords import ContextGraph
from asrserve.errors import ConfigError
from tests.conftest import BUILTIN, read_wav
from tests.reference import TAIL_PADDING_S, asrserve_decode, sherpa_decode, sherpa_recognizer


def test_graph_rewards_a_phrase_and_takes_back_a_broken_one() -> None:
    g = ContextGraph([[5, 6, 7]], default_score=1.0)
    score, state = g.forward_one_step(g.root, 5)
    assert score == 1.0
    score2, state = g.forward_one_step(state, 6)
    assert score2 == 1.0
    # leaving the phrase gives back the partial bonus
    back, state = g.forward_one_step(state, 9)
    assert back == -2.0
    assert state is g.root
    # completing it keeps the bonus and returns to the root
    total = 0.0
    state = g.root
    for tok in (5, 6, 7):
        s, state = g.forward_one_step(state, tok)
        total += s
    assert total == 3.0
    assert state is g.root


def test_per_phrase_scores_and_shared_prefixes() -> None:
    g = ContextGraph([[1, 2], [1, 3]], default_score=1.0, scores=[0.0, 3.0])
    s, st = g.forward_one_step(g.root, 1)
    assert s == 3.0  # the larger score of the two phrases sharing the prefix
    s2, _ = g.forward_one_step(st, 3)
    assert s2 == 3.0


@pytest.fixture(scope="module")
def bpe_vocab(tiny_lstm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sherpa-onnx reads BPE pieces from a text vocab exported from bpe.model."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tiny_lstm_dir / "bpe.model"))
    path = tmp_path_factory.mktemp("bpe") / "bpe.vocab"
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i)}" for i in range(sp.get_piece_size())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


HOTWORDS = ["POSTGRES", "GIORGIO ARMANI", "SIMPLE AS HE PAINTS :3.0"]


def test_hotwords_match_sherpa(tiny_lstm_dir: Path, tiny_wavs: list[Path], bpe_vocab: Path) -> None:
    ref = sherpa_recognizer(
        tiny_lstm_dir,
        "encoder.onnx",
        "decoder.onnx",
        "joiner.onnx",
        "modified_beam",
        modeling_unit="bpe",
        bpe_vocab=str(bpe_vocab),
        hotwords_score=1.5,
    )
    ours = asrserve.load_model(
        tiny_lstm_dir,
        precision="fp32",
        decoding=asrserve.DecodingConfig(method="modified_beam", hotwords_score=1.5),
        tail_padding_s=TAIL_PADDING_S,
    )
    changed = 0
    for name in ("synth-0000", "synth-0100", "synth-0160", "synth-0001", "synth-0101"):
        x, sr = read_wav(tiny_lstm_dir / "test_wavs" / f"{name}.wav")
        want = sherpa_decode(ref, x, sr, 1600, hotwords="/".join(HOTWORDS))
        got = asrserve_decode(ours, x, sr, 1600, hotwords=HOTWORDS)
        assert got[0] == want[0], name
        changed += got[0] != asrserve_decode(ours, x, sr, 1600)[0]
    assert changed >= 1  # the boost actually did something on these clips


@pytest.mark.parametrize("score", ["nan", "inf", "-inf", "1e308"])
def test_phrase_scores_must_be_finite_and_bounded(score: str) -> None:
    rec = asrserve.load_model(BUILTIN)
    with pytest.raises(ConfigError, match="score must be a number in"):
        rec.create_stream(
            hotwords=[f"EXIT THE SHELL :{score}"],
            decoding=asrserve.DecodingConfig(method="modified_beam"),
        )
    rec.create_stream(
        hotwords=["EXIT THE SHELL :2.5"], decoding=asrserve.DecodingConfig(method="modified_beam")
    )
