"""The replica cluster's topics, shared by the shipper's Kafka target and the Kafka applier.

=================================  ===========================================================
topic (``<namespace>.`` + name)    records
=================================  ===========================================================
``wal.replica``                    one WAL batch (TWB1, TWB2) per record, key = primary id,
                                   headers ``themis.wal.*``; written by the shipper, read by
                                   the applier
``wal.replica.status``             JSON positions reported by the applier, key = replica name;
                                   read by the shipper to re-send a missing range
``deadletter``                     batches the applier could not decode, with the reason
=================================  ===========================================================

Both sides call :func:`ensure_replica_topics` before they use the cluster; it creates
what is missing and leaves the rest alone.

:func:`grow_wal_partitions` (``themis wal partitions --count N``) adds partitions to the
primary's ``<namespace>.wal`` (docs/operations.md, "Partitioning the WAL"). That is safe
for the WAL although ``themis topics apply`` never repartitions: WAL records are written
to explicit partitions, never placed by key, so no record moves.
"""

from __future__ import annotations

from typing import Final

from confluent_kafka.admin import NewPartitions

from pipeline.config import Settings
from pipeline.errors import InvalidArgument, TopicError
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.topics import TopicSpec, apply_topics, load_specs, wait_until_listed
from pipeline.wal.writer import topic_partition_count

__all__ = [
    "REPLICA_STATUS_TOPIC",
    "REPLICA_TOPIC",
    "ensure_replica_topics",
    "grow_wal_partitions",
    "replica_topic_specs",
]

REPLICA_TOPIC: Final = "wal.replica"
"""Spec name of the replica cluster's batch topic: ``<namespace>.wal.replica``."""
REPLICA_STATUS_TOPIC: Final = "wal.replica.status"
"""Spec name of the topic where Kafka appliers report their position."""


def replica_topic_specs() -> list[TopicSpec]:
    """The batch topic, its status topic and the dead-letter topic of a replica cluster."""
    return [
        TopicSpec(
            name=REPLICA_TOPIC,
            purpose="WAL batches shipped from a primary, in LSN order (pipeline.wal.batch).",
            partitions=1,
            replication_factor=1,
            key_format="primary id, UTF-8",
            value_format="WAL batch TWB1 or TWB2; headers themis.wal.*",
            configs={
                "cleanup.policy": "delete",
                "retention.ms": "604800000",
                "compression.type": "producer",
                "max.message.bytes": "67108864",
            },
        ),
        TopicSpec(
            name=REPLICA_STATUS_TOPIC,
            purpose="Positions reported by the replica's WAL applier, read by the shipper.",
            partitions=1,
            replication_factor=1,
            key_format="replica name, UTF-8",
            value_format='JSON {"replica", "last_applied_lsn", "expected_lsn", "gap", "at_ms"}',
            configs={"cleanup.policy": "delete", "retention.ms": "86400000"},
        ),
        *[spec for spec in load_specs() if spec.name == "deadletter"],
    ]


def ensure_replica_topics(bootstrap: str, settings: Settings) -> None:
    """Create the replica cluster's WAL topics on ``bootstrap`` if missing (idempotent)."""
    apply_topics(bootstrap, settings, replica_topic_specs())


def grow_wal_partitions(bootstrap: str, settings: Settings, count: int) -> tuple[int, int]:
    """Give the primary's WAL topic ``count`` partitions: ``(before, after)``.

    Kafka only adds partitions; a ``count`` below the current one raises
    :class:`~pipeline.errors.InvalidArgument` and the same count changes nothing.
    Restart the workers afterwards: a :class:`~pipeline.wal.writer.WalWriter` reads the
    count when it starts. Running shippers pick the new partitions up by themselves.
    """
    topic = settings.topic("wal")
    before = topic_partition_count(bootstrap, topic)
    if count < before:
        raise InvalidArgument(
            f"{topic} has {before} partitions; Kafka cannot remove partitions (asked for {count})"
        )
    if count == before:
        return before, before
    with AdminClient({"bootstrap.servers": bootstrap}) as admin:
        futures = admin.create_partitions([NewPartitions(topic, count)], operation_timeout=30)
        try:
            futures[topic].result(timeout=60)
        except Exception as exc:
            raise TopicError(f"adding partitions to {topic} failed: {exc}") from exc
        wait_until_listed(admin, {topic: count}, 30.0)
    return before, count
