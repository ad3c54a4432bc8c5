"""The model catalog: which pretrained models exist, how to fetch them, where they live.

The catalog is a TOML file (``asrserve/data/catalog.toml``, shipped inside the
package and linked from ``models/`` of a checkout, or the file named by
``$ASRSERVE_CATALOG``) with one ``[[model]]`` table per model.
:func:`load_catalog` validates it strictly, :func:`pull` downloads and installs
one model, :func:`resolve_model` turns a name or a path into a model directory,
and :func:`format_catalog` renders the table ``asrserve models list`` prints.

A pull is crash-safe: bytes go to ``<models_dir>/.partial/<archive>.part``
(resumed with an HTTP ``Range`` request after an interruption), the archive is
verified and unpacked into a temporary directory inside ``models_dir``, and
only a complete, checked model directory is renamed into place as
``<models_dir>/<name>``. A directory with that name therefore always holds a
whole model. Two concurrent pulls of the same model into the same directory
are not coordinated; run one at a time.
"""

from __future__ import annotations

# The http, tar and zip modules are imported inside the functions that pull a
# model: most commands read this module (the demo model's path), few download.
import contextlib
import os
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any, Final, Literal

from asrserve.cache import cache_home, sha256_file
from asrserve.errors import CatalogError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

__all__ = [
    "ARCHIVES",
    "BACKENDS",
    "BUILTIN_MODEL",
    "FAMILIES",
    "CatalogEntry",
    "catalog_path",
    "default_models_dir",
    "format_catalog",
    "get_entry",
    "is_pulled",
    "load_catalog",
    "pull",
    "resolve_model",
]

FAMILIES: Final = frozenset(
    {"lstm", "zipformer", "zipformer2", "conv_emformer", "nemo_fastconformer", "nemo_tdt", "vad"}
)
BACKENDS: Final = frozenset({"onnx", "ncnn"})
ARCHIVES: Final = frozenset({"tar.bz2", "tar.gz", "zip", "none"})

#: The small model that ships inside the package (no download).
BUILTIN_MODEL: Final = "asrserve-tiny-lstm-synth-en"

#: Package data: the catalog and the built-in demo model (in the wheel too).
PACKAGE_DATA_DIR: Final = Path(__file__).resolve().parent / "data"
#: ``models/`` next to the ``asrserve`` package in a source checkout: where
#: pulls land there. A checkout is recognised by its ``models/catalog.toml``.
REPO_MODELS_DIR: Path = Path(__file__).resolve().parent.parent / "models"
#: Where built-in models live; a module attribute so tests can point it elsewhere.
BUILTIN_MODELS_DIR: Path = PACKAGE_DATA_DIR / "models"

CATALOG_ENV: Final = "ASRSERVE_CATALOG"
MODELS_DIR_ENV: Final = "ASRSERVE_MODELS_DIR"
PARTIAL_DIRNAME: Final = ".partial"

_CHUNK: Final = 1 << 16
#: Unpacked archives may be at most this many times their own size ...
_UNPACK_RATIO: Final = 20
#: ... or this size, whichever is more.
_MIN_UNPACK_LIMIT: Final = 64 << 20
#: A download whose size the catalog does not give stops here.
_MAX_UNKNOWN_DOWNLOAD: Final = 16 << 30
_USER_AGENT: Final = "asrserve-model-pull/1"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ROLE_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_FIELD_TYPES: Final[Mapping[str, type]] = MappingProxyType(
    {
        "name": str,
        "family": str,
        "backend": str,
        "language": str,
        "description": str,
        "url": str,
        "archive": str,
        "sha256": str,
        "size_bytes": int,
        "files": dict,
        "streaming": bool,
        "builtin": bool,
        "note": str,
    }
)
_OPTIONAL_DEFAULTS: Final[Mapping[str, object]] = MappingProxyType(
    {"sha256": "", "size_bytes": 0, "builtin": False, "note": ""}
)


@dataclass(frozen=True)
class CatalogEntry:
    """One pretrained model as the catalog describes it.

    ``files`` maps a role (``encoder``, ``decoder``, ``joiner``, ``tokens``,
    ``bpe``, ``encoder_param`` ...) to a path relative to the model directory.
    ``sha256`` is ``""`` and ``size_bytes`` is ``0`` where unknown.
    """

    name: str
    family: str
    backend: str
    language: str
    description: str
    url: str
    archive: str
    sha256: str
    size_bytes: int
    files: Mapping[str, str] = field(hash=False)
    streaming: bool
    builtin: bool = False
    note: str = ""

    @property
    def archive_filename(self) -> str:
        """File name of the downloaded archive, e.g. ``<name>.tar.bz2``."""
        if self.archive != "none":
            return f"{self.name}.{self.archive}"
        return _url_basename(self.url) or self.name


