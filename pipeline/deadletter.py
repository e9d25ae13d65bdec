"""Dead letters: bad records become data on the dead-letter topic, never a crash.

A dead letter is the original key and value, unchanged, with these headers:

=========================  ==================================================
header                     value
=========================  ==================================================
``themis.reason``          what was wrong, UTF-8
``themis.source.topic``    topic of the original record
``themis.source.partition`` its partition, decimal
``themis.source.offset``   its offset, decimal
``themis.error.type``      exception class name
=========================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

REASON = "themis.reason"
SOURCE_TOPIC = "themis.source.topic"
SOURCE_PARTITION = "themis.source.partition"
SOURCE_OFFSET = "themis.source.offset"
ERROR_TYPE = "themis.error.type"


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, and why."""

    key: bytes | None
    value: bytes
    reason: str
    error_type: str
    source_topic: str
    source_partition: int
    source_offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (REASON, self.reason.encode()),
            (SOURCE_TOPIC, self.source_topic.encode()),
            (SOURCE_PARTITION, str(self.source_partition).encode()),
            (SOURCE_OFFSET, str(self.source_offset).encode()),
            (ERROR_TYPE, self.error_type.encode()),
        ]
