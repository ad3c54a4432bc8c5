"""Every catalog entry can be pulled and loaded: one end-to-end test per layout.

The catalog's entries are grouped by *layout* (the family, backend, archive
type and exact ``files`` table a model directory has). For each layout a
fixture model directory is built with the entry's exact file names, from the
small random-weight fixtures of this repository (``tests/fixtures/models``)
and the shared models (``$ASRSERVE_SHARED/models``); it is packed the way the
upstream release archive is packed (one top-level directory named like the
entry, plus ``test_wavs/``), served by a loopback HTTP server, described by a
temporary catalog (``$ASRSERVE_CATALOG``) that is the real entry with only
``url``, ``sha256`` and ``size_bytes`` replaced, and then pulled and used
through the real command line: ``asrserve models pull NAME`` and
``asrserve transcribe --model NAME`` (models directory from
``$ASRSERVE_MODELS_DIR``).

Where a fixture's interface differs from the real upstream archive, the
builder's docstring says how. No network other than 127.0.0.1 is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asrserve
from asrserve import catalog
from asrserve.cache import sha256_file
from asrserve.catalog import CatalogEntry, load_catalog
from asrserve.cli import main
from tests.conftest import FIXTURE_MODELS, ROOT, SHARED_MODELS, TINY_LSTM, read_wav

TIMEOUT = 10.0  # seconds: HTTP requests, subprocesses are bounded by SUBPROCESS_TIMEOUT
SUBPROCESS_TIMEOUT = 60.0
CLIP = TINY_LSTM / "test_wavs" / "synth-0000.wav"  # 2.4 s of (synthetic) speech
JFK = SHARED_MODELS / "test-audio-jfk" / "jfk.wav"
SILERO = SHARED_MODELS / "silero-vad" / "silero_vad.onnx"
ENV_KEYS = (
    catalog.CATALOG_ENV,
    catalog.MODELS_DIR_ENV,
    "ASRSERVE_VAD_MODEL",
    "ASRSERVE_BUILTIN_MODEL",
)


# --------------------------------------------------------------------------- layouts

Builder = Callable[[CatalogEntry, Path, "Sources"], None]


@dataclass(frozen=True)
class Layout:
    """One way a catalog model directory looks; ``entries`` are the catalog
    names with this layout (the test pulls the first)."""

    id: str
    entries: tuple[str, ...]
    build: Builder
    family: str | None = None  # the runtime family (`recognizer.model.family`) it must load as
    needs: tuple[str, ...] = ()  # importable modules the runtime needs for it
    expect_text: bool = True  # the fixture emits tokens on speech
    pending: str | None = None  # skip reason while no fixture exists


@dataclass
class Sources:
    """Where the fixture files come from (resolved lazily, skipping if absent)."""

    request: pytest.FixtureRequest

    def shared(self, rel: str) -> Path:
        p = SHARED_MODELS / rel
        if not p.exists():
            pytest.skip(f"shared model file not found: {p}")
        return p

    def fixture(self, rel: str) -> Path:
        p = FIXTURE_MODELS / rel
        if not p.exists():
            pytest.skip(f"fixture model file not found: {p}")
        return p

    def emformer(self) -> Path:
        return Path(self.request.getfixturevalue("emformer_dir"))


def _put(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _onnx_transducer(fixture: str, bpe: bool = False) -> Builder:
    """An icefall/sherpa-onnx streaming transducer export: the fixture's
    ``encoder.onnx``/``decoder.onnx``/``joiner.onnx``/``tokens.txt`` under the
    entry's names. Differences from upstream: the int8 roles are copies of the
    fp32 graphs (same I/O names, dtypes and metadata as a dynamically quantized
    export, but float weights); the fixture's dimensions are tiny and its
    vocabulary has 102 tokens (upstream: 500); ``bpe.model`` is the shared tiny
    LSTM's sentencepiece model (a different vocabulary; only hotwords read it)."""

    def build(entry: CatalogEntry, dest: Path, src: Sources) -> None:
        for role, rel in entry.files.items():
            base = role.removesuffix("_int8")
            if base in ("encoder", "decoder", "joiner"):
                _put(src.fixture(f"{fixture}/{base}.onnx"), dest / rel)
            elif role == "tokens":
                _put(src.fixture(f"{fixture}/tokens.txt"), dest / rel)
            elif role == "bpe" and bpe:
                _put(src.shared("asrserve-tiny-lstm-synth-en/bpe.model"), dest / rel)
            else:
                raise AssertionError(f"{entry.name}: no fixture for role {role!r}")

    return build


