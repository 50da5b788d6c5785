"""Records the broker refuses: the file they belong to is quarantined (never marked done without
its rows), batches the broker finds too large are cut smaller, and the other files stream on."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    DaemonProcess,
    big_row_parquet,
    consume,
    expected_ids,
    ledger_entries,
    metric,
    missing,
    put,
    sample_file,
    status,
    write_config,
)


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/refusals/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "instance": f"it-{unique}"}


async def create_small_topic(bootstrap: str, topic: str, partitions: int, max_message_bytes: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={
            "max.message.bytes": str(max_message_bytes)})])
    finally:
        await admin.close()


async def test_a_refused_record_quarantines_its_file_and_the_rest_streams(stack, webhdfs, names,
                                                                           tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    # The broker takes no record batch above 50,000 bytes; the daemon's own batches are 512 KiB.
    await create_small_topic(stack.kafka_bootstrap, topic, 2, 50_000)
    port_cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                            sources=[{"name": "rows", "path": f"{base}/in/*", "topic": topic,
                                      "errors": {"tolerance": "all", "retry_timeout_ms": 2000,
                                                 "dead_letter_topic": f"{topic}.dlq"}}])
    http = next(line.split('"')[1] for line in port_cfg.read_text().splitlines()
                if line.startswith("http ="))
    rows = {}
    with DaemonProcess(port_cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        # Many small rows: batches must be cut below the topic's limit, nothing quarantined.
        suffix, data = sample_file(0, 30_000)
        put(webhdfs, f"{base}/in/small-rows{suffix}", data)
        rows[0] = 30_000
        # One row of 80 KB among small ones: that file cannot land; it must not be called done.
        put(webhdfs, f"{base}/in/big-row.parquet", big_row_parquet(1, 50, 20, 80_000))
        suffix, data = sample_file(3, 5_000)
        put(webhdfs, f"{base}/in/after{suffix}", data)
        rows[3] = 5_000

        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=120)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert not [i for i in landed.ids if i // 1_000_000 == 1], "rows of the refused file landed"

        daemon.wait_for_log("file quarantined", timeout=60)
        entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["instance"])
        assert entries["big-row.parquet"].state == "quarantined"
        assert "MessageSizeTooLarge" in (entries["big-row.parquet"].reason or "")
        assert entries["big-row.parquet"].rows == 0
        assert entries[f"small-rows{sample_file(0, 1)[0]}"].state == "done"
        assert entries[f"after{sample_file(3, 1)[0]}"].state == "done"

        dlq = await consume(stack.kafka_bootstrap, f"{topic}.dlq", expect=1, timeout=30)
        assert [v["path"].rsplit("/", 1)[1] for _, _, v, _ in dlq.records] == ["big-row.parquet"]
        assert "MessageSizeTooLarge" in dlq.records[0][2]["reason"]
        assert await metric(f"http://{http}", "hdfs2kafka_files_failed_total", "rows") == 1.0
        errors = (await status(f"http://{http}"))["last_errors"]
        assert any("MessageSizeTooLarge" in (e.get("error") or "") for e in errors)
        assert daemon.terminate() == 0

    # A restart does not stream the quarantined file again, and rows stay once.
    with DaemonProcess(port_cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        suffix, data = sample_file(4, 1_000)
        put(webhdfs, f"{base}/in/later{suffix}", data)
        rows[4] = 1_000
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=60)
        assert sorted(i for i in landed.ids if i // 1_000_000 != 1) == expected_ids(rows)
        assert landed.duplicates() == {}
        assert daemon.terminate() == 0
