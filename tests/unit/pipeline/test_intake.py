"""Admission and recording with plain values: which ready files are streamed, by which source,
from where, and that a file's ledger record always goes to the committer before its work goes to
a worker."""

from __future__ import annotations

import asyncio

import pytest

from hdfswatch.detector import FileReady
from pipeline.config import ErrorPolicy, SourceConfig
from pipeline.intake import Intake
from pipeline.items import FileQuarantined, FilesRecorded, FileWork, Item, UnitRecords
from pipeline.ledger import ACTIVE, DONE, PENDING, QUARANTINED, FileEntry, LedgerState

pytestmark = pytest.mark.unit

SOURCES = [
    SourceConfig(name="orders", path="/data/orders/*.parquet", topic="orders"),
    SourceConfig(name="events", path="/data/events/**", topic="events", format="avro",
                 errors=ErrorPolicy(dead_letter_topic="dead")),
    SourceConfig(name="everything", path="/data/**", topic="all"),
]


def intake(*entries: FileEntry, refused: dict[int, tuple[str, str]] | None = None) -> Intake:
    state = LedgerState("edge")
    for e in entries:
        state.apply(state.keys.file(e.file_id), e.to_json())
    detected: list[str] = []
    it = Intake(state, to_committer=asyncio.Queue(), to_workers=asyncio.Queue(), sources=lambda: SOURCES,
                refused=refused if refused is not None else {}, on_detected=detected.append)
    it.detected = detected  # type: ignore[attr-defined]
    return it


def ready(path: str, fid: int, size: int = 100, txid: int | None = 5) -> FileReady:
    return FileReady(path, fid, size, 1_700_000_000_000, "close", txid)


def drained(q: asyncio.Queue[Item] | asyncio.Queue[FileWork]) -> list[object]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_a_file_goes_to_the_first_source_in_registry_order_that_matches() -> None:
    it = intake()
    entries = it.admit([ready("/data/orders/a.parquet", 1), ready("/data/events/x/b.avro", 2),
                        ready("/data/other/c.parquet", 3), ready("/elsewhere/d.parquet", 4)], listed=False)
    assert [(e.file_id, e.source) for e in entries] == [(1, "orders"), (2, "events"), (3, "everything")]
    assert all(e.state == PENDING and e.next is None and e.ready_txid == 5 for e in entries)
    assert it.detected == ["orders", "events", "everything"]  # type: ignore[attr-defined]


def test_done_and_in_flight_files_are_not_admitted_again() -> None:
    done = FileEntry(source="orders", path="/data/orders/a.parquet", file_id=1, size=100, mtime=1, state=DONE)
    it = intake(done)
    it.in_flight.add(2)
    assert it.admit([ready("/data/orders/a.parquet", 1), ready("/data/orders/b.parquet", 2)], listed=True) == []


def test_a_done_parquet_file_that_changed_is_quarantined_once_with_the_reason() -> None:
    done = FileEntry(source="orders", path="/data/orders/a.parquet", file_id=1, size=100, mtime=1,
                     state=DONE, rows=40)
    it = intake(done)
    (entry,) = it.admit([ready("/data/orders/a.parquet", 1, size=60)], listed=False)
    assert entry.state == QUARANTINED and entry.size == 60 and entry.rows == 40
    assert entry.reason is not None and "/data/orders/a.parquet" in entry.reason and "truncated" in entry.reason


def test_a_done_avro_file_that_grew_resumes_after_its_last_block_with_its_rows_counted() -> None:
    done = FileEntry(source="events", path="/data/events/a.avro", file_id=1, size=100, mtime=1,
                     state=DONE, next="avro:100/0", rows=7)
    it = intake(done)
    (entry,) = it.admit([ready("/data/events/a.avro", 1, size=180)], listed=False)
    assert entry.state == PENDING and entry.next == "avro:100/0" and entry.rows == 7


async def test_a_file_is_recorded_before_it_is_dispatched() -> None:
    it = intake()
    entries = it.admit([ready("/data/orders/a.parquet", 1), ready("/data/orders/b.parquet", 2)], listed=False)
    # The committer's queue is full: the work must wait behind the record, never pass it.
    it.to_committer = asyncio.Queue(maxsize=1)
    it.to_committer.put_nowait(FilesRecorded(entries=[]))
    task = asyncio.create_task(it.start(entries, stream_txid=9))
    await asyncio.sleep(0.05)
    assert it.to_workers.empty() and not task.done()
    it.to_committer.get_nowait()
    await asyncio.wait_for(task, 1)
    (recorded,) = drained(it.to_committer)
    assert isinstance(recorded, FilesRecorded) and recorded.stream_txid == 9
    assert [e.file_id for e in recorded.entries] == [1, 2]
    works = drained(it.to_workers)
    assert [(w.entry.file_id, w.start) for w in works] == [(1, None), (2, None)]  # type: ignore[attr-defined]
    assert it.in_flight == {1, 2}


async def test_a_changed_file_goes_to_the_committer_as_a_quarantine_with_its_dead_letter_topic() -> None:
    done = FileEntry(source="events", path="/data/events/a.avro", file_id=1, size=100, mtime=1,
                     state=DONE, next="avro:100/0", rows=7)
    it = intake(done)
    await it.start(it.admit([ready("/data/events/a.avro", 1, size=50)], listed=False))
    (q,) = drained(it.to_committer)
    assert isinstance(q, FileQuarantined) and q.dead_letter_topic == "dead" and q.entry is not None
    assert q.entry.size == 50  # recorded at its new size: the same change is not seen again
    assert it.to_workers.empty() and it.in_flight == {1}
    it.on_commit([q])
    assert it.in_flight == set()


async def test_a_file_kafka_refused_is_quarantined_where_its_committed_rows_end() -> None:
    active = FileEntry(source="orders", path="/data/orders/a.parquet", file_id=1, size=100, mtime=1,
                       state=ACTIVE, next="rg:1/0", rows=10)
    refused = {1: ("orders", "Kafka refused its records: too large")}
    it = intake(active, refused=refused)
    await it.resume(it.state.get(1))
    (q,) = drained(it.to_committer)
    assert isinstance(q, FileQuarantined) and q.position == "rg:1/0" and "too large" in q.reason
    assert it.to_workers.empty()
    it.on_commit([q])
    assert refused == {} and it.in_flight == set()


async def test_files_leave_the_in_flight_set_when_their_last_unit_commits() -> None:
    it = intake()
    await it.start(it.admit([ready("/data/orders/a.parquet", 1)], listed=False))
    assert it.admit([ready("/data/orders/a.parquet", 1)], listed=False) == []  # a second event
    last = UnitRecords(file_id=1, source="orders", topic="orders", start="rg:0/0", end=None,
                       values=[b"x"], keys=None, headers=None, nbytes=1, final=True)
    it.on_commit([last])
    assert it.in_flight == set()


async def test_a_latest_source_records_what_is_there_as_done_without_streaming_it() -> None:
    it = intake()
    entries = [e for e in it.admit([ready("/data/orders/a.parquet", 1, txid=None)], listed=True)]
    done = [FileEntry(**{**e.__dict__, "state": DONE}) for e in entries]
    await it.start(done)
    (recorded,) = drained(it.to_committer)
    assert isinstance(recorded, FilesRecorded) and recorded.entries[0].state == DONE
    assert it.to_workers.empty() and it.in_flight == {1}  # until the record commits
    it.on_commit([recorded])
    assert it.in_flight == set()
