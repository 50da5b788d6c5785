"""The ledger topic's I/O: create it (compacted, one partition per shard) or check the one there,
and fold every committed record of a shard's partition into a `LedgerState`. What the records
mean is `pipeline.ledger`'s; what a shard is, `pipeline.shards`'."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from pipeline.config import DEFAULT_SHARDS, KafkaConfig
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.client import admin_client, committed_consumer, kafka_identity, start_client
from pipeline.ledger import LedgerError, LedgerState, ShardCountMismatch

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


async def ensure_ledger_topic(kafka: KafkaConfig, shards: int | None = None) -> int:
    """Create the compacted ledger topic if it is missing, with `shards` partitions (None: the
    default); refuse one that is not compacted, or whose partitions are not `shards` when that
    is set. Returns the topic's partition count: the group's shards."""
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
                [NewTopic(topic, shards or DEFAULT_SHARDS, rf, topic_configs=dict(LEDGER_TOPIC_CONFIG))])
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
            return shards or DEFAULT_SHARDS
        except TopicAlreadyExistsError:
            pass
        meta = await admin.describe_topics([topic])
        have = len(meta[0].get("partitions") or []) if meta else 0
        if have < 1:
            raise LedgerError(f"ledger topic {topic!r}: no partitions in its metadata")
        if shards is not None and have != shards:
            if have == 1:
                raise ShardCountMismatch(
                    f"ledger topic {topic!r} has 1 partition (the ledger of a group of one shard); "
                    f"[daemon] shards = {shards} needs {shards}: stop every daemon of the group and "
                    f"run `hdfs2kafka ledger reshard --shards {shards}` with this config once (it "
                    "moves each file's entry to its shard), or remove `shards` to go on with 1")
            raise ShardCountMismatch(
                f"ledger topic {topic!r} has {have} partitions, the group's shards; [daemon] shards "
                f"= {shards} differs: the shard count is fixed when the group is created (set "
                f"shards = {have}, or remove it)")
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        for cresp in configs:
            for res in cresp.resources:
                for entry in res[4]:
                    if entry[0] == "cleanup.policy" and "compact" not in str(entry[1]):
                        raise LedgerError(f"ledger topic {topic!r} has cleanup.policy={entry[1]}; it must "
                                          "be compact (delete it, or set cleanup.policy=compact)")
        return have


FETCH_BYTES = 8 * 1024 * 1024
"""Bytes one fetch of the ledger asks for: a few large fetches, not thousands of small ones."""
FOLD_RECORDS = 2048
"""Records handed to the loader at once (its values are parsed in one call; more is slower)."""


async def read_ledger(kafka: KafkaConfig, state: LedgerState, timeout_s: float = 120.0,
                      partition: int = 0) -> LedgerState:
    """Fold every committed record of one partition (shard) of the ledger into `state`."""
    await read_shards(kafka, {partition: state}, timeout_s)
    return state


async def read_every_shard(kafka: KafkaConfig, group: str, *, compact_done: bool = True,
                           timeout_s: float = 120.0) -> dict[int, LedgerState]:
    """Every shard's committed ledger (for tools and tests: the daemon reads only its own)."""
    from pipeline.kafka.client import committed_consumer

    consumer: Any = committed_consumer(kafka.bootstrap, settings=kafka.client)
    await start_client(consumer, "reading the ledger topic's metadata")
    try:
        # The consumer's partitions_for_topic answers (not awaitable) from metadata it holds only
        # for topics it was given: fetch the cluster's.
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(kafka.ledger_topic) or {0}
    finally:
        await consumer.stop()
    states = {p: LedgerState(group, compact_done=compact_done) for p in sorted(parts)}
    return await read_shards(kafka, states, timeout_s)


async def read_shards(kafka: KafkaConfig, states: dict[int, LedgerState],
                      timeout_s: float = 120.0) -> dict[int, LedgerState]:
    """Fold every committed record of each shard's partition into its state, one after the
    other, with one consumer.

    Call only after the shard's transactional producer has started: that fences a dead writer
    and aborts its open transaction, so the last stable offset reaches the end of the partition.

    The records are fetched read_committed with the consumer's own connection, and their
    batches are handed whole to the state's `Loader` (no consumer record object per record);
    the next fetch is in flight while a response is folded. A client without that connection
    falls back to the consumer's own fetching.
    """
    from aiokafka import TopicPartition

    topic = kafka.ledger_topic
    consumer: Any = committed_consumer(kafka.bootstrap, settings=kafka.client,
                                       max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=FETCH_BYTES)
    await start_client(consumer, "starting the ledger reader")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        for partition, state in sorted(states.items()):
            tp = TopicPartition(topic, partition)
            loader = state.loader()
            client = getattr(consumer, "_client", None)
            if client is not None and hasattr(client, "send") and hasattr(client, "cluster"):
                start = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
                await _fetch_and_fold(client, tp, start, end, loader, deadline)
            else:  # pragma: no cover - another aiokafka
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                while await consumer.position(tp) < end:
                    if loop.time() > deadline:
                        raise LedgerError(f"reading ledger topic {topic!r} timed out at offset "
                                          f"{await consumer.position(tp)} of {end}")
                    batch = await consumer.getmany(tp, timeout_ms=500, max_records=100_000)
                    loader.add(batch.get(tp, []))
            loader.finish()
    finally:
        await consumer.stop()
    _release_freed_memory()
    return states


