"""The worker pool and its file opener without HDFS or Kafka: files are Parquet and Avro bytes in
memory, the committer is the pool's output queue.

What is checked is what reaches Kafka: every row once, in file order, in units no larger than
asked, with positions that resume exactly where the committed rows end; and a file that cannot
be encoded quarantined at once, with the reason.
"""

from __future__ import annotations

import asyncio
import decimal
import io
import itertools
import json
from collections.abc import Callable, Iterator

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdfsread.base import ReadFailed, ReadRefused
from hdfswatch.errors import ClockSkewError, FatalError, KerberosCredentialsError
from pipeline.config import ErrorPolicy, SourceConfig
from pipeline.encoders.errors import EncodeError
from pipeline.items import FileFinished, FileQuarantined, FileWork, Item, UnitRecords
from pipeline.ledger import FileEntry
from pipeline.workers import FileOpener, WorkerPool

ROWS = 100


class BytesFile:
    """A file held in memory, as the readers read files."""

    def __init__(self, path: str, data: bytes) -> None:
        self._path = path
        self._data = data

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._data[offset:offset + length]

    def close(self) -> None:
        pass


def parquet_file(rows: int = ROWS, row_group_size: int = 30) -> bytes:
    table = pa.table({"id": pa.array(range(rows), pa.int64()),
                      "name": [f"row {i}" for i in range(rows)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


AVRO_SCHEMA = {"type": "record", "name": "Row", "fields": [
    {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}


def avro_file(rows: int = ROWS, block_records: int = 25) -> bytes:
    buf = io.BytesIO()
    w = fastavro.write.Writer(buf, fastavro.parse_schema(AVRO_SCHEMA))
    for i in range(rows):
        w.write({"id": i, "name": f"row {i}"})
        if (i + 1) % block_records == 0:
            w.flush()
    w.flush()
    return buf.getvalue()


FILES: dict[str, Callable[[], bytes]] = {"parquet": parquet_file, "avro": avro_file}
SOURCE = SourceConfig(name="s", path="/data", topic="t")


def entry(data: bytes, path: str = "/data/f") -> FileEntry:
    return FileEntry(source="s", path=path, file_id=7, size=len(data), mtime=0)


def opener_of(data: bytes) -> FileOpener:
    return FileOpener(None, open_file=lambda e: BytesFile(e.path, data))


def run(data: bytes, unit_rows: int | Callable[[], int], start: str | None = None
        ) -> list[UnitRecords | FileFinished]:
    rows = unit_rows if callable(unit_rows) else (lambda: unit_rows)
    work = FileWork(entry=entry(data), start=start)
    return list(opener_of(data).open(work, SOURCE, rows))


def ids(items: list[UnitRecords | FileFinished]) -> list[int]:
    return [json.loads(v)["id"] for u in items if isinstance(u, UnitRecords) for v in u.values]


def units(items: list[UnitRecords | FileFinished]) -> list[UnitRecords]:
    assert all(isinstance(u, UnitRecords) for u in items), items
    return [u for u in items if isinstance(u, UnitRecords)]


def check_chain(items: list[UnitRecords | FileFinished], data: bytes, fmt: str) -> None:
    """Every row once in order, each unit starting where the one before ends, the last one final
    with the file's end position."""
    assert ids(items) == list(range(ROWS))
    us = units(items)
    for before, after in itertools.pairwise(us):
        assert after.start == before.end
        assert not before.final
    assert us[-1].final
    assert us[-1].end == (f"block:{len(data)}" if fmt == "avro" else None)


def check_resumes(items: list[UnitRecords | FileFinished], data: bytes,
                  unit_rows: int) -> None:
    """Resuming from any position a run handed over gives exactly the rows after it, in order."""
    done = 0
    for u in units(items):
        assert ids(run(data, unit_rows, start=u.start)) == list(range(done, ROWS)), u.start
        done += len(u.values)
        if u.end is not None:
            rest = run(data, unit_rows, start=u.end)
            assert ids(rest) == list(range(done, ROWS)), u.end
            if u.final:  # resumed at the very end: nothing left, the file is finished
                assert rest == [FileFinished(file_id=7, source="s", end=u.end,
                                             ready_monotonic=rest[0].ready_monotonic)]


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_units_hold_at_most_unit_rows_and_chain(fmt: str) -> None:
    data = FILES[fmt]()
    items = run(data, 8)
    check_chain(items, data, fmt)
    assert max(len(u.values) for u in units(items)) == 8


def test_avro_units_gather_whole_blocks_up_to_unit_rows() -> None:
    data = avro_file(block_records=25)
    items = run(data, 60)
    check_chain(items, data, "avro")
    assert [len(u.values) for u in units(items)] == [50, 50]


def test_an_avro_block_larger_than_unit_rows_is_cut_into_resumable_pieces() -> None:
    data = avro_file(block_records=25)
    items = run(data, 10)
    check_chain(items, data, "avro")
    us = units(items)
    assert [len(u.values) for u in us] == [10, 10, 5] * 4
    # pieces inside a block are named by the block and the records to pass over
    assert us[1].start == f"{us[0].start}/10" and us[2].start == f"{us[0].start}/20"
    check_resumes(items, data, 10)


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
@pytest.mark.parametrize("unit_rows", [1, 7, 25, 1000])
def test_resuming_from_every_position_gives_exactly_the_remaining_rows(fmt: str,
                                                                        unit_rows: int) -> None:
    data = FILES[fmt]()
    items = run(data, unit_rows)
    check_chain(items, data, fmt)
    check_resumes(items, data, unit_rows)


def test_resuming_inside_an_avro_block_with_other_unit_rows() -> None:
    """A position cut at one speed is resumed at another: the records passed over are exactly
    the committed ones."""
    data = avro_file(block_records=25)
    first = units(run(data, 10))
    middle = first[4]  # the second block, 10 records in
    assert middle.start.endswith("/10")
    assert ids(run(data, 3, start=middle.start)) == list(range(35, ROWS))
    assert ids(run(data, 1000, start=middle.start)) == list(range(35, ROWS))


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_units_are_recut_when_unit_rows_changes_mid_file(fmt: str) -> None:
    data = FILES[fmt]()
    limit = [12]
    work = FileWork(entry=entry(data))
    items: list[UnitRecords | FileFinished] = []
    for item in opener_of(data).open(work, SOURCE, lambda: limit[0]):
        items.append(item)
        if len(ids(items)) >= 30:
            limit[0] = 3  # a speed limit lowered while the file is read
    check_chain(items, data, fmt)
    lengths = [len(u.values) for u in units(items)]
    switched = next(k for k in range(len(lengths)) if sum(lengths[:k + 1]) >= 30)
    assert max(lengths[:switched + 1]) == 12
    # the unit being cut finishes as it was cut; the next ones have the new size
    rest = lengths[switched + 1:]
    assert max(rest[-10:]) == 3 and len(rest) > 10
    check_resumes(items, data, 3)


def test_a_file_without_rows_gives_file_finished() -> None:
    empty_avro = avro_file(rows=0)
    empty_parquet = parquet_file(rows=0)
    for data, end in [(empty_avro, f"block:{len(empty_avro)}"), (empty_parquet, None)]:
        items = run(data, 10)
        assert len(items) == 1 and isinstance(items[0], FileFinished), items
        assert (items[0].file_id, items[0].source, items[0].end) == (7, "s", end)


# ----------------------------------------------------------------------------- the pool


class Opener:
    """A file opener in plain Python: fails as told, then reads the file."""

    def __init__(self, failures: list[BaseException], data: bytes | None = None) -> None:
        self.failures = failures
        self.data = data
        self.opens = 0

    def open(self, work: FileWork, source: SourceConfig,
             unit_rows: Callable[[], int]) -> Iterator[UnitRecords | FileFinished]:
        self.opens += 1
        if self.failures:
            raise self.failures.pop(0)
        assert self.data is not None
        return opener_of(self.data).open(work, source, unit_rows)


def _last(item: Item) -> bool:
    return isinstance(item, FileQuarantined | FileFinished) or (
        isinstance(item, UnitRecords) and item.final)


async def pool_run(opener: object, data: bytes, *, wait_s: float = 3.0,
                   retry_timeout_ms: int = 600_000,
                   errors: list[tuple[str, str]] | None = None) -> tuple[list[Item], WorkerPool]:
    """Stream one file through a pool of one worker; the items it handed to the committer up
    to the file's last one, or for `wait_s` seconds."""
    source = SourceConfig(name="s", path="/data", topic="t",
                          errors=ErrorPolicy(retry_timeout_ms=retry_timeout_ms, retry_max_delay_ms=100))
    queue: asyncio.Queue[FileWork] = asyncio.Queue()
    out: asyncio.Queue[Item] = asyncio.Queue()
    pool = WorkerPool(queue=queue, out=out, sources=lambda name: source if name == "s" else None,
                      opener=opener, unit_rows=1000, workers=1,  # type: ignore[arg-type]
                      on_read_error=(lambda s, m: errors.append((s, m))) if errors is not None else None)
    pool.start()
    await queue.put(FileWork(entry=entry(data)))
    got: list[Item] = []
    try:
        async with asyncio.timeout(wait_s):
            while not got or not _last(got[-1]):
                got.append(await out.get())
    except TimeoutError:
        pass
    finally:
        await asyncio.sleep(0)
        failure = pool.failure()
        await pool.stop()
    assert failure is None or isinstance(failure, FatalError)
    return got, pool


def parquet_with_wide_decimals() -> bytes:
    table = pa.table({"id": pa.array([1, 2], pa.int64()),
                      "amount": pa.array([decimal.Decimal("1.50"), None], pa.decimal256(50, 2))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


async def test_rows_that_cannot_be_encoded_quarantine_the_file_at_once() -> None:
    """The JSON encoder refuses decimals wider than 38 digits, the same way on every try: the
    file is quarantined now, naming it and why, not retried until retry_timeout_ms."""
    data = parquet_with_wide_decimals()
    opener = Opener([], data)
    got, _ = await pool_run(opener, data, wait_s=3.0)
    assert len(got) == 1 and isinstance(got[0], FileQuarantined), got
    assert "/data/f" in got[0].reason and "decimals wider than 38 digits" in got[0].reason
    assert got[0].file_id == 7
    assert opener.opens == 1


async def test_an_encode_error_quarantines_at_once() -> None:
    opener = Opener([EncodeError("/data/f at rg:0/0: a value with no JSON form")])
    got, _ = await pool_run(opener, b"", wait_s=3.0)
    assert [type(i) for i in got] == [FileQuarantined]
    assert "/data/f at rg:0/0: a value with no JSON form" in got[0].reason  # type: ignore[union-attr]
    assert opener.opens == 1


async def test_a_transient_failure_is_retried_and_every_row_arrives_once() -> None:
    data = parquet_file()
    opener = Opener([ReadFailed("/data/f", "connection reset"), RuntimeError("who knows")], data)
    got, _ = await pool_run(opener, data, wait_s=5.0)
    assert opener.opens == 3
    assert all(isinstance(i, UnitRecords) for i in got) and got[-1].final  # type: ignore[union-attr]
    assert ids([u for u in got if isinstance(u, UnitRecords)]) == list(range(ROWS))


async def test_access_errors_are_retried_past_the_retry_timeout_and_never_quarantine() -> None:
    """No ticket, a clock off, a permission or a certificate missing: the operator fixes it and
    the file streams whole; spending the retry budget on it would quarantine good files."""
    data = parquet_file()
    opener = Opener([ReadRefused("/data/f", "WebHDFS refused user etl access to /data/f"),
                     KerberosCredentialsError("no Kerberos ticket for etl@EXAMPLE: run kinit"),
                     ClockSkewError("clock skew"),
                     ReadRefused("/data/f", "refused again")], data)
    errors: list[tuple[str, str]] = []
    got, _ = await pool_run(opener, data, wait_s=8.0, retry_timeout_ms=1, errors=errors)
    assert opener.opens == 5
    # /status shows why the file waits, one line a try, naming the file.
    assert [s for s, _ in errors] == ["s"] * 4
    assert "/data/f" in errors[0][1] and "refused user etl" in errors[0][1]
    assert not any(isinstance(i, FileQuarantined) for i in got), got
    assert got and got[-1].final  # type: ignore[union-attr]
    assert ids([u for u in got if isinstance(u, UnitRecords)]) == list(range(ROWS))


async def test_a_quarantine_reason_carries_no_delegation_token() -> None:
    """The reason goes into the ledger and the dead-letter topic: a token in a URL is masked."""
    url = "https://dn1:9865/webhdfs/v1/data/f?op=OPEN&delegation=HAAKc2VjcmV0LXRva2Vu&offset=0"
    opener = Opener([ReadFailed("/data/f", f"connection refused: {url}") for _ in range(20)])
    got, _ = await pool_run(opener, b"", wait_s=3.0, retry_timeout_ms=1)
    assert [type(i) for i in got] == [FileQuarantined]
    reason = got[0].reason  # type: ignore[union-attr]
    assert "connection refused" in reason and "HAAKc2VjcmV0LXRva2Vu" not in reason


async def test_a_fatal_error_ends_the_pool_instead_of_quarantining() -> None:
    opener = Opener([FatalError("the daemon cannot go on")])
    source = SourceConfig(name="s", path="/data", topic="t")
    queue: asyncio.Queue[FileWork] = asyncio.Queue()
    out: asyncio.Queue[Item] = asyncio.Queue()
    pool = WorkerPool(queue=queue, out=out, sources=lambda name: source, opener=opener,  # type: ignore[arg-type]
                      unit_rows=1000, workers=1)
    pool.start()
    await queue.put(FileWork(entry=entry(b"")))
    for _ in range(100):
        if pool.failure() is not None:
            break
        await asyncio.sleep(0.01)
    failure = pool.failure()
    await pool.stop()
    assert isinstance(failure, FatalError) and "cannot go on" in str(failure)
    assert out.empty()  # nothing quarantined: the file stays for the next run



@pytest.mark.parametrize("paused", [False, True], ids=["waiting", "paused"])
async def test_a_file_of_another_source_goes_ahead_of_a_backlog_file_at_a_unit_boundary(
        monkeypatch: pytest.MonkeyPatch, paused: bool) -> None:
    """One worker, busy with a big file of source "big" when a file of source "small" is ready:
    the big file makes way after its current unit and resumes where it stopped; each file's
    rows all come, once and in order. A paused source's file does not make it stop."""
    from pipeline import workers
    from pipeline.workers import WorkQueue

    monkeypatch.setattr(workers, "STEP_ASIDE_AFTER_S", 0.0)  # the files here stream in no time
    pause = {"small": paused}

    big_rows = 20_000
    data = {"/big/f": parquet_file(big_rows, row_group_size=1000), "/small/f": parquet_file(50)}
    sources = {n: SourceConfig(name=n, path=f"/{n}", topic=n) for n in ("big", "small")}
    opener = FileOpener(None, open_file=lambda e: BytesFile(e.path, data[e.path]))
    queue = WorkQueue()
    out: asyncio.Queue[Item] = asyncio.Queue(maxsize=1)  # the committer takes units one by one
    pool = WorkerPool(queue=queue, out=out, sources=sources.get, opener=opener,  # type: ignore[arg-type]
                      unit_rows=1000, workers=1, is_paused=lambda name: pause.get(name, False))

    def work(name: str, file_id: int) -> FileWork:
        path = f"/{name}/f"
        return FileWork(entry=FileEntry(source=name, path=path, file_id=file_id,
                                        size=len(data[path]), mtime=0))

    pool.start()
    await queue.put(work("big", 1))
    got: list[Item] = [await out.get()]  # the big file streams
    await queue.put(work("small", 2))
    try:
        async with asyncio.timeout(20):
            while sum(isinstance(i, UnitRecords) and i.final for i in got) < 2:
                if paused and got[-1].final:  # type: ignore[union-attr]
                    pause["small"] = False  # the big file is done: the small one may go now
                got.append(await out.get())
    finally:
        await pool.stop()
    units_of = {fid: [i for i in got if isinstance(i, UnitRecords) and i.file_id == fid] for fid in (1, 2)}
    rows_of = {fid: [json.loads(v)["id"] for u in us for v in u.values] for fid, us in units_of.items()}
    assert rows_of == {1: list(range(big_rows)), 2: list(range(50))}
    for us in units_of.values():  # each unit starts where the one before ended
        assert all(b.start == a.end for a, b in itertools.pairwise(us))
    small_at = got.index(units_of[2][0])
    big_before = sum(len(u.values) for u in units_of[1] if got.index(u) < small_at)
    if paused:  # the big file went on to its end: nothing is taken from a paused source
        assert big_before == big_rows
    else:  # the small file came before the big one was half done
        assert big_before < big_rows // 2


async def test_a_stopped_sources_file_is_set_aside_where_its_handed_rows_end() -> None:
    """`tolerance = "none"`: a file that fails mid-way stops its source and is set aside at the
    end of the last unit handed over (those rows are committed), so resuming the source does
    not send them again."""
    data = bytearray(parquet_file(100, row_group_size=20))
    meta = pq.ParquetFile(io.BytesIO(bytes(data))).metadata
    col = meta.row_group(3).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data[start:start + col.total_compressed_size] = bytes(col.total_compressed_size)  # group 3 broken
    source = SourceConfig(name="s", path="/data", topic="t", errors=ErrorPolicy(tolerance="none"))
    queue: asyncio.Queue[FileWork] = asyncio.Queue()
    out: asyncio.Queue[Item] = asyncio.Queue()
    stopped = asyncio.Event()
    pool = WorkerPool(queue=queue, out=out, sources=lambda name: source,  # type: ignore[arg-type]
                      opener=opener_of(bytes(data)), unit_rows=20, workers=1,
                      on_source_failed=lambda name, why: stopped.set())
    pool.start()
    await queue.put(FileWork(entry=entry(bytes(data))))
    try:
        await asyncio.wait_for(stopped.wait(), 10)
    finally:
        await pool.stop()
    handed: list[UnitRecords] = []
    while not out.empty():
        item = out.get_nowait()
        if isinstance(item, UnitRecords):
            handed.append(item)
    assert [json.loads(v)["id"] for u in handed for v in u.values] == list(range(60))
    (parked,) = pool.take_parked("s")
    assert parked.start == handed[-1].end == "rg:3/0"
