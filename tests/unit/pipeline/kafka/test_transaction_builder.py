"""The transaction builder with plain values: every row once and in order across crashes at any
step, what a fenced or refused transaction leaves, and what one commit records and counts.

"Kafka" here is two lists that a commit appends to all at once (the rows and the ledger
records of one transaction), which is what a transaction guarantees to read_committed readers;
a crash is the process dying with a transaction open; a new life reads the ledger list back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, ProducerFenced

from pipeline.items import FileFinished, FileQuarantined, FilesRecorded, UnitRecords
from pipeline.kafka.errors import CommitterError, Fenced, RecordsRefused
from pipeline.kafka.transaction import Run, Send, TransactionBuilder
from pipeline.ledger import DONE, PENDING, QUARANTINED, FileEntry, LedgerState

pytestmark = pytest.mark.unit

NOW = 1_000_000_000_000
WEEK = 7 * 86_400_000


class Crash(Exception):
    """The process died here."""


@dataclass
class Kafka:
    rows: list[tuple[int, int, bytes]] = field(default_factory=list)  # (file, partition, value)
    ledger: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    crashes: int = 0

    def state(self) -> LedgerState:
        st = LedgerState("edge")
        for k, v in self.ledger:
            st.apply(k, v)
        return st


def records(run: Run) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of a run's records, read back from its record batches by aiokafka's reader."""
    from aiokafka.record.memory_records import MemoryRecords

    out = []
    for batch in run.batches:
        batch._set_producer_state(1, 0, 0)
        found = MemoryRecords(bytes(batch._build())).next_batch()
        assert found is not None and found.validate_crc()
        out.extend((r.key, r.value) for r in found)
    return out


def rows_of(fid: int, n: int) -> list[bytes]:
    return [f"{fid}:{i}".encode() for i in range(n)]


def pending(fid: int) -> FileEntry:
    return FileEntry(source="s", path=f"/d/{fid}.parquet", file_id=fid, size=100, mtime=NOW - 1000,
                     ready_txid=7, ready_ms=NOW)


def unit(fid: int, lo: int, hi: int, n: int, keys: list[bytes | None] | None = None) -> UnitRecords:
    values = rows_of(fid, n)[lo:hi]
    return UnitRecords(file_id=fid, source="s", topic="t", start=str(lo), end=str(hi) if hi < n else None,
                       values=values, keys=keys, headers=None, nbytes=sum(map(len, values)),
                       final=hi == n)


def life(kafka: Kafka, files: dict[int, int], *, unit_rows: int, partitions: list[int],
         commit_every: int, crash_at: int | None) -> None:
    """One life of the flow: recover from the ledger, record new files, stream each file from
    where its entry stands, committing every `commit_every` items. Dies at step `crash_at`."""
    state = kafka.state()
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    steps = itertools.count(1)
    open_rows: list[tuple[int, int, bytes]] = []

    def step() -> None:
        if next(steps) == crash_at:
            raise Crash

    def add(item: object) -> None:
        for run in b.add(item, partitions):  # type: ignore[arg-type]
            assert run.partition is not None and run.file_id is not None
            open_rows.extend((run.file_id, run.partition, v) for _, v in records(run))
        step()
        if len(b.items) >= commit_every:
            commit()

    def commit() -> None:
        step()  # dies before the commit
        records = b.ledger_records()
        kafka.rows.extend(open_rows)
        kafka.ledger.extend(records)
        open_rows.clear()
        step()  # dies after Kafka committed, before the process learnt it
        b.committed()

    new = [pending(fid) for fid in files if fid not in state.files]
    todo = [*state.unfinished(), *new]  # recorded before, in ready order, then the new files
    if new:
        add(FilesRecorded(entries=new, stream_txid=7))
    for entry in todo:
        n = files[entry.file_id]
        if n == 0:
            add(FileFinished(file_id=entry.file_id, source="s"))
            continue
        for lo in range(int(entry.next or 0), n, unit_rows):
            add(unit(entry.file_id, lo, min(lo + unit_rows, n), n))
    if b.open:
        commit()


def run_until_done(files: dict[int, int], crashes: list[int], **kw: object) -> Kafka:
    kafka = Kafka()
    for crash_at in [*crashes, None]:
        try:
            life(kafka, files, crash_at=crash_at, **kw)  # type: ignore[arg-type]
        except Crash:
            kafka.crashes += 1
    return kafka


def assert_every_row_once_in_file_order(kafka: Kafka, files: dict[int, int]) -> None:
    for fid, n in files.items():
        got = [v for f, _, v in kafka.rows if f == fid]
        assert sorted(got) == sorted(rows_of(fid, n)), f"file {fid}: rows missing or repeated"
        for p in {p for f, p, _ in kafka.rows if f == fid}:
            in_partition = [v for f, q, v in kafka.rows if f == fid and q == p]
            order = [int(v.split(b":")[1]) for v in in_partition]
            assert order == sorted(order), f"file {fid}, partition {p}: out of file order"
    st = kafka.state()
    assert all(st.files[fid].state == DONE for fid in files)
    assert all(st.files[fid].rows == n for fid, n in files.items())


