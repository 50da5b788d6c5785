"""The daemon's own record batches, read back by Kafka's Java consumer: with every compression
codec, keyed rows land once, in file order within each partition, on the partition Kafka's
default partitioner gives their key; the Java client checks each batch's CRC as it reads."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2
from harness import DaemonProcess, create_topic, expected_ids, put, sample_file, write_config

PARTITIONS = 3
FILE_ROWS = {0: 6_000, 1: 4_000, 2: 3_000}  # Parquet, Avro, Parquet


class WithKafkaSettings:
    """The dev stack, with [kafka] client settings added to the daemon's config."""

    def __init__(self, stack: Any, **kafka: str) -> None:
        self._stack = stack
        self._kafka = kafka

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stack, name)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {"kafka": dict(self._kafka)}


def java_consume(bootstrap: str, topic: str, expect: int) -> list[tuple[int, str, dict[str, Any]]]:
    """(partition, key, value) of every committed record, as Kafka's console consumer reads them."""
    from bench.bench_end_to_end import kafka_lib

    cmd = ["java", "-Xmx256m", "-cp", f"{kafka_lib()}/*",
           "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
           "--topic", topic, "--from-beginning", "--max-messages", str(expect),
           "--timeout-ms", "60000", "--isolation-level", "read_committed",
           "--formatter-property", "print.partition=true",
           "--formatter-property", "print.key=true", "--formatter-property", "key.separator=\t"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    rows = []
    for line in out.stdout.splitlines():
        if not line.startswith("Partition:"):
            continue  # the tool's own notices
        part, key, value = line.split("\t", 2)
        rows.append((int(part.removeprefix("Partition:")), key, orjson.loads(value)))
    assert len(rows) == expect, f"the Java consumer read {len(rows)} of {expect}: {out.stderr[-2000:]}"
    return rows


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_keyed_rows_in_every_codec_read_back_by_the_java_consumer(stack, webhdfs, unique, codec,
                                                                       tmp_path: Path):
    topic, base = f"batches-{codec}-{unique}", f"/tests/batches/{codec}-{unique}"
    await create_topic(stack.kafka_bootstrap, topic, PARTITIONS)
    config = write_config(tmp_path, WithKafkaSettings(stack, **{"compression.type": codec}),
                          instance_id=f"it-{unique}", ledger_topic=f"ledger-{unique}",
                          sources=[{"name": "rows", "path": f"{base}/in/*", "topic": topic,
                                    "key": ["user"]}])
    with DaemonProcess(config, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        for file_no, n in FILE_ROWS.items():
            suffix, data = sample_file(file_no, n)
            put(webhdfs, f"{base}/in/f{file_no}{suffix}", data)
        landed = java_consume(stack.kafka_bootstrap, topic, sum(FILE_ROWS.values()))

    ids = [v["id"] for _, _, v in landed]
    assert sorted(ids) == expected_ids(FILE_ROWS)
    assert not [i for i, c in Counter(ids).items() if c > 1]
    for part, key, value in landed:
        assert key == value["user"]
        assert part == (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS, (key, part)
    last: dict[tuple[int, int], int] = {}
    for part, _, value in landed:  # the console consumer keeps each partition's order
        k = (part, value["file_no"])
        assert value["seq"] > last.get(k, -1), f"partition {part}: file {k[1]} out of order"
        last[k] = value["seq"]
