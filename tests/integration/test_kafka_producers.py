"""The project's producers against a real broker: deliveries that fail name why, a full
local queue waits instead of failing, and close is final."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from confluent_kafka.admin import NewTopic

from pipeline.errors import DeliveryFailed, TopicError
from pipeline.kafka.broker import BrokerHandle
from pipeline.kafka.clients import AdminClient
from pipeline.kafka.producer import AsyncProducer, TopicProducer
from tests.fixtures.topics import records_on

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, **configs: str) -> str:
    """A new one-partition topic with ``configs``, listed before it is returned."""
    name = f"producers-{uuid.uuid4().hex[:10]}"
    with AdminClient({"bootstrap.servers": bootstrap}) as admin:
        admin.create_topics([NewTopic(name, 1, 1, config=configs)])[name].result(30)
        for _ in range(100):
            if name in admin.list_topics(timeout=10).topics:
                break
    return name


def test_async_deliveries_resolve_in_order_and_a_record_the_topic_refuses_fails_by_name(
    kafka_broker: BrokerHandle,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = _topic(bootstrap, **{"max.message.bytes": "1024"})

    async def run() -> tuple[list[int], str]:
        # A one-record local queue: every further produce waits for a delivery first.
        producer = AsyncProducer(bootstrap, **{"queue.buffering.max.messages": 1})
        try:
            futures = [producer.produce(topic, b"v%d" % i, key=b"k") for i in range(20)]
            offsets = [(await f).offset() or 0 for f in futures]
            with pytest.raises(DeliveryFailed) as refused:
                await producer.produce(topic, os.urandom(4096))  # compression cannot shrink it
            return offsets, str(refused.value)
        finally:
            producer.close()
            producer.close()  # a second close is a no-op

    offsets, reason = asyncio.run(run())
    assert offsets == list(range(20))
    assert reason.startswith(f"delivery to {topic} failed: ")
    assert "too large" in reason.lower()
    assert [value for _, value in records_on(bootstrap, topic)] == [b"v%d" % i for i in range(20)]


def test_a_record_over_the_clients_own_limit_fails_at_produce_naming_the_topic(
    kafka_broker: BrokerHandle,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = _topic(bootstrap)

    async def run() -> str:
        producer = AsyncProducer(bootstrap, **{"message.max.bytes": 2000})
        try:
            with pytest.raises(DeliveryFailed) as refused:
                producer.produce(topic, b"x" * 5000)
            return str(refused.value)
        finally:
            producer.close()

    assert asyncio.run(run()).startswith(f"producing to {topic} failed: ")


def test_topic_producer_waits_for_room_reports_lost_records_and_refuses_a_missing_topic(
    kafka_broker: BrokerHandle,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    with pytest.raises(TopicError, match="does not exist; run `themis topics apply`"):
        TopicProducer(bootstrap, f"missing-{uuid.uuid4().hex[:8]}")
    topic = _topic(bootstrap, **{"max.message.bytes": "1024"})
    with TopicProducer(bootstrap, topic, **{"queue.buffering.max.messages": 1}) as producer:
        assert producer.partitions == 1
        for i in range(30):
            producer.send(b"r%d" % i, partition=0)
        producer.flush()
    assert [value for _, value in records_on(bootstrap, topic)] == [b"r%d" % i for i in range(30)]

    lost = TopicProducer(bootstrap, topic)
    lost.send(os.urandom(4096))
    with pytest.raises(DeliveryFailed, match=r"1 records failed: .*[Tt]oo large"):
        lost.close()
    lost.close()  # closed already: nothing more to report

    # Leaving a with block by an exception closes the producer without hiding the exception.
    def fail_inside() -> None:
        with TopicProducer(bootstrap, topic) as failing:
            failing.send(os.urandom(4096))
            raise RuntimeError("the caller's own error")

    with pytest.raises(RuntimeError, match="the caller's own error"):
        fail_inside()
