"""How a flow's rows become Kafka record batches: the producer's batch size and compression,
each topic's partitions, and the batch limits learned from the broker's refusals.

A unit's rows are turned into finished record batches (Kafka's v2 format, built in C by
`pipeline.kafka.batches`) in the worker's thread, right after they are encoded, so that the
event loop only hands batches to the producer: no step per row on the loop. Keyed rows are
placed there too, by murmur2 of the key as Kafka's default partitioner does, which needs the
topic's partition count: the worker asks for it once per topic and flow (`learn`) before it
reads. A unit built for a layout that has changed since (a topic with more partitions, a
smaller batch limit) is built again by the committer; a unit built before the partition count
was known is built there in the first place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from pipeline.items import Batches, UnitRecords
from pipeline.kafka.batches import build_batches

log = structlog.get_logger("hdfs2kafka.layout")

DEFAULT_BATCH_BYTES = 512 * 1024


class RecordLayout:
    """The record batches of one flow. `batch_limits` (topic -> the largest batch the broker
    accepted) is shared with the transaction builder and outlives the flow; `partitions` is
    filled by the committer and by `learn`."""

    def __init__(self, *, max_batch_bytes: int = DEFAULT_BATCH_BYTES, compression: str | None = None,
                 transactional: bool = True, batch_limits: dict[str, int] | None = None,
                 partitions_for: Callable[[str], Awaitable[list[int] | set[int] | None]] | None = None,
                 ) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.compression = compression
        self.transactional = transactional
        self.batch_limits = batch_limits if batch_limits is not None else {}
        self.partitions: dict[str, list[int]] = {}
        self._partitions_for = partitions_for
        self._failed: dict[str, float] = {}  # topic -> loop time before which not to ask again

    def limit(self, topic: str) -> int:
        """The largest record batch to build for `topic`."""
        return min(self.batch_limits.get(topic, self.max_batch_bytes), self.max_batch_bytes)

    async def learn(self, topic: str) -> None:
        """Know `topic`'s partitions before its rows are built (a no-op once known). A failure
        is left to the committer, which asks again and decides what it means."""
        if topic in self.partitions or self._partitions_for is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._failed.get(topic, 0.0):
            return  # asked a moment ago in vain: not another 10 s wait for every file opened
        try:
            async with asyncio.timeout(10.0):
                parts = await self._partitions_for(topic)
        except Exception as exc:
            self._failed[topic] = loop.time() + 30.0
            log.debug("partitions not known yet; the committer builds the batches",
                      topic=topic, error=f"{type(exc).__name__}: {exc}")
            return
        if parts:
            self.partitions.setdefault(topic, sorted(parts))

    def build(self, unit: UnitRecords, partitions: int, null_index: int = 0) -> Batches:
        """The unit's rows as record batches for a topic of `partitions` partitions: keyed rows
        at their key's partition index, rows with no key at `null_index`."""
        keyed = unit.keys is not None
        n = max(1, partitions) if keyed else 1
        limit = self.limit(unit.topic)
        batches = build_batches(
            unit.values, unit.keys, unit.headers, partitions=n, null_index=null_index % n,
            max_batch_bytes=limit, compression=self.compression, transactional=self.transactional)
        return Batches(partitions=n, limit=limit, keyed=keyed, batches=batches)

    def prebuild(self, unit: UnitRecords, spread: int) -> None:
        """Build the unit's batches now (in a worker thread) if its layout is known, and drop
        its rows. `spread` places a keyed unit's rows that have no key: one partition per unit,
        rotating over the units of a file."""
        parts = self.partitions.get(unit.topic)
        if unit.keys is not None and parts is None:
            return
        n = len(parts) if parts else 1
        unit.batches = self.build(unit, n, spread % n)
        unit.values, unit.keys, unit.headers = [], None, None

    def current(self, unit: UnitRecords, partitions: int) -> bool:
        """Whether the unit's batches were built for the layout as it is now."""
        b = unit.batches
        return b is not None and b.limit == self.limit(unit.topic) and (
            not b.keyed or b.partitions == partitions)
