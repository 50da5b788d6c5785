"""A broker that stalls longer than transaction.timeout.ms: the coordinator aborts the open
transaction and bumps the producer's epoch, which aiokafka reports as ProducerFenced, and the
group coordinator (the same broker) may drop the member whose heartbeats it missed. The daemon
must rejoin its group, recover and go on, every row once, and never stop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
from harness import DaemonProcess, consume, create_topic, missing, put, sample_file, write_config


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/stall/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "instance": f"it-{unique}"}


def config(tmp_path: Path, stack, bootstrap: str, names: dict[str, str], **daemon) -> Path:  # type: ignore[no-untyped-def]
    kafka_stack = dataclasses.replace(stack, kafka_bootstrap=bootstrap)
    path = write_config(tmp_path, kafka_stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                        sources=[{"name": "rows", "path": f"{names['dir']}/in/*", "topic": names["topic"]}],
                        **daemon)
    text = path.read_text().replace(
        f'ledger_topic = "{names["ledger"]}"',
        f'ledger_topic = "{names["ledger"]}"\ntransaction.timeout.ms = 8000\nrequest.timeout.ms = 5000')
    path.write_text(text)
    return path


async def streaming_setup(tmp_path: Path, stack, webhdfs, kafka, names: dict[str, str],  # type: ignore[no-untyped-def]
                          partitions: int, via_proxy: bool) -> tuple[dict[int, int], Path]:
    """The row topic, four files of 40,000 rows in HDFS and a daemon config streaming them at
    40,000 rows/s (so that a transaction is open whenever a fault strikes) from `kafka`, the
    private broker, directly or through its proxy."""
    await create_topic(kafka.bootstrap, names["topic"], partitions)
    bootstrap = kafka.proxied_bootstrap if via_proxy else kafka.bootstrap
    rows = {}
    for f in range(4):
        suffix, data = sample_file(f, 40_000)
        put(webhdfs, f"{names['dir']}/in/part-{f}{suffix}", data)
        rows[f] = 40_000
    return rows, config(tmp_path, stack, bootstrap, names, rows_per_second=40_000, unit_rows=2000)


async def test_a_broker_stalled_past_the_transaction_timeout_is_survived(
        stack, webhdfs, private_kafka, names, tmp_path: Path):
    rows, cfg = await streaming_setup(tmp_path, stack, webhdfs, private_kafka, names, 2, via_proxy=False)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        await asyncio.sleep(1.5)  # streaming, a transaction open
        private_kafka.pause()
        try:
            await asyncio.sleep(20)  # past transaction.timeout.ms (8 s) and the request timeout
        finally:
            private_kafka.resume()
        mark = len(daemon.log_text())
        # Whichever comes first: our own bound on the open transaction's sends, or the epoch
        # the coordinator bumped when it aborted it (read as fenced, then told apart).
        daemon.wait_for_log("recovering from the ledger", timeout=90)
        assert daemon.alive(), daemon.log_text()[-3000:]
        landed = await consume(private_kafka.bootstrap, names["topic"], expect=sum(rows.values()),
                               timeout=180)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert daemon.alive() and "stopping: an error" not in daemon.log_text()[mark:]
        assert daemon.terminate() == 0


async def test_a_connection_blackholed_past_the_transaction_timeout_is_survived(
        stack, webhdfs, private_kafka, names, tmp_path: Path):
    """Here the broker keeps running (and aborts the transaction on time) while the daemon's
    connections through the proxy carry nothing."""
    rows, cfg = await streaming_setup(tmp_path, stack, webhdfs, private_kafka, names, 3, via_proxy=True)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        await asyncio.sleep(1.5)
        started = time.monotonic()
        toxics = private_kafka.proxy.blackhole()
        try:
            await asyncio.sleep(15)
        finally:
            private_kafka.proxy.remove(*toxics)
        daemon.wait_for_log("recovering from the ledger", timeout=90)
        landed = await consume(private_kafka.bootstrap, names["topic"], expect=sum(rows.values()),
                               timeout=180)
        assert daemon.alive(), daemon.log_text()[-3000:]
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        assert time.monotonic() - started < 240
        assert daemon.terminate() == 0
