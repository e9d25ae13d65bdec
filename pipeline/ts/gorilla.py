"""Gorilla compression of one series chunk, byte-compatible with Prometheus XOR chunks.

A chunk holds 1 to 65535 samples of (int64 milliseconds, float64 value). The
bytes are exactly what ``chunk.Bytes()`` returns for a Prometheus
``tsdb/chunkenc`` ``XORChunk`` (layout in Prometheus' ``tsdb/docs/format/chunks.md``):

=========================  ==============================================================
field                      encoding
=========================  ==============================================================
sample count               u16, big-endian
first timestamp            signed varint (zig-zag, Go ``binary.PutVarint``)
first value                64 raw IEEE-754 bits
second timestamp delta     uvarint of ``t1 - t0`` as wrapping uint64
second value               XOR value (below)
every further sample       delta-of-delta timestamp, then XOR value
=========================  ==============================================================

Delta-of-delta ``dod = (t[i] - t[i-1]) - (t[i-1] - t[i-2])`` (wrapping int64):
``0`` -> ``'0'``; ``[-8191, 8192]`` -> ``'10'`` + 14 bits; ``[-65535, 65536]`` ->
``'110'`` + 17 bits; ``[-524287, 524288]`` -> ``'1110'`` + 20 bits; else ``'1111'``
+ 64 bits. XOR value, with ``x = bits(v[i]) ^ bits(v[i-1])``: ``'0'`` if ``x == 0``;
``'10'`` + the bits inside the previous leading/trailing-zero window if they fit;
else ``'11'`` + leading zeros (5 bits, capped at 31) + significant bits (6 bits,
64 stored as 0) + the significant bits. Bits run most significant first and the
last byte is zero-padded.

:func:`encode_chunk` and :func:`decode_chunk` run the compiled codec
(``pipeline.ts._gorilla``). :func:`reference_encode` and :func:`reference_decode`
are a slow, plain transcription of the table above that tests use to cross-check it.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pipeline.errors import CorruptBlock, InvalidArgument
from pipeline.ts import _gorilla

__all__ = [
    "MAX_POINTS",
    "decode_chunk",
    "encode_chunk",
    "reference_decode",
    "reference_encode",
]

MAX_POINTS: Final = 65535
"""Most samples a chunk can hold: its count header is a uint16."""

_INT64_MIN: Final = -(1 << 63)
_UINT64_MASK: Final = (1 << 64) - 1

# Delta-of-delta buckets: (prefix bits, prefix length, payload length).
_DOD_BUCKETS: Final = ((0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20))


def _as_int64(timestamps: npt.ArrayLike) -> npt.NDArray[np.int64]:
    array = np.asarray(timestamps)
    if array.ndim != 1:
        raise InvalidArgument(f"timestamps must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise InvalidArgument(
            f"timestamps must be integer milliseconds, got dtype {array.dtype}; "
            "convert with timestamps.astype(np.int64)"
        )
    if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise InvalidArgument("timestamps exceed the int64 millisecond range")
    return np.ascontiguousarray(array, dtype=np.int64)


def _as_float64(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidArgument(f"values must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise InvalidArgument(
            f"values must be a float array, got dtype {array.dtype}; "
            "convert with values.astype(np.float64)"
        )
    return np.ascontiguousarray(array, dtype=np.float64)


def _validated(
    timestamps: npt.ArrayLike, values: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    ts = _as_int64(timestamps)
    vals = _as_float64(values)
    if ts.shape != vals.shape:
        raise InvalidArgument(
            f"timestamps and values differ in length: {ts.size} timestamps, {vals.size} values"
        )
    if ts.size == 0:
        raise InvalidArgument("cannot encode a chunk of 0 points")
    if ts.size > MAX_POINTS:
        raise InvalidArgument(
            f"a chunk holds at most {MAX_POINTS} points, got {ts.size}; "
            "split the series into several chunks"
        )
    return ts, vals


def encode_chunk(
    timestamps: npt.NDArray[np.integer[Any]], values: npt.NDArray[np.floating[Any]]
) -> bytes:
    """Encode samples into the bytes of a Prometheus XOR chunk.

    ``timestamps`` are integer milliseconds (any integer dtype that fits int64),
    ``values`` any float dtype (widened to float64 exactly). Both are 1-D and of
    equal length, 1 to :data:`MAX_POINTS` samples. Timestamps need not be sorted;
    unsorted or duplicate timestamps simply cost more bits.

    Raises :class:`~pipeline.errors.InvalidArgument` for non-numeric dtypes, wrong
    shapes, mismatched lengths, 0 points or more than 65535 points.
    """
    ts, vals = _validated(timestamps, values)
    return _gorilla.encode(ts, vals)


def decode_chunk(
    data: bytes | bytearray | memoryview,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Decode a Prometheus XOR chunk into ``(timestamps_ms, values)``.

    The arrays are read-only views over freshly decoded buffers (no copy);
    call ``.copy()`` to modify them. Values keep their exact bits, NaN payloads
    included. An empty chunk (count 0, 2 bytes) decodes to two empty arrays.

    Raises :class:`~pipeline.errors.CorruptBlock` naming the failing sample when ``data``
    is truncated, carries bytes after its last sample, or holds an impossible bit pattern.
    """
    try:
        ts_buffer, value_buffer = _gorilla.decode(data)
    except ValueError as exc:  # the extension names the failing sample
        raise CorruptBlock(str(exc)) from None
    return np.frombuffer(ts_buffer, dtype=np.int64), np.frombuffer(value_buffer, dtype=np.float64)


