"""What every ingest path shares: the batch consumer loop, offsets that follow durability,
the auto buffers' core, dead letters.

``batch_consumer`` (:class:`BatchConsumer`: a stage's input topic in batches, rebalance
and commits), ``offsets`` (:class:`OffsetTracker`: an offset commits once all it
carried is durable), ``buffer_core`` (:class:`BufferCore`: lock, clocks, hard cap,
flush counts of an auto buffer), ``deadletter`` (:class:`DeadLetter`,
:class:`DeadLetterWriter`: bad records become data on the dead-letter topic).
"""

from pipeline.ingest.batch_consumer import BatchConsumer, BatchStage
from pipeline.ingest.buffer_core import AUTO_FLUSH_REASONS, BufferCore, FlushReason, format_utc
from pipeline.ingest.deadletter import DeadLetter, DeadLetterWriter
from pipeline.ingest.offsets import BatchToken, OffsetTracker

__all__ = [
    "AUTO_FLUSH_REASONS",
    "BatchConsumer",
    "BatchStage",
    "BatchToken",
    "BufferCore",
    "DeadLetter",
    "DeadLetterWriter",
    "FlushReason",
    "OffsetTracker",
    "format_utc",
]
