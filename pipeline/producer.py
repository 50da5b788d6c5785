"""The serial committer: one transactional Kafka producer, rows and ledger records together.

Workers decode and encode in parallel and hand finished units here through a bounded queue
(the queue is the backpressure: a slow broker slows reading). The committer keeps one
transaction open at a time, appends units in queue order (so each file's rows keep file order),
and commits when the transaction holds `max_rows` rows or `max_bytes` bytes or has been open
`max_ms`. Each commit carries one ledger record per file touched, so rows and "file F is done up
to position P" become visible together or not at all.

A transaction is committed only after the result of every send in it has been awaited; what
the daemon does about each error is the table in pipeline/kafka/errors.py. Any failure of a
transaction ends the committer with an error (after a bounded abort); the daemon then rebuilds
the flow from the committed ledger with a new producer, exactly as after a crash:
- `RecordsRefused`: the broker refused records of some files for good; the daemon quarantines
  those files before the others resume.
- `Fenced`: the producer's epoch was bumped, by another instance or by the coordinator aborting
  a transaction that outlived transaction.timeout.ms; the daemon tells which.
- `CommitterError`: anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from pipeline.items import FileFinished, FileQuarantined, FilesRecorded, Item, UnitRecords
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.errors import Action, DeliveryTimeout
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


class RecordsRefused(CommitterError):
    """The broker refused records for good: `files` maps each file id to (source, reason), to be
    quarantined at its last committed position; the transaction was aborted."""

    def __init__(self, message: str, files: dict[int, tuple[str, str]]) -> None:
        super().__init__(message)
        self.files = files


class Fenced(CommitterError):
    """The producer's epoch was bumped: another instance with the same instance_id started, or
    the coordinator aborted a transaction that ran past transaction.timeout.ms. The daemon reads
    the ledger's owner record to tell which."""


