"""After an edit-stream gap (the NameNode purged edits the daemon had not read), a listing
reconciles the sources against the ledger: files that appeared during the gap are streamed,
files already done are not."""

from __future__ import annotations

from pathlib import Path

from harness import DaemonProcess, consume, expected_ids, put, sample_file, write_config


async def test_files_hidden_by_a_gap_are_streamed_once(stack, private_hdfs, unique, tmp_path: Path):
    from hdfs import InsecureClient

    from hdfswatch.namenode import NameNodeClient

    webhdfs = InsecureClient(private_hdfs.webhdfs_url, user=stack.hdfs_user)
    topic, base = f"rows-{unique}", f"/gap/{unique}"

    class Local:  # the dev stack, pointed at the dedicated HDFS
        namenode = private_hdfs.namenode
        webhdfs_url = private_hdfs.webhdfs_url
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
        async with NameNodeClient([private_hdfs.namenode], user=stack.hdfs_user) as nn:
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
