"""Shards: how a group of daemons divides the files between its members.

A file belongs to one shard, `shard_of(file_id, shards)`: a stable hash of its HDFS inode id
(a file keeps it across renames) modulo the shard count. The shards are the partitions of the
ledger topic, so the count is fixed when the group's ledger topic is created. A member owns
the shards that Kafka's group protocol assigns it (the group subscribes to the ledger topic:
owning a partition is owning its shard), writes each with a transactional producer of its own
(`hdfs2kafka-<group>#<shard>`: the next owner's producer fences it) and restores a shard by
reading its partition.

`OwnedLedger` is the ledger of the shards a member owns, one `LedgerState` per shard, with the
questions the intake asks answered across them. Pure: no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.items import FilesRecorded, Item
from pipeline.ledger import FileEntry, LedgerState

_MASK = (1 << 64) - 1


def shard_of(file_id: int, shards: int) -> int:
    """The shard of a file: its inode id mixed (SplitMix64's finalizer, so that ids that come
    in steps, as a job's files and temporary directories alternate, still spread) modulo the
    shard count. Never change it: a group's ledger places each file's entry by it."""
    if shards <= 1:
        return 0
    z = (file_id + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return (z ^ (z >> 31)) % shards


def producer_name(group: str, shard: int, shards: int) -> str:
    """What names a shard's transactional producer (`pipeline.kafka.client.transactional_id`
    makes it `hdfs2kafka-<name>`): the group itself for a group of one shard (the id a single
    daemon always had), else `<group>#<shard>` ('#' is in no group name, so group "edge"'s
    shard 1 is not group "edge-1")."""
    return group if shards == 1 else f"{group}#{shard}"


class OwnedLedger:
    """The committed ledger of the shards this member owns (shard -> `LedgerState`).

    The edit stream is read from the lowest recorded txid of the owned shards: a shard whose
    txid is higher takes no file from an edit batch at or below its own txid (those files are
    in its ledger already, or done and compacted away). A shard with no txid yet (a group's
    first start, or a crash before the first start was recorded in every shard) starts with
    the others.
    """

    def __init__(self, states: Mapping[int, LedgerState], shards: int) -> None:
        if not states:
            raise ValueError("a member's ledger needs at least one shard")
        self.states = dict(states)
        self.shards = shards
        self.restored_txid = {s: st.stream_txid for s, st in self.states.items()}
        """Each shard's edit-stream txid as restored: what `takes` compares edits with."""

    def shard(self, file_id: int) -> int:
        return shard_of(file_id, self.shards)

    def owns(self, file_id: int) -> bool:
        return self.shard(file_id) in self.states

    def state_of(self, file_id: int) -> LedgerState:
        return self.states[self.shard(file_id)]

    def takes(self, file_id: int, txid: int | None) -> bool:
        """Whether the file's shard is ours and (for a file seen in the edit stream at `txid`)
        has not recorded that txid already."""
        shard = self.shard(file_id)
        if shard not in self.states:
            return False
        recorded = self.restored_txid[shard]
        return txid is None or recorded is None or txid > recorded

    def started(self, file_id: int, source: str) -> bool:
        """Whether `source` had started in the file's shard when the shard was restored."""
        return source in self.state_of(file_id).sources

    def unanchored(self) -> bool:
        """Whether an owned shard has no edit-stream txid yet."""
        return any(t is None for t in self.restored_txid.values())

    def misplaced(self, sample: int = 1000) -> list[tuple[int, int]]:
        """(shard, file id) of entries kept in a shard they do not hash to: the ledger topic's
        partitions changed after its entries were written (partitions added by hand, or a
        reshard not finished). Every whole entry is checked, and the first and last `sample`
        done files of each shard (a changed count moves nearly every file)."""
        out = []
        for s, st in self.states.items():
            done = st._done
            ids = [*st._full, *done._fid[:sample], *done._fid[-sample:], *done._recent]
            out += [(s, f) for f in ids if self.shard(f) != s]
        return out

    # ---- what LedgerState answers, across the owned shards

    @property
    def stream_txid(self) -> int | None:
        known = [t for t in self.restored_txid.values() if t is not None]
        return min(known) if known else None

    @property
    def sources(self) -> dict[str, Any]:
        """The sources started in every owned shard (a source missing from one of them gets its
        first-start treatment again; files the others know are skipped by their ledgers)."""
        names = set.intersection(*(set(st.sources) for st in self.states.values()))
        first = next(iter(self.states.values()))
        return {n: first.sources[n] for n in names}

    def get(self, file_id: int) -> FileEntry | None:
        if not self.owns(file_id):
            return None
        return self.state_of(file_id).get(file_id)

    def decide(self, file_id: int, size: int, mtime: int, fmt: str, listed: bool) -> tuple[str, str | None]:
        return self.state_of(file_id).decide(file_id, size, mtime, fmt, listed)

    def unfinished(self) -> list[FileEntry]:
        """The owned shards' unfinished files, in the order they became ready (an entry left in
        a shard it does not hash to is not ours to stream)."""
        todo = [e for s, st in self.states.items() for e in st.unfinished() if self.shard(e.file_id) == s]
        return sorted(todo, key=lambda e: (e.ready_txid or 0, e.ready_ms, e.file_id))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.states.values():
            for k, v in st.counts().items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def records_read(self) -> int:
        return sum(st.records_read for st in self.states.values())

    @property
    def mtime_floor(self) -> int:
        return min(st.mtime_floor for st in self.states.values())


