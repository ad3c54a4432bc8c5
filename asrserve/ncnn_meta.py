"""``asrserve ncnn-meta``: add sherpa-ncnn's ``SherpaMetaData`` line to an encoder ``.param``.

pnnx exports carry no model description; sherpa-ncnn (and asrserve) read the
family and its geometry from one extra layer right after the header::

    SherpaMetaData           sherpa_meta_data1        0 0 0=3 1=4 2=192 3=384

Parameter 0 is the model type; the others are the family's keys, by the ids
sherpa-ncnn's ``*-model.cc`` read (arrays as ncnn array parameters
``-233xx=n,v1,...,vn``). The layer count on line 2 is updated; an existing
``SherpaMetaData`` line is replaced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asrserve.errors import ConfigError, ModelLoadError

EXIT_OK = 0


@dataclass(frozen=True)
class MetaKey:
    """One metadata value: its command-line name, parameter id, and whether
    it is a per-stack list."""

    name: str
    param_id: int
    array: bool = False


_SCHEMAS: dict[str, tuple[MetaKey, ...]] = {
    "conv-emformer": (
        MetaKey("num-layers", 1),
        MetaKey("memory-size", 2),
        MetaKey("cnn-module-kernel", 3),
        MetaKey("left-context-length", 4),
        MetaKey("chunk-length", 5),
        MetaKey("right-context-length", 6),
        MetaKey("d-model", 7),
    ),
    "zipformer": (
        MetaKey("decode-chunk-len", 1),
        MetaKey("num-left-chunks", 2),
        MetaKey("pad", 3),
        MetaKey("num-encoder-layers", 16, array=True),
        MetaKey("encoder-dims", 17, array=True),
        MetaKey("attention-dims", 18, array=True),
        MetaKey("zipformer-downsampling-factors", 19, array=True),
        MetaKey("cnn-module-kernels", 20, array=True),
    ),
    "lstm": (MetaKey("num-layers", 1), MetaKey("d-model", 2), MetaKey("rnn-hidden-size", 3)),
}
_FIXED = {"zipformer": {15: 1}}
"""Keys written without a flag: sherpa-ncnn >= 2.0 refuses Zipformer version < 1."""

Value = int | Sequence[int]


def meta_line(model_type: str, values: Mapping[str, Value]) -> str:
    """The ``SherpaMetaData`` layer line for ``model_type`` (keys by flag name)."""
    # here, not at the top: the backend and the families bring numpy, which
    # the command line's parser (built for every asrserve command) does not need
    from asrserve.backends.ncnn import ARRAY_KEY_BASE, META_LAYER, META_NAME
    from asrserve.families.ncnn_base import NCNN_MODEL_TYPES

    schema = _SCHEMAS.get(model_type)
    if schema is None:
        raise ConfigError(f"unknown model type {model_type!r}; expected one of {list(_SCHEMAS)}")
    names = {k.name for k in schema}
    extra = sorted(set(values) - names)
    if extra:
        raise ConfigError(f"--{extra[0]} does not apply to --model-type {model_type}")
    missing = [f"--{k.name}" for k in schema if k.name not in values]
    if missing:
        raise ConfigError(f"--model-type {model_type} needs {', '.join(missing)}")
    fields: dict[int, str] = {0: f"0={NCNN_MODEL_TYPES[model_type]}"}
    fields.update((k, f"{k}={v}") for k, v in _FIXED.get(model_type, {}).items())
    lengths = set()
    for key in schema:
        v = values[key.name]
        ints = [v] if isinstance(v, int) else list(v)
        if not ints or min(ints) < 1 or (len(ints) > 1 and not key.array):
            raise ConfigError(f"--{key.name} must be a positive integer, got {v!r}")
        if key.array:
            lengths.add(len(ints))
            joined = ",".join(str(i) for i in ints)
            fields[key.param_id] = f"{ARRAY_KEY_BASE - key.param_id}={len(ints)},{joined}"
        else:
            fields[key.param_id] = f"{key.param_id}={ints[0]}"
    if len(lengths) > 1:
        raise ConfigError(
            f"the per-stack lists of {model_type} differ in length: {sorted(lengths)}"
        )
    params = " ".join(fields[k] for k in sorted(fields))
    return f"{META_LAYER:<24} {META_NAME:<24} 0 0 {params}"


def add_meta(param: Path, line: str, output: Path | None = None) -> Path:
    """Write ``param`` with ``line`` as its metadata to ``output`` (default: in
    place), atomically; the result is re-read and checked before it replaces
    anything."""
    from asrserve.backends.ncnn import read_param_layers, read_param_lines, with_meta_line

    read_param_layers(param)  # refuse a malformed or truncated input by name
    text = "\n".join(with_meta_line(read_param_lines(param), line)) + "\n"
    target = output or param
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        shutil.copymode(param, tmp)
        read_param_layers(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _positive_ints(value: str) -> list[int]:
    try:
        ints = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if min(ints) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {value!r}")
    return ints


def _flags() -> dict[str, tuple[bool, str]]:
    """Every family flag: whether it is a list, and which families use it (param ids)."""
    flags: dict[str, tuple[bool, str]] = {}
    for model_type, schema in _SCHEMAS.items():
        for key in schema:
            array, users = flags.get(key.name, (key.array, ""))
            use = f"{model_type} {key.param_id}"
            flags[key.name] = (array, f"{users}, {use}" if users else use)
    return flags


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ncnn-meta`` to the subcommands of the ``asrserve`` parser."""
    p = sub.add_parser(
        "ncnn-meta",
        help="add sherpa-ncnn's SherpaMetaData line to a pnnx-exported encoder .param",
        description="Add or replace the SherpaMetaData line of a sherpa-ncnn encoder .param.",
    )
    p.add_argument(
        "param", type=Path, help="encoder .param (e.g. encoder_jit_trace-pnnx.ncnn.param)"
    )
    p.add_argument(
        "--model-type", required=True, choices=list(_SCHEMAS), help="the encoder's family"
    )
    p.add_argument("--output", type=Path, default=None, help="write here (default: in place)")
    for name, (array, users) in _flags().items():
        p.add_argument(
            f"--{name}",
            type=_positive_ints if array else _positive_int,
            default=None,
            metavar="N,N,..." if array else "N",
            help=f"required by the model types that use it (family parameter id: {users})",
        )
    p.set_defaults(func=run_ncnn_meta)


def run_ncnn_meta(args: argparse.Namespace) -> int:
    given: dict[str, Value] = {}
    for name in _flags():
        value = getattr(args, name.replace("-", "_"))
        if value is not None:
            given[name] = value
    if not args.param.is_file():
        raise ModelLoadError(f"{args.param}: file not found")
    line = meta_line(args.model_type, given)
    out = add_meta(args.param, line, args.output)
    print(f"{out}: {line.split(maxsplit=4)[-1]}")
    return EXIT_OK