# --------------------------------------------------------------------------- loading


def catalog_path() -> Path:
    """The catalog file in use: ``$ASRSERVE_CATALOG``, else the packaged one."""
    env = os.environ.get(CATALOG_ENV)
    if env:
        return Path(env).expanduser()
    return PACKAGE_DATA_DIR / "catalog.toml"


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """Read and validate a catalog file; return its entries by name, in file order.

    Any unknown key, missing required key, wrong type or out-of-range value
    raises :class:`CatalogError` naming the file, the entry and the field.
    """
    source = Path(path) if path is not None else catalog_path()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {source}") from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {source}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {source} is not valid TOML: {exc}") from None

    extra = sorted(set(data) - {"model"})
    if extra:
        raise CatalogError(f"catalog {source}: unknown top-level key(s) {', '.join(extra)}")
    tables = data.get("model", [])
    if not isinstance(tables, list):
        raise CatalogError(f"catalog {source}: 'model' must be an array of tables ([[model]])")

    entries: dict[str, CatalogEntry] = {}
    for index, raw in enumerate(tables):
        entry = _parse_entry(raw, f"catalog {source}: model #{index + 1}")
        if entry.name in entries:
            raise CatalogError(f"catalog {source}: duplicate model name {entry.name!r}")
        entries[entry.name] = entry
    return entries


