"""The daemon against the real HDFS and Kafka: every row of every ready file, once, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from harness import (
    DaemonProcess,
    consume,
    create_topic,
    expected_ids,
    missing,
    put,
    sample_file,
    write_config,
)


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/daemon/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "instance": f"it-{unique}"}


async def test_streams_existing_and_new_files_once_and_survives_restarts(stack, webhdfs, names, tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 3)
    rows = {}
    # Already there before the first start: `earliest` streams them too.
    for f in range(3):
        suffix, data = sample_file(f, 3000)
        put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
        rows[f] = 3000
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "rows", "path": f"{base}/in/*", "topic": topic,
                                 "start_from": "earliest"}], unit_rows=1000)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        for f in range(3, 6):
            suffix, data = sample_file(f, 2500)
            put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
            rows[f] = 2500
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=90)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert daemon.terminate() == 0

        # Restart after completion: nothing new. A file written while it was down: streamed.
        suffix, data = sample_file(6, 1200)
        put(webhdfs, f"{base}/in/part-6{suffix}", data)
        rows[6] = 1200
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=60)
        assert sorted(landed.ids) == expected_ids(rows)
        assert daemon.terminate() == 0


async def test_latest_skips_what_is_already_there(stack, webhdfs, names, tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    suffix, data = sample_file(0, 500)
    put(webhdfs, f"{base}/old/part-0{suffix}", data)
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "new-only", "path": f"{base}/old/*", "topic": topic,
                                 "start_from": "latest"}])
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        suffix, data = sample_file(1, 700)
        put(webhdfs, f"{base}/old/part-1{suffix}", data)
        landed = await consume(stack.kafka_bootstrap, topic, expect=700, timeout=60)
        assert sorted(landed.ids) == expected_ids({1: 700})
        assert daemon.terminate() == 0


async def test_corrupt_and_vanishing_files_are_quarantined_and_the_rest_streams(stack, webhdfs, names, tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "mixed", "path": f"{base}/in/*", "topic": topic,
                                 "start_from": "earliest",
                                 "errors": {"tolerance": "all", "retry_timeout_ms": 2000,
                                            "dead_letter_topic": f"{topic}.dlq"}}],
                       rows_per_second=40000, unit_rows=2000)
    rows = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        suffix, good = sample_file(0, 2000)
        put(webhdfs, f"{base}/in/good-0{suffix}", good)
        rows[0] = 2000
        _, bad = sample_file(2, 2000)
        put(webhdfs, f"{base}/in/broken.parquet", bad[: len(bad) // 2] + b"\0" * 64 + b"PAR1")
        # A big file deleted while it is being read (the rate limit keeps it in flight).
        _, big = sample_file(4, 400_000)  # larger than the read-ahead window
        put(webhdfs, f"{base}/in/deleted.parquet", big)
        await asyncio.sleep(1.5)
        webhdfs.delete(f"{base}/in/deleted.parquet")
        suffix, good = sample_file(1, 1500)
        put(webhdfs, f"{base}/in/good-1{suffix}", good)
        rows[1] = 1500
        daemon.wait_for_log("file quarantined", timeout=60)
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=60)
        good_ids = [i for i in landed.ids if i // 1_000_000 in rows]
        assert sorted(good_ids) == expected_ids(rows)
        assert landed.duplicates() == {}
        dlq = await consume(stack.kafka_bootstrap, f"{topic}.dlq", expect=2, timeout=30)
        reasons = {v["path"].rsplit("/", 1)[1]: v["reason"] for _, _, v, _ in dlq.records}
        assert set(reasons) == {"broken.parquet", "deleted.parquet"}
        assert "broken.parquet" in reasons["broken.parquet"]
        assert daemon.terminate() == 0


async def test_keys_avro_values_and_headers(stack, webhdfs, names, tmp_path: Path):
    """Keyed rows go by key (each key's rows in file order in one partition); Avro values are
    Confluent-framed with a registered schema; headers name the file and the row's position."""
    import io
    import struct
    from collections import defaultdict

    import fastavro
    from aiokafka import AIOKafkaConsumer

    from pipeline.encoders.registry import SchemaRegistryClient

    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 4)
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "keyed", "path": f"{base}/in/*", "topic": topic,
                                 "key": ["user"], "value_format": "avro", "headers": True}],
                       unit_rows=700)
    paths = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        for f in range(2):
            suffix, data = sample_file(f, 3000)
            paths[f] = f"{base}/in/part-{f}{suffix}"
            put(webhdfs, paths[f], data)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                                    isolation_level="read_committed", auto_offset_reset="earliest")
        await consumer.start()
        got = []
        deadline = asyncio.get_running_loop().time() + 90
        try:
            while len(got) < 6000 and asyncio.get_running_loop().time() < deadline:
                for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                    got.extend((tp.partition, m) for m in msgs)
        finally:
            await consumer.stop()
        assert daemon.terminate() == 0

    schemas = {}
    async with SchemaRegistryClient(stack.schema_registry_url) as registry:
        rows_by_key: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
        ids = []
        for part, m in got:
            magic, schema_id = struct.unpack(">bI", m.value[:5])
            assert magic == 0
            if schema_id not in schemas:
                schemas[schema_id] = fastavro.parse_schema(await registry.get_by_id(schema_id))
            row = fastavro.schemaless_reader(io.BytesIO(m.value[5:]), schemas[schema_id])
            assert m.key == row["user"].encode()
            headers = dict(m.headers)
            assert headers["hdfs2kafka.path"].decode() == paths[row["file_no"]]
            pos = headers["hdfs2kafka.position"].decode()
            assert pos.startswith("block:" if paths[row["file_no"]].endswith(".avro") else "rg:")
            rows_by_key[m.key].append((part, row["file_no"], row["seq"]))
            ids.append(row["id"])
    assert sorted(ids) == expected_ids({0: 3000, 1: 3000})
    for key, rows in rows_by_key.items():
        assert len({p for p, _, _ in rows}) == 1, f"key {key!r} spread over partitions"
        for f in (0, 1):
            seqs = [s for _, ff, s in rows if ff == f]
            assert seqs == sorted(seqs), f"key {key!r}: file {f} out of order"


