"""What every ingest path shares: the buffer core, acks that follow durability, dead letters.

``buffer_core`` (:class:`BufferCore`: lock, clocks, hard cap, flush counts of an auto
buffer), ``acks`` (:class:`AckTracker`: a record is acked once all its units are
durable), ``deadletter`` (:class:`DeadLetter`, :class:`DeadLetterWriter`: bad records
become data on the dead-letter topic).
"""

from pipeline.ingest.acks import AckTracker
from pipeline.ingest.buffer_core import AUTO_FLUSH_REASONS, BufferCore, FlushReason, format_utc
from pipeline.ingest.deadletter import DeadLetter, DeadLetterWriter

__all__ = [
    "AUTO_FLUSH_REASONS",
    "AckTracker",
    "BufferCore",
    "DeadLetter",
    "DeadLetterWriter",
    "FlushReason",
    "format_utc",
]
