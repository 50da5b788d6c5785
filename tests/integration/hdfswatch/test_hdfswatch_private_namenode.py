"""Tests that disturb a NameNode (restart it, purge its edit log), on a private HDFS."""

from __future__ import annotations

import asyncio

import pytest
from hdfs import InsecureClient
from hdfs.util import HdfsError
from hdfswatch_support import Watch

from hdfswatch.detector import FileDetector
from hdfswatch.events import Gap
from hdfswatch.listing import ListingDetector
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer


async def write_retrying(client: InsecureClient, path: str, data: bytes) -> None:
    """A WebHDFS write that, like any HDFS writer, tries again when the DataNode serving it
    still holds a connection to the NameNode from before its restart."""
    for attempt in range(10):
        try:
            await asyncio.to_thread(client.write, path, data, overwrite=True)
            return
        except HdfsError:
            if attempt == 9:
                raise
            await asyncio.sleep(1)


@pytest.fixture
async def private_nn(private_hdfs):  # type: ignore[no-untyped-def]
    async with NameNodeClient([private_hdfs.namenode], private_hdfs.user,
                              retry_for=None) as client:
        yield client


@pytest.fixture
def private_webhdfs(private_hdfs) -> InsecureClient:  # type: ignore[no-untyped-def]
    return InsecureClient(private_hdfs.webhdfs_url, user=private_hdfs.user)


async def test_namenode_restart_while_tailing_loses_and_repeats_nothing(
        private_hdfs, private_nn, private_webhdfs, unique):
    base = f"/restart/{unique}"
    start = await private_nn.get_current_txid() + 1
    w = Watch(EditTailer(private_nn, start), FileDetector(private_nn, [f"{base}/**"])).start()
    try:
        for i in range(3):
            await asyncio.to_thread(private_webhdfs.write, f"{base}/before-{i}.parquet", b"b")
        await w.caught_up(await private_nn.get_current_txid())
        position = w.tailer.last_txid
        connects = private_nn.connects

        await asyncio.to_thread(private_hdfs.restart_namenode)

        for i in range(3):
            await write_retrying(private_webhdfs, f"{base}/after-{i}.parquet", b"a")
        await w.caught_up(await private_nn.get_current_txid(), within=60)
    finally:
        await w.stop()
    # (A write retried after the restart may legitimately close a file twice; the files
    # written before the restart are each seen exactly once.)
    paths = w.paths()
    assert sorted(set(paths)) == sorted([f"{base}/before-{i}.parquet" for i in range(3)]
                                        + [f"{base}/after-{i}.parquet" for i in range(3)])
    assert paths[:3] == [f"{base}/before-{i}.parquet" for i in range(3)]
    assert w.tailer.last_txid is not None and position is not None
    assert w.tailer.last_txid > position
    txids = [b.txid for b in w.batches]
    assert txids == sorted(set(txids)), "a transaction was handed out twice"
    assert w.gaps == []
    assert private_nn.connects > connects, "the tailer did not have to reconnect"

    # The restarted NameNode still serves the whole range: one uninterrupted read of it gives
    # the same batches as the run that lived through the restart.
    whole = Watch(EditTailer(private_nn, start), FileDetector(private_nn, [f"{base}/**"])).start()
    try:
        await whole.caught_up(w.tailer.last_txid)
    finally:
        await whole.stop()
    assert [b for b in whole.batches if b.txid <= w.tailer.last_txid] == w.batches


async def test_purged_edits_come_as_a_gap_and_a_listing_reconciles(
        private_nn, private_webhdfs, unique):
    base = f"/gap/{unique}"
    start = await private_nn.get_current_txid() + 1
    for i in range(3):
        await asyncio.to_thread(private_webhdfs.write, f"{base}/missed-{i}.avro", b"m")
    await asyncio.to_thread(private_webhdfs.write, f"{base}/_temporary/0/x.avro", b"t")

    # Checkpoint: roll the edit log, save the namespace (in safe mode); with one checkpoint
    # retained the NameNode then deletes the segments before it.
    await private_nn.roll_edits()
    assert await private_nn.set_safe_mode("enter")
    try:
        await private_nn.save_namespace()
    finally:
        assert not await private_nn.set_safe_mode("leave")
    await asyncio.to_thread(private_webhdfs.write, f"{base}/after-gap.avro", b"a")

    tailer = EditTailer(private_nn, start)
    detector = FileDetector(private_nn, [f"{base}/**"])
    first = await anext(tailer)
    assert isinstance(first, Gap)
    assert first.requested_txid == start
    assert first.first_available_txid > start
    assert tailer.last_txid == first.first_available_txid - 1

    # What follows the gap is still delivered.
    ready = []
    target = await private_nn.get_current_txid()
    while (tailer.last_txid or 0) < target:
        item = await anext(tailer)
        assert not isinstance(item, Gap)
        ready.extend(await detector.feed(item))
    assert [r.path for r in ready] == [f"{base}/after-gap.avro"]

    # The listing finds what the gap hid (and never the temporary file).
    listing = ListingDetector(private_nn, [f"{base}/**"])
    found = [r async for r in listing.scan()]
    assert sorted(r.path for r in found) == sorted(
        [f"{base}/missed-{i}.avro" for i in range(3)] + [f"{base}/after-gap.avro"])
    assert {r.reason for r in found} == {"listing"}
    assert all(r.txid is not None and r.txid >= target for r in found)
