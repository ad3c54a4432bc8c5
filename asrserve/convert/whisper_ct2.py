"""CTranslate2 Whisper (``WhisperSpec``, as faster-whisper ships it) → sherpa-onnx's
Whisper ONNX layout, built with ``onnx`` alone.

Input: a CTranslate2 model directory (``model.bin`` or ``model.bin.part1..N``,
``config.json``, ``vocabulary.txt`` or ``vocabulary.json``, optionally
``tokenizer.json``). Output, in ``out_dir``, named as sherpa-onnx's
``scripts/whisper/export-onnx.py`` names them::

    {name}-encoder.onnx       mel float (N, n_mels, T)
                              -> n_layer_cross_k, n_layer_cross_v float (n_text_layer, N, T/2, d)
    {name}-decoder.onnx       tokens int64 (N, n), in_n_layer_self_k_cache,
                              in_n_layer_self_v_cache float (n_text_layer, N, n_text_ctx, d),
                              n_layer_cross_k, n_layer_cross_v, offset int64 (1)
                              -> logits float (N, n, n_vocab), out_n_layer_self_k_cache,
                                 out_n_layer_self_v_cache
    {name}-tokens.txt         "base64(token bytes) id" for the byte-level BPE ids (< eot)
    (+ {name}-encoder.int8.onnx / -decoder.int8.onnx: onnxruntime's dynamic int8 of
     the MatMul weights, as sherpa-onnx quantizes; or .fp16.onnx with float32 I/O)

The encoder's metadata carries what sherpa-onnx's ``offline-whisper-model.cc``
reads (dimensions, special token ids, ``sot_sequence``, languages). The decoder
writes the step's keys and values into the self-attention caches at
``offset`` and attends over positions ``[0, offset + n)`` with a causal mask.

The maths is OpenAI's Whisper: two conv1d (kernel 3, strides 1 and 2) with
exact GELU, sinusoidal positions (CTranslate2 stores them), pre-LayerNorm
blocks, learned decoder positions, the output projection tied to the token
embedding. CTranslate2 fuses the self-attention Q, K, V rows into one
``linear_0`` (K's bias rows are zeros: Whisper's key projection has none) and
the cross-attention K, V into ``attention/linear_1``; the attention scale
``d_head ** -0.5`` is folded into the query weights (a power of two for every
released size, so exact).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrserve.convert.ct2_model import Ct2Model, model_bin_parts, read_model_bin
from asrserve.convert.onnx_graph import Graph, import_onnx, tensor_info
from asrserve.errors import ConfigError, ModelLoadError

log = logging.getLogger("asrserve")

__all__ = ["PRECISIONS", "WhisperDims", "WhisperTokens", "convert_whisper", "lower_precision"]

PRECISIONS = ("fp32", "fp16", "int8")
_GELU = 3  # CTranslate2's Activation.GELU
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room to spare
# Whisper's sizes by (encoder layers, width): the name sherpa-onnx gives them
_SIZES = {(4, 384): "tiny", (6, 512): "base", (12, 768): "small", (24, 1024): "medium"}


# --- what the checkpoint says --------------------------------------------------------------
@dataclass(frozen=True)
class WhisperDims:
    """OpenAI's ``ModelDimensions``, read from the variables' shapes."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def from_ct2(cls, m: Ct2Model) -> WhisperDims:
        conv1 = m.raw("encoder/conv1/weight").shape
        enc_pos = m.raw("encoder/position_encodings/encodings").shape
        dec_pos = m.raw("decoder/position_encodings/encodings").shape
        emb = m.raw("decoder/embeddings/weight").shape
        return cls(
            n_mels=int(conv1[1]),
            n_audio_ctx=int(enc_pos[0]),
            n_audio_state=int(conv1[0]),
            n_audio_head=m.scalar("encoder/num_heads"),
            n_audio_layer=_count_layers(m, "encoder"),
            n_vocab=int(emb[0]),
            n_text_ctx=int(dec_pos[0]),
            n_text_state=int(emb[1]),
            n_text_head=m.scalar("decoder/num_heads"),
            n_text_layer=_count_layers(m, "decoder"),
        )

    @property
    def is_multilingual(self) -> bool:
        """OpenAI's rule: the multilingual vocabularies have 51865 or more tokens."""
        return self.n_vocab >= 51865

    def default_name(self) -> str:
        """sherpa-onnx's file prefix for this size: ``tiny.en``, ``base``,
        ``large-v3``, ``turbo``, ``distil-small.en`` …; ``custom`` for a width
        and depth no released Whisper has."""
        size = _SIZES.get((self.n_audio_layer, self.n_audio_state))
        if size is None and (self.n_audio_layer, self.n_audio_state) == (32, 1280):
            size = "large-v3" if self.n_mels == 128 else "large-v2"
        if size is None:
            return "custom"
        if size == "large-v3" and self.n_text_layer == 4:
            name = "turbo"
        elif self.n_text_layer < self.n_audio_layer:  # distilled decoders are shallow
            name = f"distil-{size}"
        else:
            name = size
        return name if self.is_multilingual else f"{name}.en"


