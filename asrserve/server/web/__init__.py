"""The browser microphone page: static files shipped in the package.

``GET /`` serves ``index.html``; ``GET /web/<name>`` the other files here.
"""

from __future__ import annotations

from importlib import resources

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _names() -> dict[str, str]:
    files = resources.files(__name__)
    found = {"/": "index.html"}
    for entry in files.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            found[f"/web/{entry.name}"] = entry.name
    return found


WEB_FILES = _names()
"""URL path → file name in this package."""


def web_file(path: str) -> tuple[bytes, str]:
    """The bytes and content type served at ``path`` (a key of :data:`WEB_FILES`)."""
    name = WEB_FILES[path]
    suffix = "." + name.rsplit(".", 1)[-1]
    return resources.files(__name__).joinpath(name).read_bytes(), _TYPES[suffix]
