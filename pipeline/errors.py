"""The one exception tree of Themis Pipeline.

Every error a user can see names what was wrong and what to do about it.
``retriable`` tells callers whether the same call may succeed later; retry
logic reads the flag (:func:`call_with_retries`) instead of matching strings or
librdkafka codes. HTTP status codes are not kept here: the facade maps classes to
statuses in one place (``pipeline.facade.middleware``)::

    ThemisError
     +-- InvalidArgument (ValueError)     a value given to a function is outside what it takes
     +-- ConfigError                      a setting has an invalid value
     +-- EnvironmentProblem               a tool (java, mvn) is missing
     +-- BrokerError                      local broker lifecycle
     |    +-- BrokerStartError            the JVM exited or never answered
     |    +-- BrokerUnavailable           no broker could be found or started (retriable)
     +-- KafkaOperationFailed             a consumer/admin call failed (retriable per librdkafka)
     +-- DeliveryFailed                   the broker did not acknowledge a record (retriable)
     +-- TopicError                       declarative topic specs and drift
     +-- InvalidRecord                    a record on a topic cannot be decoded
     +-- CorruptBlock                     a Gorilla block failed its checksum or decode
     +-- BufferOverflow                   a hard buffer limit is reached (retriable)
     +-- CorruptBatch                     a WAL batch failed its checksum or decode
     |    +-- UnknownDictionary           compressed with a dictionary the replica lacks
     +-- WalGap                           a batch starts beyond the replica's next LSN (retriable)
     +-- ForeignPrimary                   a batch comes from another primary than the replica's
     +-- ShipFailed                       a replica did not confirm a batch (retriable)
     +-- ReplicaRewind                    a replica needs entries from an earlier LSN (retriable)
     +-- WorkerUnavailable                no worker answers its web pages (retriable)
     +-- ChildExited                      a child process waited for has exited
     +-- RequestError                     a front-door request cannot be served as sent
     |    +-- InvalidRequest              a field or parameter is invalid (names it)
     |    +-- AuthenticationFailed        no key, or an unknown one
     |    +-- PermissionDenied            the key's role is too weak
     |    +-- NotFound                    the named pk or replica does not exist
     |    +-- Conflict                    the request clashes with the current state
     |    +-- RequestTimeout              the client did not send the whole body in time
     |    +-- PayloadTooLarge             the body is over the configured limit
     |    +-- UnsupportedMediaType        the body's Content-Type is not one the endpoint reads
     |    +-- HeaderTooLarge              the request line or a header field is over the limit
     |    +-- RateLimited                 the key's quota is used up (retriable, retry_after_s)
     |    +-- ServiceUnavailable          a feature is off or the broker did not answer (retriable)
     +-- BenchmarkFailed                  a benchmark missed a deadline or a step failed
     +-- ProtocolError                    a binary-protocol frame is malformed or refused (code)
          +-- RequestRefused              a server answered a request with ERROR (the client's view)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "AuthenticationFailed",
    "BenchmarkFailed",
    "BrokerError",
    "BrokerStartError",
    "BrokerUnavailable",
    "BufferOverflow",
    "ChildExited",
    "ConfigError",
    "Conflict",
    "CorruptBatch",
    "CorruptBlock",
    "DeliveryFailed",
    "EnvironmentProblem",
    "ForeignPrimary",
    "HeaderTooLarge",
    "InvalidArgument",
    "InvalidRecord",
    "InvalidRequest",
    "KafkaOperationFailed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProtocolError",
    "RateLimited",
    "ReplicaRewind",
    "RequestError",
    "RequestRefused",
    "RequestTimeout",
    "ServiceUnavailable",
    "ShipFailed",
    "ThemisError",
    "TopicError",
    "UnknownDictionary",
    "UnsupportedMediaType",
    "WalGap",
    "WorkerUnavailable",
    "call_with_retries",
]

_T = TypeVar("_T")


class ThemisError(Exception):
    """Root of all errors raised by Themis Pipeline."""

    retriable: bool = False


class InvalidArgument(ThemisError, ValueError):
    """A value passed to a function is outside what it accepts (the message says what is)."""


class ConfigError(ThemisError):
    """A configuration key holds a value outside its allowed range or type."""


class EnvironmentProblem(ThemisError):
    """A program the pipeline needs (Java, Maven) is missing or unusable."""


class BrokerError(ThemisError):
    """The local Kafka broker could not be managed."""


class BrokerStartError(BrokerError):
    """The local broker JVM exited or did not answer before its deadline."""


class BrokerUnavailable(BrokerError):
    """No Kafka broker is reachable at the configured bootstrap address."""

    retriable = True


class KafkaOperationFailed(ThemisError):
    """A consumer or admin call failed; ``retriable`` is librdkafka's verdict on the error."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class DeliveryFailed(ThemisError):
    """The broker did not acknowledge a record."""

    retriable = True


class TopicError(ThemisError):
    """A topic spec is invalid or the cluster disagrees with it."""


class InvalidRecord(ThemisError):
    """A record could not be decoded; it belongs on the dead-letter topic."""


class CorruptBlock(ThemisError):
    """A Gorilla block failed its checksum or could not be decoded."""


class BufferOverflow(ThemisError):
    """A hard buffer limit is reached; the caller should back off and retry.

    ``buffer_size`` is the number of entries buffered when the limit hit.
    """

    retriable = True

    def __init__(self, message: str, *, buffer_size: int) -> None:
        super().__init__(message)
        self.buffer_size = buffer_size


