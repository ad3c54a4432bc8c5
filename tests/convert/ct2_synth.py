"""A tiny random Whisper in CTranslate2's format, and a numpy Whisper to check
the converted graphs against (OpenAI's maths, written out plainly).

The model: 80 mel bins, width 64, 2 heads, one encoder and one decoder layer,
a 266-token vocabulary (the 256 byte tokens, then Whisper's special tokens),
stored the way ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes
it (float16 weights, fused Q/K/V with zero K bias, scalars, the projection
aliased to the embedding).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float32]

N_MELS, D, HEADS, FF = 80, 64, 2, 128
AUDIO_CTX, TEXT_CTX = 30, 16
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
EOT, SOT, NO_TIMESTAMPS = 256, 257, 265
DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2}
DTYPE_IDS |= {np.dtype(np.int32): 3, np.dtype(np.float16): 4}


def byte_pieces() -> list[str]:
    """GPT-2's ``bytes_to_unicode`` for bytes 0..255, in byte order."""
    keep = [*range(33, 127), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def vocabulary() -> list[str]:
    return byte_pieces() + SPECIALS


def make_weights(seed: int = 0) -> dict[str, npt.NDArray[np.generic]]:
    """The variables by CTranslate2 name (float16, as faster-whisper's exports)."""
    rng = np.random.default_rng(seed)
    n_vocab = len(vocabulary())

    def w(*shape: int, scale: float = 0.2) -> npt.NDArray[np.float16]:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    v: dict[str, npt.NDArray[np.generic]] = {
        "encoder/conv1/weight": w(D, N_MELS, 3),
        "encoder/conv1/bias": w(D),
        "encoder/conv2/weight": w(D, D, 3),
        "encoder/conv2/bias": w(D),
        "encoder/position_encodings/encodings": w(AUDIO_CTX, D),
        "encoder/layer_norm/gamma": 1 + w(D, scale=0.1),
        "encoder/layer_norm/beta": w(D),
        "encoder/num_heads": np.array(HEADS, np.int16),
        "decoder/embeddings/weight": w(n_vocab, D),
        "decoder/position_encodings/encodings": w(TEXT_CTX, D),
        "decoder/layer_norm/gamma": 1 + w(D, scale=0.1),
        "decoder/layer_norm/beta": w(D),
        "decoder/num_heads": np.array(HEADS, np.int16),
        "decoder/activation": np.array(3, np.int8),
        "decoder/alibi": np.array(0, np.int8),
        "decoder/pre_norm": np.array(1, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8),
        "decoder/start_from_zero_embedding": np.array(0, np.int8),
        "decoder/alignment_layer": np.array(-1, np.int16),
        "decoder/alignment_heads": np.array(1, np.int16),
    }

    def qkv(prefix: str) -> None:
        bias = w(3 * D)
        bias[D : 2 * D] = 0  # Whisper's key projection has no bias
        v[f"{prefix}/weight"], v[f"{prefix}/bias"] = w(3 * D, D), bias

    def linear(prefix: str, out: int, inp: int) -> None:
        v[f"{prefix}/weight"], v[f"{prefix}/bias"] = w(out, inp), w(out)

    def norm(prefix: str) -> None:
        v[f"{prefix}/layer_norm/gamma"] = 1 + w(D, scale=0.1)
        v[f"{prefix}/layer_norm/beta"] = w(D)

    for side in ("encoder", "decoder"):
        p = f"{side}/layer_0"
        norm(f"{p}/self_attention")
        qkv(f"{p}/self_attention/linear_0")
        linear(f"{p}/self_attention/linear_1", D, D)
        norm(f"{p}/ffn")
        linear(f"{p}/ffn/linear_0", FF, D)
        linear(f"{p}/ffn/linear_1", D, FF)
    p = "decoder/layer_0/attention"
    norm(p)
    linear(f"{p}/linear_0", D, D)
    kv_bias = w(2 * D)
    kv_bias[:D] = 0
    v[f"{p}/linear_1/weight"], v[f"{p}/linear_1/bias"] = w(2 * D, D), kv_bias
    linear(f"{p}/linear_2", D, D)
    return v


def write_model_bin(
    path: Path,
    variables: dict[str, npt.NDArray[np.generic]],
    aliases: dict[str, str],
    *,
    spec: str = "WhisperSpec",
    version: int = 6,
) -> None:
    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), string(spec), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name in sorted(variables):
        value = np.ascontiguousarray(variables[name])
        out += [string(name), struct.pack("<B", value.ndim)]
        out += [struct.pack("<I", d) for d in value.shape]
        raw = value.tobytes()
        out += [struct.pack("<B", DTYPE_IDS[value.dtype]), struct.pack("<I", len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def write_ct2_dir(path: Path, seed: int = 0) -> dict[str, npt.NDArray[np.generic]]:
    """A complete CTranslate2 Whisper directory; returns the variables."""
    path.mkdir(parents=True, exist_ok=True)
    weights = make_weights(seed)
    write_model_bin(
        path / "model.bin", weights, {"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    (path / "vocabulary.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    config = {
        "suppress_ids": [1, 2, SOT, 260, 261, 262, 263, 264],
        "suppress_ids_begin": [220, EOT],
    }
    (path / "config.json").write_text(json.dumps(config))
    return weights


# --- the numpy reference ------------------------------------------------------------------------
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: F) -> F:
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def layer_norm(x: F, g: F, b: F) -> F:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + 1e-5) * g + b).astype(np.float32)


def conv1d(x: F, w: F, b: F, stride: int) -> F:
    """(C_in, T) with padding 1, kernel 3 → (C_out, T')."""
    xp = np.pad(x, ((0, 0), (1, 1)))
    t_out = (x.shape[1] + 2 - 3) // stride + 1
    cols = np.stack([xp[:, i * stride : i * stride + 3] for i in range(t_out)])  # (T', C, 3)
    return (np.einsum("tck,ock->ot", cols, w) + b[:, None]).astype(np.float32)


def attention(q: F, k: F, v: F, causal_from: int | None) -> F:
    """(Tq, D), (Tk, D), (Tk, D) → (Tq, D) over HEADS heads, OpenAI's scaling."""
    dh = D // HEADS
    out = []
    for h in range(HEADS):
        s = slice(h * dh, (h + 1) * dh)
        scores = (q[:, s] * dh**-0.25) @ (k[:, s] * dh**-0.25).T
        if causal_from is not None:
            qpos = causal_from + np.arange(q.shape[0])[:, None]
            scores = np.where(np.arange(k.shape[0])[None, :] > qpos, -np.inf, scores)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        out.append((p / p.sum(-1, keepdims=True)) @ v[:, s])
    return np.concatenate(out, axis=1).astype(np.float32)


class Reference:
    """OpenAI's Whisper forward pass over the CTranslate2 variables (one clip)."""

    def __init__(self, variables: dict[str, npt.NDArray[np.generic]]) -> None:
        self.v = {k: np.asarray(a, np.float32) for k, a in variables.items()}

    def lin(self, x: F, name: str) -> F:
        return (x @ self.v[f"{name}/weight"].T + self.v[f"{name}/bias"]).astype(np.float32)

    def ln(self, x: F, name: str) -> F:
        return layer_norm(x, self.v[f"{name}/gamma"], self.v[f"{name}/beta"])

    def ffn(self, x: F, p: str) -> F:
        h = gelu(self.lin(self.ln(x, f"{p}/ffn/layer_norm"), f"{p}/ffn/linear_0"))
        return x + self.lin(h, f"{p}/ffn/linear_1")

    def encode(self, mel: F) -> tuple[F, F]:
        """mel (n_mels, T) → cross K, V of the decoder layer (T/2, D)."""
        v = self.v
        x = gelu(conv1d(mel, v["encoder/conv1/weight"], v["encoder/conv1/bias"], 1))
        x = gelu(conv1d(x, v["encoder/conv2/weight"], v["encoder/conv2/bias"], 2)).T
        x = x + v["encoder/position_encodings/encodings"][: x.shape[0]]
        p = "encoder/layer_0"
        h = self.ln(x, f"{p}/self_attention/layer_norm")
        q, k, val = np.split(self.lin(h, f"{p}/self_attention/linear_0"), 3, axis=1)
        x = x + self.lin(attention(q, k, val, None), f"{p}/self_attention/linear_1")
        x = self.ln(self.ffn(x, p), "encoder/layer_norm")
        k, val = np.split(self.lin(x, "decoder/layer_0/attention/linear_1"), 2, axis=1)
        return k, val

    def logits(self, tokens: list[int], cross: tuple[F, F]) -> F:
        """Every position's logits (n, n_vocab) for the whole token sequence."""
        v = self.v
        emb = v["decoder/embeddings/weight"]
        x = emb[tokens] + v["decoder/position_encodings/encodings"][: len(tokens)]
        p = "decoder/layer_0"
        h = self.ln(x, f"{p}/self_attention/layer_norm")
        q, k, val = np.split(self.lin(h, f"{p}/self_attention/linear_0"), 3, axis=1)
        x = x + self.lin(attention(q, k, val, 0), f"{p}/self_attention/linear_1")
        h = self.ln(x, f"{p}/attention/layer_norm")
        q = self.lin(h, f"{p}/attention/linear_0")
        x = x + self.lin(attention(q, cross[0], cross[1], None), f"{p}/attention/linear_2")
        x = self.ln(self.ffn(x, p), "decoder/layer_norm")
        return (x @ emb.T).astype(np.float32)
