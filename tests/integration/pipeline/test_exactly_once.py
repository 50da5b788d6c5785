"""Exactly once, whatever crashes: 40 files (Parquet and Avro, 25,000 rows each, every row with a
unique id) arrive while the daemon is killed and restarted at random moments, stopped
gracefully, or while the Kafka broker restarts. A read_committed consumer must then find every
row id exactly once, each file's rows in file order within each partition."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest
from harness import (
    DaemonProcess,
    consume,
    create_topic,
    missing,
    put,
    sample_file,
    write_config,
)

FILES = 40
ROWS = 25_000


@pytest.mark.parametrize("mode", ["sigkill", "sigterm", "broker-restart"])
async def test_every_row_once_in_order_across_crashes(stack, webhdfs, unique, tmp_path: Path, mode: str):
    rng = random.Random(f"{mode}-{unique}")
    topic, base = f"rows-{unique}", f"/tests/exactly-once/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 3)
    files = {f: sample_file(f, ROWS) for f in range(FILES)}
    cfg = write_config(tmp_path, stack, instance_id=f"eo-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "crashy", "path": f"{base}/table/**", "topic": topic,
                                 "start_from": "earliest"}], unit_rows=5000, workers=2)
    # A third of the files are there before the first start; the rest arrive while it runs.
    for f in range(FILES // 3):
        suffix, data = files[f]
        put(webhdfs, f"{base}/table/dt=0/part-{f:03d}{suffix}", data)

    writer_done = threading.Event()

    def writer() -> None:
        for f in range(FILES // 3, FILES):
            suffix, data = files[f]
            put(webhdfs, f"{base}/table/dt={f % 3}/part-{f:03d}{suffix}", data)
            time.sleep(rng.uniform(0.05, 0.4))
        writer_done.set()

    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        if mode == "broker-restart":
            daemon.wait_for_log("ready: recovery done")
            for _ in range(2):
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                await asyncio.to_thread(stack.ctl, "restart", "kafka")
        else:
            mark = 0
            for _ in range(10):
                if mode == "sigkill":
                    # Any moment: while starting, reading the ledger, streaming, committing.
                    await asyncio.sleep(rng.uniform(1.0, 4.0))
                    daemon.kill()
                else:
                    # A graceful stop while streaming ends the open transaction cleanly.
                    await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120, mark)
                    await asyncio.sleep(rng.uniform(0.3, 2.5))
                    assert daemon.terminate(timeout=60) == 0, daemon.log_text()[-3000:]
                mark = len(daemon.log_text())
                daemon.start()
        await asyncio.to_thread(thread.join, 120)
        assert writer_done.is_set()

        landed = await consume(stack.kafka_bootstrap, topic, expect=FILES * ROWS, timeout=300, settle=5)
        assert daemon.alive(), daemon.log_text()[-3000:]
        assert missing(landed, dict.fromkeys(range(FILES), ROWS)) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert len(landed.records) == FILES * ROWS
        if mode != "broker-restart":
            assert daemon.starts == 11
        assert daemon.terminate() == 0