def _count_layers(m: Ct2Model, side: str) -> int:
    found = {
        int(g.group(1))
        for n in m.names(f"{side}/layer_")
        if (g := re.match(rf"{side}/layer_(\d+)/", n))
    }
    if not found or found != set(range(len(found))):
        raise ModelLoadError(f"model.bin: {side} layers are not layer_0..N ({sorted(found)})")
    return len(found)


@dataclass(frozen=True)
class WhisperTokens:
    """The vocabulary and Whisper's special tokens, found by their text."""

    pieces: list[str]
    """Every id's token as CTranslate2 lists it (byte-level BPE characters)."""
    special: dict[str, int]
    languages: list[tuple[str, int]] = field(default_factory=list)
    """``(code, id)`` of each language token, in id order."""

    @property
    def eot(self) -> int:
        return self.special["<|endoftext|>"]

    def id(self, *texts: str) -> int:
        """The id of the first of ``texts`` present (token spellings changed
        between Whisper versions, e.g. ``<|nocaptions|>`` → ``<|nospeech|>``)."""
        for t in texts:
            if t in self.special:
                return self.special[t]
        raise ModelLoadError(f"the vocabulary has no {' or '.join(texts)} token")

    def piece_bytes(self, token_id: int) -> bytes:
        """The token's bytes (GPT-2's byte-to-unicode mapping undone)."""
        table = _byte_decoder()
        try:
            return bytes(table[c] for c in self.pieces[token_id])
        except KeyError:
            raise ModelLoadError(
                f"token {token_id} {self.pieces[token_id]!r} is not byte-level BPE"
            ) from None


