"""Model catalog: loading/validation, and `pull` against a loopback HTTP server.

The server is a small ThreadingHTTPServer on 127.0.0.1 that serves archives
built in a tmp dir, honours (or, on request, ignores) ``Range`` headers, and
records every request. No other network is touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import pytest

from asrserve import catalog
from asrserve.catalog import (
    CatalogEntry,
    default_models_dir,
    format_catalog,
    get_entry,
    is_pulled,
    load_catalog,
    pull,
    resolve_model,
)
from asrserve.errors import CatalogError

TIMEOUT = 5.0
MODEL_NAME = "fake-model-en"
ENCODER = os.urandom(150_000)  # incompressible, so the archive is big enough to split
TOKENS = b"<blk> 0\n<sos/eos> 1\n<unk> 2\nA 3\n"

REQUIRED_MODELS = (
    "sherpa-onnx-streaming-zipformer-en-2023-06-26",
    "sherpa-onnx-streaming-zipformer-en-20M-2023-02-17",
    "sherpa-onnx-lstm-en-2023-02-17",
    "sherpa-ncnn-conv-emformer-transducer-2022-12-06",
    "sherpa-ncnn-streaming-zipformer-en-2023-02-13",
    "sherpa-onnx-nemo-parakeet-tdt-0.6b-v3-int8",
    "asrserve-tiny-lstm-synth-en",
)


# --------------------------------------------------------------------------- server


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    ignore_range: bool = False
    truncate_at: int | None = None  # close the connection after this many body bytes
    no_length: bool = False  # no Content-Length: the body ends when the connection closes
    sent: int = 0  # body bytes written, all requests


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = TIMEOUT

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        if not state.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.truncate_at is not None:
            body = body[: state.truncate_at]
            self.close_connection = True
        for i in range(0, len(body), 1 << 16):
            try:
                self.wfile.write(body[i : i + (1 << 16)])
            except OSError:  # the client stopped reading
                return
            state.sent += len(body[i : i + (1 << 16)])

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Loopback:
    state: ServerState
    base_url: str

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def server() -> Iterator[Loopback]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield Loopback(httpd.state, f"http://{host!s}:{port}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=TIMEOUT)


# --------------------------------------------------------------------------- fixtures


def make_tar(members: dict[str, bytes], mode: str = "w:bz2") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def model_members(top: str = "fake-model") -> dict[str, bytes]:
    return {f"{top}/encoder.onnx": ENCODER, f"{top}/tokens.txt": TOKENS}


def make_entry(url: str, payload: bytes | None, **overrides: object) -> CatalogEntry:
    entry = CatalogEntry(
        name=MODEL_NAME,
        family="lstm",
        backend="onnx",
        language="en",
        description="test model",
        url=url,
        archive="tar.bz2",
        sha256=hashlib.sha256(payload).hexdigest() if payload is not None else "",
        size_bytes=0,
        files=MappingProxyType({"encoder": "encoder.onnx", "tokens": "tokens.txt"}),
        streaming=True,
    )
    return replace(entry, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def archive() -> bytes:
    return make_tar(model_members())


def assert_installed(models_dir: Path, result: Path) -> None:
    assert result == models_dir / MODEL_NAME
    assert (result / "encoder.onnx").read_bytes() == ENCODER
    assert (result / "tokens.txt").read_bytes() == TOKENS
    # Nothing else left behind: no .part, no staging directories.
    assert sorted(p.name for p in models_dir.iterdir()) == [MODEL_NAME]


# --------------------------------------------------------------------------- catalog file


def test_repo_catalog_loads_and_validates() -> None:
    entries = load_catalog()
    for name in REQUIRED_MODELS:
        assert name in entries, name
    assert any("nemotron-speech-streaming-en-0.6b" in n for n in entries)
    for name, entry in entries.items():
        assert isinstance(entry, CatalogEntry)
        assert entry.name == name
        assert entry.family in catalog.FAMILIES
        assert entry.backend in catalog.BACKENDS
        assert entry.archive in catalog.ARCHIVES
        assert entry.sha256 == "" or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert entry.files, name
        if entry.builtin:
            assert entry.url == ""
        elif entry.archive == "none":  # a single file, e.g. the VAD model
            assert entry.url.startswith("https://")
            assert entry.sha256
            assert entry.url.endswith("/" + next(iter(entry.files.values())))
        else:
            assert entry.url.startswith(
                (
                    "https://github.com/k2-fsa/sherpa-onnx/releases/download/asr-models/",
                    "https://github.com/k2-fsa/sherpa-ncnn/releases/download/models/",
                )
            )
            assert entry.url.endswith(f"/{name}.{entry.archive}")
    builtin = entries["asrserve-tiny-lstm-synth-en"]
    assert builtin.builtin
    assert entries["sherpa-ncnn-conv-emformer-transducer-2022-12-06"].backend == "ncnn"
    assert not entries["sherpa-onnx-nemo-parakeet-tdt-0.6b-v3-int8"].streaming
    assert (
        entries["sherpa-onnx-streaming-zipformer-en-2023-06-26"].files["encoder"]
        == "encoder-epoch-99-avg-1-chunk-16-left-128.onnx"
    )


GOOD_TOML = """
[[model]]
name = "m1"
family = "zipformer"
backend = "onnx"
language = "en"
description = "d"
url = "https://example.invalid/m1.tar.bz2"
archive = "tar.bz2"
sha256 = ""
size_bytes = 0
streaming = true
[model.files]
encoder = "encoder.onnx"
"""


def test_catalog_env_var_points_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.toml"
    path.write_text(GOOD_TOML)
    monkeypatch.setenv("ASRSERVE_CATALOG", str(path))
    assert list(load_catalog()) == ["m1"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda s: s.replace('language = "en"', 'language = "en"\ncolour = "blue"'),
            ["m1", "colour"],
        ),
        (lambda s: s.replace('url = "https://example.invalid/m1.tar.bz2"\n', ""), ["m1", "url"]),
        (lambda s: s.replace('"zipformer"', '"transformer"'), ["m1", "family"]),
        (lambda s: s.replace("streaming = true", 'streaming = "yes"'), ["m1", "streaming"]),
        (lambda s: s.replace('sha256 = ""', 'sha256 = "abc"'), ["m1", "sha256"]),
        (lambda s: s.replace('"encoder.onnx"', '"../encoder.onnx"'), ["m1", "files"]),
        (lambda s: s + "\n[extra]\nx = 1\n", ["extra"]),
        (lambda s: s + s, ["duplicate", "m1"]),
        (lambda s: s.replace("[[model]]", "[[model]", 1), ["TOML"]),
    ],
)
def test_bad_catalog_is_refused(
    tmp_path: Path, edit: Callable[[str], str], words: list[str]
) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(edit(GOOD_TOML))
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    for word in words:
        assert word in str(info.value)


def test_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.toml")


def test_unknown_name_suggests(tmp_path: Path) -> None:
    entries = load_catalog()
    with pytest.raises(CatalogError, match="sherpa-onnx-lstm-en-2023-02-17"):
        get_entry("sherpa-onnx-lstm-en-2023-02-18", entries)


# --------------------------------------------------------------------------- pull


def test_pull_downloads_verifies_and_installs(
    server: Loopback, archive: bytes, tmp_path: Path
) -> None:
    server.state.files["/m.tar.bz2"] = archive
    entry = make_entry(server.url("/m.tar.bz2"), archive, size_bytes=len(archive))
    result = pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert_installed(tmp_path, result)
    assert server.state.requests == [("/m.tar.bz2", None)]
    assert is_pulled(entry, tmp_path)


def test_pull_url_override_and_zip(server: Loopback, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in model_members("whatever").items():
            zf.writestr(name, data)
    payload = buf.getvalue()
    server.state.files["/mirror/m.zip"] = payload
    entry = make_entry("https://example.invalid/m.zip", payload, archive="zip")
    result = pull(entry, tmp_path, progress=False, url=server.url("/mirror/m.zip"), timeout=TIMEOUT)
    assert_installed(tmp_path, result)


def test_archive_without_top_level_dir(server: Loopback, tmp_path: Path) -> None:
    payload = make_tar({"encoder.onnx": ENCODER, "tokens.txt": TOKENS}, mode="w:gz")
    server.state.files["/flat.tar.gz"] = payload
    entry = make_entry(server.url("/flat.tar.gz"), payload, archive="tar.gz")
    assert_installed(tmp_path, pull(entry, tmp_path, progress=False, timeout=TIMEOUT))


def test_progress_bar_on_a_tty(
    server: Loopback, archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")

    class FakeTty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = FakeTty()
    monkeypatch.setattr(sys, "stderr", fake)
    server.state.files["/m.tar.bz2"] = archive
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    assert_installed(tmp_path, pull(entry, tmp_path, progress=True, timeout=TIMEOUT))
    assert MODEL_NAME in fake.getvalue()


def test_wrong_checksum_leaves_nothing(server: Loopback, archive: bytes, tmp_path: Path) -> None:
    server.state.files["/m.tar.bz2"] = archive
    entry = make_entry(server.url("/m.tar.bz2"), None, sha256="0" * 64)
    with pytest.raises(CatalogError) as info:
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert "0" * 64 in message
    assert hashlib.sha256(archive).hexdigest() in message
    assert not (tmp_path / MODEL_NAME).exists()
    assert list(tmp_path.rglob("*")) == []


def test_resume_uses_range(server: Loopback, archive: bytes, tmp_path: Path) -> None:
    server.state.files["/m.tar.bz2"] = archive
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    half = len(archive) // 2
    part = tmp_path / ".partial" / f"{MODEL_NAME}.tar.bz2.part"
    part.parent.mkdir()
    part.write_bytes(archive[:half])
    result = pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert server.state.requests == [("/m.tar.bz2", f"bytes={half}-")]
    assert_installed(tmp_path, result)


def test_server_ignoring_range_restarts(server: Loopback, archive: bytes, tmp_path: Path) -> None:
    server.state.files["/m.tar.bz2"] = archive
    server.state.ignore_range = True
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    part = tmp_path / ".partial" / f"{MODEL_NAME}.tar.bz2.part"
    part.parent.mkdir()
    part.write_bytes(b"\xff" * (len(archive) // 2))  # junk: must not survive the restart
    result = pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert server.state.requests[0][1] is not None  # it did ask for a range
    assert_installed(tmp_path, result)


def test_complete_part_416(server: Loopback, archive: bytes, tmp_path: Path) -> None:
    server.state.files["/m.tar.bz2"] = archive
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    part = tmp_path / ".partial" / f"{MODEL_NAME}.tar.bz2.part"
    part.parent.mkdir()
    part.write_bytes(archive)
    result = pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert server.state.requests == [("/m.tar.bz2", f"bytes={len(archive)}-")]
    assert_installed(tmp_path, result)


def test_interrupted_download_resumes_next_time(
    server: Loopback, archive: bytes, tmp_path: Path
) -> None:
    server.state.files["/m.tar.bz2"] = archive
    server.state.truncate_at = len(archive) // 3
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    with pytest.raises(CatalogError, match="resume"):
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    part = tmp_path / ".partial" / f"{MODEL_NAME}.tar.bz2.part"
    assert part.read_bytes() == archive[: len(archive) // 3]
    assert not (tmp_path / MODEL_NAME).exists()

    server.state.truncate_at = None
    result = pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert server.state.requests[-1] == ("/m.tar.bz2", f"bytes={len(archive) // 3}-")
    assert_installed(tmp_path, result)


@pytest.mark.parametrize(
    "evil",
    ["../evil.txt", "fake-model/../../evil.txt", "/tmp/asrserve-evil-abs.txt"],
)
def test_path_traversal_rejected(server: Loopback, tmp_path: Path, evil: str) -> None:
    members = model_members()
    members[evil] = b"pwned"
    payload = make_tar(members)
    server.state.files["/evil.tar.bz2"] = payload
    models_dir = tmp_path / "models"
    entry = make_entry(server.url("/evil.tar.bz2"), payload)
    with pytest.raises(CatalogError, match="unsafe path"):
        pull(entry, models_dir, progress=False, timeout=TIMEOUT)
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/asrserve-evil-abs.txt").exists()
    assert list(models_dir.iterdir()) == []  # nothing installed, bad download removed


def test_zip_traversal_rejected(server: Loopback, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/tokens.txt", TOKENS)
        zf.writestr("../evil.txt", b"pwned")
    payload = buf.getvalue()
    server.state.files["/evil.zip"] = payload
    models_dir = tmp_path / "models"
    entry = make_entry(server.url("/evil.zip"), payload, archive="zip")
    with pytest.raises(CatalogError, match="unsafe path"):
        pull(entry, models_dir, progress=False, timeout=TIMEOUT)
    assert not (tmp_path / "evil.txt").exists()


def test_download_stops_at_the_declared_size(server: Loopback, tmp_path: Path) -> None:
    """An entry declaring 1,000 bytes never fetches 20 MB: refused by the announced
    length, and without one, stopped once more than the declared size came."""
    big = bytes(20 << 20)
    server.state.files["/m.tar.bz2"] = big
    entry = make_entry(server.url("/m.tar.bz2"), None, size_bytes=1000)
    with pytest.raises(CatalogError, match="announces 20971520 bytes, more than the 1000"):
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert list(tmp_path.rglob("*.part")) == []
    server.state.no_length = True
    with pytest.raises(CatalogError, match="sent more than the 1000 bytes"):
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert list(tmp_path.rglob("*.part")) == []
    assert server.state.sent < 8 << 20  # the client hung up long before the end


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_decompression_bomb_refused(server: Loopback, tmp_path: Path, kind: str) -> None:
    members = {**model_members(), "fake-model/zeros.bin": bytes(80 << 20)}
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        payload = buf.getvalue()
    else:
        payload = make_tar(members, mode="w:gz")
    assert len(payload) < 1 << 20  # 80 MiB packed into well under 1 MiB
    server.state.files[f"/bomb.{kind}"] = payload
    models_dir = tmp_path / "models"
    entry = make_entry(server.url(f"/bomb.{kind}"), payload, archive=kind)
    with pytest.raises(CatalogError, match=r"unpacks to more than 67108864 bytes"):
        pull(entry, models_dir, progress=False, timeout=TIMEOUT)
    assert list(models_dir.iterdir()) == []
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) == 0


def test_archive_missing_listed_file(server: Loopback, tmp_path: Path) -> None:
    payload = make_tar({"fake-model/tokens.txt": TOKENS})
    server.state.files["/m.tar.bz2"] = payload
    entry = make_entry(server.url("/m.tar.bz2"), payload)
    with pytest.raises(CatalogError, match=r"encoder\.onnx"):
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert list(tmp_path.rglob("*")) == []


def test_http_404(server: Loopback, tmp_path: Path) -> None:
    entry = make_entry(server.url("/missing.tar.bz2"), None)
    with pytest.raises(CatalogError, match="404") as info:
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)
    assert "/missing.tar.bz2" in str(info.value)
    assert not (tmp_path / MODEL_NAME).exists()


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # find a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    entry = make_entry(f"http://127.0.0.1:{port}/m.tar.bz2", None)
    with pytest.raises(CatalogError, match="cannot connect"):
        pull(entry, tmp_path, progress=False, timeout=TIMEOUT)


def test_already_pulled_makes_no_request(server: Loopback, tmp_path: Path) -> None:
    target = tmp_path / MODEL_NAME
    target.mkdir()
    (target / "encoder.onnx").write_bytes(b"x")
    (target / "tokens.txt").write_bytes(b"y")
    entry = make_entry(server.url("/m.tar.bz2"), None)
    assert pull(entry, tmp_path, progress=False, timeout=TIMEOUT) == target
    assert server.state.requests == []


def test_incomplete_target_is_replaced(server: Loopback, archive: bytes, tmp_path: Path) -> None:
    server.state.files["/m.tar.bz2"] = archive
    target = tmp_path / MODEL_NAME
    target.mkdir()
    (target / "tokens.txt").write_bytes(b"stale")  # encoder missing: incomplete
    entry = make_entry(server.url("/m.tar.bz2"), archive)
    assert_installed(tmp_path, pull(entry, tmp_path, progress=False, timeout=TIMEOUT))


# --------------------------------------------------------------------------- resolve / list


def test_resolve_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_entry("https://example.invalid/m.tar.bz2", None)
    builtin = make_entry("", None, name="builtin-m", archive="none", builtin=True)
    entries = {entry.name: entry, builtin.name: builtin}
    models_dir = tmp_path / "models"
    models_dir.mkdir()

    plain = tmp_path / "my-model"
    plain.mkdir()
    assert resolve_model(str(plain), models_dir, catalog=entries) == plain

    with pytest.raises(CatalogError, match=f"asrserve models pull {MODEL_NAME}"):
        resolve_model(MODEL_NAME, models_dir, catalog=entries)
    target = models_dir / MODEL_NAME
    target.mkdir()
    (target / "encoder.onnx").write_bytes(b"x")
    (target / "tokens.txt").write_bytes(b"y")
    assert resolve_model(MODEL_NAME, models_dir, catalog=entries) == target

    monkeypatch.setattr(catalog, "BUILTIN_MODELS_DIR", tmp_path / "builtins")
    with pytest.raises(CatalogError, match="missing"):
        resolve_model("builtin-m", models_dir, catalog=entries)
    (tmp_path / "builtins" / "builtin-m").mkdir(parents=True)
    assert resolve_model("builtin-m", models_dir, catalog=entries) == (
        tmp_path / "builtins" / "builtin-m"
    )

    with pytest.raises(CatalogError, match="asrserve models pull NAME"):
        resolve_model("no-such-model", models_dir, catalog=entries)


def test_resolve_builtin_from_repo_catalog() -> None:
    path = catalog.BUILTIN_MODELS_DIR / catalog.BUILTIN_MODEL
    if not path.is_dir():
        pytest.skip("built-in model not present in this checkout")
    assert resolve_model(catalog.BUILTIN_MODEL) == path


def test_format_catalog(tmp_path: Path) -> None:
    pulled = make_entry("https://example.invalid/a.tar.bz2", None, size_bytes=3 * 1024 * 1024)
    other = make_entry(
        "https://example.invalid/b.tar.bz2", None, name="other-model", family="zipformer"
    )
    target = tmp_path / MODEL_NAME
    target.mkdir()
    (target / "encoder.onnx").write_bytes(b"x")
    (target / "tokens.txt").write_bytes(b"y")
    lines = format_catalog({e.name: e for e in (pulled, other)}, tmp_path).splitlines()
    assert lines[0].split() == ["NAME", "FAMILY", "BACKEND", "STREAMING", "SIZE", "PULLED"]
    assert lines[1].split() == [MODEL_NAME, "lstm", "onnx", "yes", "3.0", "MiB", "yes"]
    assert lines[2].split() == ["other-model", "zipformer", "onnx", "yes", "?", "no"]


def test_default_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASRSERVE_MODELS_DIR", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    monkeypatch.delenv("ASRSERVE_MODELS_DIR")
    monkeypatch.setattr(catalog, "REPO_MODELS_DIR", tmp_path / "not-a-checkout")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_models_dir() == tmp_path / "cache" / "asrserve" / "models"


# --------------------------------------------------------------------------- end to end


def test_cli_pull_then_transcribe_by_name(
    server: Loopback,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real model archive served on loopback: pull by name, then use the name."""
    from asrserve import catalog as catalog_module
    from asrserve.cli import main

    builtin = catalog_module.BUILTIN_MODELS_DIR / catalog_module.BUILTIN_MODEL
    roles = {
        "encoder": "encoder.int8.onnx",
        "decoder": "decoder.onnx",
        "joiner": "joiner.int8.onnx",
        "tokens": "tokens.txt",
    }
    members = {f"demo-upstream/{f}": (builtin / f).read_bytes() for f in roles.values()}
    payload = make_tar(members)
    server.state.files["/demo.tar.bz2"] = payload
    files = "\n".join(f'{k} = "{v}"' for k, v in roles.items())
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        f"""[[model]]
name = "demo-lstm"
family = "lstm"
backend = "onnx"
language = "en"
description = "demo"
url = "{server.url("/demo.tar.bz2")}"
archive = "tar.bz2"
sha256 = "{hashlib.sha256(payload).hexdigest()}"
size_bytes = {len(payload)}
streaming = true

[model.files]
{files}
"""
    )
    models_dir = tmp_path / "models"
    monkeypatch.setenv("ASRSERVE_CATALOG", str(catalog))
    monkeypatch.setenv("ASRSERVE_MODELS_DIR", str(models_dir))
    assert main(["models", "pull", "demo-lstm", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(models_dir / "demo-lstm")
    wav = str(builtin / "test_wavs" / "synth-0000.wav")
    assert main(["transcribe", "--model", "demo-lstm", wav]) == 0
    by_name = capsys.readouterr().out
    assert main(["transcribe", wav]) == 0
    assert by_name == capsys.readouterr().out
    assert main(["models", "pull", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_silero_vad_entry_pulls_where_the_vad_looks(
    server: Loopback, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog's VAD file (checksum from the shared copy) pulled from a
    loopback mirror lands where Parakeet TDT and bulk splitting find it."""
    from asrserve.vad import find_vad_model
    from tests.conftest import SHARED_MODELS

    shared = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
    if not shared.is_file():
        pytest.skip(f"shared VAD model not found at {shared}")
    entry = load_catalog()["silero-vad"]
    data = shared.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.sha256
    assert len(data) == entry.size_bytes
    server.state.files["/silero_vad.onnx"] = data
    result = pull(
        entry, tmp_path, progress=False, url=server.url("/silero_vad.onnx"), timeout=TIMEOUT
    )
    assert result == tmp_path / "silero-vad"
    monkeypatch.setenv("ASRSERVE_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("ASRSERVE_VAD_MODEL", raising=False)
    assert find_vad_model() == tmp_path / "silero-vad" / "silero_vad.onnx"