def _release_freed_memory() -> None:
    """Hand back to the system the heap pages that the read's buffers left free (glibc keeps
    them otherwise: the resident size would stay at the read's peak). Best effort."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


async def _fetch_and_fold(client: Any, tp: Any, start: int, end: int, loader: Any, deadline: float) -> None:
    """Fetch [start, end) of the partition read_committed and fold it, one fetch ahead."""
    loop = asyncio.get_running_loop()
    pos = start
    pending: asyncio.Task[Any] | None = None
    # The fold makes millions of short-lived objects: each time they trigger a full collection,
    # the cyclic collector would walk the daemon's whole heap (its modules' objects) again.
    # Frozen, those are left out of it meanwhile.
    gc.freeze()
    try:
        while pos < end:
            if pending is None:
                pending = asyncio.ensure_future(_fetch(client, tp, pos, deadline))
            fetched_at = pos
            aborted, records = await pending
            pending = None
            batches = []
            while records.has_next():
                b = records.next_batch()
                if b is None:
                    break
                batches.append(b)
            if batches:
                pos = max(pos, batches[-1].next_offset)
            elif loop.time() > deadline:
                raise LedgerError(f"reading ledger topic {tp.topic!r} timed out at offset {pos} of {end}")
            else:
                await asyncio.sleep(0.1)  # nothing committed past `pos` yet
            if pos < end:
                pending = asyncio.ensure_future(_fetch(client, tp, pos, deadline))
            _fold_batches(batches, aborted, fetched_at, loader)
    finally:
        gc.unfreeze()
        if pending is not None:
            pending.cancel()
            await asyncio.wait([pending])  # its end is no error here; a cancel of ours goes on
            if not pending.cancelled():
                pending.exception()


async def _fetch(client: Any, tp: Any, offset: int, deadline: float) -> tuple[list[tuple[int, int]], Any]:
    """One read_committed fetch at `offset`: (aborted transactions, MemoryRecords). Retries
    what a leader change or a busy broker answers, until `deadline`."""
    from aiokafka import errors as Errors
    from aiokafka.protocol.fetch import FetchRequest
    from aiokafka.record.memory_records import MemoryRecords

    loop = asyncio.get_running_loop()
    while True:
        error: Exception
        node = client.cluster.leader_for_partition(tp)
        if node is None or node == -1:
            error = Errors.LeaderNotAvailableError(f"no leader for {tp}")
        else:
            request = FetchRequest(500, 1, FETCH_BYTES, 1, [(tp.topic, [(tp.partition, offset, FETCH_BYTES)])])
            try:
                response = await client.send(node, request)
            except Errors.KafkaError as exc:
                error = exc
            else:
                for _topic, partitions in response.topics:
                    for partition, code, _highwater, *data in partitions:
                        if partition != tp.partition:
                            continue
                        if code == 0:
                            # v4: lso, aborted, records; v5-10: lso, log start, aborted, records;
                            # v11+: lso, log start, aborted, preferred replica, records.
                            aborted = data[2] if response.API_VERSION >= 11 else data[-2]
                            return list(aborted or []), MemoryRecords(data[-1])
                        error = Errors.for_code(code)(f"fetching {tp} at {offset}")
                        break
                    else:
                        continue
                    break
                else:
                    error = Errors.KafkaError(f"no data for {tp} in the fetch response")
        retriable = getattr(error, "retriable", False) or getattr(error, "invalid_metadata", False)
        if not retriable or loop.time() > deadline:
            raise LedgerError(f"reading ledger topic {tp.topic!r} at offset {offset}: "
                              f"{type(error).__name__}: {error}")
        if getattr(error, "invalid_metadata", False) or node is None or node == -1:
            client.force_metadata_update()
        await asyncio.sleep(0.2)


def _fold_batches(batches: list[Any], aborted_transactions: list[tuple[int, int]], fetched_at: int,
                  loader: Any) -> None:
    """Hand the records of the committed data batches to the loader, all at once; skip control
    batches and the batches of aborted transactions (as aiokafka's fetcher does for
    read_committed)."""
    from aiokafka.record.control_record import ABORT_MARKER, ControlRecord

    aborted = sorted(aborted_transactions, key=lambda x: x[1])  # (producer id, first offset)
    aborted_producers: set[int] = set()
    records: list[Any] = []
    for batch in batches:
        producer_id = batch.producer_id
        if producer_id is not None:
            while aborted and aborted[0][1] <= batch.base_offset:
                aborted_producers.add(aborted.pop(0)[0])
            if batch.is_control_batch:
                control = next(batch, None)
                if control is not None and ControlRecord.parse(control.key) == ABORT_MARKER:
                    aborted_producers.discard(producer_id)
                continue
            if batch.is_transactional and producer_id in aborted_producers:
                continue
        elif batch.is_control_batch:  # pragma: no cover - control batches carry a producer id
            continue
        if batch.base_offset < fetched_at:  # a batch the fetch started inside of
            records.extend(r for r in batch if r.offset >= fetched_at)
        else:
            records.extend(batch)
        if len(records) >= FOLD_RECORDS:
            loader.add(records)
            records = []
    if records:
        loader.add(records)
