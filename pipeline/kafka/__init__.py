"""Transport: the Kafka broker (local JVM, container or given), topics as code, clients.

``broker`` (the one order of preference: ``KAFKA_BOOTSTRAP_SERVERS``, a container
engine, the local JVM), ``local_broker`` (Apache Kafka's jars run as a KRaft JVM on
loopback, restarted with its data kept), ``kafka_runtime`` (the Java runtime and the jars,
resolved once), ``docker_broker`` (testcontainers), ``topics`` (``topics/*.yaml`` applied
idempotently), ``producer`` (durable producers whose deliveries can be awaited),
``consumer`` (consumers with the project's defaults, offset calls that retry),
``clients`` (confluent-kafka's clients, registered from creation until closed),
``cli`` (``themis kafka``, ``themis topics``).
"""

from pipeline.kafka.broker import BrokerHandle, provide_broker, require_broker, running_broker
from pipeline.kafka.consumer import (
    commit_offset,
    committed_offset,
    committed_offsets,
    make_consumer,
    open_consumer,
)
from pipeline.kafka.local_broker import LocalKafka, free_port
from pipeline.kafka.producer import AsyncProducer, RecordProducer, TopicProducer, key_partition
from pipeline.kafka.topics import TopicSpec, apply_topics, describe_topics, load_specs

__all__ = [
    "AsyncProducer",
    "BrokerHandle",
    "LocalKafka",
    "RecordProducer",
    "TopicProducer",
    "TopicSpec",
    "apply_topics",
    "commit_offset",
    "committed_offset",
    "committed_offsets",
    "describe_topics",
    "free_port",
    "key_partition",
    "load_specs",
    "make_consumer",
    "open_consumer",
    "provide_broker",
    "require_broker",
    "running_broker",
]