def get_entry(name: str, catalog: Mapping[str, CatalogEntry] | None = None) -> CatalogEntry:
    """Look a model up by name; an unknown name raises with close matches."""
    import difflib

    entries = catalog if catalog is not None else load_catalog()
    try:
        return entries[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CatalogError(
            f"unknown model {name!r}{hint} (run `asrserve models list` to see every name)"
        ) from None


def _parse_entry(raw: object, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a table, got {type(raw).__name__}")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"{where} ({name!r})"

    unknown = sorted(set(raw) - set(_FIELD_TYPES))
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    missing = [k for k in _FIELD_TYPES if k not in raw and k not in _OPTIONAL_DEFAULTS]
    if missing:
        raise CatalogError(f"{where}: missing required field(s) {', '.join(map(repr, missing))}")

    values: dict[str, Any] = {**_OPTIONAL_DEFAULTS, **raw}
    for key, expected in _FIELD_TYPES.items():
        value = values[key]
        # bool is an int subclass: refuse `size_bytes = true` and `streaming = 1`.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise CatalogError(
                f"{where}: field {key!r} must be {expected.__name__}, got {type(value).__name__}"
            )

    def bad(key: str, why: str) -> CatalogError:
        return CatalogError(f"{where}: field {key!r} {why}")

    if not _NAME_RE.fullmatch(values["name"]):
        raise bad("name", "must be a plain directory name (letters, digits, '.', '_', '-')")
    for key, allowed in (("family", FAMILIES), ("backend", BACKENDS), ("archive", ARCHIVES)):
        if values[key] not in allowed:
            raise bad(key, f"is {values[key]!r}; expected one of {', '.join(sorted(allowed))}")
    sha = values["sha256"].lower()
    if sha and not _SHA256_RE.fullmatch(sha):
        raise bad("sha256", 'must be 64 hex digits, or "" when unknown')
    if values["size_bytes"] < 0:
        raise bad("size_bytes", "must be >= 0 (0 when unknown)")
    if values["builtin"]:
        if values["url"]:
            raise bad("url", 'must be "" for a builtin model')
        if values["archive"] != "none":
            raise bad("archive", 'must be "none" for a builtin model')
    elif urllib.parse.urlsplit(values["url"]).scheme not in ("http", "https"):
        raise bad("url", f"must be an http(s) URL, got {values['url']!r}")

    files: dict[str, object] = values["files"]
    if not files:
        raise bad("files", "must list at least one file")
    for role, rel in files.items():
        if not _ROLE_RE.fullmatch(role):
            raise bad("files", f"has an invalid role name {role!r}")
        if not isinstance(rel, str) or _unsafe_path(rel) is not None:
            raise bad("files", f"role {role!r} must be a relative path in the model, got {rel!r}")

    return CatalogEntry(
        name=values["name"],
        family=values["family"],
        backend=values["backend"],
        language=values["language"],
        description=values["description"],
        url=values["url"],
        archive=values["archive"],
        sha256=sha,
        size_bytes=values["size_bytes"],
        files=MappingProxyType({role: str(rel) for role, rel in files.items()}),
        streaming=values["streaming"],
        builtin=values["builtin"],
        note=values["note"],
    )


# --------------------------------------------------------------------------- locations


def default_models_dir() -> Path:
    """Where pulled models go.

    ``$ASRSERVE_MODELS_DIR`` if set; else the repository's ``models/`` when
    running from a writable checkout; else ``$XDG_CACHE_HOME/asrserve/models``
    (``~/.cache/asrserve/models``).
    """
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if (REPO_MODELS_DIR / "catalog.toml").is_file() and os.access(
        REPO_MODELS_DIR, os.W_OK | os.X_OK
    ):
        return REPO_MODELS_DIR
    return cache_home() / "models"


def is_pulled(entry: CatalogEntry, models_dir: Path) -> bool:
    """True when the model's directory exists and holds every file the catalog lists."""
    if entry.builtin:
        return (BUILTIN_MODELS_DIR / entry.name).is_dir()
    return _is_complete(entry, Path(models_dir) / entry.name)


def _is_complete(entry: CatalogEntry, directory: Path) -> bool:
    return directory.is_dir() and all((directory / rel).is_file() for rel in entry.files.values())


def _builtin_dir(name: str) -> Path:
    directory = BUILTIN_MODELS_DIR / name
    if not directory.is_dir():
        raise CatalogError(
            f"built-in model {name!r} is missing from {directory} "
            "(it ships inside the asrserve package: reinstall asrserve)"
        )
    return directory


def resolve_model(
    name_or_path: str,
    models_dir: Path | None = None,
    *,
    catalog: Mapping[str, CatalogEntry] | None = None,
) -> Path:
    """Turn what the user typed into a model directory.

    An existing directory is returned as is; a catalog name returns its pulled
    directory (or the built-in one); anything else raises :class:`CatalogError`
    saying how to get the model.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return candidate
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    entries = catalog if catalog is not None else load_catalog()
    entry = entries.get(name_or_path)
    if entry is not None:
        if entry.builtin:
            return _builtin_dir(entry.name)
        target = base / entry.name
        if _is_complete(entry, target):
            return target
        state = "is incomplete" if target.exists() else "is not downloaded yet"
        raise CatalogError(
            f"model {name_or_path!r} {state} ({target}); run `asrserve models pull {name_or_path}`"
        )
    if name_or_path == BUILTIN_MODEL:
        return _builtin_dir(name_or_path)
    if _NAME_RE.fullmatch(name_or_path) and (base / name_or_path).is_dir():
        return base / name_or_path
    if not _NAME_RE.fullmatch(name_or_path):
        raise CatalogError(f"model directory not found: {name_or_path}")
    raise CatalogError(
        f"unknown model {name_or_path!r}: not a directory and not in the catalog; "
        "run `asrserve models list` to see the names, then `asrserve models pull NAME`"
    )


# --------------------------------------------------------------------------- listing


def format_catalog(
    entries: Mapping[str, CatalogEntry] | Iterable[CatalogEntry], models_dir: Path
) -> str:
    """The table ``asrserve models list`` prints: name, family, backend, size, pulled."""
    items = list(entries.values()) if isinstance(entries, Mapping) else list(entries)
    rows = [("NAME", "FAMILY", "BACKEND", "STREAMING", "SIZE", "PULLED")]
    for entry in items:
        if entry.builtin:
            size = "builtin"
        elif entry.size_bytes:
            size = _human_size(entry.size_bytes)
        else:
            size = "?"
        rows.append(
            (
                entry.name,
                entry.family,
                entry.backend,
                "yes" if entry.streaming else "no",
                size,
                "yes" if is_pulled(entry, models_dir) else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    units = ("KiB", "MiB", "GiB", "TiB")
    size, i = n / 1024.0, 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{size:.1f} {units[i]}"


# --------------------------------------------------------------------------- pulling


def pull(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    progress: bool = True,
    url: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download, verify and install one model; return ``models_dir/<name>``.

    A model already complete in place is returned without any network
    access. ``url`` overrides the catalog URL (a mirror, or a test server).
    An interrupted download leaves ``.partial/<archive>.part`` behind and the
    next call resumes it; every other failure leaves nothing behind.
    """
    if entry.builtin:
        return _builtin_dir(entry.name)
    models_dir = Path(models_dir)
    target = models_dir / entry.name
    if _is_complete(entry, target):
        return target
    source = entry.url if url is None else url
    if not source:
        raise CatalogError(f"model {entry.name!r} has no download URL in the catalog")

    partial_dir = models_dir / PARTIAL_DIRNAME
    try:
        partial_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create {partial_dir}: {exc}") from None
    part = partial_dir / f"{entry.archive_filename}.part"

    try:
        _download(
            source,
            part,
            label=entry.name,
            progress=progress,
            timeout=timeout,
            limit=entry.size_bytes or _MAX_UNKNOWN_DOWNLOAD,
        )
        _verify(entry, part)
        _unpack_and_install(entry, part, models_dir, target, source)
    except OSError as exc:  # disk full, permissions, ... (network errors are already wrapped)
        raise CatalogError(f"cannot install {entry.name!r} into {models_dir}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial_dir.rmdir()  # only when empty: keeps a resumable .part
    return target


def _unpack_and_install(
    entry: CatalogEntry, part: Path, models_dir: Path, target: Path, source: str
) -> None:
    import shutil
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=models_dir))
    try:
        try:
            root = _unpack(entry, part, staging, source)
            missing = [rel for rel in entry.files.values() if not (root / rel).is_file()]
            if missing:
                raise CatalogError(
                    f"archive for {entry.name!r} from {source} lacks file(s) the catalog "
                    f"lists: {', '.join(missing)}"
                )
        except Exception:
            part.unlink(missing_ok=True)  # a bad archive will not get better
            raise
        _install(entry, root, target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    part.unlink(missing_ok=True)


def _download(
    url: str, part: Path, *, label: str, progress: bool, timeout: float, limit: int
) -> None:
    """Fetch ``url`` into ``part``, resuming what is already there; never more
    than ``limit`` bytes in all (the catalog's size, when it has one)."""
    import http.client
    import urllib.error
    import urllib.request

    restarted = False
    while True:
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # Nothing left to send: complete, unless the server says the
                # file is another size (a stale or foreign .part).
                total = _content_range_total(exc.headers.get("Content-Range"))
                if total is None or total == offset:
                    return
                if restarted:
                    raise CatalogError(f"server keeps refusing the range for {url}") from None
                part.unlink()
                restarted = True
                continue
            raise CatalogError(
                f"download of {label!r} failed: HTTP {exc.code} {exc.reason} for {url}"
            ) from None
        except urllib.error.URLError as exc:
            raise CatalogError(
                f"download of {label!r} failed: cannot connect to {url}: {exc.reason}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise CatalogError(f"download of {label!r} failed: {url}: {exc}") from None

        with response:
            status = response.status
            if offset and status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    if restarted:
                        raise CatalogError(f"server sent a wrong byte range for {url}")
                    part.unlink()
                    restarted = True
                    continue
                mode = "ab"
            elif status == 200:
                offset, mode = 0, "wb"  # no (or ignored) Range: start over
            else:
                raise CatalogError(f"download of {label!r} failed: HTTP {status} for {url}")
            length = response.headers.get("Content-Length")
            remaining = int(length) if length and length.isdigit() else None
            if remaining is not None and offset + remaining > limit:
                part.unlink(missing_ok=True)
                raise CatalogError(
                    f"download of {label!r} refused: {url} announces {offset + remaining} "
                    f"bytes, more than the {limit} expected"
                )
            _copy(
                response,
                part,
                mode=mode,
                offset=offset,
                remaining=remaining,
                label=label,
                progress=progress,
                url=url,
                limit=limit,
            )
        return


def _copy(
    response: Any,
    part: Path,
    *,
    mode: str,
    offset: int,
    remaining: int | None,
    label: str,
    progress: bool,
    url: str,
    limit: int,
) -> None:
    import http.client

    total = None if remaining is None else offset + remaining
    bar = _progress_bar(label, total, offset, enabled=progress)
    written = 0
    try:
        with open(part, mode) as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise CatalogError(
                        f"download of {label!r} interrupted after {offset + written} bytes "
                        f"({exc}); run the same command again to resume"
                    ) from None
                if not chunk:
                    break
                if offset + written + len(chunk) > limit:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise CatalogError(
                        f"download of {label!r} stopped: {url} sent more than the {limit} "
                        "bytes expected; the partial file was deleted"
                    )
                out.write(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if remaining is not None and written < remaining:
        raise CatalogError(
            f"download of {label!r} from {url} stopped after {offset + written} of {total} "
            "bytes; run the same command again to resume"
        )


def _progress_bar(label: str, total: int | None, initial: int, *, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        return None
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        file=sys.stderr,
    )


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def _content_range_total(value: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", value or "")
    return int(match.group(1)) if match else None


def _verify(entry: CatalogEntry, part: Path) -> None:
    size = part.stat().st_size
    if entry.size_bytes and size != entry.size_bytes:
        part.unlink()
        raise CatalogError(
            f"download of {entry.name!r} has {size} bytes, the catalog says "
            f"{entry.size_bytes}; the partial file was deleted, run the pull again"
        )
    if entry.sha256:
        actual = sha256_file(part)
        if actual != entry.sha256:
            part.unlink()
            raise CatalogError(
                f"checksum mismatch for {entry.name!r}: expected sha256 {entry.sha256}, "
                f"got {actual}; the download was deleted"
            )


def _unpack(entry: CatalogEntry, part: Path, staging: Path, url: str) -> Path:
    """Extract ``part`` under ``staging``; return the directory that is the model."""
    import tarfile
    import zipfile

    dest = staging / "unpacked"
    dest.mkdir()
    try:
        if entry.archive in ("tar.bz2", "tar.gz"):
            _extract_tar(part, dest, "r|bz2" if entry.archive == "tar.bz2" else "r|gz")
        elif entry.archive == "zip":
            _extract_zip(part, dest)
        else:
            filename = _url_basename(url) or entry.name
            if _unsafe_path(filename) is not None:
                raise CatalogError(f"unusable file name {filename!r} in {url}")
            os.replace(part, dest / filename)
            return dest
    except CatalogError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CatalogError(
            f"cannot unpack the {entry.archive} archive for {entry.name!r}: {exc}"
        ) from None
    children = list(dest.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return dest


def _unsafe_path(name: str) -> str | None:
    """Why ``name`` may not be written under a model directory, or None if it may."""
    if not name:
        return "empty name"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute():
        return "absolute path"
    if PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "'..' component"
    return None


def _reject(archive: Path, member: str, why: str) -> CatalogError:
    return CatalogError(f"refusing to unpack {archive.name}: member {member!r} has {why}")


def _unpack_limit(archive: Path) -> int:
    """Most bytes an archive may unpack to: model weights barely compress, so
    anything far beyond the archive's own size is a decompression bomb."""
    return max(_MIN_UNPACK_LIMIT, _UNPACK_RATIO * archive.stat().st_size)


def _too_big(archive: Path, member: str, total: int, limit: int) -> CatalogError:
    return CatalogError(
        f"refusing to unpack {archive.name}: it unpacks to more than {limit} bytes "
        f"({total} by member {member!r}), {_UNPACK_RATIO}x its own size; not a model archive"
    )


def _extract_tar(archive: Path, dest: Path, mode: Literal["r|bz2", "r|gz"]) -> None:
    import tarfile

    # Streamed, member by member: each header is checked (path, link, type,
    # running size) before its data is decompressed.
    limit, total = _unpack_limit(archive), 0
    with tarfile.open(archive, mode) as tar:
        for member in tar:
            why = _unsafe_path(member.name)
            if why is not None:
                raise _reject(archive, member.name, f"an unsafe path ({why})")
            if member.issym() or member.islnk():
                why = _unsafe_path(member.linkname)
                if why is not None:
                    raise _reject(archive, member.name, f"an unsafe link target ({why})")
            elif not (member.isfile() or member.isdir()):
                raise _reject(archive, member.name, "a special file type")
            total += member.size
            if total > limit:
                raise _too_big(archive, member.name, total, limit)
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, dest, filter="data")
            else:  # pragma: no cover - Pythons without extraction filters
                tar.extract(member, dest)  # checked above


def _extract_zip(archive: Path, dest: Path) -> None:
    import zipfile

    limit, total = _unpack_limit(archive), 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            why = _unsafe_path(info.filename)
            if why is not None:
                raise _reject(archive, info.filename, f"an unsafe path ({why})")
            total += info.file_size  # zipfile never reads past a member's declared size
            if total > limit:
                raise _too_big(archive, info.filename, total, limit)
        zf.extractall(dest)


def _install(entry: CatalogEntry, root: Path, target: Path, staging: Path) -> None:
    """Rename the unpacked model ``root`` to ``target`` in one step."""
    previous = staging / "previous"
    if target.exists() or target.is_symlink():
        # An incomplete earlier copy: move it aside (same filesystem, atomic);
        # the caller's cleanup of ``staging`` deletes it.
        os.rename(target, previous)
    try:
        os.rename(root, target)
    except OSError as exc:
        if _is_complete(entry, target):
            return  # another process finished the same pull first
        if previous.exists() and not target.exists():
            os.rename(previous, target)
        raise CatalogError(f"cannot move the model into {target}: {exc}") from None


def _url_basename(url: str) -> str:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path.rsplit("/", 1)[-1]
