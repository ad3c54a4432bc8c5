"""Every INPUT form of ``asrserve bulk`` and the resolution of paths and URIs."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from asrserve.bulk.manifest import ManifestError, local_path, read_inputs, resolve_audio
from asrserve.errors import AudioFormatError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a.wav, b.flac, sub/c.wav, sub/deep/d.WAV, notes.txt (not audio)."""
    for name in ("a.wav", "b.flac", "sub/c.wav", "sub/deep/d.WAV", "notes.txt"):
        p = tmp_path / "audio" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return tmp_path / "audio"


def test_directory_is_recursive_sorted_and_by_extension(tree: Path) -> None:
    items = read_inputs(tree)
    assert [i.id for i in items] == ["a.wav", "b.flac", "sub/c.wav", "sub/deep/d.WAV"]
    assert all(Path(i.location).is_absolute() and Path(i.location).is_file() for i in items)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no audio files"):
        read_inputs(tmp_path)


def test_glob_recursive(tree: Path) -> None:
    items = read_inputs(f"{tree}/**/*.wav")
    assert [Path(i.id).name for i in items] == ["a.wav", "c.wav"]
    assert items[0].audio == items[0].id
    with pytest.raises(ManifestError, match="matches no file"):
        read_inputs(f"{tree}/*.mp3")


def test_single_audio_file(tree: Path) -> None:
    [item] = read_inputs(tree / "a.wav")
    assert item.id == "a.wav"
    assert item.location == str((tree / "a.wav").resolve())


def test_text_list_paths_uris_ids_and_comments(tree: Path, tmp_path: Path) -> None:
    odd = tree / "with space %.wav"
    odd.write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text(
        "# a comment\n"
        "\n"
        "audio/a.wav\n"  # relative to the list's folder
        f"{tree / 'b.flac'}\n"
        f"file://{quote(str(odd))}\n"
        f"file://localhost{tree / 'sub' / 'c.wav'}\n"
        f"my-id\t{tree / 'sub' / 'deep' / 'd.WAV'}\n"
        "https://example.invalid/x.wav\n"
    )
    items = read_inputs(lst)
    assert [i.id for i in items] == [
        "audio/a.wav",
        str(tree / "b.flac"),
        f"file://{quote(str(odd))}",
        f"file://localhost{tree / 'sub' / 'c.wav'}",
        "my-id",
        "https://example.invalid/x.wav",
    ]
    locations = [i.location for i in items]
    assert locations[:5] == [
        str((tree / "a.wav").resolve()),
        str(tree / "b.flac"),
        str(odd),
        str(tree / "sub" / "c.wav"),
        str(tree / "sub" / "deep" / "d.WAV"),
    ]
    assert all(local_path(loc).is_file() for loc in locations[:5])
    with pytest.raises(AudioFormatError, match="scheme 'https' is not supported"):
        local_path(locations[5])


def test_jsonl_manifest(tree: Path, tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    rows = [
        {"audio": "audio/a.wav", "id": "first", "text": "ignored"},
        {"audio": str(tree / "b.flac"), "id": 7},
        {"audio_filepath": "audio/sub/c.wav", "duration": 1.0},  # a NeMo manifest line
        {"audio": f"file://{tree / 'sub' / 'deep' / 'd.WAV'}"},
    ]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = read_inputs(m)
    assert [i.id for i in items] == [
        "first",
        "7",
        "audio/sub/c.wav",
        f"file://{tree / 'sub' / 'deep' / 'd.WAV'}",
    ]
    assert [Path(i.location) for i in items] == [
        (tree / "a.wav").resolve(),
        tree / "b.flac",
        (tree / "sub" / "c.wav").resolve(),
        tree / "sub" / "deep" / "d.WAV",
    ]


def test_jsonl_detected_by_content(tree: Path, tmp_path: Path) -> None:
    m = tmp_path / "manifest.txt"
    m.write_text(json.dumps({"audio": str(tree / "a.wav"), "id": "x"}) + "\n")
    assert [i.id for i in read_inputs(m)] == ["x"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ('{"id": "x"}', "'audio' must be"),
        ('{"audio": "a.wav", "id": true}', "'id' must be"),
        ('["a.wav"]', "expected an object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"audio": "ok.wav"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=rf"m\.jsonl:2: {message}"):
        read_inputs(m)


def test_duplicate_ids(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(f"{tree / 'a.wav'}\n{tree / 'a.wav'}\n")
    assert len(read_inputs(lst)) == 1  # the same file twice: kept once
    m = tmp_path / "m.jsonl"
    m.write_text(
        json.dumps({"audio": str(tree / "a.wav"), "id": "x"})
        + "\n"
        + json.dumps({"audio": str(tree / "b.flac"), "id": "x"})
        + "\n"
    )
    with pytest.raises(ManifestError, match="listed for two files"):
        read_inputs(m)


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such directory, file or pattern"):
        read_inputs(tmp_path / "nothing")


def test_resolve_audio_keeps_foreign_uris(tmp_path: Path) -> None:
    assert resolve_audio("s3://bucket/key.wav", tmp_path) == "s3://bucket/key.wav"
    assert resolve_audio("file://host/x.wav", tmp_path) == "file://host/x.wav"
    assert resolve_audio("x.wav", tmp_path) == str(tmp_path.resolve() / "x.wav")
