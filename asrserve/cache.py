"""Where asrserve keeps files of its own on this machine, and how it names
them by content."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/asrserve`` (``~/.cache/asrserve``); without a home
    directory (a bare container user), ``asrserve`` in the temp dir."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    except RuntimeError:
        base = Path(tempfile.gettempdir())
    return base / "asrserve"


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
