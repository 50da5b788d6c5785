"""The serial committer: one transactional Kafka producer, rows and ledger records together.

Workers decode and encode in parallel and hand finished units here through a bounded queue
(the queue is the backpressure: a slow broker slows reading). The committer keeps one
transaction open at a time, appends units in queue order (so each file's rows keep file order),
and commits when the transaction holds `max_rows` rows or `max_bytes` bytes or has been open
`max_ms`. Each commit carries one ledger record per file touched, so rows and "file F is done up
to position P" become visible together or not at all.

Any failure of a transaction ends the committer with an error; the daemon then rebuilds the flow
from the committed ledger, exactly as after a crash. Being fenced by another instance with the
same transactional id raises `Fenced`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from pipeline.ledger import (
    ACTIVE,
    DONE,
    PENDING,
    QUARANTINED,
    FileEntry,
    LedgerState,
    advance,
    now_ms,
)

log = structlog.get_logger("hdfs2kafka.producer")


class CommitterError(Exception):
    """A transaction could not be committed; the flow restarts from the ledger."""


class Fenced(Exception):
    """Another instance with the same instance_id took over; this one must stop."""


# --------------------------------------------------------------------------- queue items


@dataclass
class UnitRecords:
    """A unit of work, encoded: the records of rows [start, end) of one file."""

    file_id: int
    source: str
    topic: str
    start: str
    end: str | None
    values: list[bytes]
    keys: list[bytes | None] | None
    headers: Sequence[Sequence[tuple[str, bytes]]] | None
    nbytes: int
    final: bool = False
    """The file's last unit: committing it marks the file done (`end` is then the end-of-file
    position, where an appended Avro file would resume, or None)."""
    total_rows: int | None = None
    ready_monotonic: float | None = None

    @property
    def rows(self) -> int:
        return len(self.values)


@dataclass
class FileFinished:
    """A file with no rows left to produce (an empty file)."""

    file_id: int
    source: str
    end: str | None = None
    ready_monotonic: float | None = None


@dataclass
class FileQuarantined:
    file_id: int
    source: str
    reason: str
    position: str | None
    dead_letter_topic: str | None = None


@dataclass
class FilesRecorded:
    """Files seen ready (not started yet) and the edit-stream txid they were seen up to."""

    entries: Sequence[FileEntry]
    stream_txid: int | None = None
    sources_started: Sequence[str] = ()


Item = UnitRecords | FileFinished | FileQuarantined | FilesRecorded


@dataclass
class CommitStats:
    """What the committer has done; read by metrics and /status."""

    transactions: int = 0
    aborted: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    files_done: dict[str, int] = field(default_factory=dict)
    files_quarantined: dict[str, int] = field(default_factory=dict)
    last_commit_unix: float = 0.0


# --------------------------------------------------------------------------- committer


class Committer:
    def __init__(self, producer: Any, state: LedgerState, ledger_topic: str, *,
                 max_rows: int, max_bytes: int, max_ms: int, retention_ms: int,
                 queue_size: int = 16,
                 on_commit: Callable[[list[Item]], None] | None = None) -> None:
        self.producer = producer
        self.state = state
        self.ledger_topic = ledger_topic
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_ms = max_ms
        self.retention_ms = retention_ms
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.stats = CommitStats()
        self.on_commit = on_commit
        self._partitions: dict[str, list[int]] = {}
        self._round_robin: dict[int, int] = {}
        self._last_watermark = 0.0
        self._stopping = False

    # ---- transaction state (reset per transaction)

    def _reset_txn(self) -> None:
        self._txn_open = False
        self._txn_started = 0.0
        self._txn_rows = 0
        self._txn_bytes = 0
        self._txn_ledger: dict[bytes, bytes | None] = {}
        self._txn_entries: dict[int, FileEntry] = {}
        self._txn_items: list[Item] = []
        self._txn_futures: list[asyncio.Future[Any]] = []
        self._txn_stream: int | None = None

    def stop(self) -> None:
        """Commit what is open and return from run() (graceful stop)."""
        self._stopping = True

    async def run(self) -> None:
        self._reset_txn()
        while True:
            timeout = None
            if self._txn_open:
                timeout = max(0.0, self._txn_started + self.max_ms / 1000 - time.monotonic())
            elif self._stopping:
                return
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout if timeout is not None else 0.25)
            except TimeoutError:
                item = None
            if item is not None:
                await self._add(item)
            elif not self._txn_open and self._watermark_due() and any(
                    self.state.compactable(self.state.new_floor(now_ms(), self.retention_ms))):
                # Idle: a transaction of tombstones alone keeps the ledger bounded.
                await self._begin()
                await self._commit()
                continue
            if self._txn_open and (
                self._txn_rows >= self.max_rows
                or self._txn_bytes >= self.max_bytes
                or time.monotonic() - self._txn_started >= self.max_ms / 1000
                or (self._stopping and self.queue.empty())
            ):
                await self._commit()

    # ---- adding items to the open transaction

    async def _begin(self) -> None:
        if self._txn_open:
            return
        try:
            await self.producer.begin_transaction()
        except Exception as exc:
            raise self._classify(exc, "begin") from exc
        self._txn_open = True
        self._txn_started = time.monotonic()

    def _entry(self, file_id: int) -> FileEntry:
        entry = self._txn_entries.get(file_id) or self.state.files.get(file_id)
        if entry is None:
            raise CommitterError(f"file {file_id} has no ledger entry")
        return entry

    def _put_entry(self, entry: FileEntry) -> None:
        self._txn_entries[entry.file_id] = entry
        self._txn_ledger[self.state.keys.file(entry.file_id)] = entry.to_json()

    async def _add(self, item: Item) -> None:
        await self._begin()
        self._txn_items.append(item)
        if isinstance(item, UnitRecords):
            await self._send_unit(item)
            entry = self._entry(item.file_id)
            # The unit's end is where a restart resumes; the last unit marks the file done in
            # the same transaction as its rows, so a crash can never replay it.
            self._put_entry(advance(entry, state=DONE if item.final else ACTIVE,
                                    next=item.end, rows=entry.rows + item.rows))
            self._txn_rows += item.rows
            self._txn_bytes += item.nbytes
        elif isinstance(item, FileFinished):
            entry = self._entry(item.file_id)
            self._put_entry(advance(entry, state=DONE, next=item.end or entry.next, reason=None))
        elif isinstance(item, FileQuarantined):
            entry = self._entry(item.file_id)
            self._put_entry(advance(entry, state=QUARANTINED, reason=item.reason,
                                    next=item.position or entry.next))
            if item.dead_letter_topic:
                payload = orjson.dumps({"source": item.source, "path": entry.path, "file_id": entry.file_id,
                                        "reason": item.reason, "position": item.position,
                                        "instance_id": self.state.keys.instance_id})
                fut = await self.producer.send(item.dead_letter_topic, payload,
                                               key=entry.path.encode())
                self._txn_futures.append(fut)
        elif isinstance(item, FilesRecorded):
            for e in item.entries:
                self._put_entry(advance(e, state=PENDING))
            for name in item.sources_started:
                self._txn_ledger[self.state.keys.source(name)] = orjson.dumps(
                    {"name": name, "started_ms": now_ms()})
            if item.stream_txid is not None:
                self._txn_stream = item.stream_txid
                self._txn_ledger[self.state.keys.stream()] = orjson.dumps({"txid": item.stream_txid})

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            await self.producer.client._wait_on_metadata(topic)
            parts = sorted(self.producer.client.cluster.partitions_for_topic(topic) or [0])
            self._partitions[topic] = parts
        return parts

    async def _send_unit(self, unit: UnitRecords) -> None:
        parts = await self._partitions_of(unit.topic)
        n = len(parts)
        if unit.keys is None:
            # Unkeyed rows: a whole unit goes to one partition, units of a file rotate over the
            # partitions, so each partition sees the file's rows in file order.
            rr = self._round_robin.get(unit.file_id, unit.file_id % n)
            self._round_robin[unit.file_id] = rr + 1
            await self._send_run(unit.topic, parts[rr % n], unit.values, None, unit.headers)
            return
        if n == 1:
            await self._send_run(unit.topic, parts[0], unit.values, unit.keys, unit.headers)
            return
        from aiokafka.partitioner import murmur2

        # Keyed rows go by key, as Kafka's default partitioner places them; rows with a null
        # key stay together on the unit's partition so they keep file order too.
        rr = self._round_robin.get(unit.file_id, unit.file_id % n)
        self._round_robin[unit.file_id] = rr + 1
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(unit.keys):
            p = (murmur2(k) & 0x7FFFFFFF) % n if k is not None else rr % n
            groups.setdefault(p, []).append(i)
        for p, idx in groups.items():
            await self._send_run(unit.topic, parts[p], [unit.values[i] for i in idx],
                                 [unit.keys[i] for i in idx],
                                 [unit.headers[i] for i in idx] if unit.headers else None)

    async def _send_run(self, topic: str, partition: int, values: list[bytes],
                        keys: Sequence[bytes | None] | None,
                        headers: Sequence[Sequence[tuple[str, bytes]]] | None) -> None:
        producer = self.producer
        batch = producer.create_batch()
        append = batch.append
        ts = None
        try:
            for i, v in enumerate(values):
                k = keys[i] if keys is not None else None
                h = list(headers[i]) if headers is not None else []
                if append(timestamp=ts, key=k, value=v, headers=h) is None:
                    batch.close()
                    self._txn_futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    append = batch.append
                    if append(timestamp=ts, key=k, value=v, headers=h) is None:
                        raise CommitterError(f"a record of {len(v)} bytes is larger than batch.size")
            if batch.record_count():
                batch.close()
                self._txn_futures.append(await producer.send_batch(batch, topic, partition=partition))
        except (CommitterError, Fenced):
            raise
        except Exception as exc:
            raise self._classify(exc, "send") from exc

    # ---- commit

    def _watermark_due(self) -> bool:
        interval = min(30.0, self.retention_ms / 4000)
        return time.monotonic() - self._last_watermark >= interval

    def _maybe_watermark(self) -> None:
        if not self._watermark_due():
            return
        self._last_watermark = time.monotonic()
        floor = self.state.new_floor(now_ms(), self.retention_ms)
        merged = dict(self.state.files)
        merged.update(self._txn_entries)
        stale = [e for e in merged.values() if e.finished and max(e.mtime, e.ready_ms) < floor]
        if floor != self.state.mtime_floor or stale:
            self._txn_ledger[self.state.keys.watermark()] = orjson.dumps(
                {"mtime_floor": floor, "updated_ms": now_ms()})
            for e in stale[:10_000]:
                self._txn_ledger[self.state.keys.file(e.file_id)] = None

    async def _commit(self) -> None:
        self._maybe_watermark()
        producer = self.producer
        try:
            for key, value in self._txn_ledger.items():
                self._txn_futures.append(await producer.send(self.ledger_topic, value, key=key, partition=0))
            await producer.commit_transaction()
            if self._txn_futures:
                await asyncio.gather(*self._txn_futures)
        except Exception as exc:
            err = self._classify(exc, "commit")
            self.stats.aborted += 1
            if not isinstance(err, Fenced):
                try:
                    await producer.abort_transaction()
                except Exception:  # the flow restarts from the ledger anyway
                    log.warning("abort after failed commit also failed", exc_info=True)
            raise err from exc
        for key, value in self._txn_ledger.items():
            self.state.apply(key, value)
        items = self._txn_items
        st = self.stats
        st.transactions += 1
        st.last_commit_unix = time.time()
        for item in items:
            if isinstance(item, UnitRecords):
                st.rows[item.source] = st.rows.get(item.source, 0) + item.rows
                st.bytes[item.source] = st.bytes.get(item.source, 0) + item.nbytes
                if item.final:
                    st.files_done[item.source] = st.files_done.get(item.source, 0) + 1
                    self._round_robin.pop(item.file_id, None)
            elif isinstance(item, FileFinished):
                st.files_done[item.source] = st.files_done.get(item.source, 0) + 1
                self._round_robin.pop(item.file_id, None)
            elif isinstance(item, FileQuarantined):
                st.files_quarantined[item.source] = st.files_quarantined.get(item.source, 0) + 1
        self._reset_txn()
        if self.on_commit:
            self.on_commit(items)

    def _fenced_in_background(self) -> bool:
        """Whether the producer's sender hit ProducerFenced (then a send or commit fails with
        some other error, such as 'not in transaction')."""
        from aiokafka.errors import ProducerFenced

        txn = getattr(self.producer, "_txn_manager", None)
        waiter = getattr(txn, "_transaction_waiter", None)
        if txn is None or waiter is None or not txn.is_fatal_error():
            return False
        return waiter.done() and not waiter.cancelled() and isinstance(waiter.exception(), ProducerFenced)

    def _classify(self, exc: Exception, what: str) -> Exception:
        from aiokafka.errors import ProducerFenced

        name = type(exc).__name__
        if isinstance(exc, ProducerFenced) or name in ("ProducerFenced", "InvalidProducerEpoch") \
                or self._fenced_in_background():
            return Fenced(f"producer fenced during {what}: another instance with the same "
                          f"instance_id ({self.state.keys.instance_id}) has started")
        return CommitterError(f"transaction {what} failed: {name}: {exc}")