def build_lstm_onnx(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """sherpa-onnx LSTM transducer (lstm_transducer_stateless2 export): the shared
    tiny LSTM (``model_type=lstm``, real fp32 and int8 graphs) renamed to the
    entry's ``*-epoch-99-avg-1[.int8].onnx`` names. Upstream's decoder int8 is
    quantized too; the tiny model has a ``decoder.int8.onnx`` as well, so each
    role gets the matching file. Dimensions and vocabulary are the tiny model's."""
    for role, rel in entry.files.items():
        base = role.removesuffix("_int8")
        suffix = ".int8.onnx" if role.endswith("_int8") else ".onnx"
        if base in ("encoder", "decoder", "joiner"):
            _put(src.shared(f"asrserve-tiny-lstm-synth-en/{base}{suffix}"), dest / rel)
        elif role == "tokens":
            _put(src.shared("asrserve-tiny-lstm-synth-en/tokens.txt"), dest / rel)
        else:
            raise AssertionError(f"{entry.name}: no fixture for role {role!r}")


def build_ncnn_conv_emformer(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """sherpa-ncnn Conv-Emformer: the real upstream ``.param`` files of
    ``sherpa-ncnn-conv-emformer-transducer-2022-12-06`` with random weights
    (``generate/make_weights.py``, the ``emformer_dir`` fixture) and the real
    ``tokens.txt``. Upstream's archive also carries the int8 ``.param``/``.bin``
    pairs (not in the catalog's ``files``, left out here to keep the archive
    small)."""
    model = src.emformer()
    for role, rel in entry.files.items():
        _put(model / rel, dest / rel)
        assert role.split("_")[0] in ("encoder", "decoder", "joiner", "tokens"), role


def build_ncnn_zipformer(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """sherpa-ncnn streaming Zipformer: the committed random-weight encoder
    (``tests/fixtures/models/ncnn-zipformer-tiny``: SherpaMetaData model type 2,
    the four sherpa-ncnn custom layers, tiny dimensions) with the shared tiny
    LSTM's ncnn decoder, joiner and tokens, as
    ``tests/families/test_parity_ncnn_zipformer.py`` assembles it. Upstream's
    decoder/joiner are the Zipformer's own (same I/O names; other widths)."""
    for role, rel in entry.files.items():
        if role.startswith("encoder_"):
            _put(src.fixture(f"ncnn-zipformer-tiny/{rel}"), dest / rel)
        else:
            _put(src.shared(f"asrserve-tiny-lstm-synth-en/ncnn/{rel}"), dest / rel)


def build_nemo_sherpa_int8(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """sherpa-onnx's NeMo cache-aware streaming transducer export (what the
    Nemotron archives hold): ``tests/fixtures/models/nemo-sherpa-tiny`` under
    the entry's ``*.int8.onnx`` names. Differences from upstream: the graphs are
    fp32 (the I/O and the metadata sherpa-onnx reads are those of its NeMo
    export), far smaller, and the metadata values (window, caches, vocabulary)
    are the tiny model's, not Nemotron's 560/160 ms geometry."""
    for role, rel in entry.files.items():
        name = "tokens.txt" if role == "tokens" else f"{role}.onnx"
        _put(src.fixture(f"nemo-sherpa-tiny/{name}"), dest / rel)


def build_nemo_transducer_offline(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """sherpa-onnx's *offline* NeMo transducer export (Parakeet TDT v3 int8:
    ``encoder.int8.onnx``, ``decoder.int8.onnx``, ``joiner.int8.onnx``,
    ``tokens.txt``): ``tests/fixtures/models/nemo-offline-tdt-tiny``, built with
    that release's file names, I/O and metadata (``EncDecRNNTBPEModel``, 128
    bins, TDT durations), dynamically quantized like it; tiny and random."""
    for rel in entry.files.values():
        _put(src.fixture(f"nemo-offline-tdt-tiny/{rel}"), dest / rel)


def build_silero_vad(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """The single file ``silero_vad.onnx``: the shared copy, which is the real
    upstream file (its sha256 is the catalog's)."""
    (rel,) = entry.files.values()
    _put(src.shared("silero-vad/silero_vad.onnx"), dest / rel)


def build_builtin(entry: CatalogEntry, dest: Path, src: Sources) -> None:
    """Nothing to build: the model ships inside the package."""


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "onnx-zipformer2",
        ("sherpa-onnx-streaming-zipformer-en-2023-06-26",),
        _onnx_transducer("zipformer2-tiny", bpe=True),
        family="zipformer2",
    ),
    Layout(
        "onnx-zipformer1",
        ("sherpa-onnx-streaming-zipformer-en-20M-2023-02-17",),
        _onnx_transducer("zipformer1-tiny"),
        family="zipformer",
    ),
    Layout("onnx-lstm", ("sherpa-onnx-lstm-en-2023-02-17",), build_lstm_onnx, family="lstm"),
    Layout(
        "ncnn-conv-emformer",
        ("sherpa-ncnn-conv-emformer-transducer-2022-12-06",),
        build_ncnn_conv_emformer,
        family="ncnn-conv-emformer",
        needs=("ncnn",),
        expect_text=False,  # random weights: whether speech gives tokens is not designed in
    ),
    Layout(
        "ncnn-zipformer",
        (
            "sherpa-ncnn-streaming-zipformer-en-2023-02-13",
            "sherpa-ncnn-streaming-zipformer-20M-2023-02-17",
        ),
        build_ncnn_zipformer,
        family="ncnn-zipformer",
        needs=("ncnn",),
    ),
    Layout(
        "onnx-nemo-streaming-int8",
        (
            "sherpa-onnx-nemotron-speech-streaming-en-0.6b-560ms-int8-2026-04-25",
            "sherpa-onnx-nemotron-speech-streaming-en-0.6b-160ms-int8-2026-04-25",
        ),
        build_nemo_sherpa_int8,
        family="nemo_sherpa",
    ),
    Layout(
        "onnx-nemo-transducer-offline",
        ("sherpa-onnx-nemo-parakeet-tdt-0.6b-v3-int8",),
        build_nemo_transducer_offline,
        family="nemo_offline",
    ),
    Layout("silero-vad-file", ("silero-vad",), build_silero_vad),
    Layout("builtin", (asrserve.DEFAULT_MODEL,), build_builtin, family="lstm"),
)


#: Layouts tested by ``test_pull_and_transcribe``; the other two have their own test.
TRANSDUCER_LAYOUTS = [x.id for x in LAYOUTS if x.id not in ("silero-vad-file", "builtin")]


def _layout(layout_id: str) -> Layout:
    return next(x for x in LAYOUTS if x.id == layout_id)


# --------------------------------------------------------------------------- server


@dataclass
class ServerState:
    files: dict[str, Path] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = TIMEOUT

    def do_GET(self) -> None:
        self.server.state.requests.append(self.path)
        path = self.server.state.files.get(self.path)
        if path is None or self.headers.get("Range"):
            self.send_error(404 if path is None else 416)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 1 << 20)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Loopback:
    state: ServerState
    base_url: str

    def serve(self, path: str, file: Path) -> str:
        self.state.files[path] = file
        return self.base_url + path


@pytest.fixture(scope="module")
def server() -> Iterator[Loopback]:
    """One loopback HTTP server for the module; shut down when the module ends."""
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


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def real_catalog() -> dict[str, CatalogEntry]:
    """The catalog in use (``asrserve.catalog.catalog_path()``), read before any
    test points ``$ASRSERVE_CATALOG`` elsewhere."""
    return load_catalog()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def write_catalog(entries: list[CatalogEntry], path: Path) -> Path:
    """A catalog file holding ``entries`` (read back and compared field by field)."""
    out: list[str] = []
    for e in entries:
        out.append("[[model]]")
        for key in ("name", "family", "backend", "language", "description", "url", "archive"):
            out.append(f"{key} = {_toml_str(getattr(e, key))}")
        out.append(f"sha256 = {_toml_str(e.sha256)}")
        out.append(f"size_bytes = {e.size_bytes}")
        out.append(f"streaming = {'true' if e.streaming else 'false'}")
        out.append(f"builtin = {'true' if e.builtin else 'false'}")
        out.append(f"note = {_toml_str(e.note)}")
        out.append("[model.files]")
        out.extend(f"{role} = {_toml_str(rel)}" for role, rel in e.files.items())
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")
    back = load_catalog(path)
    assert list(back) == [e.name for e in entries]
    for e in entries:
        assert back[e.name] == e
        assert dict(back[e.name].files) == dict(e.files)
    return path


def pack(entry: CatalogEntry, model_dir: Path, out_dir: Path) -> Path:
    """The archive upstream would publish: every file of ``model_dir`` under one
    top-level directory named like the entry (``archive = "none"``: the file)."""
    if entry.archive == "none":
        (only,) = [p for p in model_dir.rglob("*") if p.is_file()]
        return only
    archive = out_dir / entry.archive_filename
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    if entry.archive in ("tar.bz2", "tar.gz"):
        mode = "w:bz2" if entry.archive == "tar.bz2" else "w:gz"
        with tarfile.open(archive, mode) as tar:  # type: ignore[call-overload]
            tar.add(model_dir, arcname=entry.name, recursive=False)
            for p in files:
                tar.add(p, arcname=f"{entry.name}/{p.relative_to(model_dir).as_posix()}")
    elif entry.archive == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, f"{entry.name}/{p.relative_to(model_dir).as_posix()}")
    else:
        raise AssertionError(f"unknown archive type {entry.archive!r}")
    return archive


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass
class Published:
    entry: CatalogEntry  # as the temporary catalog has it
    archive: Path
    models_dir: Path
    url: str


def publish(
    layout: Layout,
    real: dict[str, CatalogEntry],
    server: Loopback,
    tmp: Path,
    request: pytest.FixtureRequest,
    env: pytest.MonkeyPatch,
    *,
    test_wav: Path | None = CLIP,
) -> Published:
    """Build the fixture directory for the layout's first entry, pack and serve
    it, and point ``$ASRSERVE_CATALOG``/``$ASRSERVE_MODELS_DIR`` at a temporary
    catalog and an empty models directory."""
    entry = real[layout.entries[0]]
    staged = tmp / "staged" / entry.name
    staged.mkdir(parents=True)
    layout.build(entry, staged, Sources(request))
    missing = [rel for rel in entry.files.values() if not (staged / rel).is_file()]
    assert not missing, f"builder for {layout.id} left out {missing}"
    if test_wav is not None:
        _put(test_wav, staged / "test_wavs" / "0.wav")  # upstream archives carry test_wavs/
    archive = pack(entry, staged, tmp)
    name = entry.archive_filename if entry.archive != "none" else catalog._url_basename(entry.url)
    url = server.serve(f"/{layout.id}/{name}", archive)
    served = replace(entry, url=url, sha256=sha256_file(archive), size_bytes=archive.stat().st_size)
    cat = write_catalog([served], tmp / "catalog.toml")
    models_dir = tmp / "models"
    env.setenv(catalog.CATALOG_ENV, str(cat))
    env.setenv(catalog.MODELS_DIR_ENV, str(models_dir))
    return Published(served, archive, models_dir, url)


def check_installed(pub: Published, server: Loopback, pulled_out: str) -> Path:
    target = pub.models_dir / pub.entry.name
    assert pulled_out.strip() == str(target)
    assert server.state.requests.count(pub.url.removeprefix(server_base(pub.url))) == 1
    for rel in pub.entry.files.values():
        assert (target / rel).is_file(), rel
    assert not (pub.models_dir / catalog.PARTIAL_DIRNAME).exists()
    assert sorted(p.name for p in pub.models_dir.iterdir()) == [pub.entry.name]
    return target


def server_base(url: str) -> str:
    return url[: url.index("/", len("http://"))]


# --------------------------------------------------------------------------- tests


def test_every_catalog_entry_has_one_layout(real_catalog: dict[str, CatalogEntry]) -> None:
    """The layout table covers the catalog exactly, and entries grouped under
    one layout really share it (same family, backend, archive type, files)."""
    listed = [name for layout in LAYOUTS for name in layout.entries]
    assert len(listed) == len(set(listed)), "an entry is listed under two layouts"
    assert sorted(listed) == sorted(real_catalog), (
        "catalog entries without a layout test (add them to LAYOUTS): "
        f"{sorted(set(real_catalog) - set(listed))}; listed but not in the catalog: "
        f"{sorted(set(listed) - set(real_catalog))}"
    )
    for layout in LAYOUTS:
        first = real_catalog[layout.entries[0]]
        for name in layout.entries[1:]:
            other = real_catalog[name]
            shape = ("family", "backend", "archive", "streaming", "builtin")
            assert [getattr(other, k) for k in shape] == [getattr(first, k) for k in shape], name
            assert dict(other.files) == dict(first.files), f"{name} has other files: own layout"


@pytest.mark.parametrize("layout_id", TRANSDUCER_LAYOUTS)
def test_pull_and_transcribe(
    layout_id: str,
    real_catalog: dict[str, CatalogEntry],
    server: Loopback,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pull the layout's fixture archive through ``asrserve models pull`` and
    transcribe its ``test_wavs/0.wav`` with ``asrserve transcribe --model NAME``."""
    layout = _layout(layout_id)
    if layout.pending is not None:
        pytest.skip(layout.pending)
    for module in layout.needs:
        pytest.importorskip(module)
    pub = publish(layout, real_catalog, server, tmp_path, request, clean_env)
    name = pub.entry.name

    pull = ["models", "pull", name, "--models-dir", str(pub.models_dir), "--no-progress"]
    if layout_id == "onnx-lstm":  # one layout through a real process
        done = subprocess.run(
            [sys.executable, "-m", "asrserve", *pull],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
            cwd=tmp_path,
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err = run_cli(pull, capsys)
    assert code == 0, err
    target = check_installed(pub, server, out)

    wav = target / "test_wavs" / "0.wav"
    if pub.entry.family == "nemo_tdt":  # offline behind Silero VAD (its pull: own test)
        clean_env.setenv("ASRSERVE_VAD_MODEL", str(SILERO))
    code, out, err = run_cli(
        ["transcribe", "--model", name, "--format", "json", "--no-progress", str(wav)], capsys
    )
    assert code == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert result["file"] == str(wav)
    assert result["duration"] == pytest.approx(read_wav(CLIP)[0].size / 16000, abs=1e-3)
    assert len(result["tokens"]) == len(result["timestamps"])
    if layout.expect_text:
        assert result["tokens"], f"{layout_id}: no tokens on speech"

    # The same name loads in-process as the expected family, from the files the
    # catalog names (int8 first where the entry has int8 roles), and gives the
    # same transcript as the command line.
    recognizer = asrserve.load_model(name)
    model: Any = recognizer.model  # family and encoder file: attributes of the concrete family
    assert model.family == layout.family
    encoder = Path(model.encoder.path)
    assert encoder.parent == target
    want = pub.entry.files.get("encoder_int8") or pub.entry.files.get("encoder")
    if want is not None:
        assert encoder.name == want
    samples, rate = read_wav(wav)
    assert recognizer.transcribe(samples, rate).text == result["text"]


def test_silero_vad_single_file(
    real_catalog: dict[str, CatalogEntry],
    server: Loopback,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``archive = "none"``: the URL is the file. The pulled ``silero_vad.onnx``
    is the one the Parakeet TDT loader (onnx-asr layout) finds through
    ``$ASRSERVE_MODELS_DIR``, and it finds speech in the JFK clip."""
    from asrserve.vad import SileroVad, find_vad_model

    layout = _layout("silero-vad-file")
    pub = publish(layout, real_catalog, server, tmp_path, request, clean_env, test_wav=None)
    real = real_catalog[layout.entries[0]]
    # The shared file is the upstream file: the catalog's own checksum holds.
    assert (pub.entry.sha256, pub.entry.size_bytes) == (real.sha256, real.size_bytes)

    code, out, err = run_cli(
        ["models", "pull", pub.entry.name, "--models-dir", str(pub.models_dir), "--no-progress"],
        capsys,
    )
    assert code == 0, err
    target = check_installed(pub, server, out)
    vad_file = target / real.files["vad"]
    assert sha256_file(vad_file) == real.sha256
    assert find_vad_model() == vad_file

    if not JFK.is_file():
        pytest.skip(f"shared clip not found: {JFK}")
    samples, _ = read_wav(JFK)
    p = SileroVad(vad_file).probabilities(samples)
    assert 0.3 < float(np.mean(p > 0.5)) < 0.95  # speech with pauses (about 68 %)

    tdt = tmp_path / "parakeet-tdt-tiny"  # a copy without a silero_vad.onnx of its own
    shutil.copytree(FIXTURE_MODELS / "parakeet-tdt-tiny", tdt)
    assert not (tdt / "silero_vad.onnx").exists()
    code, out, err = run_cli(
        ["transcribe", "--model", str(tdt), "--format", "json", "--no-progress", str(JFK)], capsys
    )
    assert code == 0, err
    assert json.loads(out)["tokens"], "the VAD found no speech segment to decode"
    tdt_recognizer: Any = asrserve.load_model(tdt)  # a TdtRecognizer
    assert Path(tdt_recognizer.vad.session.path) == vad_file


def test_builtin_model(
    real_catalog: dict[str, CatalogEntry],
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: Loopback,
) -> None:
    """The built-in entry needs no download: ``pull`` names the packaged
    directory and ``transcribe --model NAME`` uses it."""
    layout = _layout("builtin")
    entry = real_catalog[layout.entries[0]]
    assert entry.builtin
    builtin_dir = catalog.BUILTIN_MODELS_DIR / entry.name
    if not builtin_dir.is_dir():
        pytest.skip(f"built-in model not found at {builtin_dir}")
    clean_env.setenv(catalog.CATALOG_ENV, str(write_catalog([entry], tmp_path / "catalog.toml")))
    models_dir = tmp_path / "models"
    clean_env.setenv(catalog.MODELS_DIR_ENV, str(models_dir))
    before = len(server.state.requests)

    code, out, err = run_cli(
        ["models", "pull", entry.name, "--models-dir", str(models_dir), "--no-progress"], capsys
    )
    assert code == 0, err
    assert Path(out.strip()) == builtin_dir
    assert len(server.state.requests) == before
    assert not models_dir.exists()

    code, out, err = run_cli(
        ["transcribe", "--model", entry.name, "--format", "json", "--no-progress", str(CLIP)],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["text"].strip()
    builtin: Any = asrserve.load_model(entry.name).model
    assert builtin.family == layout.family
    assert Path(builtin.encoder.path).name == entry.files["encoder"]
