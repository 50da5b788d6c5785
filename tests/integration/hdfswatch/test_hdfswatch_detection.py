"""File detection against the shared dev stack's real NameNode: the ways files really arrive in
HDFS (put, Spark commits, appends), each seen as ready exactly once, under its final name."""

from __future__ import annotations

import asyncio

from hdfswatch_support import Namespace, Watch

from hdfswatch.detector import FileDetector
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer


async def watch(nn: NameNodeClient, patterns: list[str]) -> Watch:
    start = await nn.get_current_txid() + 1
    return Watch(EditTailer(nn, start), FileDetector(nn, patterns)).start()


async def settle(nn: NameNodeClient, w: Watch) -> None:
    """Everything written so far has gone through the tailer and the detector."""
    await w.caught_up(await nn.get_current_txid())


async def test_put_style_upload_is_ready_once_under_its_final_name(nn, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    w = await watch(nn, [f"{base}/**"])
    try:
        await asyncio.to_thread(webhdfs.write, f"{base}/x.parquet._COPYING_", b"PAR1data")
        await asyncio.to_thread(webhdfs.rename, f"{base}/x.parquet._COPYING_", f"{base}/x.parquet")
        await settle(nn, w)
    finally:
        await w.stop()
    status = webhdfs.status(f"{base}/x.parquet")
    assert [(r.path, r.reason) for r in w.ready] == [(f"{base}/x.parquet", "rename")]
    ready = w.ready[0]
    assert ready.file_id == status["fileId"]
    assert ready.size == 8
    assert ready.mtime == status["modificationTime"]
    assert ready.txid is not None and ready.txid <= (w.tailer.last_txid or 0)


async def test_spark_commit_file_by_file_and_by_directory(nn, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    table, parted = f"{base}/table", f"{base}/parted"
    w = await watch(nn, [table, f"{parted}/dt=*/*"])
    try:
        # Job commit v1: task attempt output renamed into the task dir, then file by file.
        attempt = f"{table}/_temporary/0/_temporary/attempt_01_m_000000_0"
        for i in range(3):
            await asyncio.to_thread(webhdfs.write, f"{attempt}/part-{i}.parquet", b"x" * (i + 1))
        task = f"{table}/_temporary/0/task_01_m_000000"
        await asyncio.to_thread(webhdfs.rename, attempt, task)
        for i in range(3):
            await asyncio.to_thread(webhdfs.rename, f"{task}/part-{i}.parquet",
                                    f"{table}/part-{i}.parquet")
        await asyncio.to_thread(webhdfs.write, f"{table}/_SUCCESS", b"")
        await asyncio.to_thread(webhdfs.delete, f"{table}/_temporary", recursive=True)
        # Partitioned output committed by renaming whole partition directories into place.
        staging = f"{parted}/_temporary/0/task_02_m_000001"
        for day in ("2024-01-01", "2024-01-02"):
            for i in range(2):
                await asyncio.to_thread(webhdfs.write, f"{staging}/dt={day}/part-{i}.parquet", b"y")
            await asyncio.to_thread(webhdfs.write, f"{staging}/dt={day}/.part-0.parquet.crc", b"c")
        for day in ("2024-01-01", "2024-01-02"):
            await asyncio.to_thread(webhdfs.rename, f"{staging}/dt={day}", f"{parted}/dt={day}")
        await asyncio.to_thread(webhdfs.write, f"{parted}/_SUCCESS", b"")
        await settle(nn, w)
    finally:
        await w.stop()
    assert sorted(w.paths()) == sorted(
        [f"{table}/part-{i}.parquet" for i in range(3)]
        + [f"{parted}/dt={d}/part-{i}.parquet" for d in ("2024-01-01", "2024-01-02")
           for i in range(2)])
    assert {r.reason for r in w.ready} == {"rename"}
    sizes = {r.path: r.size for r in w.ready}
    assert [sizes[f"{table}/part-{i}.parquet"] for i in range(3)] == [1, 2, 3]
    ids = {r.path: r.file_id for r in w.ready}
    assert ids[f"{table}/part-0.parquet"] == webhdfs.status(f"{table}/part-0.parquet")["fileId"]


async def test_create_then_delete_before_close_is_never_ready(nn, ns: Namespace, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    w = await watch(nn, [f"{base}/**"])
    try:
        await ns.create_open(f"{base}/doomed.avro")
        await w.until(lambda w: f"{base}/doomed.avro" in w.detector.pending)
        await ns.delete(f"{base}/doomed.avro")
        # A file still being written is not ready either, even when renamed into place...
        await ns.create_open(f"{base}/_tmp/open.avro")
        await ns.rename(f"{base}/_tmp/open.avro", f"{base}/open.avro")
        await settle(nn, w)
        assert w.ready == []
        assert f"{base}/doomed.avro" not in w.detector.pending
        # ...until its writer closes it.
        await ns.complete(f"{base}/open.avro")
        await settle(nn, w)
    finally:
        await w.stop()
    assert [(r.path, r.reason) for r in w.ready] == [(f"{base}/open.avro", "close")]


async def test_append_makes_a_file_ready_again_after_its_new_close(nn, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    path = f"{base}/events.avro"
    w = await watch(nn, [f"{base}/*.avro"])
    try:
        await asyncio.to_thread(webhdfs.write, path, b"first")
        await w.until(lambda w: len(w.ready) == 1)
        await asyncio.to_thread(webhdfs.write, path, b"-second", append=True)
        await settle(nn, w)
    finally:
        await w.stop()
    assert [(r.path, r.reason, r.size) for r in w.ready] == [
        (path, "close", 5), (path, "close", 12)]
    assert w.ready[0].file_id == w.ready[1].file_id == webhdfs.status(path)["fileId"]
    assert w.ready[0].txid < w.ready[1].txid


async def test_resume_from_the_saved_txid_sees_every_change_once(nn, webhdfs, unique):
    base = f"/tests/hdfswatch/{unique}"
    start = await nn.get_current_txid() + 1
    first = Watch(EditTailer(nn, start), FileDetector(nn, [f"{base}/**"])).start()
    try:
        await asyncio.to_thread(webhdfs.write, f"{base}/a.parquet", b"a")
        await asyncio.to_thread(webhdfs.write, f"{base}/b.parquet", b"b")
        await settle(nn, first)
    finally:
        await first.stop()
    saved = first.tailer.last_txid
    assert saved is not None and first.tailer.next_txid == saved + 1

    # Changes while nothing is watching.
    await asyncio.to_thread(webhdfs.write, f"{base}/c.parquet._COPYING_", b"c")
    await asyncio.to_thread(webhdfs.rename, f"{base}/c.parquet._COPYING_", f"{base}/c.parquet")
    await asyncio.to_thread(webhdfs.write, f"{base}/a.parquet", b"a2", overwrite=True)
    await asyncio.to_thread(webhdfs.delete, f"{base}/b.parquet")

    second = Watch(EditTailer(nn, saved + 1), FileDetector(nn, [f"{base}/**"])).start()
    try:
        await settle(nn, second)
    finally:
        await second.stop()
    end = second.tailer.last_txid
    assert end is not None

    assert first.paths() == [f"{base}/a.parquet", f"{base}/b.parquet"]
    assert second.paths() == [f"{base}/c.parquet", f"{base}/a.parquet"]

    # The two runs together hand out exactly what one uninterrupted run over the same range
    # does: nothing lost at the seam, nothing repeated.
    whole = Watch(EditTailer(nn, start), FileDetector(nn, [f"{base}/**"])).start()
    try:
        await whole.caught_up(end)
    finally:
        await whole.stop()
    joined = [b for b in first.batches + second.batches if b.txid <= end]
    assert joined == [b for b in whole.batches if b.txid <= end]
    txids = [b.txid for b in joined]
    assert txids == sorted(set(txids))


async def test_a_dead_address_first_in_the_list_is_skipped(stack):
    async with NameNodeClient(["127.0.0.1:9", stack.namenode], stack.hdfs_user,
                              connect_timeout=1, retry_for=10) as client:
        assert await client.get_current_txid() > 0
        assert client.active_address == stack.namenode
        assert client.failovers == 1


async def test_the_namenode_is_found_from_hadoop_conf_dir(stack):
    async with NameNodeClient.from_hadoop_conf(stack.hadoop_conf_dir, stack.hdfs_user,
                                               retry_for=10) as client:
        assert client.addresses == (stack.namenode,)
        status = await client.get_file_info("/")
        assert status is not None and status.is_dir and status.path == "/"
