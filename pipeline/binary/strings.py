"""Reading a payload field by field, and the strict UTF-8 and JSON both directions use.

:class:`Reader` turns every short read, bad UTF-8 or bad JSON into a
:class:`~pipeline.errors.ProtocolError` naming the field, so a decoder built on it raises
nothing else.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.binary.codes import ErrorCode
from pipeline.errors import InvalidArgument, ProtocolError

__all__ = ["Reader", "json_bytes", "utf8"]


def utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8; lone surrogates are InvalidArgument naming ``what``."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{what} is not encodable as UTF-8: {exc.reason}") from exc


def json_bytes(document: object) -> bytes:
    """Compact JSON (no spaces, non-ASCII kept, key order kept); NaN is InvalidArgument."""
    try:
        return json.dumps(
            document, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"not encodable as JSON: {exc}") from exc


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float64")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: may decode to a lone surrogate, which is not UTF-8."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("an object names one key twice")
    return out


class Reader:
    """A cursor over one payload; ``what`` (the opcode's name) prefixes every error."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _fail(self, message: str, code: ErrorCode = ErrorCode.MALFORMED_FRAME) -> ProtocolError:
        return ProtocolError(f"{self._what}: {message}", code=code)

    def left(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._pos

    def take(self, size: int, field: str) -> bytes:
        """The next ``size`` bytes."""
        if size > self.left():
            raise self._fail(f"{field} needs {size} bytes, {self.left()} left")
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += size
        return out

    def rest(self) -> bytes:
        """Everything not read yet."""
        return self.take(self.left(), "rest")

    def unpack(self, layout: struct.Struct, field: str) -> tuple[Any, ...]:
        """The next fixed-size fields."""
        if layout.size > self.left():
            raise self._fail(f"{field} needs {layout.size} bytes, {self.left()} left")
        values = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return values

    def text(self, length: struct.Struct, field: str, limit: int | None = None) -> str:
        """A UTF-8 string behind its length (``length``: the u8/u16 layout); ``limit`` bytes."""
        (size,) = self.unpack(length, f"{field} length")
        if limit is not None and size > limit:
            raise self._fail(f"{field} is {size} bytes, over {limit}", ErrorCode.INVALID_REQUEST)
        data = self.take(size, field)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._fail(f"{field} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc

    def _json(self, size: int, field: str) -> object:
        data = self.take(size, field)
        try:
            document = json.loads(
                data.decode("utf-8"),
                parse_constant=_refuse_constant,
                parse_float=_finite_float,
                object_pairs_hook=_unique_pairs,
            )
            if _SURROGATE_ESCAPE.search(data):
                json_bytes(document)  # a lone surrogate cannot be written out again
            return document
        except UnicodeDecodeError as exc:
            raise self._fail(f"{field} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except (ValueError, RecursionError, InvalidArgument) as exc:
            raise self._fail(f"{field} is not valid JSON: {exc}") from exc

    def json_object(self, size: int, field: str) -> dict[str, object]:
        """A JSON object of ``size`` bytes (no NaN, no repeated key)."""
        document = self._json(size, field)
        if not isinstance(document, dict):
            raise self._fail(f"{field} is not a JSON object")
        return document

    def json_tags(self, size: int) -> tuple[tuple[str, str], ...]:
        """Tags: a JSON object of strings, as (name, value) pairs in their order."""
        document = self.json_object(size, "tags")
        if not all(isinstance(value, str) for value in document.values()):
            raise self._fail("tags must map names to strings", ErrorCode.INVALID_REQUEST)
        return tuple((name, str(value)) for name, value in document.items())

    def float32(self, count: int, field: str) -> npt.NDArray[np.float32]:
        """``count`` little-endian float32 as a view of the payload (no copy)."""
        if count * 4 > self.left():
            raise self._fail(f"{field} needs {count * 4} bytes, {self.left()} left")
        view = np.frombuffer(self._data, dtype="<f4", count=count, offset=self._pos)
        self._pos += count * 4
        return view

    def end(self) -> None:
        """Refuse bytes after the last field."""
        if self.left():
            raise self._fail(f"{self.left()} bytes after the last field")
