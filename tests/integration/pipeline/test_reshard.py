"""`hdfs2kafka ledger reshard`: a single daemon's one-partition ledger given four shards, then a
group of two daemons goes on from it: every row once, no file streamed again."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ROOT,
    DaemonProcess,
    consume,
    create_topic,
    free_port,
    ledger_entries,
    missing,
    put,
    sample_file,
    write_config,
)

from pipeline import config as config_mod
from pipeline.commands.ledger import COPYING, DONE, Record, Resharder, ShardRead, marker_key
from pipeline.config import KafkaConfig
from pipeline.kafka.client import committed_consumer, plain_producer
from pipeline.kafka.group import group_id
from pipeline.kafka.ledger_io import ensure_ledger_topic, read_every_shard, read_shards
from pipeline.ledger import FileEntry, Keys
from pipeline.shards import shard_of

HDFS2KAFKA = ROOT / ".venv" / "bin" / "hdfs2kafka"


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/reshard/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "group": f"edge-{unique}", "unique": unique}


def reshard(config: Path, shards: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HDFS2KAFKA), "ledger", "reshard", "--shards", str(shards),
                           "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)


async def test_a_single_daemons_ledger_resharded_to_four_then_a_group_of_two_goes_on_without_streaming_a_file_again(
        stack, webhdfs, names, tmp_path: Path):
    topic, base, group = names["topic"], names["dir"], names["group"]
    await create_topic(stack.kafka_bootstrap, topic, 3)
    source = {"name": "rows", "path": f"{base}/in/*", "topic": topic, "start_from": "earliest"}
    rows: dict[int, int] = {}
    paths: dict[int, str] = {}

    def write(f: int, n: int) -> None:
        suffix, data = sample_file(f, n)  # Parquet and Avro in turn
        paths[f] = f"part-{f}{suffix}"
        put(webhdfs, f"{base}/in/{paths[f]}", data)
        rows[f] = n

    # A daemon alone, no group and no shards: its group is its instance_id, its ledger one partition.
    single = write_config(tmp_path, stack, instance_id=group, ledger_topic=names["ledger"],
                          sources=[dict(source)], unit_rows=700)
    for f in range(3):
        write(f, 1500 + 200 * f)
    with DaemonProcess(single, tmp_path) as daemon:
        daemon.start()
        await asyncio.to_thread(daemon.wait_for_log, "ready: recovery done", 90)
        for f in range(3, 6):
            write(f, 1200 + 300 * f)
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=90)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert daemon.terminate() == 0
    kafka = KafkaConfig(stack.kafka_bootstrap, names["ledger"])
    before = await read_every_shard(kafka, group, compact_done=False)
    assert list(before) == [0]
    old = {e.file_id: e for e in before[0].files.values()}
    assert sorted(e.path.rsplit("/", 1)[1] for e in old.values()) == sorted(paths.values())
    assert {e.state for e in old.values()} == {"done"}
    assert {shard_of(fid, 4) for fid in old} != {0}, "every file in shard 0: nothing would move"

    # The same daemon with shards = 4 is refused, naming the command that reshards; it streams
    # nothing and exits with the config error's code (systemd does not restart it).
    four_dir = tmp_path / "four"
    four_dir.mkdir()
    four = write_config(four_dir, stack, instance_id=group, ledger_topic=names["ledger"],
                        sources=[dict(source)], unit_rows=700, shards=4)
    with DaemonProcess(four, four_dir) as refused:
        refused.start()
        await asyncio.to_thread(refused.wait_for_log, "hdfs2kafka ledger reshard --shards 4", 60)
        assert await asyncio.to_thread(refused.wait, 30) == 2, refused.log_text()[-3000:]
        assert "ready: recovery done" not in refused.log_text()

    # Reshard, then again: the second run finds nothing to do.
    done = await asyncio.to_thread(reshard, four, 4, "--records-per-transaction", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 -> 4 shards" in done.stdout, done.stdout
    again = await asyncio.to_thread(reshard, four, 4)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout, again.stdout

    # Each file's entry is in its shard's partition, unchanged; every shard has the edit-stream
    # position, the source started and the watermark.
    after = await read_every_shard(kafka, group, compact_done=False)
    assert sorted(after) == [0, 1, 2, 3]
    for s, st in after.items():
        assert {fid: e for fid, e in st.files.items()} == {
            fid: e for fid, e in old.items() if shard_of(fid, 4) == s}
        assert st.stream_txid == before[0].stream_txid
        assert st.sources == before[0].sources
        assert st.mtime_floor == before[0].mtime_floor

    # A group of two with shards = 4 goes on: new files land, no old file is streamed again.
    members = []
    for name in ("a", "b"):
        cfg = write_config(tmp_path, stack, instance_id=f"{name}-{names['unique']}",
                           ledger_topic=names["ledger"], sources=[dict(source)], unit_rows=700,
                           group=group, shards=4, group_session_timeout_s=6,
                           http_port=free_port())
        members.append(DaemonProcess(cfg, tmp_path))
    a, b = members
    with a, b:
        for m in members:
            m.start()
        for m in members:
            await asyncio.to_thread(m.wait_for_log, "ready: recovery done", 90)
        for f in range(6, 10):
            await asyncio.to_thread(write, f, 1000 + 100 * f)
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=120)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], group)
        assert {p: entries[p].state if p in entries else None for p in paths.values()} == {
            p: "done" for p in paths.values()}
        codes = await asyncio.gather(*(asyncio.to_thread(m.terminate, 90) for m in members))
        assert codes == [0, 0]
    logs: dict[str, Any] = {m.config.stem: m.log_text() for m in members}
    assert all("ledger read" in text for text in logs.values())


# --------------------------------------------------------------------------- interrupted, refused


async def one_shard_ledger(kafka: KafkaConfig, group: str, files: int) -> dict[int, FileEntry]:
    """A one-partition ledger of `files` entries (done, active, pending, quarantined) with its
    edit-stream txid, two sources and a watermark, as a daemon alone leaves it."""
    assert await ensure_ledger_topic(kafka) == 1
    keys = Keys(group)
    states = ("done", "active", "pending", "quarantined")
    entries = {fid: FileEntry(source="rows", path=f"/d/part-{fid}", file_id=fid, size=fid, mtime=fid,
                              state=states[fid % 4], next="rg:1/0" if fid % 4 == 1 else None,
                              rows=fid % 100, ready_txid=fid, ready_ms=fid,
                              reason="bad" if fid % 4 == 3 else None)
               for fid in range(20_000, 20_000 + files)}
    producer = plain_producer(kafka.bootstrap)
    await producer.start()
    try:
        for e in entries.values():
            await producer.send(kafka.ledger_topic, e.to_json(), key=keys.file(e.file_id), partition=0)
        for key, value in ((keys.stream(), b'{"txid": 777}'),
                           (keys.source("rows"), b'{"name": "rows", "started_ms": 5}'),
                           (keys.source("old"), b'{"name": "old", "started_ms": 6}'),
                           (keys.watermark(), b'{"mtime_floor": 99, "updated_ms": 7}')):
            await producer.send(kafka.ledger_topic, value, key=key, partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    return entries


class Interrupted(Exception):
    pass


class CutAfter(Resharder):
    """A reshard whose Kafka goes away after `cut` transactions."""

    def __init__(self, *args: Any, cut: int) -> None:
        super().__init__(*args)
        self.cut = cut

    async def _transaction(self, producer: Any, records: list[Record]) -> None:
        if self.cut == 0:
            raise Interrupted
        self.cut -= 1
        await super()._transaction(producer, records)


async def test_an_interrupted_reshard_run_again_finishes_and_nothing_is_lost_meanwhile(
        stack, names, tmp_path: Path):
    group = names["group"]
    cfg_path = write_config(tmp_path, stack, instance_id=group, ledger_topic=names["ledger"],
                            sources=[{"name": "rows", "path": "/d/*", "topic": names["topic"]}])
    cfg = config_mod.load(cfg_path)
    kafka = cfg.kafka
    entries = await one_shard_ledger(kafka, group, 300)

    # Cut after the marker and 3 transactions of 40 records: partitions added, some entries
    # copied, none tombstoned yet.
    with pytest.raises(Interrupted):
        await CutAfter(cfg, 5, 40, cut=4).run()
    half = await read_every_shard(kafka, group, compact_done=False)
    assert sorted(half) == [0, 1, 2, 3, 4]
    assert set(half[0].files) == set(entries)  # nothing lost meanwhile
    p0 = ShardRead(group)
    await read_shards(kafka, {0: p0})
    assert p0.marker is not None and p0.marker["state"] == COPYING and p0.marker["to"] == 5
    assert 0 < sum(len(st.files) for s, st in half.items() if s > 0) < len(entries)

    wrong = await asyncio.to_thread(reshard, cfg_path, 8)
    assert wrong.returncode == 2 and "run this again with --shards 5" in wrong.stderr, wrong.stderr

    # Run again: it sees the unfinished reshard and finishes it.
    done = await asyncio.to_thread(reshard, cfg_path, 5, "--records-per-transaction", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a reshard to 5 left unfinished: finishing it" in done.stdout, done.stdout
    after = await read_every_shard(kafka, group, compact_done=False)
    for s, st in after.items():
        assert dict(st.files) == {fid: e for fid, e in entries.items() if shard_of(fid, 5) == s}
        assert st.stream_txid == 777 and st.mtime_floor == 99
        assert sorted(st.sources) == ["old", "rows"]
    p0 = ShardRead(group)
    await read_shards(kafka, {0: p0})
    assert p0.marker is not None and p0.marker["state"] == DONE
    assert p0.marker["entries"] == {str(s): len(after[s].files) for s in range(5)}
    # Every copy written once, though two runs wrote them.
    counts = await record_counts(kafka, group, 5)
    assert {k: n for k, n in counts.items() if n > 1} == {}
    again = await asyncio.to_thread(reshard, cfg_path, 5)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    other = await asyncio.to_thread(reshard, cfg_path, 8)
    assert other.returncode == 2 and "has 5 partitions" in other.stderr, other.stdout + other.stderr
    assert "--shards 5" not in other.stderr  # finished: nothing to tell it to finish


async def record_counts(kafka: KafkaConfig, group: str, shards: int) -> dict[tuple[int, bytes], int]:
    """How many committed records each (partition, key) of the group has in shards 1 and up."""
    from collections import Counter

    from aiokafka import TopicPartition

    consumer = committed_consumer(kafka.bootstrap)
    await consumer.start()
    counts: Counter[tuple[int, bytes]] = Counter()
    try:
        tps = [TopicPartition(kafka.ledger_topic, s) for s in range(1, shards)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    if m.key.startswith(f"{group}|".encode()):
                        counts[(tp.partition, m.key)] += 1
    finally:
        await consumer.stop()
    return dict(counts)


async def test_reshard_refuses_while_daemons_of_the_group_are_members(stack, names, tmp_path: Path):
    group = names["group"]
    cfg_path = write_config(tmp_path, stack, instance_id=group, ledger_topic=names["ledger"],
                            sources=[{"name": "rows", "path": "/d/*", "topic": names["topic"]}])
    kafka = config_mod.load(cfg_path).kafka
    await one_shard_ledger(kafka, group, 10)
    from aiokafka import AIOKafkaConsumer

    member = AIOKafkaConsumer(kafka.ledger_topic, bootstrap_servers=kafka.bootstrap,
                              group_id=group_id(group), client_id="a-daemon")
    await member.start()
    try:
        for _ in range(150):  # joined: the partition assigned
            if member.assignment():
                break
            await asyncio.sleep(0.2)
        refused = await asyncio.to_thread(reshard, cfg_path, 4)
    finally:
        await member.stop()
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"consumer group 'hdfs2kafka-{group}'" in refused.stderr
    assert "a-daemon" in refused.stderr or "member" in refused.stderr
    # Nothing changed: still one partition.
    assert list(await read_every_shard(kafka, group)) == [0]
    p0 = ShardRead(group)
    await read_shards(kafka, {0: p0})
    assert p0.marker is None and len(p0.files) == 10
    assert marker_key(p0.keys) == f"{group}|reshard".encode()
