"""The worker pool: each worker takes a ready file, decodes it unit by unit and encodes the rows.

A file is handled by one worker from start to end, so its units reach the committer in file
order; files are spread over the workers, taken from the ready files of each source in turn
(`WorkQueue`), so a source with a backlog does not hold up another's new file. Decoding and
encoding run in a thread pool, off the event loop (pyarrow, polars and the readers release the GIL in their heavy parts). The
committer's bounded queue is the backpressure. The number of workers changes live.

Errors are sorted by their kind (hdfswatch.errors) and follow the source's policy (after Kafka
Connect's KIP-298): a permanent error (a corrupt, changed or deleted file, rows that cannot be
encoded) quarantines the file at once (`tolerance = "all"`) or stops its source
(`tolerance = "none"`); a transient one, and any error of no known kind, is retried with backoff,
resuming from the last unit handed over, until `retry_timeout_ms`, and then treated the same
way; a fatal one ends the worker and, through `WorkerPool.failure`, the daemon. The rest keeps
streaming.

A file renamed while it is read is the same file (its inode id survives renames): the worker
finds it among its source's files and goes on from the last unit handed over, and the ledger
entry takes the new path. One moved out of its source counts as deleted (`hdfs dfs -rm` moves
files to the trash by renaming them): it is quarantined like a file deleted while read.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from hdfsread.base import FileMoved, RandomAccessFile
from hdfsread.stack import ReadStack
from hdfswatch.backoff import Backoff
from hdfswatch.errors import AccessError, FatalError, PermanentError, TransientError
from pipeline.config import SourceConfig
from pipeline.items import (
    FileFinished,
    FileQuarantined,
    FilesRecorded,
    FileWork,
    ItemSink,
    UnitRecords,
)
from pipeline.kafka.layout import RecordLayout
from pipeline.ledger import FileEntry, advance
from pipeline.positions import (
    AvroPosition,
    ParquetPosition,
    Position,
    PositionError,
    parse_position,
)
from pipeline.records import make_unit_encoder
from pipeline.secret import scrub

log = structlog.get_logger("hdfs2kafka.workers")

STEP_ASIDE_AFTER_S = 0.5
"""How long a file streams, once taken, before it may make way for another source's file."""

MAX_MOVES = 20
"""Renames of one file a worker follows before it gives up on it (a file moved back and forth
without end)."""


class SourceTurns:
    """Ready files by source, given out a source at a time in turn and in order within each
    source: the storage of `WorkQueue` (asyncio.Queue keeps its items in `_queue` and only
    appends, pops from the left and takes the length)."""

    def __init__(self) -> None:
        self._by_source: dict[str, deque[FileWork]] = {}
        self._turns: deque[str] = deque()  # sources with files waiting, the next one first
        self._len = 0

    def append(self, work: FileWork) -> None:
        waiting = self._by_source.get(work.entry.source)
        if waiting is None:
            waiting = self._by_source[work.entry.source] = deque()
            self._turns.append(work.entry.source)
        waiting.append(work)
        self._len += 1

    def popleft(self) -> FileWork:
        source = self._turns.popleft()  # IndexError when empty, as a deque's
        waiting = self._by_source[source]
        work = waiting.popleft()
        if waiting:
            self._turns.append(source)
        else:
            del self._by_source[source]
        self._len -= 1
        return work

    def append_first(self, work: FileWork) -> None:
        """Back at the head of its source's files, its source's turn after the others'."""
        source = work.entry.source
        waiting = self._by_source.setdefault(source, deque())
        waiting.appendleft(work)
        if source in self._turns:
            self._turns.remove(source)
        self._turns.append(source)
        self._len += 1

    def waiting_besides(self, source: str, eligible: Callable[[str], bool]) -> bool:
        return any(s != source and eligible(s) for s in self._turns)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[FileWork]:
        for source in self._turns:
            yield from self._by_source[source]


