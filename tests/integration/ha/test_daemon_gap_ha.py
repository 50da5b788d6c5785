"""A real gap on the HA pair: while the daemon is stopped, files arrive, the active NameNode
changes and the new active purges the edits the daemon had not read (`devstack purge-edits`,
which drops the standby's old copies too). Started again, the daemon reports the gap, reconciles
its sources by listing, and every row lands once; a failover afterwards makes no second gap."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.ha.conftest import HaStack, put_retrying
from tests.integration.pipeline.harness import (
    DaemonProcess,
    consume,
    expected_ids,
    sample_file,
)

ROWS = 1_000


async def test_a_gap_after_a_failover_is_reconciled_by_listing(
        healthy_pair: HaStack, unique: str, tmp_path: Path) -> None:
    ha = healthy_pair
    client = ha.webhdfs()
    topic, base = f"ha-gap-{unique}", f"/tests/ha-gap/{unique}"
    cfg = ha.daemon_config(tmp_path, instance_id=f"ha-gap-{unique}",
                           ledger_topic=f"ledger-{unique}",
                           sources=[{"name": "gappy", "path": f"{base}/*", "topic": topic}])
    rows: dict[int, int] = {}

    def put(n: int) -> None:
        suffix, data = sample_file(n, ROWS)
        put_retrying(client, f"{base}/part-{n}{suffix}", data)
        rows[n] = ROWS

    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120)
        put(0)
        landed = await consume(ha.kafka_bootstrap, topic, expect=ROWS, timeout=60)
        assert sorted(landed.ids) == expected_ids(rows)
        assert daemon.terminate() == 0

        # While it is down: files arrive, the other NameNode becomes active and purges.
        put(1)
        put(2)
        await asyncio.to_thread(ha.failover)
        purged = await asyncio.to_thread(ha.purge_edits)
        put(3)

        mark = len(daemon.log_text())
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "edit-stream gap", 120, mark)
        await asyncio.to_thread(daemon.wait_for_log, "listing reconciled", 60, mark)
        # Then a failover while it runs: the stream goes on with no gap.
        await asyncio.to_thread(ha.failover)
        put(4)
        landed = await consume(ha.kafka_bootstrap, topic, expect=5 * ROWS, timeout=120,
                               settle=4)
        context = f"{', '.join(ha.events)}; purge {purged}"
        assert sorted(landed.ids) == expected_ids(rows), context
        assert landed.duplicates() == {}, context
        assert landed.out_of_order() == [], context
        assert daemon.log_text()[mark:].count("edit-stream gap:") == 1, context
        assert daemon.terminate() == 0
