"""The daemon end to end with each read backend: the exactly-once tests elsewhere run with the
default reader (native); here the other one streams Parquet and Avro through SIGKILLs, and a
DataNode that dies while files are being read and comes back is retried until the files stream
on, with every row once and in order, for both backends (on the private HDFS: the shared
stack's DataNode is never restarted)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import types
from pathlib import Path
from typing import Any

import pytest
from harness import (
    DaemonProcess,
    consume,
    create_topic,
    missing,
    parquet_bytes,
    put,
    sample_file,
    write_config,
)

from hdfsread.stack import DEFAULT_READER, READERS

OTHER_READERS = [r for r in READERS if r != DEFAULT_READER]


def _reader_of(daemon: DaemonProcess) -> str | None:
    """The backend the daemon says it reads with."""
    for line in daemon.log_text().splitlines():
        if "read stack ready" in line:
            return str(json.loads(line)["reader"])
    return None


@pytest.mark.parametrize("reader", OTHER_READERS)
async def test_every_row_once_in_order_with_the_other_reader(stack, webhdfs, unique,
                                                             tmp_path: Path, reader: str) -> None:
    files, rows = 12, 20_000
    rng = random.Random(unique)
    topic, base = f"rows-{unique}", f"/tests/read-backends/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 3)
    cfg = write_config(tmp_path, stack, instance_id=f"rb-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "both", "path": f"{base}/**", "topic": topic,
                                 "start_from": "earliest"}], unit_rows=4000, workers=2,
                       hdfs={"reader": reader})
    for f in range(files):
        suffix, data = sample_file(f, rows)
        put(webhdfs, f"{base}/part-{f:03d}{suffix}", data)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("read stack ready")
        assert _reader_of(daemon) == reader
        for _ in range(3):
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            daemon.kill()
            daemon.start()
        landed = await consume(stack.kafka_bootstrap, topic, expect=files * rows, timeout=300,
                               settle=3)
        assert missing(landed, dict.fromkeys(range(files), rows)) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert daemon.terminate() == 0


@pytest.mark.parametrize("reader", READERS)
async def test_a_datanode_that_dies_mid_read_is_retried_then_the_files_stream(
        stack, private_hdfs: Any, unique, tmp_path: Path, reader: str) -> None:
    from hdfs import InsecureClient

    hdfs = InsecureClient(private_hdfs.webhdfs_url, user=private_hdfs.user)
    files, rows = 3, 120_000
    topic, base = f"dn-{unique}", f"/tests/datanode/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 1)
    for f in range(files):
        # Many small row groups: a file is read in several windows, not at once.
        put(hdfs, f"{base}/part-{f:03d}.parquet", parquet_bytes(f, rows, row_group_size=4000))
    private = types.SimpleNamespace(namenode=private_hdfs.namenode,
                                    webhdfs_url=private_hdfs.webhdfs_url,
                                    hdfs_user=private_hdfs.user,
                                    kafka_bootstrap=stack.kafka_bootstrap)
    # One worker and a speed limit: the files are read over ~20 s, one after the other, so the
    # DataNode dies while some are still to read.
    cfg = write_config(tmp_path, private, instance_id=f"dn-{unique}",
                       ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "dn", "path": f"{base}/**", "topic": topic,
                                 "start_from": "earliest",
                                 "errors": {"retry_max_delay_ms": 2000}}],
                       unit_rows=4000, workers=1, rows_per_second=18_000,
                       hdfs={"reader": reader})
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done", timeout=120)
        assert _reader_of(daemon) == reader
        await asyncio.sleep(2.0)
        os.kill(private_hdfs.pid("datanode"), signal.SIGKILL)
        mark = len(daemon.log_text())
        # The next read finds no DataNode: retried (the reason in the log), not quarantined.
        await asyncio.to_thread(daemon.wait_for_log, "read failed; retrying", 120, mark)
        await asyncio.to_thread(private_hdfs.ctl, "up", "--only", "hdfs")
        landed = await consume(stack.kafka_bootstrap, topic, expect=files * rows, timeout=300,
                               settle=3)
        log = daemon.log_text()
        assert missing(landed, dict.fromkeys(range(files), rows)) == {}, log[-3000:]
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert "file quarantined" not in log
        assert daemon.terminate() == 0
