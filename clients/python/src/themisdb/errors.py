"""The client's one error tree; ``retriable`` on each says whether sending again may help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "BufferOverflowError",
    "ConfigurationError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServerUnavailableError",
    "ThemisError",
    "ValidationError",
    "WriteError",
]


class ThemisError(Exception):
    """The base of every error this client raises."""

    retriable: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        """The HTTP status of the answer, if the error came from one."""
        self.code = code
        """The binary protocol's error name (``INVALID_REQUEST`` ...), if from a frame."""


class BufferOverflowError(ThemisError):
    """A buffer is full. From the client's queue (``retriable`` false: the item was
    **not** queued) or from the server (429 / BUFFER_FULL, retried by the writer)."""

    def __init__(
        self, message: str, *, buffer_size: int, retriable: bool = False, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.buffer_size = buffer_size
        self.retriable = retriable


class RateLimitedError(ThemisError):
    """The key's quota is used up; ``retry_after`` seconds is the server's advice."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuthenticationError(ThemisError):
    """No key, or an unknown one (401 / AUTHENTICATION_FAILED)."""


class PermissionDeniedError(ThemisError):
    """The key's role does not allow this call (403 / PERMISSION_DENIED)."""


class ValidationError(ThemisError):
    """The request is invalid (400, 413 / INVALID_REQUEST); ``field`` names what, if known."""

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


class NotFoundError(ThemisError):
    """The pk or replica does not exist (404 / NOT_FOUND)."""


class ServerUnavailableError(ThemisError):
    """The server could not be reached or could not answer now (5xx, refused, timeout)."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ConfigurationError(ThemisError):
    """A bad option or connection string; ``key`` names it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class WriteError(ThemisError):
    """``flush()`` or ``close()``: these items were finally not written.

    ``failed`` holds the items (points as dicts, vector operations as dicts with ``op``),
    ``cause`` the last error that stopped them.
    """

    def __init__(self, failed: Sequence[dict[str, Any]], cause: BaseException | None) -> None:
        super().__init__(f"{len(failed)} item(s) were not written: {cause}")
        self.failed = list(failed)
        self.cause = cause
