"""asrserve's own files on this machine: where they go, and their content hash."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest

from asrserve.cache import cache_home, sha256_file


def test_the_cache_follows_xdg_and_survives_a_missing_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_home() == tmp_path / "asrserve"

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", no_home)
    assert cache_home() == Path(tempfile.gettempdir()) / "asrserve"


def test_sha256_of_a_file_spanning_several_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over 2 MiB: three blocks
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()
