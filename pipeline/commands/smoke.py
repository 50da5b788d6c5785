"""`hdfs2kafka smoke`: a round trip through the real stack (HDFS write and stat, Kafka produce
and consume) that proves the connection settings work."""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid

from pipeline.commands.common import add_connection_arguments, connection_from

NAME = "smoke"
HELP = "write a Parquet file to HDFS, read its status back, round-trip rows through Kafka"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--rows", type=int, default=5, help="rows in the sample file")


async def run(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hdfs import InsecureClient

    from pipeline.kafka.client import committed_consumer, plain_producer

    conn = connection_from(args)
    if not conn.webhdfs_url or not conn.kafka_bootstrap:
        print("smoke: set WEBHDFS_URL and KAFKA_BOOTSTRAP (eval \"$(deploy/devstack/devstack env)\")")
        return 2
    run_id = uuid.uuid4().hex[:8]
    table = pa.table({"id": list(range(args.rows)), "name": [f"row-{i}" for i in range(args.rows)]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = f"/smoke/{run_id}/sample.parquet"
    hdfs = InsecureClient(conn.webhdfs_url, user=conn.hdfs_user)
    hdfs.write(path, buf.getvalue(), overwrite=True)
    status = hdfs.status(path)
    print(json.dumps({"event": "hdfs.written", "path": path, "length": status["length"],
                      "fileId": status["fileId"]}))

    topic = f"smoke-{run_id}"
    producer = plain_producer(conn.kafka_bootstrap)
    await producer.start()
    try:
        for row in table.to_pylist():
            await producer.send_and_wait(topic, json.dumps(row).encode())
    finally:
        await producer.stop()
    consumer = committed_consumer(conn.kafka_bootstrap, topic)
    await consumer.start()
    got: list[object] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < args.rows and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    for row in got:
        print(json.dumps({"event": "kafka.consumed", "topic": topic, "value": row}))
    ok = got == table.to_pylist()
    print(json.dumps({"event": "smoke.done", "ok": ok, "rows": len(got)}))
    return 0 if ok else 1
