"""The dev stack is real: HDFS stores and stats a Parquet file, Kafka round-trips a record."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def test_parquet_in_hdfs_and_a_record_through_kafka(stack, webhdfs, unique):
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = f"/tests/smoke/{unique}/part-0.parquet"
    webhdfs.write(path, buf.getvalue())

    status = webhdfs.status(path)
    assert status["type"] == "FILE"
    assert status["length"] == len(buf.getvalue())
    assert status["fileId"] > 0
    with webhdfs.read(path) as reader:
        assert pq.read_table(io.BytesIO(reader.read())).equals(table)

    topic = f"smoke-{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        msg = await consumer.getone()
    finally:
        await consumer.stop()
    assert (msg.key, msg.value) == (b"k", b"hello")


async def test_kafka_transactions_commit_and_abort(stack, unique):
    """The broker is configured for transactions on one node: committed rows show, aborted don't."""
    topic = f"txn-{unique}"
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap,
                                transactional_id=f"smoke-{unique}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"end")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        while b"end" not in values:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    assert values == [b"committed", b"end"]
