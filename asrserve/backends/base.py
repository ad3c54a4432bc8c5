"""The backend interface: load a graph, describe its tensors, run it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Protocol

from asrserve.errors import ConfigError

if TYPE_CHECKING:  # the command line's parsers read PROVIDERS without loading numpy
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape of a graph input or output.

    Dynamic dimensions are ``None``.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]


#: Execution providers a model can be asked to run on (onnxruntime's names
#: them ``<Name>ExecutionProvider``; ncnn runs on the CPU only).
PROVIDERS: Final = ("cpu", "cuda", "coreml")


@dataclass(frozen=True)
class BackendOptions:
    """Engine options shared by every backend."""

    num_threads: int = 1
    provider: str = "cpu"
    spin: bool = True
    """Let idle pool threads spin for work: lower latency per call, but they
    burn a core while the caller does other work (a server's event loop)."""

    def validate(self) -> BackendOptions:
        if self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
        if self.provider not in PROVIDERS:
            raise ConfigError(
                f"unknown provider {self.provider!r}; expected one of {', '.join(PROVIDERS)}"
            )
        return self

    def single_threaded(self) -> BackendOptions:
        """These options with one inference thread."""
        return replace(self, num_threads=1)


class Session(Protocol):
    """One loaded graph.

    ``run`` takes feeds by input name and returns the named outputs (all,
    in ``outputs`` order, by default).
    """

    path: str
    inputs: Sequence[TensorInfo]
    outputs: Sequence[TensorInfo]
    metadata: Mapping[str, str]
    batch_dependent: bool
    """True when a row's output can depend on other rows (per-tensor dynamic
    activation quantization), so batching changes results slightly."""

    def run(
        self,
        feeds: Mapping[str, npt.NDArray[np.generic]],
        outputs: Sequence[str] | None = None,
    ) -> Sequence[npt.NDArray[np.generic]]: ...