async def test_a_second_daemon_with_the_same_config_stands_by_and_takes_over(stack, webhdfs, names, tmp_path: Path):
    """Two daemons with one instance_id and no group (say, a standby node): they form a group of
    one shard; the second stands by while the first streams (the sticky assignment leaves the
    shard where it is), and takes over when the first is SIGKILLed, after the session timeout,
    resuming its files where their last commit ended: no row is duplicated or lost."""
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 2)
    rows = {}
    for f in range(6):
        suffix, data = sample_file(f, 20_000)
        put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
        rows[f] = 20_000
    source = {"name": "rows", "path": f"{base}/in/*", "topic": topic}
    # Slow enough that the first is streaming when the second joins and when it is killed.
    settings = dict(instance_id=names["instance"], ledger_topic=names["ledger"], rows_per_second=20_000,
                    unit_rows=2000, group_session_timeout_s=6)
    first = write_config(tmp_path, stack, sources=[dict(source)], **settings)
    (tmp_path / "b").mkdir()
    second = write_config(tmp_path / "b", stack, sources=[dict(source)], **settings)
    with DaemonProcess(first, tmp_path) as a, DaemonProcess(second, tmp_path / "b") as b:
        a.start()
        a.wait_for_log("ready: recovery done")
        await asyncio.sleep(1.5)
        b.start()
        b.wait_for_log("no shard assigned: standing by")
        owns = '"shards": [0], "of": 1, "generation"'  # the "shards assigned" line
        a.wait_for_log(owns, count=2)  # the rebalance left it its shard
        await asyncio.sleep(2)
        a.kill()
        b.wait_for_log(owns, timeout=60)
        b.wait_for_log("ready: recovery done")
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=120)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert b.terminate() == 0


