"""A zstd dictionary for the ``meta`` section of TWB2 batches, trained on the primary's WAL.

``themis wal train-dictionary --out FILE`` reads up to ``--entries`` entries of
partition 0 of ``<namespace>.wal`` from its start, takes what each entry puts into the
``meta`` column (:func:`pipeline.wal.columns.meta_of`: pks and metadata JSON of vector
batches, Gorilla block heads, any other payload whole) and trains a dictionary on them.
The file holds zstd's dictionary bytes; zstd's id in them is the dictionary's version.

Using it: ``themis wal ship --dictionary FILE`` or the setting
``compressed_wal_shipping.dictionary_file`` (``THEMIS_WAL_DICTIONARY_FILE``, read by
every :class:`~pipeline.replication.shipper.WalShipper`, the facade's included). A
replica learns a dictionary from the first batch each link sends it (the batch carries
it, then every 256 batches, after a rewind, and whenever the replica answers that it
lacks it) and keeps every one it received under ``<replica dir>/dictionaries/<id>``, so
a new dictionary can replace the old one while batches naming the old one still decode.
"""

from __future__ import annotations

import time
from typing import Final

from confluent_kafka import TopicPartition

from pipeline.config import Settings
from pipeline.errors import InvalidArgument, InvalidRecord, ThemisError
from pipeline.kafka.consumer import open_consumer
from pipeline.wal.batch import Dictionary, train_dictionary
from pipeline.wal.columns import meta_of
from pipeline.wal.entry import decode_entry_record

__all__ = ["MIN_SAMPLES", "train_wal_dictionary", "wal_meta_samples"]

MIN_SAMPLES: Final = 100
"""zstd needs samples of some number and variety; fewer entries than this are refused."""


def wal_meta_samples(
    bootstrap: str, settings: Settings, limit: int, timeout_s: float = 60.0
) -> list[bytes]:
    """The ``meta`` bytes of the WAL's first ``limit`` entries (fewer if it holds fewer)."""
    topic = settings.topic("wal")
    samples: list[bytes] = []
    group = f"{settings.worker.app_id}-wal-dictionary"
    with open_consumer(bootstrap, group, **{"enable.auto.commit": False}) as consumer:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        end = min(high, low + limit)
        consumer.assign([TopicPartition(topic, 0, low)])
        deadline = time.monotonic() + timeout_s
        offset = low
        while offset < end:
            if time.monotonic() > deadline:
                raise ThemisError(
                    f"reading {topic}: {offset - low} of {end - low} entries within "
                    f"{timeout_s:.0f} s; try again or ask for fewer (--entries)"
                )
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            at = message.offset() or 0
            offset = at + 1
            try:
                entry = decode_entry_record(message.value() or b"", at)
            except InvalidRecord:  # shipped as an empty LSN; nothing to learn from
                continue
            samples.append(meta_of(entry.payload))
    return samples


def train_wal_dictionary(
    bootstrap: str, settings: Settings, *, entries: int, size: int
) -> Dictionary:
    """A dictionary of at most ``size`` bytes trained on the WAL's first ``entries``."""
    samples = wal_meta_samples(bootstrap, settings, entries)
    if len(samples) < MIN_SAMPLES:
        raise InvalidArgument(
            f"the WAL holds {len(samples)} entries; a dictionary needs at least {MIN_SAMPLES}"
        )
    return train_dictionary(samples, size)
