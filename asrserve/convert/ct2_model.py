"""Reading CTranslate2's ``model.bin`` (binary version 6) into numpy arrays.

The file, little-endian, as ``ctranslate2.specs.ModelSpec._serialize`` writes it::

    uint32  binary version (6)
    string  spec name (e.g. "WhisperSpec")      string: uint16 length incl. NUL, bytes, NUL
    uint32  spec revision
    uint32  variable count
    per variable: string name, uint8 rank, uint32 dims[rank], uint8 dtype,
                  uint32 byte count, raw bytes (C order)
    uint32  alias count
    per alias:    string alias, string target name

dtype ids follow CTranslate2's ``DataType`` enum: 0 float32, 1 int8, 2 int16,
3 int32, 4 float16, 5 bfloat16. Scalars (rank 0) hold settings such as
``decoder/activation`` or ``encoder/num_heads``; a weight quantized by
CTranslate2 (int8/int16) comes with ``<name>_scale`` (per output row), and
:meth:`Ct2Model.weight` divides it back out.

A file split into parts (``model.bin.part1``, ``model.bin.part2`` …) is read
as their concatenation.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from asrserve.errors import ModelLoadError

__all__ = ["Ct2Model", "model_bin_parts", "read_model_bin"]

SUPPORTED_VERSIONS = (5, 6)
"""Binary versions with the layout above (5 lacks nothing this reader needs)."""

_DTYPES: dict[int, npt.DTypeLike] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",  # decoded by hand: numpy has no bfloat16
}


@dataclass(frozen=True)
class Ct2Model:
    """The variables of one ``model.bin``, aliases resolved."""

    spec: str
    revision: int
    version: int
    variables: Mapping[str, npt.NDArray[np.generic]]
    aliases: Mapping[str, str]

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) in self.variables

    def _resolve(self, name: str) -> str:
        seen: set[str] = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        return name

    def raw(self, name: str) -> npt.NDArray[np.generic]:
        """The variable as stored (alias targets followed)."""
        try:
            return self.variables[self._resolve(name)]
        except KeyError:
            raise ModelLoadError(f"model.bin ({self.spec}): no variable {name!r}") from None

    def weight(self, name: str) -> npt.NDArray[np.float32]:
        """A float variable in float32; an int8/int16 weight is divided by its
        ``<name>_scale`` (one scale per output row, as CTranslate2 quantizes)."""
        value = self.raw(name)
        if value.dtype.kind == "f":
            return np.asarray(value, dtype=np.float32)
        scale_name = f"{name}_scale"
        if scale_name not in self:
            raise ModelLoadError(
                f"model.bin: {name} is {value.dtype} without a {scale_name} to dequantize it"
            )
        scale = np.asarray(self.raw(scale_name), dtype=np.float32)
        rows = scale.reshape((-1,) + (1,) * (value.ndim - 1)) if scale.ndim else scale
        out: npt.NDArray[np.float32] = (value.astype(np.float32) / rows).astype(np.float32)
        return out

    def scalar(self, name: str, default: int | None = None) -> int:
        """An integer or boolean setting (rank 0)."""
        if name not in self:
            if default is None:
                raise ModelLoadError(f"model.bin ({self.spec}): no setting {name!r}")
            return default
        value = self.raw(name)
        if value.size != 1:
            raise ModelLoadError(f"model.bin: {name} is not a scalar (shape {value.shape})")
        return int(value.reshape(()).item())

    def names(self, prefix: str = "") -> Iterator[str]:
        """Variable and alias names starting with ``prefix``, sorted."""
        return iter(sorted(n for n in (*self.variables, *self.aliases) if n.startswith(prefix)))


def model_bin_parts(directory: Path) -> list[Path]:
    """``model.bin``, or its parts ``model.bin.part1`` … in numeric order."""
    whole = directory / "model.bin"
    if whole.is_file():
        return [whole]
    numbered = []
    for p in directory.glob("model.bin.part*"):
        m = re.fullmatch(r"model\.bin\.part(\d+)", p.name)
        if m:
            numbered.append((int(m.group(1)), p))
    numbered.sort()
    if not numbered or [n for n, _ in numbered] != list(range(1, len(numbered) + 1)):
        have = ", ".join(p.name for _, p in numbered) or "none"
        raise ModelLoadError(f"{directory}: no model.bin (nor model.bin.part1..N; found {have})")
    return [p for _, p in numbered]


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ModelLoadError(f"{self.where}: truncated at byte {self.pos} (wanted {n} more)")
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = self.take(n)
        if not raw or raw[-1] != 0:
            raise ModelLoadError(f"{self.where}: a string at byte {self.pos - n} is not NUL-ended")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelLoadError(f"{self.where}: a name is not UTF-8") from None


def _bfloat16(raw: bytes, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def read_model_bin(path: Path | list[Path]) -> Ct2Model:
    """Read ``model.bin`` (or the concatenation of its parts)."""
    paths = [path] if isinstance(path, Path) else list(path)
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} parts)"
    try:
        data = b"".join(p.read_bytes() for p in paths)
    except OSError as exc:
        raise ModelLoadError(f"{where}: cannot read ({exc})") from exc
    r = _Reader(data, where)
    version = r.u32()
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{where}: CTranslate2 binary version {version} (this reader knows "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}); is this a CTranslate2 model.bin?"
        )
    spec = r.string()
    revision = r.u32()
    variables: dict[str, npt.NDArray[np.generic]] = {}
    for _ in range(r.u32()):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack("I" * rank) if rank else ()
        (dtype_id,) = r.unpack("B")
        nbytes = r.u32()
        raw = r.take(nbytes)
        kind = _DTYPES.get(dtype_id)
        if kind is None:
            raise ModelLoadError(f"{where}: {name} has unknown dtype id {dtype_id}")
        itemsize = 2 if kind == "bfloat16" else np.dtype(kind).itemsize
        if nbytes != int(np.prod(shape, dtype=np.int64)) * itemsize:
            raise ModelLoadError(f"{where}: {name} holds {nbytes} bytes, not {shape} of {kind}")
        if kind == "bfloat16":
            value: npt.NDArray[np.generic] = _bfloat16(raw, shape)
        else:
            value = np.frombuffer(raw, dtype=np.dtype(kind).newbyteorder("<")).reshape(shape)
        variables[name] = value
    aliases = {}
    for _ in range(r.u32()):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(data):
        raise ModelLoadError(f"{where}: {len(data) - r.pos} bytes after the aliases")
    return Ct2Model(spec, revision, version, variables, aliases)
