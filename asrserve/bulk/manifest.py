"""What to transcribe: the ``INPUT`` of ``asrserve bulk`` turned into :class:`Item` s.

``INPUT`` is one of (tried in this order):

- a **directory**: every audio file below it (recursive, by extension, sorted);
  the id is the path relative to the directory (``sub/a.wav``);
- a **JSONL manifest** (``*.jsonl``, or any file whose first non-blank line starts
  with ``{``): one object per line, ``{"audio": PATH_OR_URI, "id": ...}``; ``id``
  is optional (default: ``audio`` as written), ``audio_filepath`` (NeMo
  manifests) is accepted for ``audio``; other keys are ignored;
- a single **audio file** (by extension): the id is its name;
- a **text list** (any other file): one path or URI per line, or ``ID<TAB>AUDIO``;
  blank lines and lines starting with ``#`` are skipped; the id is the line as
  written;
- a **glob** (a pattern with ``*``, ``?`` or ``[``, ``**`` recursive): matching
  files, sorted; the id is the matched path.

Audio is a plain path or a ``file://`` URI (percent-encoded, host empty or
``localhost``). Relative paths in a list or manifest are relative to that file's
folder. Other URI schemes (``http://``, ``s3://`` …) are not fetched: such an
item becomes an error line of the output, like an unreadable file.

Ids must be unique (resuming keys on them): an id listed twice for the same
audio is kept once; for different audio it is refused.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from asrserve.errors import AudioFormatError, ConfigError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
    | {".m4a", ".mp4", ".aac", ".webm", ".mka", ".mkv"}  # through PyAV
)
_GLOB_CHARS = frozenset("*?[")


class ManifestError(ConfigError):
    """``INPUT`` does not exist, is malformed, or lists one id for two files."""


@dataclass(frozen=True)
class Item:
    """One input: ``audio`` as written in the input, ``location`` what workers open
    (an absolute path, or the URI itself when its scheme is not supported)."""

    id: str
    audio: str
    location: str


def read_inputs(spec: str | Path) -> list[Item]:
    """The items of ``INPUT`` (see the module docstring)."""
    text = str(spec)
    p = Path(text)
    if p.is_dir():
        return _directory(p)
    if p.is_file():
        if p.suffix.lower() == ".jsonl" or _looks_like_jsonl(p):
            return _unique(_jsonl(p))
        if p.suffix.lower() in AUDIO_EXTENSIONS:
            return [Item(p.name, text, str(p.resolve()))]
        return _unique(_text_list(p))
    if any(c in text for c in _GLOB_CHARS):
        matches = sorted(m for m in glob.glob(text, recursive=True) if Path(m).is_file())
        if not matches:
            raise ManifestError(f"{text}: the pattern matches no file")
        return [Item(m, m, str(Path(m).resolve())) for m in matches]
    raise ManifestError(f"{text}: no such directory, file or pattern")


def resolve_audio(audio: str, base: Path) -> str:
    """Where a worker opens ``audio``: an absolute path for plain paths and
    ``file://`` URIs (relative paths against ``base``), the URI itself otherwise."""
    if "://" in audio:
        u = urlparse(audio)
        if u.scheme.lower() != "file":
            return audio
        if u.netloc not in ("", "localhost"):
            return audio  # file://otherhost/... is not local either
        return str(Path(unquote(u.path)))
    path = Path(audio).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def local_path(location: str) -> Path:
    """The file behind an item's ``location``; :class:`AudioFormatError` for a URI
    this runtime does not fetch."""
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise AudioFormatError(
            f"{location}: URI scheme {scheme!r} is not supported (plain paths and file:// only)"
        )
    return Path(location)


def _directory(root: Path) -> list[Item]:
    files = sorted(
        f for f in root.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file()
    )
    if not files:
        raise ManifestError(f"{root}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return [Item(f.relative_to(root).as_posix(), str(f), str(f.resolve())) for f in files]


def _looks_like_jsonl(p: Path) -> bool:
    try:
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    return line.lstrip().startswith("{")
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{p}: cannot read the list ({exc})") from exc


def _jsonl(p: Path) -> list[Item]:
    base = p.resolve().parent
    items: list[Item] = []
    for lineno, line in enumerate(_read_lines(p), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{p}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{p}:{lineno}: expected an object, got {type(obj).__name__}")
        audio = obj.get("audio", obj.get("audio_filepath"))
        if not isinstance(audio, str) or not audio:
            raise ManifestError(f"{p}:{lineno}: 'audio' must be a non-empty string")
        raw_id = obj.get("id", audio)
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or raw_id == "":
            raise ManifestError(f"{p}:{lineno}: 'id' must be a non-empty string or an integer")
        items.append(Item(str(raw_id), audio, resolve_audio(audio, base)))
    if not items:
        raise ManifestError(f"{p}: the manifest lists nothing")
    return items


def _text_list(p: Path) -> list[Item]:
    base = p.resolve().parent
    items: list[Item] = []
    for line in _read_lines(p):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        item_id, sep, audio = entry.partition("\t")
        if not sep:
            item_id = audio = entry
        item_id, audio = item_id.strip(), audio.strip()
        if not item_id or not audio:
            raise ManifestError(f"{p}: bad line {line!r} (expected AUDIO or ID<TAB>AUDIO)")
        items.append(Item(item_id, audio, resolve_audio(audio, base)))
    if not items:
        raise ManifestError(f"{p}: the list names no audio")
    return items


def _unique(items: list[Item]) -> list[Item]:
    seen: dict[str, Item] = {}
    out: list[Item] = []
    for it in items:
        prev = seen.get(it.id)
        if prev is None:
            seen[it.id] = it
            out.append(it)
        elif prev.location != it.location:
            raise ManifestError(
                f"id {it.id!r} is listed for two files ({prev.audio!r} and {it.audio!r})"
            )
    return out
