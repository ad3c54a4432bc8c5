"""Every model directory layout asrserve loads, in one list.

A :class:`Layout` says whether a directory is its kind (``probe``: from
metadata and config files, never from file names alone) and loads it behind
a recognizer (``load``). :func:`find_layout` tries them in order; the last,
the sherpa-style transducer export (icefall/sherpa-onnx ONNX, sherpa-ncnn),
takes any directory, so its loader names what is missing or foreign.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from asrserve.families.load_options import FAMILY_OPTIONS, LoadOptions

__all__ = ["Layout", "LoadOptions", "find_layout", "layouts"]


@dataclass(frozen=True)
class Layout:
    name: str
    probe: Callable[[Path], bool]
    load: Callable[[Path, LoadOptions], Any]
    """The recognizer: a :class:`~asrserve.core.recognizer.Recognizer`, or the
    VAD-segmented offline :class:`~asrserve.families.nemo_tdt.TdtRecognizer`."""
    options: frozenset[str] = frozenset()
    """The family-specific :class:`LoadOptions` it takes (``language``, ``task``);
    :func:`asrserve.load_model` refuses the others."""


@cache
def layouts() -> tuple[Layout, ...]:
    """The layouts, in the order they are tried (imported on first use)."""
    from asrserve.families import (
        loading,
        nemo_offline,
        nemo_sherpa,
        nemo_streaming,
        nemo_tdt,
        whisper,
    )

    return (
        Layout("nemo-streaming", nemo_streaming.probe, nemo_streaming.load_recognizer),
        Layout("nemo-tdt", nemo_tdt.probe, nemo_tdt.load_recognizer),
        Layout("nemo-sherpa", nemo_sherpa.probe, nemo_sherpa.load_recognizer),
        Layout("nemo-offline", nemo_offline.probe, nemo_offline.load_recognizer),
        Layout("whisper", whisper.probe, whisper.load_recognizer, frozenset(FAMILY_OPTIONS)),
        Layout("transducer", loading.probe, loading.load_recognizer),
    )


def find_layout(model_dir: Path) -> Layout:
    """The first layout that claims ``model_dir``."""
    return next(x for x in layouts() if x.probe(model_dir))