async def test_ledger_stays_bounded_and_listing_never_streams_a_compacted_file_again(stack, webhdfs, names, tmp_path: Path):
    """With a tiny retention, done entries are tombstoned; the listing detector (the way for a
    daemon without superuser privilege) polls the same files again and again, and across a
    restart, without producing any of them twice."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic, base = names["topic"], names["dir"]
    rows = {}
    for f in range(3):
        suffix, data = sample_file(f, 1000)
        put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
        rows[f] = 1000
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "listed", "path": f"{base}/in/*", "topic": topic}],
                       ledger_retention_hours=0.0005)
    cfg.write_text(cfg.read_text().replace("[hdfs]\n", '[hdfs]\ndetector = "listing"\nlisting_interval_s = 0.5\n'))
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        landed = await consume(stack.kafka_bootstrap, topic, expect=3000, timeout=60)
        assert sorted(landed.ids) == expected_ids(rows)
        await asyncio.sleep(6)  # many listing polls over files whose entries are compacted away
        assert daemon.terminate() == 0
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        suffix, data = sample_file(3, 500)
        put(webhdfs, f"{base}/in/part-3{suffix}", data)
        rows[3] = 500
        landed = await consume(stack.kafka_bootstrap, topic, expect=3500, timeout=60, settle=4)
        assert sorted(landed.ids) == expected_ids(rows)
        assert daemon.terminate() == 0

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(names["ledger"], 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        tombstoned = set()
        while await consumer.position(tp) < end:
            for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if m.value is None and b"|file|" in m.key:
                    tombstoned.add(m.key)
    finally:
        await consumer.stop()
    assert len(tombstoned) >= 3


async def test_an_avro_file_appended_later_sends_only_its_new_rows(stack, webhdfs, names, tmp_path: Path):
    import io

    import fastavro
    from harness import AVRO_SCHEMA

    topic, base = names["topic"], names["dir"]
    path = f"{base}/in/growing.avro"
    buf = io.BytesIO()
    first = [{"id": i, "file_no": 0, "seq": i, "user": f"u{i % 7}", "amount": 0.5 * i} for i in range(1500)]
    fastavro.writer(buf, AVRO_SCHEMA, first, codec="deflate", sync_interval=16_000)
    original = buf.getvalue()
    put(webhdfs, path, original)
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "growing", "path": f"{base}/in/*", "topic": topic}])
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        assert sorted((await consume(stack.kafka_bootstrap, topic, expect=1500, timeout=60)).ids) == \
            list(range(1500))
        # Append more blocks to the same file (same inode), as an appending writer would.
        more = [{"id": i, "file_no": 0, "seq": i, "user": f"u{i % 7}", "amount": 0.5 * i}
                for i in range(1500, 2300)]
        grown = io.BytesIO(original)
        grown.seek(0, io.SEEK_END)
        fastavro.writer(grown, AVRO_SCHEMA, more, codec="deflate", sync_interval=16_000)
        webhdfs.write(path, grown.getvalue()[len(original):], append=True)
        landed = await consume(stack.kafka_bootstrap, topic, expect=2300, timeout=60, settle=4)
        assert sorted(landed.ids) == list(range(2300))
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert daemon.terminate() == 0


async def test_ready_at_once_with_a_backlog_larger_than_the_work_queue(stack, webhdfs, names, tmp_path: Path):
    """A first start on a directory of many files (or a restart with many unfinished ones): the
    daemon says it is ready (the log line, /readyz, systemd's READY=1) when it streams, not when
    its backlog has nearly all gone through a work queue of `queue_size` files; a new file
    written after readiness is streamed too; every row once."""
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 2)
    rows = {}
    for f in range(12):
        suffix, data = sample_file(f, 1000)
        put(webhdfs, f"{base}/in/part-{f:02d}{suffix}", data)
        rows[f] = 1000
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "rows", "path": f"{base}/in/*", "topic": topic,
                                 "start_from": "earliest", "rows_per_second": 2000}],
                       workers=1, queue_size=2, unit_rows=500)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done", timeout=60)
        early = await consume(stack.kafka_bootstrap, topic, timeout=2)
        assert len(early.ids) < sum(rows.values()) // 2, "ready only after most of the backlog"
        suffix, data = sample_file(12, 700)
        put(webhdfs, f"{base}/in/part-12{suffix}", data)
        rows[12] = 700
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=90)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert daemon.terminate() == 0
