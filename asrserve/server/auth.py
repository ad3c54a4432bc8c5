"""Who may connect: bearer tokens, browser origins, per-client limits.

Tokens come from a file (one per line, ``#`` comments), reloaded on SIGHUP.
Clients send ``Authorization: Bearer <token>``; browsers, which cannot set
headers on a WebSocket, may send ``?token=<token>``. Tokens are never
logged: log lines carry a short fingerprint instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values as networks (validated by ServerConfig)."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An X-Forwarded-For entry as an address: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``::1``, ``[::1]:5678``; None when it is none of these."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _inside(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Iterable[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)


def client_address(peer: str | None, forwarded: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client a request comes from, for per-address limits and logs.

    ``peer`` is the TCP peer; ``forwarded`` the request's X-Forwarded-For
    header values, in order. Only when the peer is inside a ``trusted``
    network is the header read, from the right: each trusted proxy appends the
    address it saw, so the right-most entry that is not itself a trusted
    proxy is the client (entries left of it are whatever the client sent, and
    are ignored). From an untrusted peer the header is ignored: a client
    cannot choose its own address.
    """
    address = peer or "?"
    ip = _ip(address)
    if not trusted or ip is None or not _inside(ip, trusted):
        return address
    entries = [e for value in forwarded for e in value.split(",") if e.strip()]
    for entry in reversed(entries):
        hop = _ip(entry)
        if hop is None:
            # written by a trusted proxy, yet no address: count the request
            # as the proxy's own rather than trust what is left of it
            return address
        address = str(hop)
        if not _inside(hop, trusted):
            return address
    return address  # every hop a trusted proxy: the left-most one


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
