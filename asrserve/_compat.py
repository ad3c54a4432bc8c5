"""What differs between the Python versions asrserve supports (3.10 to 3.13)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # pragma: no cover - Python 3.10 only
    from async_timeout import timeout

__all__ = ["timeout"]
