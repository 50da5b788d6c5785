"""A big file being read while the active NameNode changes (nn1 to nn2, so that the first of
the WebHDFS URLs becomes the standby's) finishes without being quarantined: every row once, in
order, with either reader (native: the nameservice through hdfs-native; webhdfs: both URLs,
';'-separated)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.ha.conftest import HaStack, put_retrying
from tests.integration.pipeline.harness import (
    DaemonProcess,
    consume,
    create_topic,
    free_port,
    missing,
    rows_for,
    status,
)

ROWS = 16_000
ROW_GROUP = 1_000
PAD = 2_000  # bytes of incompressible padding a row: about 2 MB a row group, 32 MB in all
RATE = 2_000  # rows/s: the read takes about 8 s
STALL_S = 15


def big_file() -> bytes:
    cols = rows_for(0, ROWS)
    cols["pad"] = [os.urandom(PAD // 2).hex() for _ in range(ROWS)]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols), sink, row_group_size=ROW_GROUP)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("reader", ["native", "webhdfs"])
async def test_a_big_file_read_across_a_failover_lands_whole(
        healthy_pair: HaStack, unique: str, tmp_path: Path, reader: str) -> None:
    ha = healthy_pair
    if ha.active() != "nn1":
        await asyncio.to_thread(ha.failover, "nn1")
    topic, base = f"ha-read-{unique}", f"/tests/ha-read/{unique}"
    await create_topic(ha.kafka_bootstrap, topic, 1)
    port = free_port()
    cfg = ha.daemon_config(tmp_path, instance_id=f"ha-read-{unique}",
                           ledger_topic=f"ledger-{unique}", http_port=port, unit_rows=ROW_GROUP,
                           hdfs={"reader": reader},
                           sources=[{"name": "big", "path": f"{base}/*", "topic": topic,
                                     "rows_per_second": RATE}])
    data = await asyncio.to_thread(big_file)
    url = f"http://127.0.0.1:{port}"
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120)
        await asyncio.to_thread(put_retrying, ha.webhdfs(), f"{base}/big.parquet", data)

        # Once its rows flow, the active changes under the read.
        deadline = time.monotonic() + 60
        while True:
            flight = (await status(url))["files_in_flight"]
            if flight and flight[0]["rows_done"] > 0:
                break
            assert time.monotonic() < deadline, daemon.log_text()[-3000:]
            await asyncio.sleep(0.1)
        await asyncio.to_thread(ha.failover, "nn2")
        assert (await status(url))["files_in_flight"], "the file was read before the failover"

        # Until it is done; a read that stops moving for STALL_S fails with what the log says.
        rows_done, moved = -1, time.monotonic()
        while (doc := await status(url))["sources"][0]["files_done"] == 0:
            flight = doc["files_in_flight"]
            if not flight:
                break  # done between the two reads of /status, or quarantined: checked below
            if flight[0]["rows_done"] != rows_done:
                rows_done, moved = flight[0]["rows_done"], time.monotonic()
            failed = [line for line in daemon.log_text().splitlines() if "read failed" in line]
            assert time.monotonic() - moved < STALL_S, (
                f"{reader}: the read stalled at {flight[0]['position']} after {ha.events}; "
                f"last read error: {failed[-1] if failed else None}")
            await asyncio.sleep(0.5)
        landed = await consume(ha.kafka_bootstrap, topic, expect=ROWS, timeout=30, settle=2)
        doc = await status(url)
        context = (f"{reader}: {ha.events}; last errors {doc['last_errors']}; "
                   f"in flight {doc['files_in_flight']}")
        assert doc["sources"][0]["files_quarantined"] == 0, context
        assert missing(landed, {0: ROWS}) == {}, context
        assert landed.duplicates() == {}, context
        assert landed.out_of_order() == [], context
        assert doc["sources"][0]["files_done"] == 1, context
        assert daemon.terminate() == 0
