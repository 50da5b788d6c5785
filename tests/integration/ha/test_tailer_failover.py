"""The edit-stream tailer across failovers of the real HA pair: what it hands out while the
active NameNode changes three times is exactly what one read of the same range afterwards hands
out (no transaction lost or repeated at any seam), every file closed meanwhile is in it once,
and its resume position is the transaction after the last one it handed out."""

from __future__ import annotations

import asyncio
import uuid

from hdfswatch.events import EventBatch, Gap, RenameEvent
from hdfswatch.namenode import NameNodeClient
from hdfswatch.tailer import EditTailer
from tests.integration.ha.conftest import HaStack, Writer


class Tail:
    """An `EditTailer` from `start` running in a task, collecting what it hands out."""

    def __init__(self, client: NameNodeClient, start: int) -> None:
        self.tailer = EditTailer(client, start)
        self.items: list[EventBatch | Gap] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.tailer:
            self.items.append(item)

    async def until(self, txid: int, within: float = 60) -> list[EventBatch | Gap]:
        """What it handed out up to `txid` (the last transactions may carry no event: the
        position says when they were read)."""
        async with asyncio.timeout(within):
            while self.tailer.last_txid is None or self.tailer.last_txid < txid:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        self.task.cancel()
        done, _ = await asyncio.wait([self.task], timeout=10)
        assert done, "the tailer went on polling after it was cancelled"
        return [i for i in self.items if not isinstance(i, EventBatch) or i.txid <= txid]


async def test_the_tailer_hands_out_every_transaction_once_across_failovers(
        healthy_pair: HaStack) -> None:
    ha = healthy_pair
    base = f"/tests/ha-tailer/{uuid.uuid4().hex[:8]}"
    web = ha.webhdfs()
    web.makedirs(base)
    async with NameNodeClient.from_hadoop_conf(ha.hadoop_conf_dir, ha.hdfs_user) as client:
        start = await client.get_current_txid() + 1
        tail = Tail(client, start)
        writer = Writer(web, base, lambda n: (f"f{n:04d}", b"x"), pause=0.05)
        writer.start()
        try:
            for _ in range(3):
                await asyncio.sleep(0.7)
                await asyncio.to_thread(ha.failover)
            await asyncio.sleep(0.7)
        finally:
            files = await asyncio.to_thread(writer.stop)
        end = await client.get_current_txid()
        items = await tail.until(end)
        assert client.active_changes == 3, ha.events
        assert tail.tailer.next_txid == tail.tailer.last_txid + 1  # type: ignore[operator]
        assert not [i for i in items if isinstance(i, Gap)], ha.events
        txids = [i.txid for i in items if isinstance(i, EventBatch)]
        assert txids == sorted(set(txids)), "a transaction handed out twice or out of order"
        # Each file came into place by one rename (its `put` retried a write, never a rename
        # that took place): one event each.
        placed = [e.dest_path for i in items if isinstance(i, EventBatch) for e in i.events
                  if isinstance(e, RenameEvent) and e.dest_path.startswith(base + "/")]
        assert sorted(placed) == sorted(f"{base}/f{n:04d}" for n in files), ha.events
        # One read of the whole range, after the failovers, hands out the same.
        assert await Tail(client, start).until(end) == items, ha.events
