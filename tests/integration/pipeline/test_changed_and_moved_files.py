"""Files that change after they were streamed, and files moved while they are read.

A done file that changes (truncated, or a Parquet file appended to) cannot be streamed again
without repeating rows: it is quarantined, and the ledger, the log, the metrics, /status and the
dead-letter topic all say so. An Avro file appended to streams only its new blocks, also across
a restart. A file moved to another directory of its source while it is read is the same file
(same inode id): it is finished from its new path, every row once.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import fastavro
import pytest
import requests
from harness import (
    AVRO_SCHEMA,
    DaemonProcess,
    consume,
    expected_ids,
    free_port,
    ledger_entries,
    metric,
    missing,
    parquet_bytes,
    put,
    rows_for,
    status,
    write_config,
)

from pipeline.ledger import DONE, QUARANTINED


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/changed/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "instance": f"it-{unique}"}


def avro_records(file_no: int, lo: int, hi: int) -> list[dict[str, Any]]:
    cols = rows_for(file_no, hi)
    return [{k: cols[k][i] for k in cols} for i in range(lo, hi)]


def avro_in_two_parts(file_no: int, first: int, total: int) -> tuple[bytes, bytes]:
    """An Avro file of `total` rows whose first `first` rows end on a block boundary:
    (the bytes of the first part alone, the whole file)."""
    buf = io.BytesIO()
    fastavro.writer(buf, AVRO_SCHEMA, avro_records(file_no, 0, first), codec="deflate")
    head = buf.getvalue()
    fastavro.writer(buf, AVRO_SCHEMA, avro_records(file_no, first, total), codec="deflate")
    return head, buf.getvalue()


def avro_appended(current: bytes, file_no: int, lo: int, hi: int) -> bytes:
    """The bytes that append rows [lo, hi) as new blocks to the Avro file `current`."""
    buf = io.BytesIO(current)
    buf.seek(0, io.SEEK_END)
    fastavro.writer(buf, AVRO_SCHEMA, avro_records(file_no, lo, hi), codec="deflate")
    return buf.getvalue()[len(current):]


def truncate(stack: Any, webhdfs: Any, path: str, length: int, timeout: float = 60) -> None:
    """`hdfs dfs -truncate`: cut the file to `length` bytes (HDFS recovers its last block)."""
    resp = requests.post(f"{stack.webhdfs_url}/webhdfs/v1{path}",
                         params={"op": "TRUNCATE", "newlength": length, "user.name": stack.hdfs_user},
                         timeout=30)
    resp.raise_for_status()
    deadline = time.monotonic() + timeout
    while webhdfs.status(path)["length"] != length:
        assert time.monotonic() < deadline, f"{path} not truncated to {length} within {timeout}s"
        time.sleep(0.2)


async def wait_metric(url: str, name: str, source: str, value: float, timeout: float = 60) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while (got := await metric(url, name, source)) != value:
        assert time.monotonic() < deadline, f"{name}{{source={source}}} is {got}, expected {value}"
        await asyncio.sleep(0.3)


QUARANTINE_COUNTER = "hdfs2kafka_files_failed_total"


async def test_a_done_file_that_changes_is_quarantined_everywhere_and_never_streamed_again(
        stack, webhdfs, names, tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    dlq = f"{topic}.dlq"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "chg", "path": f"{base}/in", "topic": topic,
                                 "errors": {"tolerance": "all", "dead_letter_topic": dlq}}],
                       http_port=port, unit_rows=300)
    heads = {}
    for f, name in ((0, "live.avro"), (1, "stopped.avro")):
        heads[name], whole = avro_in_two_parts(f, 500, 1000)
        put(webhdfs, f"{base}/in/{name}", whole)
    for f, name in ((2, "live.parquet"), (3, "stopped.parquet")):
        put(webhdfs, f"{base}/in/{name}", parquet_bytes(f, 1000, row_group_size=400))
    rows = {0: 1000, 1: 1000, 2: 1000, 3: 1000}

    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        landed = await consume(stack.kafka_bootstrap, topic, expect=4000, timeout=60)
        assert missing(landed, rows) == {}

        # While it runs: an Avro file cut to its first 500 rows, a Parquet file appended to.
        mark = len(daemon.log_text())
        truncate(stack, webhdfs, f"{base}/in/live.avro", len(heads["live.avro"]))
        webhdfs.write(f"{base}/in/live.parquet", parquet_bytes(2, 10), append=True)
        await wait_metric(url, QUARANTINE_COUNTER, "chg", 2)
        log = daemon.log_text()[mark:]
        assert "live.avro" in log and "live.parquet" in log and "quarantined" in log
        src = next(s for s in (await status(url))["sources"] if s["name"] == "chg")
        assert src["files_quarantined"] == 2
        assert daemon.terminate() == 0

        # While it is down: the same to the two others; the restart reads the edits.
        truncate(stack, webhdfs, f"{base}/in/stopped.avro", len(heads["stopped.avro"]))
        webhdfs.write(f"{base}/in/stopped.parquet", parquet_bytes(3, 10), append=True)
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        await wait_metric(url, QUARANTINE_COUNTER, "chg", 2)
        # And a restart after that streams none of them again.
        assert daemon.terminate() == 0
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        landed = await consume(stack.kafka_bootstrap, topic, expect=4000, timeout=60, settle=6)
        assert await metric(url, QUARANTINE_COUNTER, "chg") == 0
        assert daemon.terminate() == 0

    assert missing(landed, rows) == {}
    assert landed.duplicates() == {}
    assert len(landed.records) == 4000
    entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["instance"])
    changed = ("live.avro", "stopped.avro", "live.parquet", "stopped.parquet")
    for name in changed:
        assert entries[name].state == QUARANTINED, (name, entries[name])
        assert entries[name].reason and "changed" in entries[name].reason
    dead = await consume(stack.kafka_bootstrap, dlq, expect=4, timeout=30)
    by_name = {v["path"].rsplit("/", 1)[1]: v for _, _, v, _ in dead.records}
    assert sorted(by_name) == sorted(changed)
    assert len(dead.records) == 4
    assert all("changed" in v["reason"] for v in by_name.values())


async def test_an_appended_avro_file_streams_only_its_new_rows_across_restarts(
        stack, webhdfs, names, tmp_path: Path):
    topic, base = names["topic"], names["dir"]
    path = f"{base}/in/growing.avro"
    _, data = avro_in_two_parts(0, 700, 1500)
    put(webhdfs, path, data)
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "grow", "path": f"{base}/in", "topic": topic}], unit_rows=250)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        assert sorted((await consume(stack.kafka_bootstrap, topic, expect=1500, timeout=60)).ids) == \
            list(range(1500))
        assert daemon.terminate() == 0
        # Appended while the daemon is down: the restart sends the new blocks only.
        more = avro_appended(data, 0, 1500, 2300)
        webhdfs.write(path, more, append=True)
        data += more
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        landed = await consume(stack.kafka_bootstrap, topic, expect=2300, timeout=60, settle=4)
        assert sorted(landed.ids) == list(range(2300))
        # Appended while it runs, then a restart: still each row once.
        more = avro_appended(data, 0, 2300, 2600)
        webhdfs.write(path, more, append=True)
        landed = await consume(stack.kafka_bootstrap, topic, expect=2600, timeout=60, settle=4)
        assert daemon.terminate() == 0
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        landed = await consume(stack.kafka_bootstrap, topic, expect=2600, timeout=60, settle=5)
        assert daemon.terminate() == 0
    assert sorted(landed.ids) == list(range(2600))
    assert landed.duplicates() == {}
    assert landed.out_of_order() == []
    entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["instance"])
    entry = entries["growing.avro"]
    assert (entry.state, entry.rows) == (DONE, 2600)


async def test_a_file_moved_within_its_source_while_read_is_finished_from_its_new_path(
        stack, webhdfs, names, tmp_path: Path):
    """Moved once while the daemon reads it, then again while the daemon is down mid-way: every
    row once, in order, and the ledger has it done at its last path. A file moved out of the
    source while it is read counts as deleted (as `hdfs dfs -rm` to the trash does): it is
    quarantined, and what was streamed of it is not repeated."""
    topic, base = names["topic"], names["dir"]
    # Larger than the read-ahead window, read at 12,500 rows/s (the source's limit shared by two
    # files): ~32 s, so that it is still mid-read when the daemon is killed even if finding the
    # moved-out file takes a while on a loaded machine.
    n = 400_000
    put(webhdfs, f"{base}/in/dt=1/big.parquet", parquet_bytes(0, n, row_group_size=20_000))
    put(webhdfs, f"{base}/in/dt=1/gone.parquet", parquet_bytes(1, n, row_group_size=20_000))
    webhdfs.makedirs(f"{base}/in/dt=2")
    webhdfs.makedirs(f"{base}/in/dt=3")
    webhdfs.makedirs(f"{base}/out")
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "mv", "path": f"{base}/in", "topic": topic,
                                 "rows_per_second": 25_000,
                                 "errors": {"tolerance": "all", "dead_letter_topic": f"{topic}.dlq"}}],
                       unit_rows=5000, workers=2)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        await asyncio.sleep(3)
        webhdfs.rename(f"{base}/in/dt=1/big.parquet", f"{base}/in/dt=2/big.parquet")
        webhdfs.rename(f"{base}/in/dt=1/gone.parquet", f"{base}/out/gone.parquet")
        daemon.wait_for_log("file quarantined", timeout=60)
        await asyncio.sleep(3)
        daemon.kill()
        partial = await consume(stack.kafka_bootstrap, topic, timeout=30, settle=2)
        assert 0 < len([i for i in partial.ids if i < 1_000_000]) < n, "not mid-read at the kill"
        webhdfs.rename(f"{base}/in/dt=2/big.parquet", f"{base}/in/dt=3/big.parquet")
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        landed = await consume(stack.kafka_bootstrap, topic, expect=n, timeout=120, settle=4)
        assert daemon.terminate() == 0
    big = [r for r in landed.records if r[2]["file_no"] == 0]
    assert sorted(r[2]["id"] for r in big) == expected_ids({0: n})
    assert landed.duplicates() == {}
    assert landed.out_of_order() == []
    gone = [r for r in landed.records if r[2]["file_no"] == 1]
    assert len(gone) < n
    entries = {e.file_id: e for e in (await ledger_entries(
        stack.kafka_bootstrap, names["ledger"], names["instance"])).values()}
    big_id = webhdfs.status(f"{base}/in/dt=3/big.parquet")["fileId"]
    gone_id = webhdfs.status(f"{base}/out/gone.parquet")["fileId"]
    assert (entries[big_id].state, entries[big_id].path, entries[big_id].rows) == \
        (DONE, f"{base}/in/dt=3/big.parquet", n)
    assert entries[gone_id].state == QUARANTINED
    assert "moved out" in (entries[gone_id].reason or "")
    assert entries[gone_id].rows == len(gone)


async def test_a_latest_source_by_listing_never_streams_what_was_there_before_its_start(
        stack, webhdfs, names, tmp_path: Path):
    """The files a `latest` source finds at its first start are recorded as done, not pending:
    a restart does not stream them."""
    topic, base = names["topic"], names["dir"]
    put(webhdfs, f"{base}/in/old.parquet", parquet_bytes(0, 500))
    cfg = write_config(tmp_path, stack, instance_id=names["instance"], ledger_topic=names["ledger"],
                       sources=[{"name": "new-only", "path": f"{base}/in", "topic": topic,
                                 "start_from": "latest"}])
    cfg.write_text(cfg.read_text().replace("[hdfs]\n", '[hdfs]\ndetector = "listing"\nlisting_interval_s = 0.5\n'))
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        put(webhdfs, f"{base}/in/new-1.parquet", parquet_bytes(1, 700))
        await consume(stack.kafka_bootstrap, topic, expect=700, timeout=60)
        assert daemon.terminate() == 0
        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("ready: recovery done", after=mark)
        put(webhdfs, f"{base}/in/new-2.parquet", parquet_bytes(2, 300))
        landed = await consume(stack.kafka_bootstrap, topic, expect=1000, timeout=60, settle=4)
        assert daemon.terminate() == 0
    assert sorted(landed.ids) == expected_ids({1: 700, 2: 300})
    entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["instance"])
    assert entries["old.parquet"].state == DONE
