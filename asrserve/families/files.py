"""Which files of a model directory are the model: the encoder, decoder and
joiner of the asked precision (ONNX, or sherpa-ncnn ``.param``/``.bin``),
``tokens.txt`` and ``bpe.model``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from asrserve.errors import ModelLoadError


@dataclass(frozen=True)
class ModelFiles:
    """Paths of one transducer model (ncnn: the ``.param`` files, ``.bin`` beside them)."""

    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path
    bpe_model: Path | None = None
    backend: str = "onnxruntime"
    precision: str = "auto"


_PRECISIONS = ("auto", "fp32", "fp16", "int8")


def _precision_of(path: Path, suffix: str) -> str:
    name = path.name
    if name.endswith(f".int8{suffix}"):
        return "int8"
    if name.endswith(f".fp16{suffix}"):
        return "fp16"
    return "fp32"


def pick_file(model_dir: Path, role: str, precision: str, suffix: str = ".onnx") -> Path:
    """The one ``{role}*{suffix}`` file of ``precision`` (int8 first for ``auto``),
    falling back to fp32."""
    candidates = sorted(model_dir.glob(f"{role}*{suffix}"))
    if not candidates:
        raise ModelLoadError(f"{model_dir}: no {role}*{suffix} file")
    by_prec: dict[str, list[Path]] = {}
    for c in candidates:
        by_prec.setdefault(_precision_of(c, suffix), []).append(c)
    order = ["int8", "fp32", "fp16"] if precision == "auto" else [precision, "fp32"]
    for prec in order:
        found = by_prec.get(prec, [])
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ModelLoadError(f"{model_dir}: several {prec} {role} files ({names}); pass paths")
    have = ", ".join(c.name for c in candidates)
    raise ModelLoadError(f"{model_dir}: no {precision} {role} file (found {have})")


def pick_ncnn(model_dir: Path, role: str, precision: str) -> Path:
    """The ``.param`` of ``role``: int8 encoder/joiner where asked for (``auto``:
    where present), the plain decoder always (upstream never quantizes it)."""
    if role == "decoder":
        precision = "fp32"
    return pick_file(model_dir, role, precision, ".param")


def _from_layout(d: Path, role: str, precision: str, layout: Mapping[str, str]) -> Path | None:
    """The file a catalog layout names for ``role`` at ``precision``, if present."""
    keys = (
        [f"{role}_int8", role] if precision in ("auto", "int8") else [f"{role}_{precision}", role]
    )
    for key in keys:
        if key in layout and (d / layout[key]).is_file():
            return d / layout[key]
    return None


def tokens_file(model_dir: Path) -> Path:
    """``tokens.txt`` of an existing model directory (a clear error otherwise)."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: model directory not found")
    tokens = model_dir / "tokens.txt"
    if not tokens.is_file():
        raise ModelLoadError(f"{model_dir}: tokens.txt not found")
    return tokens


def find_model_files(
    model_dir: str | Path, precision: str = "auto", layout: Mapping[str, str] | None = None
) -> ModelFiles:
    """Locate encoder/decoder/joiner/tokens in a directory.

    ``precision="auto"`` takes the int8 file of a role where one exists
    (smaller and faster on CPUs), else fp32; an explicit precision falls back
    to fp32 for roles that have no file of that precision (e.g. decoders are
    often left unquantized). ``layout`` (a catalog entry's role → file map,
    e.g. ``encoder_int8``) takes precedence over globbing.

    A directory of sherpa-ncnn ``.param``/``.bin`` files (and no ONNX
    encoder) is an ncnn model: see :func:`pick_ncnn`.
    """
    if precision not in _PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}; expected one of {_PRECISIONS}")
    d = Path(model_dir)
    tokens = tokens_file(d)
    bpe = d / "bpe.model"
    ncnn = not any(d.glob("encoder*.onnx")) and any(d.glob("encoder*.param"))
    pick: Callable[[Path, str, str], Path] = pick_ncnn if ncnn else pick_file
    roles = {
        role: (_from_layout(d, role, precision, layout or {}) or pick(d, role, precision))
        for role in ("encoder", "decoder", "joiner")
    }
    return ModelFiles(
        encoder=roles["encoder"],
        decoder=roles["decoder"],
        joiner=roles["joiner"],
        tokens=tokens,
        bpe_model=bpe if bpe.is_file() else None,
        backend="ncnn" if ncnn else "onnxruntime",
        precision=precision,
    )
