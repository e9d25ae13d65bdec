"""The one exception tree of Themis Pipeline.

Every error a user can see names what was wrong and what to do about it.
``retriable`` tells callers whether the same call may succeed later; retry
logic reads the flag instead of matching strings::

    ThemisError
     +-- ConfigError                  a setting has an invalid value
     +-- EnvironmentProblem           a tool (java, mvn) is missing
     +-- BrokerError                  local broker lifecycle
     |    +-- BrokerStartError        the JVM exited or never answered
     |    +-- BrokerUnavailable       no broker could be found or started (retriable)
     +-- TopicError                   declarative topic specs and drift
     +-- InvalidRecord                a record on a topic cannot be decoded
     +-- CorruptBlock                 a Gorilla block failed its checksum or decode
     +-- BufferOverflow               a hard buffer limit is reached (retriable)
     +-- BenchmarkFailed              a benchmark missed a deadline or a step failed
"""

from __future__ import annotations


class ThemisError(Exception):
    """Root of all errors raised by Themis Pipeline."""

    retriable: bool = False


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


class BenchmarkFailed(ThemisError):
    """A benchmark could not finish: a deadline passed or a step went wrong."""
