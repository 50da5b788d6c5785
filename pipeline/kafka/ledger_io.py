"""The ledger topic's I/O: create it (compacted, one partition) or check the one there, and fold
every committed record of it into a `LedgerState`; claim it for a life (the owner record). What
the records mean is `pipeline.ledger`'s."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from pipeline.config import KafkaConfig
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.client import admin_client, committed_consumer, kafka_identity, start_client
from pipeline.kafka.errors import CommitterError, Fenced
from pipeline.ledger import Keys, LedgerError, LedgerState

LEDGER_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Compaction must be able to run while the daemon keeps writing: roll segments often.
    "segment.ms": str(60 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    # A tombstone must outlive any reader that could be mid-way through the topic.
    "delete.retention.ms": str(24 * 60 * 60 * 1000),
    "min.compaction.lag.ms": "0",
}
TOPIC_ALREADY_EXISTS = 36  # Kafka's error codes
TOPIC_AUTHORIZATION_FAILED = 29


async def ensure_ledger_topic(kafka: KafkaConfig) -> None:
    """Create the compacted ledger topic if it is missing; refuse one that is not compacted or
    has more than one partition."""
    from aiokafka.admin import NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import TopicAlreadyExistsError

    topic = kafka.ledger_topic
    async with admin_client(kafka.bootstrap, kafka.client) as admin:
        # Create first: asking for the metadata of a missing topic can make a broker with
        # auto.create.topics.enable create it, with the wrong cleanup policy.
        brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
        rf = kafka.ledger_replication or min(3, brokers)
        try:
            resp = await admin.create_topics(
                [NewTopic(topic, 1, rf, topic_configs=dict(LEDGER_TOPIC_CONFIG))])
            for _, code, *_rest in getattr(resp, "topic_errors", []):
                if code == TOPIC_ALREADY_EXISTS:
                    raise TopicAlreadyExistsError
                if code == TOPIC_AUTHORIZATION_FAILED:
                    from aiokafka.errors import TopicAuthorizationFailedError

                    raise LedgerError("cannot create ledger topic: " + kafka_errors.acl_message(
                        TopicAuthorizationFailedError(topic), kafka_identity(admin),
                        bootstrap=kafka.bootstrap, operation="Create", resources=(topic,)))
                if code != 0:
                    raise LedgerError(f"cannot create ledger topic {topic!r}: error code {code}")
            return
        except TopicAlreadyExistsError:
            pass
        meta = await admin.describe_topics([topic])
        if meta and len(meta[0].get("partitions") or []) != 1:
            raise LedgerError(f"ledger topic {topic!r} must have exactly 1 partition "
                              f"(has {len(meta[0]['partitions'])})")
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        for cresp in configs:
            for res in cresp.resources:
                for entry in res[4]:
                    if entry[0] == "cleanup.policy" and "compact" not in str(entry[1]):
                        raise LedgerError(f"ledger topic {topic!r} has cleanup.policy={entry[1]}; it must "
                                          "be compact (delete it, or set cleanup.policy=compact)")


async def read_ledger(kafka: KafkaConfig, state: LedgerState, timeout_s: float = 120.0) -> LedgerState:
    """Fold every committed record of the ledger into `state` and return it.

    Call only after the transactional producer has started: that fences a dead writer and aborts
    its open transaction, so the last stable offset reaches the end of the topic.
    """
    from aiokafka import TopicPartition

    topic = kafka.ledger_topic
    consumer: Any = committed_consumer(kafka.bootstrap, settings=kafka.client,
                                       max_partition_fetch_bytes=8 * 1024 * 1024)
    await start_client(consumer, "starting the ledger reader")
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise LedgerError(f"reading ledger topic {topic!r} timed out at offset "
                                  f"{await consumer.position(tp)} of {end}")
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
            for msg in batch.get(tp, []):
                state.apply(msg.key, msg.value)
    finally:
        await consumer.stop()
    return state


async def claim_ledger(producer: Any, kafka: KafkaConfig, instance_id: str, owner: dict[str, Any], *,
                       timeout_s: float) -> None:
    """Commit `owner` as the ledger's owner record, in a transaction of its own, with a
    producer that has just fenced the previous one: after a fence, reading the record back
    tells another instance from a transaction the coordinator timed out."""
    key = Keys(instance_id).owner()
    try:
        await asyncio.wait_for(producer.begin_transaction(), timeout_s)
        fut = await asyncio.wait_for(
            producer.send(kafka.ledger_topic, orjson.dumps(owner), key=key, partition=0), timeout_s)
        await kafka_errors.bounded(fut, timeout_s)
        await kafka_errors.bounded(producer.commit_transaction(), timeout_s)
    except Exception as exc:
        failure = kafka_errors.background_failure(producer) or exc
        if kafka_errors.is_fenced(failure):
            raise Fenced(f"fenced while claiming the ledger: {failure!r}") from exc
        raise CommitterError(f"could not claim the ledger: {type(exc).__name__}: {exc}") from exc