@dataclass(frozen=True)
class Send:
    """What one awaited send carried, to know whom an error concerns."""

    topic: str
    records: int
    nbytes: int
    file_id: int | None = None  # rows of this file; None for the ledger and dead-letter records
    source: str | None = None


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
                 queue_size: int = 16, wait_timeout_s: float = 60.0,
                 batch_limits: dict[str, int] | None = None,
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
        # Bounds on every wait on the producer: aiokafka retries a batch without end while the
        # broker is away, and a commit waits for those batches.
        self.wait_timeout_s = wait_timeout_s
        # Per topic, the largest record batch the broker accepted (learned from refusals; kept
        # by the daemon across flows).
        self.batch_limits = batch_limits if batch_limits is not None else {}
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
        self._txn_sends: list[tuple[asyncio.Future[Any], Send]] = []
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
            await asyncio.wait_for(self.producer.begin_transaction(), self.wait_timeout_s)
        except Exception as exc:
            raise await self._fail(exc, "begin") from exc
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
            entry = item.entry or self._entry(item.file_id)
            self._put_entry(advance(entry, state=QUARANTINED, reason=item.reason,
                                    next=item.position or entry.next))
            if item.dead_letter_topic:
                payload = orjson.dumps({"source": item.source, "path": entry.path, "file_id": entry.file_id,
                                        "reason": item.reason, "position": item.position,
                                        "instance_id": self.state.keys.instance_id})
                await self._send_one(item.dead_letter_topic, payload, entry.path.encode(), None)
        elif isinstance(item, FilesRecorded):
            for e in item.entries:
                known = self._txn_entries.get(e.file_id) or self.state.files.get(e.file_id)
                if known is not None and not known.finished:
                    self._put_entry(advance(known, path=e.path))
                else:
                    self._put_entry(e if e.finished else advance(e, state=PENDING))
            for name in item.sources_started:
                self._txn_ledger[self.state.keys.source(name)] = orjson.dumps(
                    {"name": name, "started_ms": now_ms()})
            if item.stream_txid is not None:
                self._txn_stream = item.stream_txid
                self._txn_ledger[self.state.keys.stream()] = orjson.dumps({"txid": item.stream_txid})

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            # Once per topic and flow: a flow rebuilt after a failure sees a changed topic.
            parts = sorted(await self.producer.partitions_for(topic) or [0])
            self._partitions[topic] = parts
        return parts

    async def _send_unit(self, unit: UnitRecords) -> None:
        try:
            parts = await self._partitions_of(unit.topic)
        except Exception as exc:
            # No metadata for the topic: missing for good only if the broker answers without it
            # (an unreachable broker gives the same error, and is no reason to quarantine).
            refused = "UnknownTopicOrPartitionError" not in kafka_errors.names(exc) \
                or await self._topic_missing(unit.topic)
            raise await self._fail(exc, f"metadata of topic {unit.topic!r}",
                                   refused_by=(unit.file_id, unit.source) if refused else None) from exc
        n = len(parts)
        if unit.keys is None:
            # Unkeyed rows: a whole unit goes to one partition, units of a file rotate over the
            # partitions, so each partition sees the file's rows in file order.
            rr = self._round_robin.get(unit.file_id, unit.file_id % n)
            self._round_robin[unit.file_id] = rr + 1
            await self._send_run(unit, parts[rr % n], unit.values, None, unit.headers)
            return
        if n == 1:
            await self._send_run(unit, parts[0], unit.values, unit.keys, unit.headers)
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
            await self._send_run(unit, parts[p], [unit.values[i] for i in idx],
                                 [unit.keys[i] for i in idx],
                                 [unit.headers[i] for i in idx] if unit.headers else None)

    async def _topic_missing(self, topic: str) -> bool:
        try:
            cluster = await asyncio.wait_for(self.producer.client.fetch_all_metadata(),
                                             min(10.0, self.wait_timeout_s))
        except Exception:
            return False
        return bool(cluster.brokers()) and topic not in cluster.topics()

    async def _send_run(self, unit: UnitRecords, partition: int, values: list[bytes],
                        keys: Sequence[bytes | None] | None,
                        headers: Sequence[Sequence[tuple[str, bytes]]] | None) -> None:
        producer = self.producer
        topic = unit.topic
        # Batches stay under what the topic's broker accepted before (max.message.bytes).
        limit = self.batch_limits.get(topic)
        batch = producer.create_batch()
        append = batch.append
        records = size = 0
        ts = None
        try:
            for i, v in enumerate(values):
                k = keys[i] if keys is not None else None
                h = list(headers[i]) if headers is not None else []
                meta = None
                if limit is None or records == 0 or size + len(v) + 64 <= limit:
                    meta = append(timestamp=ts, key=k, value=v, headers=h)
                if meta is None:
                    await self._submit(batch, unit, partition, records, size)
                    batch = producer.create_batch()
                    append = batch.append
                    records = size = 0
                    meta = append(timestamp=ts, key=k, value=v, headers=h)
                    if meta is None:
                        raise RecordsRefused(
                            f"a record of {len(v)} bytes is larger than a record batch may be",
                            {unit.file_id: (unit.source, f"at {unit.start}: a row encodes to {len(v)} "
                                            "bytes, more than a Kafka record batch may hold here")})
                records += 1
                size += meta.size
            if records:
                await self._submit(batch, unit, partition, records, size)
        except CommitterError:
            raise
        except Exception as exc:
            raise await self._fail(exc, "send", refused_by=(unit.file_id, unit.source)) from exc

    async def _submit(self, batch: Any, unit: UnitRecords, partition: int, records: int,
                      size: int) -> None:
        batch.close()
        fut = await asyncio.wait_for(
            self.producer.send_batch(batch, unit.topic, partition=partition), self.wait_timeout_s)
        self._txn_sends.append((fut, Send(unit.topic, records, size, unit.file_id, unit.source)))

    async def _send_one(self, topic: str, value: bytes | None, key: bytes, partition: int | None) -> None:
        try:
            fut = await asyncio.wait_for(
                self.producer.send(topic, value, key=key, partition=partition), self.wait_timeout_s)
        except Exception as exc:
            raise await self._fail(exc, f"send to {topic}") from exc
        self._txn_sends.append((fut, Send(topic, 1, len(key) + len(value or b""))))

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
        for key, value in self._txn_ledger.items():
            await self._send_one(self.ledger_topic, value, key, 0)
        # Every send's result first: a refused batch fails only its own future, and a commit
        # issued before would commit the transaction without it.
        await self._await_sends()
        try:
            await kafka_errors.bounded(self.producer.commit_transaction(), self.wait_timeout_s)
        except TimeoutError:
            raise await self._fail(DeliveryTimeout(
                f"commit not confirmed within {self.wait_timeout_s:.0f}s"), "commit") from None
        except Exception as exc:
            raise await self._fail(exc, "commit", refused_topics=True) from exc
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

    async def _await_sends(self) -> None:
        """Wait for every send of the transaction; raise what the failures call for."""
        sends = self._txn_sends
        pending = {fut for fut, _ in sends}
        deadline = time.monotonic() + self.wait_timeout_s
        while pending:
            # The transaction may end in the background (fenced, or a partition refused by
            # AddPartitionsToTxn) and leave futures pending forever.
            background = kafka_errors.background_failure(self.producer)
            if background is not None:
                raise await self._fail(background, "send", refused_topics=True)
            left = deadline - time.monotonic()
            if left <= 0:
                raise await self._fail(DeliveryTimeout(
                    f"{len(pending)} record batches not delivered within "
                    f"{self.wait_timeout_s:.0f}s (broker unreachable or stalled)"), "send")
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.5))
        refused: dict[int, tuple[str, str]] = {}
        failure: tuple[BaseException, Action] | None = None
        for fut, send in sends:
            exc = fut.exception()
            if exc is None:
                continue
            action = kafka_errors.classify(exc, rows=send.file_id is not None, records=send.records)
            if action is Action.SMALLER_BATCHES:
                limit = max(1024, send.nbytes // 2)
                if limit < self.batch_limits.get(send.topic, 1 << 62):
                    self.batch_limits[send.topic] = limit
                    log.warning("broker refused a record batch as too large; sending smaller "
                                "batches to this topic", topic=send.topic, batch_bytes=send.nbytes,
                                records=send.records, new_limit_bytes=limit)
            elif action is Action.QUARANTINE_FILE and send.file_id is not None:
                refused.setdefault(send.file_id, (send.source or "", _refusal(exc, send)))
            if failure is None or action is Action.CHECK_OWNER:
                failure = (exc, action)
        if failure is None:
            return
        exc, action = failure
        if action is Action.CHECK_OWNER:
            raise await self._fail(exc, "send")
        await self._abort()
        if refused or action is Action.SMALLER_BATCHES:
            raise RecordsRefused(f"the broker refused records: {_describe(exc)}", refused) from exc
        raise CommitterError(f"transaction send failed: {_describe(exc)}") from exc

    async def _abort(self) -> None:
        """Abort the open transaction, within a bound. If that fails too, the daemon's new
        producer aborts it (init_transactions ends whatever the old epoch left open)."""
        self.stats.aborted += 1
        try:
            await kafka_errors.bounded(self.producer.abort_transaction(), min(10.0, self.wait_timeout_s))
        except Exception as exc:
            log.info("abort not confirmed; the next producer ends the transaction",
                     error=_describe(exc))

    async def _fail(self, exc: BaseException, what: str,
                    refused_by: tuple[int, str] | None = None,
                    refused_topics: bool = False) -> CommitterError:
        """The error to end the committer with, after aborting where that is needed.

        `refused_by`: the file whose send raised; `refused_topics`: a topic authorization error
        names topics, and the files of this transaction sent to them are the ones refused."""
        background = kafka_errors.background_failure(self.producer)
        if kafka_errors.is_fenced(exc) or (background is not None and kafka_errors.is_fenced(background)):
            # No abort: the epoch is gone; the next producer ends the transaction.
            self.stats.aborted += 1
            return Fenced(f"producer fenced during {what} ({_describe(exc)}): another instance "
                          f"with instance_id {self.state.keys.instance_id!r} started, or the "
                          "transaction ran past transaction.timeout.ms")
        if isinstance(exc, asyncio.TimeoutError):
            exc = DeliveryTimeout(f"{what} did not finish within {self.wait_timeout_s:.0f}s")
        action = kafka_errors.classify(exc, rows=refused_by is not None)
        await self._abort()
        if refused_by is not None and action in (Action.QUARANTINE_FILE, Action.SMALLER_BATCHES):
            file_id, source = refused_by
            return RecordsRefused(f"{what} refused: {_describe(exc)}",
                                  {file_id: (source, f"Kafka refused its records: {_describe(exc)}")})
        if refused_topics and "TopicAuthorizationFailedError" in kafka_errors.names(exc):
            topics = exc.args[0] if exc.args and isinstance(exc.args[0], set | frozenset) else set()
            files = {s.file_id: (s.source or "", f"Kafka refused its records: {_describe(exc)}")
                     for _, s in self._txn_sends if s.file_id is not None and s.topic in topics}
            if files:
                return RecordsRefused(f"{what} refused: {_describe(exc)}", files)
        return CommitterError(f"transaction {what} failed: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def _refusal(exc: BaseException, send: Send) -> str:
    return (f"Kafka refused its records for topic {send.topic!r} ({_describe(exc)}; a batch of "
            f"{send.records} record(s), {send.nbytes} bytes)")