class _Bits:
    """Append-only bit string, most significant bit first."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def put(self, value: int, width: int) -> None:
        self._parts.append(format(value & ((1 << width) - 1), f"0{width}b"))

    def put_uvarint(self, value: int) -> None:
        while value >= 0x80:
            self.put((value & 0x7F) | 0x80, 8)
            value >>= 7
        self.put(value, 8)

    def to_bytes(self) -> bytes:
        bits = "".join(self._parts)
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def _to_int64(value: int) -> int:
    value &= _UINT64_MASK
    return value - (1 << 64) if value >> 63 else value


def _put_xor(out: _Bits, delta: int, window: list[int] | None) -> list[int] | None:
    """Write one XOR value; return the (leading, trailing) window in force afterwards."""
    if delta == 0:
        out.put(0, 1)
        return window
    leading = min(64 - delta.bit_length(), 31)
    trailing = (delta & -delta).bit_length() - 1
    if window is not None and leading >= window[0] and trailing >= window[1]:
        out.put(0b10, 2)
        out.put(delta >> window[1], 64 - window[0] - window[1])
        return window
    significant = 64 - leading - trailing
    out.put(0b11, 2)
    out.put(leading, 5)
    out.put(significant % 64, 6)
    out.put(delta >> trailing, significant)
    return [leading, trailing]


def reference_encode(
    timestamps: npt.NDArray[np.integer[Any]], values: npt.NDArray[np.floating[Any]]
) -> bytes:
    """Encode like :func:`encode_chunk`, in plain Python straight from the format table.

    Slow (about a microsecond per bit); meant for tests, not for data.
    """
    ts_array, value_array = _validated(timestamps, values)
    ts = [int(t) for t in ts_array.tolist()]
    bits = [int(b) for b in value_array.view(np.uint64).tolist()]
    out = _Bits()
    out.put(len(ts), 16)
    zigzag = (ts[0] << 1) ^ (-1 if ts[0] < 0 else 0)
    out.put_uvarint(zigzag & _UINT64_MASK)
    out.put(bits[0], 64)
    window: list[int] | None = None
    delta = 0
    for i in range(1, len(ts)):
        new_delta = (ts[i] - ts[i - 1]) & _UINT64_MASK
        if i == 1:
            out.put_uvarint(new_delta)
        else:
            dod = _to_int64(new_delta - delta)
            if dod == 0:
                out.put(0, 1)
            else:
                for prefix, prefix_len, width in _DOD_BUCKETS:
                    if -(2 ** (width - 1) - 1) <= dod <= 2 ** (width - 1):
                        out.put(prefix, prefix_len)
                        out.put(dod, width)
                        break
                else:
                    out.put(0b1111, 4)
                    out.put(dod, 64)
        delta = new_delta
        window = _put_xor(out, bits[i] ^ bits[i - 1], window)
    return out.to_bytes()


class _BitCursor:
    """Reads a bit string left to right; raises CorruptBlock past its end."""

    def __init__(self, data: bytes) -> None:
        self._bits = "".join(format(byte, "08b") for byte in data)
        self.pos = 0

    @property
    def total(self) -> int:
        return len(self._bits)

    def take(self, width: int) -> int:
        if self.pos + width > len(self._bits):
            raise CorruptBlock(f"corrupt Gorilla chunk: truncated at bit {self.pos}")
        value = int(self._bits[self.pos : self.pos + width], 2)
        self.pos += width
        return value

    def take_uvarint(self) -> int:
        result = 0
        for index in range(10):
            byte = self.take(8)
            if byte < 0x80:
                if index == 9 and byte > 1:
                    raise CorruptBlock("corrupt Gorilla chunk: varint overflows 64 bits")
                return result | (byte << (7 * index))
            result |= (byte & 0x7F) << (7 * index)
        raise CorruptBlock("corrupt Gorilla chunk: varint overflows 64 bits")


def _take_xor(
    cursor: _BitCursor, previous: int, window: list[int] | None
) -> tuple[int, list[int] | None]:
    if cursor.take(1) == 0:
        return previous, window
    if cursor.take(1) == 0:
        if window is None:
            raise CorruptBlock("corrupt Gorilla chunk: window reused before it was set")
        leading, trailing = window
    else:
        leading = cursor.take(5)
        significant = cursor.take(6) or 64
        if leading + significant > 64:
            raise CorruptBlock("corrupt Gorilla chunk: leading plus significant bits above 64")
        trailing = 64 - leading - significant
        window = [leading, trailing]
    return previous ^ (cursor.take(64 - leading - trailing) << trailing), window


def reference_decode(data: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Decode like :func:`decode_chunk`, in plain Python straight from the format table."""
    cursor = _BitCursor(bytes(data))
    count = cursor.take(16)
    ts: list[int] = []
    bits: list[int] = []
    if count:
        zigzag = cursor.take_uvarint()
        ts.append(_to_int64((zigzag >> 1) ^ -(zigzag & 1)))
        bits.append(cursor.take(64))
    window: list[int] | None = None
    delta = 0
    for i in range(1, count):
        if i == 1:
            delta = cursor.take_uvarint()
        else:
            prefix_len = 0
            while prefix_len < 4 and cursor.take(1) == 1:
                prefix_len += 1
            if prefix_len == 4:
                dod = _to_int64(cursor.take(64))
            elif prefix_len == 0:
                dod = 0
            else:
                width = _DOD_BUCKETS[prefix_len - 1][2]
                dod = cursor.take(width)
                if dod > 2 ** (width - 1):
                    dod -= 2**width
            delta = (delta + dod) & _UINT64_MASK
        ts.append(_to_int64(ts[-1] + delta))
        value, window = _take_xor(cursor, bits[-1], window)
        bits.append(value)
    if (cursor.pos + 7) // 8 != cursor.total // 8:
        raise CorruptBlock("corrupt Gorilla chunk: bytes left over after the last sample")
    return np.array(ts, dtype=np.int64), np.array(bits, dtype=np.uint64).view(np.float64)
