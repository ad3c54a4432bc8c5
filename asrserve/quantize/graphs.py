"""Which graphs of a model directory ``asrserve quantize`` converts, and the
names the converted graphs get so that the model's family loads them.

* a sherpa-style transducer (ONNX or ncnn): ``encoder``, ``decoder``,
  ``joiner`` → ``encoder.int8.onnx`` … (``tokens.txt``, ``bpe.model`` copied);
* Whisper in sherpa-onnx's layout: ``{name}-encoder.onnx``,
  ``{name}-decoder.onnx`` → ``{name}-encoder.int8.onnx`` (or ``.fp16.onnx``),
  as sherpa-onnx names its files (``{name}-tokens.txt`` copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asrserve.families.files import find_model_files, pick_file

KINDS = ("transducer", "whisper")


@dataclass(frozen=True)
class GraphSet:
    """The graphs of one model directory by role, and the files that go with them."""

    kind: str
    """``transducer`` or ``whisper``."""
    backend: str
    """``onnxruntime`` or ``ncnn``."""
    paths: dict[str, Path]
    """Role → graph file (ncnn: the ``.param``, its ``.bin`` beside it)."""
    side_files: tuple[Path, ...] = ()
    """Copied unchanged (tokens, BPE model)."""
    prefix: str = ""
    """Whisper: ``{name}-``, the start of every file name."""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.paths)

    @property
    def model_dir(self) -> Path:
        return next(iter(self.paths.values())).parent

    def output_name(self, role: str, suffix: str) -> str:
        """The converted ``role``'s file name, e.g. ``tiny.en-decoder.int8.onnx``
        for ``suffix`` ``.int8.onnx`` (``.onnx``: kept as it was)."""
        return f"{self.prefix}{role}{suffix}"

    def size(self, role: str) -> int:
        """Bytes of ``role``'s graph (ncnn: ``.param`` + ``.bin``)."""
        path = self.paths[role]
        size = path.stat().st_size
        if self.backend == "ncnn":
            size += path.with_suffix(".bin").stat().st_size
        return size


def is_whisper(model_dir: Path) -> bool:
    from asrserve.families import whisper

    return whisper.probe(model_dir)


def find_graphs(model_dir: Path, precision: str = "auto") -> GraphSet:
    """The graphs of ``precision`` in ``model_dir`` (``auto``: int8 where present)."""
    d = Path(model_dir)
    if is_whisper(d):
        from asrserve.families.whisper import model_name

        name = model_name(d)
        return GraphSet(
            kind="whisper",
            backend="onnxruntime",
            paths={r: pick_file(d, f"{name}-{r}", precision) for r in ("encoder", "decoder")},
            side_files=(d / f"{name}-tokens.txt",),
            prefix=f"{name}-",
        )
    files = find_model_files(d, precision)
    return GraphSet(
        kind="transducer",
        backend=files.backend,
        paths={"encoder": files.encoder, "decoder": files.decoder, "joiner": files.joiner},
        side_files=tuple(p for p in (files.tokens, files.bpe_model) if p is not None),
    )