class CorruptBatch(ThemisError):
    """A WAL batch is malformed: bad magic, checksum, length or compressed data.

    Not retriable as is: the same bytes stay corrupt; the sender must re-encode.
    """


class UnknownDictionary(CorruptBatch):
    """A batch is compressed with a dictionary the replica has not received.

    ``dictionary_id`` names it; send a batch that carries the dictionary.
    """

    def __init__(self, message: str, *, dictionary_id: int) -> None:
        super().__init__(message)
        self.dictionary_id = dictionary_id


class WalGap(ThemisError):
    """A batch starts after the next LSN this replica needs; nothing was applied.

    ``expected_lsn`` is the LSN to send next. Retriable: send from there.
    """

    retriable = True

    def __init__(self, message: str, *, expected_lsn: int, first_lsn: int) -> None:
        super().__init__(message)
        self.expected_lsn = expected_lsn
        self.first_lsn = first_lsn


class ForeignPrimary(ThemisError):
    """A batch was written by another primary than the one this replica follows.

    Nothing was applied; a replica follows one primary (its LSNs mean nothing to others).
    """


class ShipFailed(ThemisError):
    """A replica did not confirm a batch; the shipper retries with backoff.

    ``bytes_sent`` counts the batch bytes that reached the replica (0 if none did).
    """

    retriable = True

    def __init__(self, message: str, *, bytes_sent: int = 0) -> None:
        super().__init__(message)
        self.bytes_sent = bytes_sent


class ReplicaRewind(ThemisError):
    """The replica needs entries from ``expected_lsn`` on (HTTP 409 or a reported gap)."""

    retriable = True

    def __init__(self, message: str, *, expected_lsn: int, need_dictionary: bool = False) -> None:
        super().__init__(message)
        self.expected_lsn = expected_lsn
        self.need_dictionary = need_dictionary


class WorkerUnavailable(ThemisError):
    """No worker answers its web pages at the configured URLs; start one and retry."""

    retriable = True


class ChildExited(ThemisError):
    """A child process the caller waits for has exited; the message holds its log tail."""


class RequestError(ThemisError):
    """A front-door request cannot be served as sent.

    ``extra`` holds fields added to the JSON error body (``buffer_size``, ``pk``, ...);
    ``headers`` holds response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        message: str,
        *,
        extra: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.extra: dict[str, object] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})


class InvalidRequest(RequestError):
    """A body field, query parameter or header is invalid; the message names it."""


class AuthenticationFailed(RequestError):
    """No API key was presented, or the key is unknown."""


class PermissionDenied(RequestError):
    """The key is known but its role does not allow the endpoint."""


class NotFound(RequestError):
    """The pk, replica or route the request names does not exist."""


class Conflict(RequestError):
    """The request clashes with the current state (e.g. a replica already configured)."""


class RequestTimeout(RequestError):
    """The client did not send the whole body within ``facade.body_timeout_s``."""


class PayloadTooLarge(RequestError):
    """The request body is larger than the configured limit (the message names it)."""


class UnsupportedMediaType(RequestError):
    """The body's ``Content-Type`` is not one the endpoint reads (the message names those)."""


class HeaderTooLarge(RequestError):
    """The request line or a header field is longer than the server reads; nothing of it
    is repeated in the answer or the log (it may hold a key)."""


class RateLimited(RequestError):
    """The key used up its quota; retry after ``retry_after_s`` seconds."""

    retriable = True

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(
            message,
            extra={"retry_after_s": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s


class ServiceUnavailable(RequestError):
    """A feature is switched off, or the broker or a worker did not answer; retry later."""

    retriable = True


class BenchmarkFailed(ThemisError):
    """A benchmark could not finish: a deadline passed or a step went wrong."""


class ProtocolError(ThemisError):
    """A binary-protocol frame cannot be decoded or is refused from its header alone.

    ``code`` is the protocol's error code (``pipeline.binary.ErrorCode``) the server
    answers with in an ERROR frame; the message names the field that is wrong.
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class RequestRefused(ProtocolError):
    """A binary-protocol server answered a request with ERROR (raised by
    ``pipeline.binary.client``); nothing of the request was applied.

    The fields are the ErrorReply's: ``code``, ``retriable`` (its retriable bit: the same
    request may succeed later, on a new connection after SHUTTING_DOWN),
    ``retry_after_ms`` (0: no advice) and ``items_accepted`` (0 in protocol version 1).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int,
        retriable: bool,
        retry_after_ms: int = 0,
        items_accepted: int = 0,
    ) -> None:
        super().__init__(message, code=code)
        self.retriable = retriable
        self.retry_after_ms = retry_after_ms
        self.items_accepted = items_accepted


def call_with_retries(
    call: Callable[[], _T],
    *,
    timeout_s: float,
    first_delay_s: float = 0.2,
    max_delay_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """``call()``, retried while it raises a :class:`ThemisError` whose ``retriable`` is set.

    Delays double from ``first_delay_s`` up to ``max_delay_s`` seconds, each with
    +-25 % jitter; after ``timeout_s`` seconds the last error is raised. Errors that
    are not retriable are raised at once.
    """
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except ThemisError as exc:
            if not exc.retriable or time.monotonic() + delay > deadline:
                raise
        sleep(delay * random.uniform(0.75, 1.25))
        delay = min(delay * 2, max_delay_s)
