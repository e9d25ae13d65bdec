"""The checks every buffered and direct call makes before anything is queued or sent:
finite values, int64 timestamps (now by default), float32 vectors."""

from __future__ import annotations

import array
import math
import time
from typing import Any

from themisdb.errors import ValidationError

__all__ = ["checked_timestamp", "checked_value", "vector_bytes"]


def checked_value(value: object) -> float:
    """``value`` as a float; NaN and infinities are refused (the REST API cannot carry them,
    and both transports must store the same)."""
    if type(value) is float and value - value == 0.0:  # the hot path: a finite float
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("field 'value' must be a number", field="value")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError("field 'value' must be finite (no NaN or infinity)", field="value")
    return number


def checked_timestamp(ts: int | None) -> int:
    """``ts`` (milliseconds) as an int64, or now."""
    if type(ts) is int and -(2**63) <= ts < 2**63:  # the hot path
        return ts
    if ts is None:
        return time.time_ns() // 1_000_000
    if isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
        raise ValidationError(
            "field 'timestamp_ms' must be an int64 (milliseconds)", field="timestamp_ms"
        )
    return ts


def vector_bytes(vector: Any) -> bytes:
    """``vector`` (a sequence of numbers, an ``array('f')`` or a float32 numpy array) as
    little-endian float32 bytes; every component finite."""
    if isinstance(vector, array.array) and vector.typecode == "f":
        values = vector
    elif hasattr(vector, "dtype") and hasattr(vector, "tobytes"):
        values = array.array("f")
        values.frombytes(vector.astype("<f4").tobytes())
    else:
        try:
            values = array.array("f", vector)
        except TypeError as exc:
            raise ValidationError(
                "field 'vector' must be an array of numbers", field="vector"
            ) from exc
    if not values:
        raise ValidationError("field 'vector' must not be empty", field="vector")
    if not all(math.isfinite(x) for x in values):
        raise ValidationError("field 'vector' must have finite components", field="vector")
    return values.tobytes()