class ShardQueues:
    """The committers' queues, one per owned shard, as one queue for the intake and the workers:
    an item goes to its file's shard; a `FilesRecorded` is split by shard, and the edit-stream
    txid and started sources it carries go to every shard (each records them in its ledger).
    Each shard's queue stays FIFO, so a file's entry still reaches its committer before its
    rows."""

    def __init__(self, queues: Mapping[int, asyncio.Queue[Item]], shards: int,
                 floors: Mapping[int, int | None] | None = None) -> None:
        self.queues = dict(queues)
        self.shards = shards
        self.floors = dict(floors or {})
        """Each shard's edit-stream txid as restored: a txid at or below it is not recorded
        again (the edit stream is read from the lowest shard's txid; a shard further on must
        not go back, or its next owner would read edits again whose done files are
        compacted away)."""

    async def put(self, item: Item) -> None:
        if isinstance(item, FilesRecorded):
            by_shard: dict[int, list[FileEntry]] = {}
            for e in item.entries:
                by_shard.setdefault(shard_of(e.file_id, self.shards), []).append(e)
            for shard, queue in self.queues.items():
                entries = by_shard.pop(shard, [])
                txid, floor = item.stream_txid, self.floors.get(shard)
                if txid is not None and floor is not None and txid <= floor:
                    txid = None
                if entries or txid is not None or item.sources_started:
                    await queue.put(FilesRecorded(entries=entries, stream_txid=txid,
                                                  sources_started=item.sources_started))
            if by_shard:
                raise KeyError(f"files of shards this member does not own: {sorted(by_shard)}")
            return
        await self.queues[shard_of(item.file_id, self.shards)].put(item)

    def qsize(self) -> int:
        return sum(q.qsize() for q in self.queues.values())

    def empty(self) -> bool:
        return all(q.empty() for q in self.queues.values())


# ---------------------------------------------------------------------- assignment


@dataclass(frozen=True)
class Member:
    """What a member tells the group when it joins (the group protocol's user data)."""

    member_id: str
    owned: tuple[int, ...] = ()
    """The shards it owned before this rebalance: kept where the balance allows."""


def assign(members: Iterable[Member], shards: int) -> dict[str, list[int]]:
    """Every shard to one member, balanced (counts differ by one at most) and sticky: a member
    keeps the shards it owned as far as its share allows, so a rebalance moves few shards and a
    half-done file mostly stays with the member streaming it. Deterministic: every member computing it gets the same answer."""
    ms = sorted(members, key=lambda m: m.member_id)
    if not ms:
        return {}
    base, extra = divmod(shards, len(ms))
    # The members that owned most keep the larger shares: fewer shards move.
    by_owned = sorted(ms, key=lambda m: (-len(m.owned), m.member_id))
    quota = {m.member_id: base + (1 if i < extra else 0) for i, m in enumerate(by_owned)}
    out: dict[str, list[int]] = {m.member_id: [] for m in ms}
    taken: set[int] = set()
    for m in by_owned:
        for s in sorted(set(m.owned)):
            if 0 <= s < shards and s not in taken and len(out[m.member_id]) < quota[m.member_id]:
                out[m.member_id].append(s)
                taken.add(s)
    free = [s for s in range(shards) if s not in taken]
    for m in ms:
        while len(out[m.member_id]) < quota[m.member_id] and free:
            out[m.member_id].append(free.pop(0))
    return {k: sorted(v) for k, v in out.items()}