def _byte_decoder() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` inverted: printable bytes map to themselves,
    the others to code points from 256 up, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: dict[str, int] = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_SPECIAL = re.compile(r"<\|[^|]+\|>")
_LANGUAGE = re.compile(r"<\|([a-z]{2,3}|haw|yue)\|>")


def read_vocabulary(ct2_dir: Path) -> list[str]:
    """``vocabulary.json`` (a list) or ``vocabulary.txt`` (one token a line)."""
    as_json = ct2_dir / "vocabulary.json"
    as_text = ct2_dir / "vocabulary.txt"
    try:
        if as_json.is_file():
            pieces = json.loads(as_json.read_text(encoding="utf-8"))
            if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
                raise ModelLoadError(f"{as_json}: expected a JSON list of strings")
            return pieces
        if as_text.is_file():
            lines = as_text.read_text(encoding="utf-8").split("\n")
            return lines[:-1] if lines and not lines[-1] else lines
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{ct2_dir}: cannot read the vocabulary ({exc})") from exc
    raise ModelLoadError(f"{ct2_dir}: no vocabulary.txt or vocabulary.json")


def read_tokens(ct2_dir: Path, n_vocab: int) -> WhisperTokens:
    pieces = read_vocabulary(ct2_dir)
    if len(pieces) != n_vocab:
        raise ModelLoadError(
            f"{ct2_dir}: the vocabulary lists {len(pieces)} tokens, the model has {n_vocab}"
        )
    special = {p: i for i, p in enumerate(pieces) if _SPECIAL.fullmatch(p)}
    toks = WhisperTokens(pieces, special)
    sot, translate = toks.id("<|startoftranscript|>"), toks.id("<|translate|>")
    langs = []
    for i in range(sot + 1, translate):
        m = _LANGUAGE.fullmatch(pieces[i])
        if m is None:
            raise ModelLoadError(f"{ct2_dir}: token {i} {pieces[i]!r} is not a language")
        langs.append((m.group(1), i))
    return WhisperTokens(pieces, special, langs)


def read_config(ct2_dir: Path) -> dict[str, Any]:
    path = ct2_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return obj


def check_spec(m: Ct2Model, where: Path) -> None:
    """Refuse what this converter would get wrong rather than convert it."""
    if m.spec != "WhisperSpec":
        raise ModelLoadError(f"{where}: a {m.spec} model, not WhisperSpec")
    if m.revision != 3:
        log.warning("%s: WhisperSpec revision %d (written for 3)", where, m.revision)
    wanted = {
        "decoder/activation": _GELU,
        "decoder/alibi": 0,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for key, value in wanted.items():
        got = m.scalar(key, value)
        if got != value:
            raise ModelLoadError(f"{where}: {key} = {got}; Whisper has {value}")
    if "decoder/projection/bias" in m:
        raise ModelLoadError(f"{where}: the output projection has a bias (not Whisper's)")
    for key in m.names():
        if key.endswith("queries_scale") or "relative_" in key or "rotary" in key:
            raise ModelLoadError(f"{where}: {key} is not part of Whisper")


# --- the graphs -----------------------------------------------------------------------------
def _split_rows(w: npt.NDArray[np.float32], parts: int) -> list[npt.NDArray[np.float32]]:
    if w.shape[0] % parts:
        raise ModelLoadError(f"a fused projection of {w.shape[0]} rows is not {parts} equal parts")
    return list(np.split(w, parts, axis=0))


def _linear_parts(
    m: Ct2Model, prefix: str, parts: int
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]]:
    weights = _split_rows(m.weight(f"{prefix}/weight"), parts)
    bias_name = f"{prefix}/bias"
    biases: list[npt.NDArray[np.float32] | None] = (
        list(_split_rows(m.weight(bias_name), parts)) if bias_name in m else [None] * parts
    )
    return list(zip(weights, biases, strict=True))


def _bias(b: npt.NDArray[np.float32] | None) -> npt.NDArray[np.float32] | None:
    """A bias that is all zeros (Whisper's key projections) is left out."""
    return None if b is None or not np.any(b) else b


def _ffn(g: Graph, m: Ct2Model, x: str, p: str, name: str) -> str:
    h = g.layer_norm(
        x,
        f"{name}.mlp_ln",
        m.weight(f"{p}/ffn/layer_norm/gamma"),
        m.weight(f"{p}/ffn/layer_norm/beta"),
    )
    h = g.linear(
        h, f"{name}.mlp.0", m.weight(f"{p}/ffn/linear_0/weight"), m.weight(f"{p}/ffn/linear_0/bias")
    )
    h = g.gelu(h)
    h = g.linear(
        h, f"{name}.mlp.2", m.weight(f"{p}/ffn/linear_1/weight"), m.weight(f"{p}/ffn/linear_1/bias")
    )
    return g.op("Add", x, h)


def _ln(g: Graph, m: Ct2Model, x: str, p: str, name: str) -> str:
    return g.layer_norm(
        x, name, m.weight(f"{p}/layer_norm/gamma"), m.weight(f"{p}/layer_norm/beta")
    )


def build_encoder(m: Ct2Model, dims: WhisperDims, metadata: dict[str, str]) -> Any:
    """mel (N, n_mels, T) → cross-attention keys and values of every decoder layer."""
    g = Graph()
    d, h = dims.n_audio_state, dims.n_audio_head
    dh = d // h
    scale = dh**-0.5
    x = g.op(
        "Conv",
        "mel",
        g.weight("encoder.conv1.weight", m.weight("encoder/conv1/weight")),
        g.weight("encoder.conv1.bias", m.weight("encoder/conv1/bias")),
        kernel_shape=[3],
        pads=[1, 1],
        strides=[1],
    )
    x = g.gelu(x)
    x = g.op(
        "Conv",
        x,
        g.weight("encoder.conv2.weight", m.weight("encoder/conv2/weight")),
        g.weight("encoder.conv2.bias", m.weight("encoder/conv2/bias")),
        kernel_shape=[3],
        pads=[1, 1],
        strides=[2],
    )
    x = g.op("Transpose", g.gelu(x), perm=[0, 2, 1])  # (N, T/2, d)
    frames = g.op("Slice", g.op("Shape", x), g.const([1]), g.const([2]))
    pos = g.weight("encoder.positional_embedding", m.weight("encoder/position_encodings/encodings"))
    x = g.op("Add", x, g.op("Slice", pos, g.const([0]), frames, g.const([0])))
    for i in range(dims.n_audio_layer):
        p, name = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        hdn = _ln(g, m, x, f"{p}/self_attention", f"{name}.attn_ln")
        (wq, bq), (wk, bk), (wv, bv) = _linear_parts(m, f"{p}/self_attention/linear_0", 3)
        q = g.linear(hdn, f"{name}.attn.query", wq * scale, None if bq is None else bq * scale)
        k = g.linear(hdn, f"{name}.attn.key", wk, _bias(bk))
        v = g.linear(hdn, f"{name}.attn.value", wv, bv)
        att = g.attention(
            g.heads(q, h, dh, (0, 2, 1, 3)),
            g.heads(k, h, dh, (0, 2, 3, 1)),
            g.heads(v, h, dh, (0, 2, 1, 3)),
            None,
            d,
        )
        att = g.linear(
            att,
            f"{name}.attn.out",
            m.weight(f"{p}/self_attention/linear_1/weight"),
            m.weight(f"{p}/self_attention/linear_1/bias"),
        )
        x = _ffn(g, m, g.op("Add", x, att), p, name)
    x = _ln(g, m, x, "encoder", "encoder.ln_post")
    ks, vs = [], []
    for i in range(dims.n_text_layer):
        (wk, bk), (wv, bv) = _linear_parts(m, f"decoder/layer_{i}/attention/linear_1", 2)
        name = f"decoder.blocks.{i}.cross_attn"
        ks.append(g.op("Unsqueeze", g.linear(x, f"{name}.key", wk, _bias(bk)), g.const([0])))
        vs.append(g.op("Unsqueeze", g.linear(x, f"{name}.value", wv, bv), g.const([0])))
    g.nodes.append(
        g.onnx.helper.make_node("Concat", ks, ["n_layer_cross_k"], axis=0, name="cross_k")
    )
    g.nodes.append(
        g.onnx.helper.make_node("Concat", vs, ["n_layer_cross_v"], axis=0, name="cross_v")
    )
    cross: list[int | str] = [dims.n_text_layer, "n_audio", "T", dims.n_text_state]
    return g.model(
        [tensor_info("mel", "float", ["n_audio", dims.n_mels, "T"])],
        [
            tensor_info("n_layer_cross_k", "float", cross),
            tensor_info("n_layer_cross_v", "float", cross),
        ],
        "whisper_encoder",
        metadata,
    )


def build_decoder(m: Ct2Model, dims: WhisperDims) -> Any:
    """One decoding step over ``n`` tokens at ``offset`` (see the module docstring)."""
    g = Graph()
    d, h = dims.n_text_state, dims.n_text_head
    dh = d // h
    scale = dh**-0.5
    emb = g.weight("decoder.token_embedding.weight", m.weight("decoder/embeddings/weight"))
    n = g.op("Slice", g.op("Shape", "tokens"), g.const([1]), g.const([2]))  # (1,) int64
    end = g.op("Add", "offset", n)  # offset + n
    pos = g.weight("decoder.positional_embedding", m.weight("decoder/position_encodings/encodings"))
    x = g.op("Add", g.op("Gather", emb, "tokens"), g.op("Slice", pos, "offset", end, g.const([0])))
    # causal mask (n, offset + n): query j sits at offset + j and sees keys 0..offset + j
    zero = g.const(0)
    keys = g.op("Range", zero, g.op("Squeeze", end, g.const([0])), g.const(1))
    queries = g.op(
        "Range",
        g.op("Squeeze", "offset", g.const([0])),
        g.op("Squeeze", end, g.const([0])),
        g.const(1),
    )
    future = g.op(
        "Greater", g.op("Unsqueeze", keys, g.const([0])), g.op("Unsqueeze", queries, g.const([1]))
    )
    mask = g.op("Where", future, g.const(-np.inf, np.float32), g.const(0.0, np.float32))
    ctx = g.const([dims.n_text_ctx])
    outs_k, outs_v = [], []
    for i in range(dims.n_text_layer):
        p, name = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        hdn = _ln(g, m, x, f"{p}/self_attention", f"{name}.attn_ln")
        (wq, bq), (wk, bk), (wv, bv) = _linear_parts(m, f"{p}/self_attention/linear_0", 3)
        q = g.linear(hdn, f"{name}.attn.query", wq * scale, None if bq is None else bq * scale)
        k = g.linear(hdn, f"{name}.attn.key", wk, _bias(bk))
        v = g.linear(hdn, f"{name}.attn.value", wv, bv)
        caches = []
        for new, cache_in in ((k, "in_n_layer_self_k_cache"), (v, "in_n_layer_self_v_cache")):
            old = g.op("Gather", cache_in, g.const(i), axis=0)  # (N, n_text_ctx, d)
            before = g.op("Slice", old, g.const([0]), "offset", g.const([1]))
            after = g.op("Slice", old, end, ctx, g.const([1]))
            caches.append(g.op("Concat", before, new, after, axis=1))
        outs_k.append(g.op("Unsqueeze", caches[0], g.const([0])))
        outs_v.append(g.op("Unsqueeze", caches[1], g.const([0])))
        seen_k = g.op("Slice", caches[0], g.const([0]), end, g.const([1]))
        seen_v = g.op("Slice", caches[1], g.const([0]), end, g.const([1]))
        att = g.attention(
            g.heads(q, h, dh, (0, 2, 1, 3)),
            g.heads(seen_k, h, dh, (0, 2, 3, 1)),
            g.heads(seen_v, h, dh, (0, 2, 1, 3)),
            mask,
            d,
        )
        att = g.linear(
            att,
            f"{name}.attn.out",
            m.weight(f"{p}/self_attention/linear_1/weight"),
            m.weight(f"{p}/self_attention/linear_1/bias"),
        )
        x = g.op("Add", x, att)
        # cross-attention over the encoder's keys and values of this layer
        hdn = _ln(g, m, x, f"{p}/attention", f"{name}.cross_attn_ln")
        ((wq, bq),) = _linear_parts(m, f"{p}/attention/linear_0", 1)
        q = g.linear(
            hdn, f"{name}.cross_attn.query", wq * scale, None if bq is None else bq * scale
        )
        ck = g.op("Gather", "n_layer_cross_k", g.const(i), axis=0)
        cv = g.op("Gather", "n_layer_cross_v", g.const(i), axis=0)
        att = g.attention(
            g.heads(q, h, dh, (0, 2, 1, 3)),
            g.heads(ck, h, dh, (0, 2, 3, 1)),
            g.heads(cv, h, dh, (0, 2, 1, 3)),
            None,
            d,
        )
        att = g.linear(
            att,
            f"{name}.cross_attn.out",
            m.weight(f"{p}/attention/linear_2/weight"),
            m.weight(f"{p}/attention/linear_2/bias"),
        )
        x = _ffn(g, m, g.op("Add", x, att), p, name)
    x = _ln(g, m, x, "decoder", "decoder.ln")
    # logits = x @ embedding.T, written as embedding @ x.T so that the one
    # (n_vocab, d) initializer serves the Gather and the MatMul (as sherpa-onnx's export)
    logits_t = g.op("MatMul", emb, g.op("Transpose", x, perm=[0, 2, 1]))  # (N, n_vocab, n)
    helper = g.onnx.helper
    g.nodes.append(
        helper.make_node("Transpose", [logits_t], ["logits"], perm=[0, 2, 1], name="logits")
    )
    g.nodes.append(
        helper.make_node("Concat", outs_k, ["out_n_layer_self_k_cache"], axis=0, name="out_k")
    )
    g.nodes.append(
        helper.make_node("Concat", outs_v, ["out_n_layer_self_v_cache"], axis=0, name="out_v")
    )
    cache: list[int | str] = [dims.n_text_layer, "n_audio", dims.n_text_ctx, dims.n_text_state]
    cross: list[int | str] = [dims.n_text_layer, "n_audio", "T", dims.n_text_state]
    return g.model(
        [
            tensor_info("tokens", "int64", ["n_audio", "n_tokens"]),
            tensor_info("in_n_layer_self_k_cache", "float", cache),
            tensor_info("in_n_layer_self_v_cache", "float", cache),
            tensor_info("n_layer_cross_k", "float", cross),
            tensor_info("n_layer_cross_v", "float", cross),
            tensor_info("offset", "int64", [1]),
        ],
        [
            tensor_info("logits", "float", ["n_audio", "n_tokens", dims.n_vocab]),
            tensor_info("out_n_layer_self_k_cache", "float", cache),
            tensor_info("out_n_layer_self_v_cache", "float", cache),
        ],
        "whisper_decoder",
    )


# --- metadata and tokens ----------------------------------------------------------------
def encoder_metadata(
    dims: WhisperDims, toks: WhisperTokens, config: dict[str, Any], name: str, source: str
) -> dict[str, str]:
    """The keys sherpa-onnx's export writes (and its C++ reads), same spellings."""

    def ids(values: list[int]) -> str:
        return ",".join(map(str, values))

    sot = toks.id("<|startoftranscript|>")
    transcribe = toks.id("<|transcribe|>")
    translate = toks.id("<|translate|>")
    sot_sequence = [sot]
    if dims.is_multilingual:
        sot_sequence += [toks.id("<|en|>"), transcribe]
    specials = {
        sot,
        transcribe,
        translate,
        toks.id("<|startoflm|>"),
        toks.id("<|startofprev|>"),
        toks.id("<|nospeech|>", "<|nocaptions|>"),
    }
    suppress = [int(i) for i in config.get("suppress_ids") or []]
    non_speech = [i for i in suppress if i not in specials and i != toks.eot]
    space = [i for i, p in enumerate(toks.pieces[: toks.eot]) if p == "\u0120"]
    if not space:
        raise ModelLoadError("the vocabulary has no space token ('Ġ')")
    meta: dict[str, Any] = {
        "model_type": f"whisper-{name}",
        "version": "1",
        "maintainer": "asrserve",
        "converted_from": source,
        "n_mels": dims.n_mels,
        "n_audio_ctx": dims.n_audio_ctx,
        "n_audio_state": dims.n_audio_state,
        "n_audio_head": dims.n_audio_head,
        "n_audio_layer": dims.n_audio_layer,
        "n_vocab": dims.n_vocab,
        "n_text_ctx": dims.n_text_ctx,
        "n_text_state": dims.n_text_state,
        "n_text_head": dims.n_text_head,
        "n_text_layer": dims.n_text_layer,
        "sot_sequence": ids(sot_sequence),
        "all_language_tokens": ids([i for _, i in toks.languages]),
        "all_language_codes": ",".join(c for c, _ in toks.languages),
        "sot": sot,
        "sot_index": 0,
        "eot": toks.eot,
        "blank_id": space[0],
        "is_multilingual": int(dims.is_multilingual),
        "no_speech": toks.id("<|nospeech|>", "<|nocaptions|>"),
        "non_speech_tokens": ids(non_speech),
        "transcribe": transcribe,
        "translate": translate,
        "sot_prev": toks.id("<|startofprev|>"),
        "sot_lm": toks.id("<|startoflm|>"),
        "no_timestamps": toks.id("<|notimestamps|>"),
    }
    if config.get("suppress_ids_begin"):
        meta["suppress_ids_begin"] = ids([int(i) for i in config["suppress_ids_begin"]])
    heads = config.get("alignment_heads")
    if heads:
        meta["alignment_heads"] = ";".join(f"{int(a)},{int(b)}" for a, b in heads)
    return {k: str(v) for k, v in meta.items()}


def write_tokens(toks: WhisperTokens, path: Path) -> None:
    """sherpa-onnx's Whisper ``tokens.txt``: ``base64(bytes) id`` for every
    byte-level BPE token (the ids below ``eot``; special tokens are not listed),
    line for line OpenAI's ``gpt2.tiktoken`` / ``multilingual.tiktoken``."""
    # an empty token (multilingual id 50256) is written "=", as OpenAI's tiktoken file has it
    lines = [
        f"{base64.b64encode(toks.piece_bytes(i)).decode('ascii') or '='} {i}\n"
        for i in range(toks.eot)
    ]
    path.write_text("".join(lines), encoding="ascii")


# --- saving and precisions ---------------------------------------------------------------
def _save(model: Any, path: Path) -> None:
    onnx = import_onnx()
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > _EXTERNAL_DATA_BYTES:  # large-v2/v3: weights beside the graph, as sherpa-onnx does
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name.removesuffix(".onnx") + ".weights",
        )
    else:
        onnx.save(model, str(path))


def _int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = any(src.parent.glob(src.name.removesuffix(".onnx") + ".weights"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every node it skips on the root logger
    try:
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            use_external_data_format=large,
        )
    finally:
        root.setLevel(level)


def _fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx = import_onnx()
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _save(model, dst)


@dataclass(frozen=True)
class Converted:
    """What :func:`convert_whisper` wrote."""

    encoder: Path
    decoder: Path
    tokens: Path
    name: str
    dims: WhisperDims


def convert_whisper(
    ct2_dir: Path, out_dir: Path, *, precision: str = "fp32", name: str | None = None
) -> Converted:
    """Convert the CTranslate2 Whisper model in ``ct2_dir`` into ``out_dir``
    (see the module docstring). fp32 graphs are always written; ``int8`` adds
    ``.int8.onnx`` files beside them, ``fp16`` ``.fp16.onnx`` ones."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    ct2_dir = Path(ct2_dir)
    if not ct2_dir.is_dir():
        raise ModelLoadError(f"{ct2_dir}: not a directory")
    m = read_model_bin(model_bin_parts(ct2_dir))
    check_spec(m, ct2_dir)
    dims = WhisperDims.from_ct2(m)
    if dims.n_audio_state % dims.n_audio_head or dims.n_text_state % dims.n_text_head:
        raise ModelLoadError(f"{ct2_dir}: widths do not divide into heads ({dims})")
    toks = read_tokens(ct2_dir, dims.n_vocab)
    config = read_config(ct2_dir)
    name = name or dims.default_name()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"name {name!r}: use letters, digits, '.', '_' and '-'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = f"CTranslate2 {m.spec} revision {m.revision} ({ct2_dir.name})"
    meta = encoder_metadata(dims, toks, config, name, source)
    encoder = out_dir / f"{name}-encoder.onnx"
    decoder = out_dir / f"{name}-decoder.onnx"
    tokens = out_dir / f"{name}-tokens.txt"
    log.info("writing %s", encoder)
    _save(build_encoder(m, dims, meta), encoder)
    log.info("writing %s", decoder)
    _save(build_decoder(m, dims), decoder)
    write_tokens(toks, tokens)
    if precision != "fp32":
        for graph in (encoder, decoder):
            lower_precision(graph, precision)
    return Converted(encoder, decoder, tokens, name, dims)


def lower_precision(graph: Path, precision: str) -> Path:
    """``{graph}.int8.onnx`` or ``.fp16.onnx`` beside an fp32 ``graph``; returns its path."""
    if precision not in ("int8", "fp16"):
        raise ConfigError(f"precision must be int8 or fp16, got {precision!r}")
    target = graph.with_name(graph.name.removesuffix(".onnx") + f".{precision}.onnx")
    log.info("writing %s", target)
    (_int8 if precision == "int8" else _fp16)(graph, target)
    return target
