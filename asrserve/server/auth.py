"""Who may connect: bearer tokens, browser origins, per-client limits.

Tokens come from a file (one per line, ``#`` comments), reloaded on SIGHUP.
Clients send ``Authorization: Bearer <token>``; browsers, which cannot set
headers on a WebSocket, may send ``?token=<token>``. Tokens are never
logged: log lines carry a short fingerprint instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from asrserve.errors import ConfigError

log = logging.getLogger("asrserve.server")


def fingerprint(token: str) -> str:
    """A loggable stand-in for a token."""
    return "tok-" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class TokenStore:
    """The tokens of ``path``; :meth:`reload` rereads the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tokens: tuple[str, ...] = ()
        self.reload()

    def reload(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the auth token file ({exc})") from exc
        tokens = []
        for line in text.splitlines():
            token = line.strip()
            if token and not token.startswith("#"):
                tokens.append(token)
        if not tokens:
            raise ConfigError(f"{self.path}: the auth token file has no tokens")
        self._tokens = tuple(tokens)
        log.info("auth: %d tokens loaded from %s", len(tokens), self.path)

    def check(self, presented: str | None) -> bool:
        """Whether ``presented`` is a known token (compared in constant time)."""
        if not presented:
            return False
        # header text may hold lone surrogates (undecodable bytes, escaped):
        # they can match no token, and must not raise.
        given = presented.encode("utf-8", "surrogatepass")
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(token.encode(), given)
        return found


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token a request carries: the bearer header, else ``?token=``."""
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return query.get("token") or None


class Quota:
    """Counts of open things per key (client address, token) against a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def full(self, key: str) -> bool:
        return self.limit > 0 and self._open[key] >= self.limit

    def acquire(self, key: str) -> None:
        self._open[key] += 1

    def release(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