FILES = {11: 10, 12: 7, 13: 0}


def test_a_crash_at_any_step_leaves_every_row_once_in_order() -> None:
    clean = run_until_done(FILES, [], unit_rows=3, partitions=[0], commit_every=2)
    assert_every_row_once_in_file_order(clean, FILES)
    crashed = 0
    for crash_at in range(1, 40):  # a clean life takes fewer steps
        kafka = run_until_done(FILES, [crash_at], unit_rows=3, partitions=[0], commit_every=2)
        assert_every_row_once_in_file_order(kafka, FILES)
        crashed += kafka.crashes
    assert crashed >= 15  # the lives did die at that many different steps


def test_two_crashes_in_a_row_at_any_steps_leave_every_row_once() -> None:
    for first, second in itertools.product(range(1, 14), range(1, 8)):
        kafka = run_until_done(FILES, [first, second], unit_rows=4, partitions=[0, 1, 2], commit_every=3)
        assert_every_row_once_in_file_order(kafka, FILES)


def test_units_of_a_file_rotate_over_the_partitions_and_keep_file_order_in_each() -> None:
    kafka = run_until_done({5: 12}, [], unit_rows=2, partitions=[0, 1, 2], commit_every=100)
    by_partition = {p: [int(v.split(b":")[1]) for f, q, v in kafka.rows if q == p] for p in (0, 1, 2)}
    assert all(len(rows) == 4 for rows in by_partition.values())
    assert sorted(r for rows in by_partition.values() for r in rows) == list(range(12))


def test_keyed_rows_go_to_the_key_partition_and_null_keys_stay_with_their_unit() -> None:
    b = TransactionBuilder(LedgerState("edge"), retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(1)]))
    keys: list[bytes | None] = [b"a", b"b", None, b"a", None]
    runs = b.add(unit(1, 0, 5, 5, keys=keys), [0, 1, 2, 3])
    from aiokafka.partitioner import murmur2

    where: dict[bytes | None, set[int | None]] = {}
    for run in runs:
        for k, _ in records(run):
            where.setdefault(k, set()).add(run.partition)
            if k is not None:
                assert run.partition == (murmur2(k) & 0x7FFFFFFF) % 4
    assert len(where[None]) == 1  # the unit's null-key rows: one partition
    assert sorted(v for run in runs for _, v in records(run)) == sorted(rows_of(1, 5))


def test_a_file_that_starts_and_finishes_in_one_transaction_is_recorded_done_once() -> None:
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)], stream_txid=9))
    b.add(unit(4, 0, 3, 3), [0])
    records = dict(b.ledger_records())
    assert FileEntry.from_json(records[state.keys.file(4)] or b"").state == DONE
    assert records[state.keys.stream()] == b'{"txid":9}'
    c = b.committed()
    assert state.files[4].state == DONE and state.files[4].rows == 3 and state.stream_txid == 9
    assert c.rows == {"s": 3} and c.files_done == {"s": 1}
    assert [e.file_id for e in c.recorded] == [4]  # detected once, counted at the commit


def test_an_aborted_transaction_leaves_the_ledger_state_as_it_was() -> None:
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)]))
    b.committed()
    b.add(unit(4, 0, 2, 5), [0])
    b.aborted()
    assert state.files[4].state == PENDING and state.files[4].next is None
    assert not b.open and b.rows == 0 and b.items == []
    # The next transaction carries nothing of the aborted one.
    b.add(FileFinished(file_id=4, source="s"))
    assert [k for k, _ in b.ledger_records() if k != state.keys.watermark()] == [state.keys.file(4)]


def test_a_fenced_commit_is_not_aborted_and_names_the_instance() -> None:
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)]))
    error, abort = b.failure(ProducerFenced(), "commit")
    assert isinstance(error, Fenced) and not abort and "'edge'" in str(error)
    # Fenced in the background while a send waited: the same.
    error, abort = b.failure(KafkaConnectionError(), "send", background=ProducerFenced())
    assert isinstance(error, Fenced) and not abort
    # A lost connection is not a refusal: abort and rebuild.
    error, abort = b.failure(KafkaConnectionError(), "send", refused_by=(4, "s"))
    assert type(error) is CommitterError and abort


