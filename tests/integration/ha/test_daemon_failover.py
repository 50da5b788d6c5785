"""The daemon on a real HA pair (`devstack up --ha`): files keep arriving while the active
NameNode is switched five times, or SIGKILLed (then the standby made active and the killed one
restarted as standby). The daemon finds the NameNodes from the nameservice in its
`hadoop_conf_dir`, follows the active, and a read_committed consumer finds every file detected
once and every row once, in file order; no edit-stream gap is reported, since there is none;
/status names the active NameNode and counts the failovers the daemon followed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.ha.conftest import HaStack, Writer
from tests.integration.pipeline.harness import (
    DaemonProcess,
    Landed,
    consume,
    create_topic,
    free_port,
    ledger_entries,
    missing,
    sample_file,
    status,
)

ROWS = 2_000


def part(n: int) -> tuple[str, bytes]:
    suffix, data = sample_file(n, ROWS)
    return f"part-{n:04d}{suffix}", data


def check_every_row_once(landed: Landed, files: list[int], context: str) -> None:
    assert missing(landed, dict.fromkeys(files, ROWS)) == {}, context
    assert landed.duplicates() == {}, context
    assert landed.out_of_order() == [], context
    assert len(landed.records) == len(files) * ROWS, context


class Run:
    """One daemon on the HA stack, its topic, its directory and its HTTP port."""

    def __init__(self, ha: HaStack, unique: str, tmp_path: Path, **config: Any) -> None:
        self.ha, self.unique = ha, unique
        self.topic, self.base = f"ha-{unique}", f"/tests/ha/{unique}"
        self.port = free_port()
        cfg = ha.daemon_config(tmp_path, instance_id=f"ha-{unique}",
                               ledger_topic=f"ledger-{unique}", http_port=self.port,
                               unit_rows=1000,
                               sources=[{"name": "ha", "path": f"{self.base}/*",
                                         "topic": self.topic}], **config)
        self.daemon = DaemonProcess(cfg, tmp_path)

    async def through(self, switch: Any, switches: int) -> dict[str, Any]:
        """Start the daemon, write files while `switch()` runs `switches` times, check every
        row and file once; the daemon's /status."""
        ha, daemon = self.ha, self.daemon
        await create_topic(ha.kafka_bootstrap, self.topic, 2)
        client = ha.webhdfs()
        client.makedirs(self.base)
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 120)
        writer = Writer(client, self.base, part, pause=0.2)
        writer.start()
        try:
            await asyncio.sleep(1.5)
            for _ in range(switches):
                await asyncio.to_thread(switch)
                await asyncio.sleep(1.0)  # files keep arriving on the new active
            await asyncio.sleep(1.0)
        finally:
            files = await asyncio.to_thread(writer.stop)
        context = f"{', '.join(ha.events)}; files {files[0]}..{files[-1]}"
        assert len(files) >= 10, context
        landed = await consume(ha.kafka_bootstrap, self.topic, expect=len(files) * ROWS,
                               timeout=120, settle=3)
        check_every_row_once(landed, files, context)
        # Every file detected once: one ledger entry each, and as many detections as files.
        entries = await ledger_entries(ha.kafka_bootstrap, f"ledger-{self.unique}",
                                       f"ha-{self.unique}")
        assert sorted(entries) == sorted(part(n)[0] for n in files), context
        doc = await status(f"http://127.0.0.1:{self.port}")
        assert doc["sources"][0]["files_detected"] == len(files), context
        log = daemon.log_text()
        assert "edit-stream gap" not in log and "tailer.gap" not in log, context
        assert doc["sources"][0]["files_quarantined"] == 0, context
        return doc


async def test_files_arriving_while_the_active_namenode_switches_five_times(
        healthy_pair: HaStack, unique: str, tmp_path: Path) -> None:
    ha = healthy_pair
    run = Run(ha, unique, tmp_path)
    with run.daemon as daemon:
        doc = await run.through(ha.failover, 5)
        nn = doc["namenode"]
        assert nn["failovers"] == 5, (nn, ha.events)
        assert nn["id"] == ha.active(), (nn, ha.events)
        assert nn["addresses"] == ha.namenodes
        assert daemon.terminate() == 0


async def test_files_arriving_while_the_active_namenode_is_killed(
        healthy_pair: HaStack, unique: str, tmp_path: Path) -> None:
    """SIGKILL the active, make the standby active, restart the killed one (standby), twice;
    the NameNodes given as an `[hdfs] namenodes` list this time."""
    ha = healthy_pair

    def kill_and_fail_over() -> None:
        killed = ha.kill_active()
        ha.failover()
        ha.restart(killed)

    run = Run(ha, unique, tmp_path, namenodes_list=True)
    with run.daemon as daemon:
        doc = await run.through(kill_and_fail_over, 2)
        nn = doc["namenode"]
        assert nn["failovers"] == 2, (nn, ha.events)
        assert nn["id"] is None  # a plain list names no HA ids
        assert nn["active"] == ha.namenodes[int(ha.active()[-1]) - 1], (nn, ha.events)
        assert daemon.terminate() == 0
