"""The transaction builder: what one Kafka transaction carries, decided with plain values.

Records in, decisions out, like `LedgerState`. The committer loop (pipeline/kafka/committer.py)
feeds it the flow's items and Kafka's answers and does what it says; the builder does no I/O,
so every step that exactly once rests on can be tested without a broker:

    begin()                      a transaction opens
    add(item, partitions)     -> the runs of records to send: one file's rows for one partition,
                                 in file order (a file's units rotate over the partitions; keyed
                                 rows go where Kafka's default partitioner puts them)
    due(...)                     whether the open transaction should commit now
    ledger_records()          -> the ledger records that commit with the rows: one per file
                                 touched, the edit-stream txid, started sources, and now and
                                 then the watermark with the tombstones of old finished files
    after_sends(failures)     -> what the awaited sends' failures call for (None: commit)
    failure(exc, ...)         -> the error that ends the committer for a failed call
    committed()               -> applies the ledger records to the LedgerState, counts them
    aborted()                    forgets the open transaction; the LedgerState is untouched

A crash anywhere before `committed()` leaves the LedgerState, and the ledger topic it mirrors,
as they were: the next life resumes every file where its last committed unit ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from pipeline.items import FileFinished, FileQuarantined, FilesRecorded, Item, UnitRecords
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.errors import Action, CommitterError, DeliveryTimeout, Fenced, RecordsRefused
from pipeline.kafka.layout import RecordLayout
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

log = structlog.get_logger("hdfs2kafka.transaction")

Headers = Sequence[Sequence[tuple[str, bytes]]]
MAX_TOMBSTONES = 10_000
"""Tombstones one watermark carries at most (the rest go with the next ones)."""


@dataclass(frozen=True)
class Run:
    """Records to send to one partition (None: Kafka's choice), in order: one file's rows as
    finished record batches (`batches`), or single records (`values`, `keys`: a dead-letter
    record)."""

    topic: str
    partition: int | None
    values: Sequence[bytes] = ()
    keys: Sequence[bytes | None] | None = None
    file_id: int | None = None
    """The file whose rows these are; None for dead-letter records."""
    source: str | None = None
    start: str | None = None
    batches: Sequence[Any] = ()
    """`pipeline.kafka.batches.PrebuiltBatch`es, each handed to the producer as it is."""


@dataclass(frozen=True)
class Send:
    """What one awaited send carried, to know whom an error concerns."""

    topic: str
    records: int
    nbytes: int
    file_id: int | None = None  # rows of this file; None for the ledger and dead-letter records
    source: str | None = None


@dataclass
class Committed:
    """What one committed transaction did, counted once for /status and /metrics."""

    items: list[Item]
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    files_done: dict[str, int] = field(default_factory=dict)
    files_quarantined: dict[str, int] = field(default_factory=dict)
    finished: list[tuple[str, float | None]] = field(default_factory=list)
    """(source, ready_monotonic) of each file done: for the end-to-end latency."""
    recorded: list[FileEntry] = field(default_factory=list)
    """Files newly recorded as pending: for the detection counter and latency."""


@dataclass
class CommitStats:
    """Totals over the daemon's life; read by /status."""

    transactions: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    files_done: dict[str, int] = field(default_factory=dict)
    files_quarantined: dict[str, int] = field(default_factory=dict)
    last_commit_unix: float = 0.0

    def add(self, c: Committed) -> None:
        self.transactions += 1
        self.last_commit_unix = time.time()
        for mine, theirs in ((self.rows, c.rows), (self.bytes, c.bytes),
                             (self.files_done, c.files_done),
                             (self.files_quarantined, c.files_quarantined)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v


def _count(d: dict[str, int], key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


class TransactionBuilder:
    """The open transaction of one flow, over the flow's `LedgerState`.

    `batch_limits` (topic -> largest record batch the broker accepted, learned from refusals) is
    kept by the daemon across flows. `wall_ms` and `monotonic` are the clocks (injectable)."""

    def __init__(self, state: LedgerState, *, retention_ms: int,
                 batch_limits: dict[str, int] | None = None, layout: RecordLayout | None = None,
                 wall_ms: Callable[[], int] = now_ms,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.retention_ms = retention_ms
        self.batch_limits = batch_limits if batch_limits is not None else {}
        self.layout = layout or RecordLayout(batch_limits=self.batch_limits)
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._round_robin: dict[int, int] = {}
        self._last_watermark: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.open = False
        self.started = 0.0
        self.rows = 0
        self.nbytes = 0
        self.items: list[Item] = []
        self.ends_file = False
        self.sends: list[Send] = []
        self._ledger: dict[bytes, bytes | None] = {}
        self._entries: dict[int, FileEntry] = {}

    # ---- building

    def begin(self) -> None:
        if not self.open:
            self.open = True
            self.started = self._monotonic()

    def topic_of(self, item: Item) -> str | None:
        """The topic whose partitions `add` needs for this item."""
        return item.topic if isinstance(item, UnitRecords) else None

    def entry(self, file_id: int) -> FileEntry:
        """The file's ledger entry as this transaction leaves it."""
        entry = self._entries.get(file_id) or self.state.get(file_id)
        if entry is None:
            raise CommitterError(f"file {file_id} has no ledger entry")
        return entry

    def _put(self, entry: FileEntry) -> None:
        self._entries[entry.file_id] = entry
        self._ledger[self.state.keys.file(entry.file_id)] = entry.to_json()

    def add(self, item: Item, partitions: Sequence[int] = (), *,
            dead_letter_topic: str | None = None) -> list[Run]:
        """Take `item` into the open transaction; returns the runs of records to send for it.
        `partitions`: the item's topic's partitions (for rows)."""
        self.begin()
        self.items.append(item)
        if isinstance(item, UnitRecords):
            runs = self._runs(item, sorted(partitions) or [0])
            entry = self.entry(item.file_id)
            # The unit's end is where a restart resumes; the last unit marks the file done in
            # the same transaction as its rows, so a crash can never replay it.
            self._put(advance(entry, state=DONE if item.final else ACTIVE, next=item.end,
                              rows=entry.rows + item.rows))
            self.rows += item.rows
            self.nbytes += item.nbytes
            self.ends_file = self.ends_file or item.final
            return runs
        if isinstance(item, FileFinished):
            self.ends_file = True
            entry = self.entry(item.file_id)
            self._put(advance(entry, state=DONE, next=item.end or entry.next, reason=None))
            return []
        if isinstance(item, FileQuarantined):
            self.ends_file = True
            entry = item.entry or self.entry(item.file_id)
            self._put(advance(entry, state=QUARANTINED, reason=item.reason,
                              next=item.position or entry.next))
            if not item.dead_letter_topic:
                return []
            payload = orjson.dumps({"source": item.source, "path": entry.path, "file_id": entry.file_id,
                                    "reason": item.reason, "position": item.position,
                                    "instance_id": self.state.keys.instance_id})
            return [Run(item.dead_letter_topic, None, [payload], [entry.path.encode()])]
        assert isinstance(item, FilesRecorded)
        for e in item.entries:
            known = self._entries.get(e.file_id) or self.state.get(e.file_id)
            if known is not None and not known.finished:
                self._put(advance(known, path=e.path))  # renamed while it streams
            else:
                self._put(e if e.finished else advance(e, state=PENDING))
        for name in item.sources_started:
            self._ledger[self.state.keys.source(name)] = orjson.dumps(
                {"name": name, "started_ms": self._wall_ms()})
        if item.stream_txid is not None:
            self._ledger[self.state.keys.stream()] = orjson.dumps({"txid": item.stream_txid})
        return []

    def _runs(self, unit: UnitRecords, parts: list[int]) -> list[Run]:
        n = len(parts)
        # A file's units rotate over the partitions, each unit (its null-key rows) on one, so
        # that each partition sees the file's rows in file order.
        rr = self._round_robin.get(unit.file_id, unit.file_id % n)
        self._round_robin[unit.file_id] = rr + 1
        if not self.layout.current(unit, n):
            if unit.batches is not None:
                # Built in the worker for a layout that changed since (more partitions, a lower
                # batch limit learned from a refusal): its rows are gone, the flow starts over.
                raise CommitterError(f"the rows of file {unit.file_id} at {unit.start} were built "
                                     f"for another layout of topic {unit.topic!r}")
            unit.batches = self.layout.build(unit, n, rr)
        built = unit.batches
        assert built is not None
        by_index: dict[int, list[Any]] = {}
        for index, batch in built.batches:
            by_index.setdefault(index, []).append(batch)
        # Unkeyed rows are all at index 0 and take the unit's partition; keyed rows went where
        # Kafka's default partitioner puts them.
        return [Run(unit.topic, parts[index] if built.keyed else parts[rr % n], file_id=unit.file_id,
                    source=unit.source, start=unit.start, batches=batches)
                for index, batches in by_index.items()]

    def sent(self, send: Send) -> None:
        """A send of this transaction went out (its result is awaited before the commit)."""
        self.sends.append(send)

    # ---- when to commit

    def due(self, *, max_rows: int, max_bytes: int, max_ms: int, draining: bool = False,
            idle: bool = False) -> bool:
        """Commit when the transaction is full (rows, bytes), old (`max_ms`), the flow drains, or
        it ends a file and nothing else is waiting (`idle`): a file's last rows are then visible
        at once instead of after `max_ms`, while a busy flow still fills its transactions."""
        return self.open and (self.rows >= max_rows or self.nbytes >= max_bytes
                              or self._monotonic() - self.started >= max_ms / 1000 or draining
                              or (idle and self.ends_file))

    def seconds_left(self, max_ms: int) -> float | None:
        """How long the open transaction may still wait for items (None: none is open)."""
        if not self.open:
            return None
        return max(0.0, self.started + max_ms / 1000 - self._monotonic())

    def _watermark_due(self) -> bool:
        interval = min(30.0, self.retention_ms / 4000)
        return self._last_watermark is None or self._monotonic() - self._last_watermark >= interval

    def compaction_due(self) -> bool:
        """Idle and finished entries to drop: a transaction of tombstones alone is due."""
        return (not self.open and self._watermark_due() and bool(
            self.state.stale(self.state.new_floor(self._wall_ms(), self.retention_ms), limit=1)))

    # ---- committing

    def ledger_records(self) -> list[tuple[bytes, bytes | None]]:
        """The ledger records to send (partition 0 of the ledger topic) before the commit."""
        if self._watermark_due():
            self._last_watermark = self._monotonic()
            floor = self.state.new_floor(self._wall_ms(), self.retention_ms)
            # The ledger's entries as this transaction leaves them: no copy of the state (it
            # can hold millions of done files), its stale ids less those this one changes.
            mine = self._entries
            stale = [f for f in self.state.stale(floor, limit=MAX_TOMBSTONES + len(mine)) if f not in mine]
            stale.extend(e.file_id for e in mine.values()
                         if e.finished and max(e.mtime, e.ready_ms) < floor)
            if floor != self.state.mtime_floor or stale:
                self._ledger[self.state.keys.watermark()] = orjson.dumps(
                    {"mtime_floor": floor, "updated_ms": self._wall_ms()})
                for fid in stale[:MAX_TOMBSTONES]:
                    self._ledger[self.state.keys.file(fid)] = None
        return list(self._ledger.items())

    def committed(self) -> Committed:
        """The transaction committed: the LedgerState takes its records; what it did, counted."""
        for key, value in self._ledger.items():
            self.state.apply(key, value)
        c = Committed(items=self.items)
        for item in self.items:
            if isinstance(item, UnitRecords):
                _count(c.rows, item.source, item.rows)
                _count(c.bytes, item.source, item.nbytes)
                if item.final:
                    _count(c.files_done, item.source)
                    c.finished.append((item.source, item.ready_monotonic))
                    self._round_robin.pop(item.file_id, None)
            elif isinstance(item, FileFinished):
                _count(c.files_done, item.source)
                c.finished.append((item.source, item.ready_monotonic))
                self._round_robin.pop(item.file_id, None)
            elif isinstance(item, FileQuarantined):
                _count(c.files_quarantined, item.source)
            elif isinstance(item, FilesRecorded):
                c.recorded.extend(e for e in item.entries if e.state == PENDING)
        self._reset()
        return c

    def aborted(self) -> None:
        """The transaction is gone (aborted, fenced or crashed): nothing of it counts."""
        self._reset()

    # ---- what failures call for

    def after_sends(self, failures: Sequence[tuple[BaseException, Send]]) -> tuple[CommitterError, bool] | None:
        """What the failed sends of the transaction call for: None (commit), or the error to end
        the committer with and whether the transaction must be aborted first. A batch refused
        as too large lowers that topic's batch limit (the files are sent again in smaller
        batches); a single refused record quarantines its file."""
        refused: dict[int, tuple[str, str]] = {}
        failure: tuple[BaseException, Action] | None = None
        for exc, send in failures:
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
            return None
        exc, action = failure
        if action is Action.CHECK_OWNER:
            return self.failure(exc, "send")
        if refused or action is Action.SMALLER_BATCHES:
            return RecordsRefused(f"the broker refused records: {describe(exc)}", refused), True
        return CommitterError(f"transaction send failed: {describe(exc)}"), True

    def failure(self, exc: BaseException, what: str, *, refused_by: tuple[int, str] | None = None,
                background: BaseException | None = None,
                timeout_s: float | None = None) -> tuple[CommitterError, bool]:
        """The error to end the committer with after `what` raised `exc`, and whether to abort.

        `refused_by`: the file whose send raised; `background`: the error that ended the
        transaction in the background, if any. (A topic without an ACL refuses no file: the
        ACL may come, so the transaction is retried.)"""
        if kafka_errors.is_fenced(exc) or (background is not None and kafka_errors.is_fenced(background)):
            # No abort: the epoch is gone; the next producer ends the transaction.
            return Fenced(f"producer fenced during {what} ({describe(exc)}): another member of "
                          f"group {self.state.keys.instance_id!r} took over the shard, or the "
                          "transaction ran past transaction.timeout.ms"), False
        if isinstance(exc, TimeoutError):
            bound = f" within {timeout_s:.0f}s" if timeout_s is not None else " in time"
            exc = DeliveryTimeout(f"{what} did not finish{bound}")
        action = kafka_errors.classify(exc, rows=refused_by is not None)
        if refused_by is not None and action in (Action.QUARANTINE_FILE, Action.SMALLER_BATCHES):
            file_id, source = refused_by
            return RecordsRefused(f"{what} refused: {describe(exc)}",
                                  {file_id: (source, f"Kafka refused its records: {describe(exc)}")}), True
        return CommitterError(f"transaction {what} failed: {describe(exc)}"), True


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


def _refusal(exc: BaseException, send: Send) -> str:
    return (f"Kafka refused its records for topic {send.topic!r} ({describe(exc)}; a batch of "
            f"{send.records} record(s), {send.nbytes} bytes)")