def test_a_refused_single_record_quarantines_its_file_and_a_refused_batch_shrinks_batches() -> None:
    limits: dict[str, int] = {}
    b = TransactionBuilder(LedgerState("edge"), retention_ms=WEEK, wall_ms=lambda: NOW, batch_limits=limits)
    one = Send("t", records=1, nbytes=900_000, file_id=4, source="s")
    decision = b.after_sends([(MessageSizeTooLargeError(), one)])
    assert decision is not None
    error, abort = decision
    assert isinstance(error, RecordsRefused) and abort and set(error.files) == {4}
    assert "topic 't'" in error.files[4][1] and not limits

    many = Send("t", records=50, nbytes=400_000, file_id=5, source="s")
    decision = b.after_sends([(MessageSizeTooLargeError(), many)])
    assert decision is not None
    error, abort = decision
    assert isinstance(error, RecordsRefused) and error.files == {} and abort
    assert limits == {"t": 200_000}
    b.add(FilesRecorded(entries=[pending(5)]))
    big = UnitRecords(file_id=5, source="s", topic="t", start="0", end=None,
                      values=[bytes(1000)] * 500, keys=None, headers=None, nbytes=500_000, final=True)
    (run,) = b.add(big, [0])
    assert len(run.batches) == 3 and all(batch.size() <= 200_000 for batch in run.batches)
    assert b.after_sends([]) is None


def test_a_unit_built_for_another_layout_ends_the_flow_instead_of_going_out_wrong() -> None:
    """Built in a worker for a 2-partition topic that has 3 partitions now: its keyed rows would
    land where Kafka's partitioner does not put them; the flow starts over from the ledger."""
    b = TransactionBuilder(LedgerState("edge"), retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)]))
    keyed = unit(4, 0, 3, 3, keys=[b"a", b"b", b"c"])
    b.layout.partitions["t"] = [0, 1]
    b.layout.prebuild(keyed, spread=0)
    assert keyed.batches is not None and keyed.values == []
    with pytest.raises(CommitterError, match="another layout"):
        b.add(keyed, [0, 1, 2])


def test_a_quarantine_records_the_reason_and_sends_a_dead_letter() -> None:
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)]))
    (dead,) = b.add(FileQuarantined(file_id=4, source="s", reason="corrupt footer", position="2",
                                    dead_letter_topic="dlq"))
    assert dead.topic == "dlq" and dead.file_id is None and b"corrupt footer" in dead.values[0]
    c = b.committed()
    assert state.files[4].state == QUARANTINED and state.files[4].reason == "corrupt footer"
    assert state.files[4].next == "2" and c.files_quarantined == {"s": 1}


def test_a_file_renamed_while_it_streams_keeps_its_progress() -> None:
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: NOW)
    b.add(FilesRecorded(entries=[pending(4)]))
    b.add(unit(4, 0, 2, 5), [0])
    b.committed()
    moved = FileEntry(source="s", path="/d/moved.parquet", file_id=4, size=100, mtime=NOW)
    b.add(FilesRecorded(entries=[moved]))
    b.committed()
    assert state.files[4].path == "/d/moved.parquet" and state.files[4].next == "2"
    assert state.files[4].rows == 2


def test_old_finished_entries_get_tombstones_with_the_watermark() -> None:
    clock = [NOW]
    state = LedgerState("edge")
    b = TransactionBuilder(state, retention_ms=WEEK, wall_ms=lambda: clock[0], monotonic=lambda: clock[0] / 1000)
    old = FileEntry(source="s", path="/d/old", file_id=1, size=1, mtime=NOW - 2 * WEEK, state=DONE,
                    ready_ms=NOW - 2 * WEEK)
    b.add(FilesRecorded(entries=[old]))
    records = dict(b.ledger_records())  # the first commit sets the watermark; the entry is older
    assert records[state.keys.file(1)] is None and state.keys.watermark() in records
    b.committed()
    assert 1 not in state.files and state.mtime_floor == NOW - WEEK
    assert not b.compaction_due()
    clock[0] += 60_000
    b.add(FilesRecorded(entries=[FileEntry(source="s", path="/d/new", file_id=2, size=1, mtime=NOW,
                                           state=DONE, ready_ms=NOW)]))
    assert state.keys.watermark() in dict(b.ledger_records())  # due again, nothing to drop
    b.committed()
    assert 2 in state.files


def test_when_a_transaction_is_due() -> None:
    clock = [100.0]
    b = TransactionBuilder(LedgerState("edge"), retention_ms=WEEK, wall_ms=lambda: NOW, monotonic=lambda: clock[0])
    assert not b.due(max_rows=10, max_bytes=1000, max_ms=200) and b.seconds_left(200) is None
    b.add(FilesRecorded(entries=[pending(4)]))
    assert not b.due(max_rows=10, max_bytes=1000, max_ms=200)
    assert b.seconds_left(200) == pytest.approx(0.2)
    b.add(unit(4, 0, 10, 20), [0])
    assert b.due(max_rows=10, max_bytes=10_000, max_ms=200)
    clock[0] += 0.3
    assert b.due(max_rows=100, max_bytes=10_000, max_ms=200)


def test_rows_of_a_file_with_no_ledger_entry_are_an_error_not_a_guess() -> None:
    b = TransactionBuilder(LedgerState("edge"), retention_ms=WEEK, wall_ms=lambda: NOW)
    with pytest.raises(CommitterError, match="file 4 has no ledger entry"):
        b.add(unit(4, 0, 1, 1), [0])