class WorkQueue(asyncio.Queue[FileWork]):
    """The ready files waiting for a worker: FIFO within a source, sources served in turn.

    With one queue in arrival order, a file renamed into a quiet source behind another source's
    backlog of large files waited for the whole backlog (43 s behind 12 million rows, measured);
    taken in turn, it waits at most until a worker finishes the file it is streaming."""

    _queue: SourceTurns

    def _init(self, maxsize: int) -> None:
        self._queue = SourceTurns()

    def waiting_besides(self, source: str, eligible: Callable[[str], bool] = lambda s: True) -> bool:
        """A file of another source than `source`, one that `eligible` accepts, waits."""
        return self._queue.waiting_besides(source, eligible)

    def put_back(self, work: FileWork) -> None:
        """A file a worker set aside at a unit boundary, to resume at `work.start`: first of its
        source's files again, after the other sources' turns. It came out of this queue, so it
        goes back even when the queue is full."""
        self._queue.append_first(work)
        # what put_nowait does after storing an item (asyncio.Queue keeps the same names
        # from Python 3.8 to 3.13)
        self._unfinished_tasks += 1  # type: ignore[attr-defined]
        self._finished.clear()  # type: ignore[attr-defined]
        self._wakeup_next(self._getters)  # type: ignore[attr-defined]


@dataclass
class Progress:
    """A file in flight, as /status shows it."""

    source: str
    path: str
    file_id: int
    rows_done: int = 0
    rows_total: int | None = None
    position: str | None = None
    worker: int | None = None
    size: int = 0
    handed_final: bool = False
    """Its last unit is with the committer: nothing of it is left to read."""


class PermanentFileError(PermanentError):
    """A file that will not go to Kafka by retrying (a row too large for a Kafka record)."""


class SourceStopped(Exception):
    """The source's error policy says stop (tolerance = none)."""


class FileOpener:
    """Opens a ready file for reading and builds its encoders; runs in a worker thread.

    Files are opened through the daemon's read stack (`hdfsread`: native or WebHDFS, built
    once and shared by every file), checked against the ledger entry's size and inode id;
    `open_file` replaces it (tests).
    """

    def __init__(self, stack: ReadStack | None, schema_registry: str | None = None,
                 max_record_bytes: int = 1_000_000,
                 open_file: Callable[[FileEntry], RandomAccessFile] | None = None, *,
                 registry_ca_file: str | None = None) -> None:
        if stack is None and open_file is None:
            raise ValueError("FileOpener needs a read stack or open_file")
        self.stack = stack
        self.schema_registry = schema_registry
        self.registry_ca_file = registry_ca_file
        self.max_record_bytes = max_record_bytes
        self.open_file = open_file or self._open_from_stack

    def _open_from_stack(self, entry: FileEntry) -> RandomAccessFile:
        assert self.stack is not None
        return self.stack.open(entry.path, expected_size=entry.size,
                                expected_file_id=entry.file_id)

    def open(self, work: FileWork, source: SourceConfig,
             unit_rows: Callable[[], int]) -> Iterator[UnitRecords | FileFinished]:
        """The file's remaining units, encoded; a FileFinished closes a file whose last unit
        was already committed (or that has no rows). The file is opened at the first unit
        asked for, and closed when the units end."""
        f = self.open_file(work.entry)
        try:
            yield from self._units(work, source, unit_rows, f)
        finally:
            f.close()

    def _units(self, work: FileWork, source: SourceConfig, unit_rows: Callable[[], int],
               f: RandomAccessFile) -> Iterator[UnitRecords | FileFinished]:
        from pipeline.encoders.errors import EncodeError
        from pipeline.readers import BadPosition, open_reader

        entry = work.entry
        reader = open_reader(f, source.format)  # type: ignore[arg-type]  # validated by config
        encode = make_unit_encoder(source, reader, self.schema_registry, self.registry_ca_file)
        try:
            start = parse_position(work.start) if work.start else None
        except PositionError as exc:
            raise BadPosition(entry.path, work.start, str(exc)) from None
        # An Avro position inside a block (left by a cut unit) resumes at the block and passes
        # over the records already committed.
        skip = 0
        if isinstance(start, AvroPosition) and start.record:
            skip, start = start.record, AvroPosition(start.block_offset)
        total = getattr(reader, "total_rows", None)
        final_end = str(AvroPosition(entry.size)) if reader.format == "avro" else None
        last = finished = False
        # Units are re-cut when a speed limit changes, so that one unit stays a fraction of a
        # second of the limit (bounded bursts) and an unlimited source gets large units.
        size = unit_rows()
        units = reader.units(start=start, max_rows=size)
        while True:
            unit = next(units, None)
            if unit is None:
                break
            try:
                values, keys, headers = encode(unit, entry.path)
            except (PermanentError, TransientError, FatalError):
                raise
            except (ValueError, TypeError, ArithmeticError) as exc:
                # Encoders are pure functions of the rows: the same rows fail the same way on
                # every try (a value with no form in the value format, a corrupt Avro record).
                raise EncodeError(f"{entry.path} at {unit.start}: cannot encode the rows: "
                                  f"{type(exc).__name__}: {exc}") from exc
            if values:
                biggest = max(map(len, values))
                if biggest > self.max_record_bytes:
                    raise PermanentFileError(
                        f"{entry.path} at {unit.start}: a row encodes to {biggest} bytes, more than "
                        f"the {self.max_record_bytes} a Kafka record may have here (max.request.size)")
            last = unit.end is None
            first = 0
            if skip:
                first = min(skip, len(values))
                skip -= first
            # A unit larger than the limits allow in one go (an Avro block is never split by
            # the reader) is cut into pieces, each with a position it can resume at.
            step = max(1, unit_rows())
            for lo in range(first, len(values), step):
                hi = min(lo + step, len(values))
                piece_last = last and hi == len(values)
                finished = finished or piece_last
                end = final_end if piece_last else (
                    str(_offset(unit.start, hi)) if hi < len(values) else str(unit.end))
                v = values[lo:hi]
                k = keys[lo:hi] if keys is not None else None
                nbytes = sum(map(len, v)) + (sum(len(x) for x in k if x is not None) if k else 0)
                yield UnitRecords(
                    file_id=entry.file_id, source=source.name, topic=source.topic,
                    start=str(_offset(unit.start, lo)), end=end, values=v, keys=k,
                    headers=headers[lo:hi] if headers is not None else None, nbytes=nbytes,
                    final=piece_last, total_rows=total, ready_monotonic=work.ready_monotonic,
                )
            wanted = unit_rows()
            if not last and wanted != size:
                size = wanted
                units = reader.units(start=unit.end, max_rows=size)
        if not finished:
            yield FileFinished(file_id=entry.file_id, source=source.name, end=final_end,
                               ready_monotonic=work.ready_monotonic)


