"""Avro values against the dev stack's real Schema Registry (Apicurio, Confluent-compatible API)
and its real Kafka: register, encode, send, consume, look the schema up by the id in each value,
decode, and get the source rows back in order."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import struct
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.encoders import make_value_encoder
from pipeline.encoders.avro import AvroBlockEncoder, arrow_to_avro_schema
from pipeline.encoders.headers import HeaderBuilder
from pipeline.encoders.keys import KeyEncoder
from pipeline.encoders.registry import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryUnavailable,
)
from pipeline.positions import ParquetPosition

UTC = dt.UTC


def _batch(n: int) -> pa.RecordBatch:
    point = pa.struct([pa.field("lat", pa.float64()), pa.field("tags", pa.list_(pa.string()))])
    return pa.RecordBatch.from_pydict({
        "id": pa.array(range(n), pa.int64()),
        "name": pa.array([None if i % 5 == 0 else f"name-{i}" for i in range(n)]),
        "at": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=i)
                        for i in range(n)], pa.timestamp("us", tz="UTC")),
        "amount": pa.array([Decimal(i).scaleb(-2) for i in range(n)], pa.decimal128(12, 2)),
        "where": pa.array([None if i % 7 == 0 else {"lat": i / 3, "tags": [str(i)] * (i % 3)}
                           for i in range(n)], point),
        "attrs": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
    })


def _expected(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "attrs": dict(row["attrs"])}


async def _decode_with_registry(url: str, values: list[bytes]) -> list[dict[str, Any]]:
    """Decode values the way a consumer does: schema id from the framing, schema from the
    registry (a fresh client: nothing cached from the producing side)."""
    rows = []
    async with SchemaRegistryClient(url) as registry:
        for value in values:
            assert value[0] == 0
            (schema_id,) = struct.unpack(">I", value[1:5])
            schema = fastavro.parse_schema(await registry.get_by_id(schema_id))
            rows.append(fastavro.schemaless_reader(io.BytesIO(value[5:]), schema, None))
    return rows


async def test_parquet_rows_through_registry_and_kafka(stack, unique):
    batch = _batch(500)
    topic = f"avro-{unique}"
    schema = arrow_to_avro_schema(batch.schema, "Row", "hdfs2kafka.test")
    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        schema_id = await registry.register(f"{topic}-value", schema)
        assert await registry.register(f"{topic}-value", schema) == schema_id  # cached
    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        assert await registry.register(f"{topic}-value", schema) == schema_id  # registry's answer

    values = make_value_encoder("avro", schema_id=schema_id, avro_schema=schema).encode(batch)
    keys = KeyEncoder(["id"]).encode(batch)
    assert keys is not None
    headers = HeaderBuilder("/data/part-0.parquet").parquet(ParquetPosition(0, 0), batch.num_rows)

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=list(h))
                   for value, key, h in zip(values, keys, headers, strict=True)]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    received = []
    try:
        while len(received) < batch.num_rows:
            chunk = await consumer.getmany(timeout_ms=10_000)
            if not chunk:
                break
            for messages in chunk.values():
                received += messages
    finally:
        await consumer.stop()

    assert [m.key for m in received] == [str(i).encode() for i in range(batch.num_rows)]
    assert dict(received[3].headers) == {"hdfs2kafka.path": b"/data/part-0.parquet",
                                         "hdfs2kafka.position": b"rg:0/3"}
    rows = await _decode_with_registry(stack.schema_registry_url, [m.value for m in received])
    assert rows == [_expected(r) for r in batch.to_pylist()]


async def test_avro_source_records_reframed_under_the_files_own_schema(stack, unique):
    writer_schema = {
        "type": "record", "name": "Event", "namespace": "src",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
            {"name": "note", "type": ["null", "string"], "default": None},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
    records = [{"id": i, "kind": "AB"[i % 2], "note": None if i % 3 else f"n{i}",
                "day": dt.date(2024, 1, 1) + dt.timedelta(days=i)} for i in range(1000)]
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(writer_schema), records, codec="deflate",
                    sync_interval=4000)
    data = buf.getvalue()
    header = io.BytesIO(data)
    fastavro.schemaless_reader(header, fastavro.read.HEADER_SCHEMA, None)  # type: ignore[attr-defined]

    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        schema_id = await registry.register(f"events-{unique}-value", writer_schema)
    values = AvroBlockEncoder(schema_id, writer_schema, "deflate").encode(data[header.tell():])
    assert await _decode_with_registry(stack.schema_registry_url, values) == records


async def test_registry_errors_name_the_subject_and_carry_the_registrys_message(stack, unique):
    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        with pytest.raises(SchemaRegistryError, match=f"subject 'bad-{unique}-value'") as bad:
            await registry.register(f"bad-{unique}-value", '{"type": "recrod"}')
        assert bad.value.status is not None and bad.value.status >= 400
        with pytest.raises(SchemaRegistryError, match="schema id 987654321") as missing:
            await registry.get_by_id(987654321)
        assert missing.value.status == 404


@pytest.mark.parametrize("shared", [True, False], ids=["one-client", "a-client-each"])
async def test_a_new_subject_registered_at_once_by_several_workers_gets_one_id(stack, unique, shared):
    """The first files of a new topic, opened by two or more workers at the same moment (or by
    two daemons): each registration gets the subject's one id, and none is refused (a refusal
    would quarantine a good file). An answer that the registry was unavailable (this one
    answers HTTP 500 to some concurrent creations) is asked again, as a worker does."""
    schema = arrow_to_avro_schema(_batch(1).schema, "race")
    subject = f"race-{unique}-{'one' if shared else 'each'}-value"
    one = SchemaRegistryClient(stack.schema_registry_url)

    async def register(client: SchemaRegistryClient) -> int:
        for _ in range(5):
            try:
                return await client.register(subject, schema)
            except SchemaRegistryUnavailable:
                await asyncio.sleep(0.2)
        return await client.register(subject, schema)

    clients = [one if shared else SchemaRegistryClient(stack.schema_registry_url) for _ in range(6)]
    ids = await asyncio.gather(*(register(c) for c in clients))
    assert len(set(ids)) == 1, ids


async def test_unreachable_registry_is_reported():
    async with SchemaRegistryClient("http://127.0.0.1:9/apis/ccompat/v7", timeout=2) as registry:
        with pytest.raises(SchemaRegistryError, match="not reachable"):
            await registry.register("t-value", {"type": "string"})


@pytest.mark.parametrize("kind", ["parquet", "avro"])
async def test_a_sources_avro_encoder_for_real_files(stack, unique, tmp_path, kind):
    """What the daemon builds per file: the schema registered under <topic>-value (the file's
    own for Avro, derived for Parquet), then every unit's values decode back to its rows."""
    import asyncio
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    from hdfsread.base import LocalFile
    from pipeline.encoders import avro_value_encoder
    from pipeline.readers import open_reader

    table = pa.table({"id": pa.array(range(3000), pa.int64()),
                      "name": pa.array([None if i % 4 == 0 else f"n{i}" for i in range(3000)])})
    path = tmp_path / f"part-0.{kind}"
    if kind == "parquet":
        pq.write_table(table, path, row_group_size=1000)
    else:
        schema = arrow_to_avro_schema(table.schema, "Row")
        with path.open("wb") as f:
            fastavro.writer(f, fastavro.parse_schema(schema), table.to_pylist(), codec="deflate",
                            sync_interval=2000)
    source = SimpleNamespace(name="s", topic=f"t-{unique}", value_format="avro")
    reader = open_reader(LocalFile(str(path)), kind)  # type: ignore[arg-type]
    encode = await asyncio.to_thread(avro_value_encoder, source, reader, stack.schema_registry_url)
    values = [v for unit in reader.units(max_rows=700) for v in encode(unit)]
    rows = await _decode_with_registry(stack.schema_registry_url, values)
    assert rows == table.to_pylist()
