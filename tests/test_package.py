"""``import asrserve`` is cheap, its public names load on first use, the
command line's parser needs no numpy, and the command line keeps numpy's BLAS
to one thread unless the user says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import asrserve


def _python(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_public_names_resolve() -> None:
    import importlib

    for name in asrserve.__all__:
        assert name in dir(asrserve), name
        getattr(asrserve, name)  # AttributeError if a public name went missing
    for name, module in asrserve._LAZY.items():
        assert getattr(asrserve, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = asrserve.no_such_name  # type: ignore[attr-defined]


def test_import_loads_no_numpy_or_onnxruntime() -> None:
    heavy = "('numpy', 'onnxruntime')"
    out = _python(f"import sys, asrserve; print([m for m in {heavy} if m in sys.modules])")
    assert out == "[]"


def test_cli_sets_one_blas_thread_unless_told() -> None:
    code = "import os, asrserve.cli; print(os.environ['OPENBLAS_NUM_THREADS'])"
    assert _python(code) == "1"
    assert _python(code, OPENBLAS_NUM_THREADS="2") == "2"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_cli_process_starts_no_blas_threads() -> None:
    code = "import os, asrserve.cli, numpy; print(len(os.listdir('/proc/self/task')))"
    assert _python(code) == "1"


@pytest.mark.parametrize(
    ("argv", "rc"),
    [
        (["--version"], 0),
        (["--help"], 0),
        (["models", "list"], 0),
        (["healthcheck", "--port", "1", "--timeout", "0.5"], 1),  # nothing listens there
    ],
)
def test_parser_and_light_commands_import_no_numpy(argv: list[str], rc: int) -> None:
    """Every command builds every subcommand's parser: the ones that load no
    model (``healthcheck`` is the container's probe, run every few seconds)
    stay free of numpy and onnxruntime."""
    code = (
        "import contextlib, io, sys; from asrserve.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as exit:\n"
        "        rc = exit.code\n"
        "print(rc, [m for m in ('numpy', 'onnxruntime') if m in sys.modules])"
    )
    assert _python(code) == f"{rc} []"
