"""G.711 µ-law and A-law decoding (ITU-T G.711), in numpy.

Each law is a 256-entry table built from the standard's segment formulas (the
same values as the reference ``g711.c`` and the former ``audioop``: 16-bit
linear, µ-law ``0x00`` → -32124, A-law ``0xD5`` → 8), so decoding is one
lookup per byte. G.711 audio is 8 kHz mono.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

G711_RATE = 8000


def _ulaw_to_linear(code: int) -> int:
    u = ~code & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if u & 0x80 else magnitude


def _alaw_to_linear(code: int) -> int:
    a = code ^ 0x55  # even bits are inverted on the wire
    exponent = (a >> 4) & 0x07
    level = ((a & 0x0F) << 4) + 8  # the middle of the mantissa's interval
    magnitude = level if exponent == 0 else (level + 0x100) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


ULAW_TABLE: npt.NDArray[np.int16] = np.array([_ulaw_to_linear(c) for c in range(256)], np.int16)
"""µ-law code → 16-bit linear sample."""
ALAW_TABLE: npt.NDArray[np.int16] = np.array([_alaw_to_linear(c) for c in range(256)], np.int16)
"""A-law code → 16-bit linear sample."""
ULAW_TABLE.flags.writeable = False
ALAW_TABLE.flags.writeable = False

_FLOAT = {
    "ulaw": ULAW_TABLE.astype(np.float32) / 32768.0,
    "alaw": ALAW_TABLE.astype(np.float32) / 32768.0,
}


def g711_decode(data: bytes, law: str) -> npt.NDArray[np.float32]:
    """G.711 bytes (``law``: ``"ulaw"`` or ``"alaw"``) → float32 samples in [-1, 1)."""
    try:
        table = _FLOAT[law]
    except KeyError:
        raise ValueError(f"unknown G.711 law {law!r}; expected 'ulaw' or 'alaw'") from None
    return table[np.frombuffer(data, dtype=np.uint8)]
