"""Compiled Prometheus-compatible Gorilla (XOR chunk) codec; see ``_gorilla.c``."""

from typing import Any, TypeAlias

import numpy as np
from typing_extensions import Buffer

# numpy only declares ndarray.__buffer__ for Python >= 3.12, so name arrays explicitly.
_BytesLike: TypeAlias = Buffer | np.ndarray[Any, Any]

def encode(timestamps: _BytesLike, values: _BytesLike, /) -> bytes:
    """Encode native int64 milliseconds and float64 values into a Prometheus XOR chunk.

    Both buffers must be C-contiguous and hold the same number of 8-byte items
    (1 to 65535); otherwise ``ValueError`` (or ``TypeError`` for non-buffers).
    """

def decode(data: _BytesLike, /) -> tuple[bytes, bytes]:
    """Decode a Prometheus XOR chunk into native int64 and float64 buffers.

    Raises ``ValueError`` on truncated or corrupt input.
    """
