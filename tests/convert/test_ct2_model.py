"""CTranslate2 model.bin reading: layout, dtypes, aliases, parts, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asrserve.convert.ct2_model import model_bin_parts, read_model_bin
from asrserve.errors import ModelLoadError
from tests.convert.ct2_synth import write_model_bin


def test_variables_scalars_and_aliases(tmp_path: Path) -> None:
    w16 = np.arange(6, dtype=np.float16).reshape(2, 3)
    variables = {
        "a/weight": w16,
        "a/bias": np.array([0.5, -1.5], np.float32),
        "a/heads": np.array(6, np.int16),
        "b/weight": np.array([[127, -127], [64, 0]], np.int8),
        "b/weight_scale": np.array([127.0, 64.0], np.float32),
        "flag": np.array(1, np.int8),
    }
    path = tmp_path / "model.bin"
    write_model_bin(path, variables, {"c/weight": "a/weight"}, spec="TestSpec")
    m = read_model_bin(path)
    assert (m.spec, m.revision, m.version) == ("TestSpec", 3, 6)
    assert m.raw("a/weight").dtype == np.float16
    np.testing.assert_array_equal(m.weight("c/weight"), w16.astype(np.float32))
    np.testing.assert_array_equal(m.weight("a/bias"), [0.5, -1.5])
    assert m.scalar("a/heads") == 6
    assert m.scalar("flag") == 1
    assert m.scalar("missing", 3) == 3
    # CTranslate2's int8 rows are value * scale: dividing gives the floats back
    np.testing.assert_allclose(m.weight("b/weight"), [[1, -1], [1, 0]])
    assert "c/weight" in m
    assert "nothing" not in m
    assert list(m.names("a/")) == ["a/bias", "a/heads", "a/weight"]
    with pytest.raises(ModelLoadError, match="no variable"):
        m.raw("nothing")
    with pytest.raises(ModelLoadError, match="not a scalar"):
        m.scalar("a/bias")


def test_bfloat16(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.int16)
    path = tmp_path / "model.bin"
    write_model_bin(path, {"x": raw}, {})
    data = bytearray(path.read_bytes())
    # written as int16 (id 2): make it bfloat16 (id 5)
    at = data.index(b"x\0") + 2 + 1 + 4
    assert data[at] == 2
    data[at] = 5
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_model_bin(path).weight("x"), values)


def test_parts_are_read_as_one_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole.bin"
    write_model_bin(whole, {"x": np.arange(1000, dtype=np.float32)}, {})
    data = whole.read_bytes()
    d = tmp_path / "split"
    d.mkdir()
    cut = len(data) // 3
    for i, piece in enumerate((data[:cut], data[cut : 2 * cut], data[2 * cut :]), 1):
        (d / f"model.bin.part{i}").write_bytes(piece)
    parts = model_bin_parts(d)
    assert [p.name for p in parts] == ["model.bin.part1", "model.bin.part2", "model.bin.part3"]
    np.testing.assert_array_equal(read_model_bin(parts).weight("x"), np.arange(1000))
    (d / "model.bin.part2").unlink()
    with pytest.raises(ModelLoadError, match=r"part1\.\.N"):
        model_bin_parts(d)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\0", "after the aliases"),
        (lambda b: (99).to_bytes(4, "little") + b[4:], "binary version 99"),
    ],
)
def test_damaged_files_are_refused(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "model.bin"
    write_model_bin(path, {"x": np.ones(4, np.float32)}, {"y": "x"})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelLoadError, match=message):
        read_model_bin(path)
