"""An Avro file whose schema has a union of several types and a record that contains itself
streams through the daemon into Kafka: as JSON (branch-wrapped unions, nested records) and as
the file's own Avro records (value_format avro), every row once, in order."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer
from harness import DaemonProcess, consume, create_topic, put, write_config

from pipeline.encoders.registry import SchemaRegistryClient

SCHEMA = {"type": "record", "name": "Event", "namespace": "it", "fields": [
    {"name": "id", "type": "long"},
    {"name": "file_no", "type": "long"},
    {"name": "seq", "type": "long"},
    {"name": "value", "type": ["null", "string", "long"]},
    {"name": "chain", "type": ["null", {"type": "record", "name": "Link", "fields": [
        {"name": "n", "type": "int"}, {"name": "next", "type": ["null", "Link"]}]}]},
]}
ROWS = 3000


def _records() -> list[dict[str, Any]]:
    out = []
    for i in range(ROWS):
        chain = None
        for n in reversed(range(i % 3)):
            chain = {"n": n, "next": chain}
        out.append({"id": i, "file_no": 0, "seq": i, "value": [None, f"s{i}", i][i % 3],
                    "chain": chain})
    return out


def _as_json(rec: dict[str, Any]) -> dict[str, Any]:
    value = rec["value"]
    wrapped = None if value is None else {"string" if isinstance(value, str) else "long": value}
    return {**rec, "value": wrapped}


async def _avro_values(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(values) < expect and loop.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                values += [m.value for m in msgs]
    finally:
        await consumer.stop()
    return values


async def test_unions_and_recursive_records_stream_as_json_and_as_avro(stack, webhdfs, unique,
                                                                       tmp_path: Path):
    base, topic = f"/tests/avro-unions/{unique}", f"unions-{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 1)
    await create_topic(stack.kafka_bootstrap, f"{topic}-avro", 1)
    records = _records()
    buf = io.BytesIO()
    fastavro.writer(buf, SCHEMA, records, codec="deflate", sync_interval=16_000)
    put(webhdfs, f"{base}/json/events.avro", buf.getvalue())
    put(webhdfs, f"{base}/avro/events.avro", buf.getvalue())
    cfg = write_config(tmp_path, stack, instance_id=f"it-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "json", "path": f"{base}/json/*", "topic": topic,
                                 "start_from": "earliest"},
                                {"name": "avro", "path": f"{base}/avro/*", "topic": f"{topic}-avro",
                                 "start_from": "earliest", "value_format": "avro"}],
                       unit_rows=700)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        landed = await consume(stack.kafka_bootstrap, topic, expect=ROWS, timeout=90)
        values = await _avro_values(stack.kafka_bootstrap, f"{topic}-avro", ROWS)
        assert daemon.terminate() == 0
    assert [v for _, _, v, _ in sorted(landed.records, key=lambda r: r[1])] == [
        _as_json(r) for r in records]
    assert len(values) == ROWS
    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        (schema_id,) = struct.unpack(">I", values[0][1:5])
        schema = fastavro.parse_schema(await registry.get_by_id(schema_id))
    assert [fastavro.schemaless_reader(io.BytesIO(v[5:]), schema, None) for v in values] == records