def _offset(pos: Position, rows: int) -> Position:
    """The position `rows` rows after the start of a unit that begins at `pos`."""
    if isinstance(pos, ParquetPosition):
        return ParquetPosition(pos.row_group, pos.row_offset + rows)
    return AvroPosition(pos.block_offset, pos.record + rows)


class WorkerPool:
    def __init__(self, *, queue: asyncio.Queue[FileWork], out: ItemSink,
                 sources: Callable[[str], SourceConfig | None], opener: FileOpener,
                 unit_rows: int, workers: int,
                 limiter: Any = None, is_paused: Callable[[str], bool] | None = None,
                 on_source_failed: Callable[[str, str], None] | None = None,
                 locate: Callable[[FileEntry, SourceConfig], Awaitable[str | None]] | None = None,
                 on_read_error: Callable[[str, str], None] | None = None,
                 layout: RecordLayout | None = None) -> None:
        self.layout = layout
        """Builds each unit's record batches in the worker's thread (None: the committer does)."""
        self.on_read_error = on_read_error
        """Told (source, message) of each failed read that is retried, for /status."""
        self.queue = queue
        self.out = out
        self.sources = sources
        self.opener = opener
        self.unit_rows = unit_rows
        self.limiter = limiter
        self.is_paused = is_paused or (lambda name: False)
        self.on_source_failed = on_source_failed
        # Where a file renamed while it is read is now (None: deleted or out of its source).
        self.locate = locate or _nowhere
        self.in_flight: dict[int, Progress] = {}
        self.busy = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._target = workers
        self._next_id = 0
        self._executor = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="decode")
        self._parked: list[FileWork] = []
        self._failure: BaseException | None = None

    @property
    def size(self) -> int:
        return self._target

    def start(self) -> None:
        self.resize(self._target)

    def resize(self, workers: int) -> None:
        """Change the number of workers live. A worker removed finishes its current unit first."""
        self._target = max(1, workers)
        self._executor._max_workers = max(self._executor._max_workers, self._target)
        alive = {i: t for i, t in self._tasks.items() if not t.done()}
        self._tasks = alive
        while len(self._tasks) < self._target:
            wid = self._next_id
            self._next_id += 1
            self._tasks[wid] = asyncio.create_task(self._worker(wid), name=f"worker-{wid}")

    def _should_retire(self, wid: int) -> bool:
        alive = sorted(i for i, t in self._tasks.items() if not t.done())
        return len(alive) > self._target and wid in alive[self._target:]

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def failure(self) -> BaseException | None:
        """The error a worker ended with (one that ends the daemon: a `FatalError`, or a bug),
        or None."""
        if self._failure is not None:
            return self._failure
        for t in self._tasks.values():
            if t.done() and not t.cancelled() and t.exception() is not None:
                return t.exception()
        return None

    def _unit_rows(self, source: str) -> int:
        if self.limiter is None:
            return self.unit_rows
        return int(self.limiter.unit_rows_hint(source, self.unit_rows))

    def parked(self) -> list[FileWork]:
        return list(self._parked)

    def take_parked(self, source: str) -> list[FileWork]:
        """Remove and return the files set aside for `source` (stopped by its error policy)."""
        taken = [w for w in self._parked if w.entry.source == source]
        self._parked = [w for w in self._parked if w.entry.source != source]
        return taken

    async def _worker(self, wid: int) -> None:
        while True:
            if self._should_retire(wid):
                self._tasks.pop(wid, None)
                return
            work = await self.queue.get()
            source = self.sources(work.entry.source)
            if source is None:
                log.info("source removed; file left for when it returns", source=work.entry.source,
                         path=work.entry.path)
                continue
            self.busy += 1
            prog = Progress(source=source.name, path=work.entry.path, file_id=work.entry.file_id,
                            rows_done=work.entry.rows, position=work.start, worker=wid,
                            size=work.entry.size)
            self.in_flight[work.entry.file_id] = prog
            try:
                rest = await self._process(work, source, prog)
                if rest is not None:
                    self.queue.put_back(rest)  # type: ignore[attr-defined]
            except SourceStopped as exc:
                # Set aside at the last unit handed over: what was handed is committed, and
                # streaming it again when the source resumes would repeat its rows.
                self._parked.append(_rest(work, prog, path=prog.path))
                if self.on_source_failed:
                    self.on_source_failed(source.name, str(exc))
            except FatalError as exc:
                log.error("worker stopped: the daemon cannot go on", source=source.name,
                          path=work.entry.path, error=f"{type(exc).__name__}: {exc}")
                self._failure = self._failure or exc
                raise
            finally:
                self.busy -= 1
                self.in_flight.pop(work.entry.file_id, None)

    async def _process(self, work: FileWork, source: SourceConfig, prog: Progress) -> FileWork | None:
        """Stream the file to its end or its quarantine; or, set aside at a unit boundary for
        another source's file, return what is left of it."""
        policy = source.errors
        deadline = time.monotonic() + policy.retry_timeout_ms / 1000
        cap = policy.retry_max_delay_ms / 1000
        backoff = Backoff(min(0.2, cap), cap)
        moves = 0
        while True:
            bound = log.bind(source=source.name, path=work.entry.path, file_id=work.entry.file_id)
            transient = access = False
            try:
                return await self._stream(work, source, prog)
            except FileMoved as exc:
                if prog.handed_final:
                    return None  # renamed after its last row was read: nothing is left to follow
                try:
                    found = await self.locate(work.entry, source)
                except (asyncio.CancelledError, FatalError):
                    raise
                except Exception as lexc:  # the listing failed: that may pass
                    reason = f"{exc}; looking for it: {type(lexc).__name__}: {lexc}"
                    transient = True
                else:
                    if found is not None and moves < MAX_MOVES:
                        moves += 1
                        bound.info("file moved while read; following it", new_path=found,
                                   position=prog.position)
                        work = self._moved(work, found, prog)
                        # The ledger entry takes the new path before the file's next rows, so
                        # a restart opens it where it is.
                        await self.out.put(FilesRecorded(entries=[work.entry]))
                        continue
                    reason = (f"{work.entry.path}: moved {moves} times while it was read; given up"
                              if found is not None else
                              f"{work.entry.path}: moved out of the source while it was read "
                              f"(inode {work.entry.file_id}); taken as deleted, as `hdfs dfs -rm` "
                              "moves files to the trash")
            except PermanentFileError as exc:
                reason = str(exc)
            except (asyncio.CancelledError, FatalError):
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                # Unknown errors are retried like transient ones, until the retry timeout; who we
                # are or what we may do (a ticket, a permission, a certificate) without end.
                transient = not isinstance(exc, PermanentError)
                access = isinstance(exc, AccessError)
            if access or (transient and time.monotonic() < deadline):
                delay = backoff.next_delay()
                (bound.error if access else bound.warning)(
                    "read failed; retrying" + (" until access is granted (never quarantined)"
                                               if access else ""),
                    error=scrub(reason), retry_in_s=round(delay, 2), position=prog.position)
                if self.on_read_error is not None:
                    self.on_read_error(source.name, f"read failed, retrying: {work.entry.path}: "
                                                    f"{scrub(reason)}")
                await asyncio.sleep(delay)
                work = _rest(work, prog)
                continue
            if policy.tolerance == "none":
                bound.error("file failed; stopping source (errors.tolerance = none)", reason=reason,
                            position=prog.position)
                raise SourceStopped(f"{work.entry.path}: {reason}")
            reason = scrub(reason)  # it goes into the ledger and the dead-letter topic
            bound.error("file quarantined", reason=reason, position=prog.position)
            await self.out.put(FileQuarantined(file_id=work.entry.file_id, source=source.name,
                                               reason=reason, position=prog.position,
                                               dead_letter_topic=policy.dead_letter_topic))
            return None

    @staticmethod
    def _moved(work: FileWork, path: str, prog: Progress) -> FileWork:
        """The same file at its new path, to be read on from the last unit handed over."""
        prog.path = path
        return _rest(work, prog, path=path)

    def _step_aside(self, source: str, streaming_since: float) -> bool:
        """Every worker is busy, and a file waits of another source that no worker streams and
        that is not paused: the file being streamed makes way at this unit boundary
        (WorkQueue), so that a source's backlog of large files delays another source's new
        file by a unit, not by a whole file. Only after the file has streamed STEP_ASIDE_AFTER_S
        since it was taken: two sources with backlogs and fewer workers than sources take
        turns of that length, not of one unit each (each turn reopens the file and, inside a
        Parquet row group, decodes the group's rows before the position again)."""
        queue = self.queue
        if not (isinstance(queue, WorkQueue) and self.busy >= len(self._tasks)
                and time.monotonic() - streaming_since >= STEP_ASIDE_AFTER_S):
            return False
        streamed = {p.source for p in self.in_flight.values()}
        return queue.waiting_besides(
            source, lambda s: s not in streamed and not self.is_paused(s))

    async def _stream(self, work: FileWork, source: SourceConfig, prog: Progress) -> FileWork | None:
        loop = asyncio.get_running_loop()
        taken = time.monotonic()
        layout = self.layout
        if layout is not None:
            await layout.learn(source.topic)
        units = await loop.run_in_executor(
            self._executor, lambda: self.opener.open(work, source, lambda: self._unit_rows(source.name)))
        sentinel = object()
        spread = work.entry.file_id

        def next_unit() -> object:
            # Read, decode, encode and build the record batches: all in this thread.
            item = next(units, sentinel)
            if layout is not None and isinstance(item, UnitRecords):
                layout.prebuild(item, spread)
            return item
        while True:
            while self.is_paused(source.name):  # noqa: ASYNC110 - pause is a flag set from outside
                await asyncio.sleep(0.05)
            if self.sources(source.name) is None:
                log.info("source removed; stopping at a unit boundary", source=source.name,
                         path=work.entry.path, position=prog.position)
                return None
            item = await loop.run_in_executor(self._executor, next_unit)
            if item is sentinel:
                return None
            if isinstance(item, UnitRecords):
                spread += 1
                if self.limiter is not None:
                    await self.limiter.acquire(source.name, item.rows, item.nbytes)
                await self.out.put(item)
                prog.rows_done += item.rows
                prog.rows_total = item.total_rows
                prog.position = item.end
                prog.handed_final = item.final
                if not item.final and self._step_aside(source.name, taken):
                    log.debug("file set aside for another source's", source=source.name,
                              path=work.entry.path, position=prog.position)
                    # Its reader closes here, in a worker thread (a file close may wait on HDFS).
                    await loop.run_in_executor(self._executor, getattr(units, "close", lambda: None))
                    return _rest(work, prog, rows=prog.rows_done)
            else:
                assert isinstance(item, FileFinished)
                await self.out.put(item)


def _rest(work: FileWork, prog: Progress, **changes: Any) -> FileWork:
    """What is left of `work`: from the last unit handed over, its entry with `changes`."""
    return FileWork(entry=advance(work.entry, **changes) if changes else work.entry,
                    start=prog.position, ready_monotonic=work.ready_monotonic)


async def _nowhere(entry: FileEntry, source: SourceConfig) -> str | None:
    return None

