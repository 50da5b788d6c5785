"""The committer: one transactional Kafka producer, rows and ledger records together, for one
shard (a member owning several shards runs one committer per shard, each with its producer).

Workers decode and encode in parallel and hand finished units here through a bounded queue
(the queue is the backpressure: a slow broker slows reading). The committer keeps one
transaction open at a time, takes items in queue order (so each file's rows keep file order)
and commits when the transaction holds `max_rows` rows or `max_bytes` bytes or has been open
`max_ms`, or as soon as it ends a file with nothing else waiting (a file's last rows are
readable a commit after they arrive, not `max_ms` later). Rows arrive as finished record
batches, built in the workers' threads (pipeline/kafka/layout.py): here they are only handed
to the producer. What a transaction carries, and what each failure calls for, is decided by the
`TransactionBuilder` (pipeline/kafka/transaction.py); this loop only sends, awaits, commits and
aborts, through aiokafka's producer API, each wait bounded (aiokafka retries a batch without end
while the broker is away, and a commit waits for those batches).

A transaction is committed only after the result of every send in it has been awaited (a
refused batch fails only its own future; a commit issued before would commit the transaction
without it). Any failure ends the committer with an error (after a bounded abort where one is
needed); the daemon then rebuilds the flow from the committed ledger with a new producer,
exactly as after a crash:
- `RecordsRefused`: the broker refused records of some files for good; the daemon quarantines
  those files before the others resume.
- `AccessDenied`: no ACL lets the daemon write a topic of the transaction; nothing is
  quarantined (an ACL may be added later): the daemon rebuilds the flow with backoff.
- `Fenced`: the producer's epoch was bumped, by another instance or by the coordinator aborting
  a transaction that outlived transaction.timeout.ms; the daemon tells which.
- `CommitterError`: anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NoReturn

import structlog

from pipeline.items import Item
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.client import bootstrap_of, kafka_identity
from pipeline.kafka.errors import AccessDenied, CommitterError, DeliveryTimeout
from pipeline.kafka.transaction import Committed, Run, Send, TransactionBuilder, describe

log = structlog.get_logger("hdfs2kafka.committer")


class Committer:
    def __init__(self, producer: Any, builder: TransactionBuilder, ledger_topic: str, *,
                 max_rows: int, max_bytes: int, max_ms: int, queue_size: int = 16,
                 wait_timeout_s: float = 60.0, ledger_partition: int = 0,
                 on_commit: Callable[[Committed], None] | None = None) -> None:
        self.producer = producer
        self.builder = builder
        self.ledger_topic = ledger_topic
        self.ledger_partition = ledger_partition
        """The shard's partition of the ledger topic: its ledger records go there."""
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_ms = max_ms
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.wait_timeout_s = wait_timeout_s
        self.on_commit = on_commit
        # The flow's topic partitions, shared with the workers that build batches.
        self._partitions = builder.layout.partitions
        self._futures: list[asyncio.Future[Any]] = []
        self._stopping = False

    def stop(self) -> None:
        """Commit what is open and return from run() (graceful stop)."""
        self._stopping = True

    async def run(self) -> None:
        b = self.builder
        while True:
            left = b.seconds_left(self.max_ms)
            if left is None and self._stopping:
                return
            try:
                async with asyncio.timeout(left if left is not None else 0.25):
                    item: Item | None = await self.queue.get()
            except TimeoutError:
                item = None
            if item is not None:
                await self._add(item)
            elif b.compaction_due():
                # Idle: a transaction of tombstones alone keeps the ledger bounded.
                await self._begin()
                await self._commit()
                continue
            if b.due(max_rows=self.max_rows, max_bytes=self.max_bytes, max_ms=self.max_ms,
                     draining=self._stopping and self.queue.empty(), idle=self.queue.empty()):
                await self._commit()

    # ---- one transaction

    async def _begin(self) -> None:
        if self.builder.open:
            return
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                await self.producer.begin_transaction()
        except Exception as exc:
            await self._fail(exc, "begin")
        self.builder.begin()

    async def _add(self, item: Item) -> None:
        await self._begin()
        topic = self.builder.topic_of(item)
        parts = await self._partitions_of(topic, item) if topic is not None else []
        try:
            runs = self.builder.add(item, parts)
        except CommitterError:
            await self._abort()
            raise
        for run in runs:
            await self._send(run)

    async def _partitions_of(self, topic: str, item: Any) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is not None:
            return parts
        # Once per topic and flow: a flow rebuilt after a failure sees a changed topic.
        try:
            # (aiokafka bounds this wait itself, by request_timeout_ms)
            parts = sorted(await self.producer.partitions_for(topic) or [0])
        except Exception as exc:
            # No metadata for the topic: missing for good only if the broker answers without it
            # (an unreachable broker gives the same error, and is no reason to quarantine).
            refused = "UnknownTopicOrPartitionError" not in kafka_errors.names(exc) \
                or await self._topic_missing(topic)
            await self._fail(exc, f"metadata of topic {topic!r}",
                             refused_by=(item.file_id, item.source) if refused else None)
        self._partitions[topic] = parts
        return parts

    async def _topic_missing(self, topic: str) -> bool:
        try:
            async with asyncio.timeout(min(10.0, self.wait_timeout_s)):
                cluster = await self.producer.client.fetch_all_metadata()
        except Exception:
            return False
        return bool(cluster.brokers()) and topic not in cluster.topics()

    async def _send(self, run: Run) -> None:
        if not run.batches:
            for i, value in enumerate(run.values):
                await self._send_one(run.topic, value, run.keys[i] if run.keys else None, run.partition)
            return
        try:
            for batch in run.batches:
                async with asyncio.timeout(self.wait_timeout_s):
                    fut = await self.producer.send_batch(batch, run.topic,
                                                         partition=run.partition)
                self._futures.append(fut)
                self.builder.sent(Send(run.topic, batch.record_count(), batch.size(), run.file_id,
                                       run.source))
        except Exception as exc:
            await self._fail(exc, "send", refused_by=(run.file_id or 0, run.source or ""))

    async def _send_one(self, topic: str, value: bytes | None, key: bytes | None,
                        partition: int | None) -> None:
        try:
            async with asyncio.timeout(self.wait_timeout_s):
                fut = await self.producer.send(topic, value, key=key, partition=partition)
        except Exception as exc:
            await self._fail(exc, f"send to {topic}")
        self._futures.append(fut)
        self.builder.sent(Send(topic, 1, len(key or b"") + len(value or b"")))

    async def _commit(self) -> None:
        for key, value in self.builder.ledger_records():
            await self._send_one(self.ledger_topic, value, key, self.ledger_partition)
        await self._await_sends()
        try:
            await kafka_errors.bounded(self.producer.commit_transaction(), self.wait_timeout_s)
        except TimeoutError:
            await self._fail(DeliveryTimeout(f"commit not confirmed within {self.wait_timeout_s:.0f}s"),
                             "commit")
        except Exception as exc:
            await self._fail(exc, "commit")
        self._futures = []
        committed = self.builder.committed()
        if self.on_commit:
            self.on_commit(committed)

    async def _await_sends(self) -> None:
        """Wait for every send of the transaction; raise what the failures call for."""
        futures = self._futures
        pending = set(futures)
        deadline = time.monotonic() + self.wait_timeout_s
        while pending:
            # The transaction may end in the background (fenced, or a partition refused by
            # AddPartitionsToTxn) and leave futures pending forever.
            background = kafka_errors.background_failure(self.producer)
            if background is not None:
                await self._fail(background, "send")
            left = deadline - time.monotonic()
            if left <= 0:
                await self._fail(DeliveryTimeout(
                    f"{len(pending)} record batches not delivered within {self.wait_timeout_s:.0f}s "
                    "(broker unreachable or stalled)"), "send")
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.5))
        failures = [(exc, send) for fut, send in zip(futures, self.builder.sends, strict=True)
                    if (exc := fut.exception()) is not None]
        decision = self.builder.after_sends(failures)
        if decision is not None:
            error, abort = decision
            # The refusal for want of an ACL, if any, names what to fix.
            causes = [exc for exc, _ in failures]
            cause = next((c for c in causes if kafka_errors.is_authorization(c)),
                         causes[0] if causes else None)
            await self._end(error, abort, cause)

    # ---- failure

    async def _fail(self, exc: BaseException, what: str, *,
                    refused_by: tuple[int, str] | None = None) -> NoReturn:
        error, abort = self.builder.failure(
            exc, what, refused_by=refused_by,
            background=kafka_errors.background_failure(self.producer), timeout_s=self.wait_timeout_s)
        await self._end(error, abort, exc)

    async def _end(self, error: CommitterError, abort: bool, cause: BaseException | None) -> NoReturn:
        if cause is not None and kafka_errors.is_authorization(cause) \
                and not isinstance(error, kafka_errors.Fenced):
            # No ACL lets us write a topic: not the file's fault and maybe added later. Nothing
            # is quarantined; the daemon rebuilds the flow with backoff and logs this line.
            error = AccessDenied(kafka_errors.acl_message(
                cause, kafka_identity(self.producer), bootstrap=bootstrap_of(self.producer)))
        if abort:
            await self._abort()
        else:
            self._forget()
        raise error from cause

    async def _abort(self) -> None:
        """Abort the open transaction, within a bound. If that fails too, the daemon's new
        producer aborts it (init_transactions ends whatever the old epoch left open)."""
        self._forget()
        try:
            await kafka_errors.bounded(self.producer.abort_transaction(), min(10.0, self.wait_timeout_s))
        except Exception as exc:
            log.info("abort not confirmed; the next producer ends the transaction", error=describe(exc))

    def _forget(self) -> None:
        # The sends of a transaction given up on fail in their turn (fenced, aborted): their
        # errors are the transaction's, already dealt with, not "never retrieved" noise.
        for fut in self._futures:
            fut.add_done_callback(_retrieve)
        self._futures = []
        self.builder.aborted()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
