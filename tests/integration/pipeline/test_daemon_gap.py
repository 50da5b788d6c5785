"""After an edit-stream gap (the NameNode purged edits the daemon had not read), a listing
reconciles the sources against the ledger: files that appeared during the gap are streamed,
files already done are not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import DaemonProcess, consume, expected_ids, put, sample_file, write_config

DEVSTACK = Path(__file__).resolve().parents[3] / "deploy" / "devstack" / "devstack"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def gap_hdfs(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A dedicated HDFS whose edit log a test may purge (one checkpoint retained)."""
    main_home = Path(os.environ.get("DEVSTACK_HOME") or Path.home() / ".cache" / "hdfs2kafka" / "devstack")
    rpc, http, dn, dn_http, dn_ipc = _free_ports(5)
    env = {**os.environ, "DEVSTACK_HOME": str(tmp_path_factory.mktemp("gap-hdfs")),
           "DEVSTACK_LIB": os.environ.get("DEVSTACK_LIB") or str(main_home / "lib"),
           "DEVSTACK_NN_RPC_PORT": str(rpc), "DEVSTACK_NN_HTTP_PORT": str(http),
           "DEVSTACK_DN_PORT": str(dn), "DEVSTACK_DN_HTTP_PORT": str(dn_http),
           "DEVSTACK_DN_IPC_PORT": str(dn_ipc),
           "DEVSTACK_HDFS_SITE": "dfs.namenode.num.checkpoints.retained=1,"
                                 "dfs.namenode.num.extra.edits.retained=2,"
                                 "dfs.namenode.max.extra.edits.segments.retained=1"}
    subprocess.run([sys.executable, str(DEVSTACK), "up", "--only", "hdfs"], env=env, check=True,
                   timeout=300, stdout=subprocess.DEVNULL)
    try:
        yield {"namenode": f"127.0.0.1:{rpc}", "webhdfs": f"http://127.0.0.1:{http}"}
    finally:
        subprocess.run([sys.executable, str(DEVSTACK), "down"], env=env, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


async def test_files_hidden_by_a_gap_are_streamed_once(stack, gap_hdfs, unique, tmp_path: Path):
    from hdfs import InsecureClient

    from hdfswatch.namenode import NameNodeClient

    webhdfs = InsecureClient(gap_hdfs["webhdfs"], user=stack.hdfs_user)
    topic, base = f"rows-{unique}", f"/gap/{unique}"

    class Local:  # the dev stack, pointed at the dedicated HDFS
        namenode = gap_hdfs["namenode"]
        webhdfs_url = gap_hdfs["webhdfs"]
        hdfs_user = stack.hdfs_user
        kafka_bootstrap = stack.kafka_bootstrap

    cfg = write_config(tmp_path, Local, instance_id=f"gap-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "gappy", "path": f"{base}/*", "topic": topic}])
    rows = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        suffix, data = sample_file(0, 1000)
        put(webhdfs, f"{base}/part-0{suffix}", data)
        rows[0] = 1000
        assert sorted((await consume(stack.kafka_bootstrap, topic, expect=1000, timeout=60)).ids) == \
            expected_ids(rows)
        assert daemon.terminate() == 0

        # While it is down: two files arrive, then the NameNode checkpoints and purges the edits.
        for f in (1, 2):
            suffix, data = sample_file(f, 1000)
            put(webhdfs, f"{base}/part-{f}{suffix}", data)
            rows[f] = 1000
        async with NameNodeClient([gap_hdfs["namenode"]], user=stack.hdfs_user) as nn:
            await nn.roll_edits()
            assert await nn.set_safe_mode("enter")
            try:
                await nn.save_namespace()
            finally:
                assert not await nn.set_safe_mode("leave")
        suffix, data = sample_file(3, 1000)
        put(webhdfs, f"{base}/part-3{suffix}", data)
        rows[3] = 1000

        mark = len(daemon.log_text())
        daemon.start()
        daemon.wait_for_log("edit-stream gap", after=mark)
        daemon.wait_for_log("listing reconciled", after=mark)
        landed = await consume(stack.kafka_bootstrap, topic, expect=4000, timeout=90, settle=4)
        assert sorted(landed.ids) == expected_ids(rows)
        assert landed.duplicates() == {}
        assert daemon.terminate() == 0
