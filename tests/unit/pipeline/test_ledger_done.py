"""The done files' compact table, and the ledger state and loader over it: the same answers as
whole entries, in a few tens of bytes a file."""

from __future__ import annotations

import random
from array import array
from collections import namedtuple

import orjson
import pytest

from pipeline.ledger import ACTIVE, DONE, PENDING, QUARANTINED, FileEntry, LedgerError, LedgerState
from pipeline.ledger_done import DoneTable

DAY = 86_400_000
Record = namedtuple("Record", "key value")


def done(fid: int, size: int = 100, nxt: str | None = None, mtime: int = 10 * DAY, ready_ms: int = 0,
         rows: int = 7, source: str = "s") -> FileEntry:
    return FileEntry(source=source, path=f"/d/{fid}", file_id=fid, size=size, mtime=mtime, state=DONE,
                     next=nxt, rows=rows, ready_txid=3, ready_ms=ready_ms)


def loaded(*records: tuple[bytes, bytes | None], chunks: int = 1) -> LedgerState:
    st = LedgerState("edge")
    ld = st.loader()
    recs = [Record(k, v) for k, v in records]
    step = max(1, len(recs) // chunks)
    for lo in range(0, len(recs), step):
        ld.add(recs[lo:lo + step])
    ld.finish()
    return st


def applied(*records: tuple[bytes, bytes | None]) -> LedgerState:
    st = LedgerState("edge", compact_done=False)
    for k, v in records:
        st.apply(k, v)
    return st


# ---- the table itself


def test_lookups_replace_remove_and_merge() -> None:
    t = DoneTable()
    t.MERGE_AT = 3
    s = t.source_no("s")
    assert s == 0 and t.source_no("s") == 0 and t.source_no("t") == 1
    for fid in (50, 10, 30):
        t.put(fid, fid * 2, fid, 1, -1, s)  # the third put merges
    assert t.merges == 1 and len(t) == 3 and list(t) == [10, 30, 50]
    assert t.get(30) == (60, 30, 1, -1, 0) and t.get(20) is None and 20 not in t and 30 in t
    t.put(30, 61, 31, 2, 40, 1)  # replaces a merged row: the old row is dead, the new one recent
    assert t.get(30) == (61, 31, 2, 40, 1) and len(t) == 3
    assert t.remove(10) and not t.remove(10) and not t.remove(99)  # merges (3 changes)
    assert t.merges == 2 and t.get(10) is None and len(t) == 2 and list(t) == [30, 50]
    assert t.get(30) == (61, 31, 2, 40, 1) and t.get(50) == (100, 50, 1, -1, 0)
    t.put(20, 1, 1, 1, -1, 0)
    assert t.remove(20) and t.get(20) is None and len(t) == 2  # a recent row removed
    t.merge()
    assert list(t) == [30, 50] and t.memory_bytes() == 2 * 42


def test_merge_keeps_order_against_a_dict_of_the_same_changes() -> None:
    rng = random.Random(7)
    t = DoneTable()
    t.MERGE_AT = 50
    ref: dict[int, tuple[int, int, int, int, int]] = {}
    for i in range(5000):
        fid = rng.randrange(2000)
        if rng.random() < 0.3:
            assert t.remove(fid) == (ref.pop(fid, None) is not None)
        else:
            row = (i, rng.randrange(10**12), i % 13, rng.choice([-1, i]), 0)
            t.put(fid, *row)
            ref[fid] = row
        if i % 997 == 0:
            assert len(t) == len(ref) and all(t.get(f) == r for f, r in ref.items())
    t.merge()
    assert list(t) == sorted(ref) and all(t.get(f) == r for f, r in ref.items())
    assert t.get(-5) is None and t.get(10**9) is None


def test_stale_rows_and_the_cheap_bound() -> None:
    t = DoneTable()
    t.put(1, 1, 100, 0, -1, 0)
    t.put(2, 1, 300, 0, -1, 0)
    assert t.stale(100) == [] and t.stale(101) == [1] and sorted(t.stale(1000)) == [1, 2]
    assert t.stale(1000, limit=1) in ([1], [2])
    t.merge()
    t.remove(1)  # dead but not merged: the bound still says 100
    assert t.stale(200) == [] and t.merges == 2  # found none: merged, the bound raised to 300
    assert t._min_stamp == 300


def test_out_of_range_values_are_refused_whole() -> None:
    t = DoneTable()
    with pytest.raises(OverflowError):
        t.put(1, 1 << 64, 1, 1, -1, 0)
    assert len(t) == 0 and t.get(1) is None


def test_load_sorts_keeps_the_last_row_of_a_file_and_drops_dead_ones() -> None:
    q = lambda *v: array("q", v)  # noqa: E731
    t = DoneTable.load(q(5, 3, 5, 9, 1), q(50, 30, 51, 90, 10), q(1, 1, 1, 1, 1), q(0, 0, 0, 0, 0),
                       q(-1, -1, 7, -1, -1), array("H", [0, 0, 0, 0, 0]), ["s"], dead=[9, 4])
    assert list(t) == [1, 3, 5] and t.get(5) == (51, 1, 0, 7, 0) and t.get(9) is None


# ---- the ledger state over it


def test_done_entries_are_compact_rows_and_answer_as_whole_entries() -> None:
    st = LedgerState("edge")
    for e in (done(1, nxt="block:100", mtime=5, ready_ms=9), done(2, size=50, mtime=20, ready_ms=3)):
        st.apply(st.keys.file(e.file_id), e.to_json())
    assert len(st._done) == 2 and not st._full
    e1 = st.get(1)
    assert e1 is not None and (e1.state, e1.size, e1.rows, e1.next, e1.source) == (DONE, 100, 7, "block:100", "s")
    assert (e1.mtime, e1.ready_ms, e1.path) == (9, 9, "")  # the stamp: max(mtime, ready time)
    assert st.files[2].next is None and st.files[2].mtime == 20 and set(st.files) == {1, 2}
    assert st.counts() == {PENDING: 0, ACTIVE: 0, DONE: 2, QUARANTINED: 0}
    # decide() from the rows: the same verdicts as from whole entries
    whole = applied(*((st.keys.file(e.file_id), e.to_json()) for e in (done(1, nxt="block:100"), done(2, size=50))))
    for args in [(1, 100, 0, "avro", False), (1, 180, 0, "avro", False), (1, 180, 0, "parquet", True),
                 (1, 60, 0, "avro", False), (2, 50, 0, "avro", True), (2, 80, 0, "avro", False),
                 (2, 20, 0, "parquet", False), (3, 10, 0, "parquet", True)]:
        assert st.decide(*args) == whole.decide(*args), args
    assert st.decide(1, 180, 0, "avro", False) == ("appended", "block:100")
    assert st.decide(2, 80, 0, "avro", False) == ("changed", None)  # no end recorded: no resume


def test_entries_of_other_forms_stay_whole() -> None:
    st = LedgerState("edge")
    odd = [done(1, nxt="rg:3/0"), done(2, nxt="block:100/5"), done(3, nxt="block:007"),
           FileEntry(source="s", path="/d/4", file_id=4, size=1, mtime=1, state=DONE, reason="why"),
           FileEntry(source="s", path="/d/5", file_id=5, size=1, mtime=1, state=QUARANTINED, rows=2),
           FileEntry(source="s", path="/d/6", file_id=6, size=1, mtime=1, state=ACTIVE, next="rg:1/0")]
    for e in odd:
        st.apply(st.keys.file(e.file_id), e.to_json())
    assert not len(st._done) and all(st.get(e.file_id) == e for e in odd)
    assert st.counts() == {PENDING: 0, ACTIVE: 1, DONE: 4, QUARANTINED: 1}


def test_a_file_moves_between_rows_and_whole_entries() -> None:
    st = LedgerState("edge")
    key = st.keys.file(1)
    st.apply(key, done(1, nxt="block:100").to_json())
    # An Avro file appended to: pending again (whole), then done again (a row).
    st.apply(key, FileEntry(source="s", path="/d/1", file_id=1, size=180, mtime=1, state=PENDING,
                            next="block:100", rows=7).to_json())
    assert 1 in st._full and 1 not in st._done and st.unfinished()[0].next == "block:100"
    st.apply(key, done(1, size=180, nxt="block:180", rows=9).to_json())
    assert 1 not in st._full and st.get(1).size == 180 and st.get(1).rows == 9  # type: ignore[union-attr]
    st.apply(key, None)
    assert st.get(1) is None and 1 not in st.files and len(st.files) == 0


def test_stale_and_compactable_cover_rows_and_whole_entries() -> None:
    st = LedgerState("edge")
    for e in (done(1, mtime=DAY), done(2, mtime=20 * DAY),
              FileEntry(source="s", path="/d/3", file_id=3, size=1, mtime=2 * DAY, state=QUARANTINED),
              FileEntry(source="s", path="/d/4", file_id=4, size=1, mtime=DAY, state=ACTIVE)):
        st.apply(st.keys.file(e.file_id), e.to_json())
    assert sorted(st.stale(10 * DAY)) == [1, 3] and len(st.stale(10 * DAY, limit=1)) == 1
    assert sorted(e.file_id for e in st.compactable(10 * DAY)) == [1, 3]
    assert st.stale(DAY) == []


# ---- the loader: the same state as record by record


def _records(n: int, seed: int) -> list[tuple[bytes, bytes | None]]:
    """A ledger's file records in offset order: files recorded, active, done (some Avro), some
    appended and done again, some quarantined, tombstones, other record kinds."""
    rng = random.Random(seed)
    keys = LedgerState("edge").keys
    out: list[tuple[bytes, bytes | None]] = [(keys.source("s"), b'{"name":"s"}'), (b"other|file|1", b"junk")]
    for _ in range(n):
        fid = rng.randrange(n // 2)
        r = rng.random()
        if r < 0.1:
            out.append((keys.file(fid), None))
        elif r < 0.3:
            out.append((keys.file(fid), FileEntry(source="s", path=f"/d/{fid}", file_id=fid, size=fid,
                                                  mtime=fid, state=rng.choice([PENDING, ACTIVE]),
                                                  next=rng.choice([None, "rg:1/0"])).to_json()))
        elif r < 0.35:
            out.append((keys.file(fid), FileEntry(source="s", path=f"/d/{fid}", file_id=fid, size=fid,
                                                  mtime=fid, state=QUARANTINED, reason="x").to_json()))
        else:
            out.append((keys.file(fid), done(fid, size=rng.randrange(10**6), mtime=rng.randrange(10**12),
                                             nxt=rng.choice([None, f"block:{fid}", "rg:2/0"]),
                                             source=rng.choice(["s", "t", "ü"])).to_json()))
        if rng.random() < 0.05:
            out.append((keys.stream(), orjson.dumps({"txid": fid})))
    return out


def _comparable(st: LedgerState) -> dict[int, tuple[object, ...]]:
    return {fid: (e.state, e.size, e.rows, e.next, e.source, max(e.mtime, e.ready_ms) if e.state == DONE else e.mtime)
            for fid, e in st.files.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_loader_folds_as_apply_does(seed: int) -> None:
    records = _records(3000, seed)
    one_by_one = applied(*records)
    for chunks in (1, 7, 3000):
        st = loaded(*records, chunks=chunks)
        assert _comparable(st) == _comparable(one_by_one)
        assert st.records_read == one_by_one.records_read and st.stream_txid == one_by_one.stream_txid
        assert st.counts() == one_by_one.counts()
        assert [e.file_id for e in st.unfinished()] == [e.file_id for e in one_by_one.unfinished()]


def test_the_loader_takes_values_it_cannot_put_in_rows_whole() -> None:
    keys = LedgerState("edge").keys
    big = done(1, size=1 << 63).to_json()
    text = done(2).to_json().replace(b'"size":100', b'"size":"100"')
    records = [(keys.file(1), done(1).to_json()), (keys.file(1), big), (keys.file(2), text),
               (keys.file(3), done(3).to_json())]
    st = loaded(*records)
    assert st.get(1).size == 1 << 63 and 1 in st._full  # type: ignore[union-attr]
    assert st.get(2).size == 100 and st.get(3).size == 100  # type: ignore[union-attr]
    # A bad value later replaced is of no matter; one that is a file's last record is an error.
    assert loaded((keys.file(4), b"{not json"), (keys.file(4), done(4).to_json())).get(4) is not None
    with pytest.raises(LedgerError):
        loaded((keys.file(4), done(4).to_json()), (keys.file(4), b"{not json"))
    with pytest.raises(LedgerError):
        loaded((keys.file(4) + b"x", done(4).to_json()))


def test_a_million_done_files_take_a_few_tens_of_bytes_each() -> None:
    keys = LedgerState("edge").keys
    n = 20_000
    st = loaded(*((keys.file(i), done(i, nxt=f"block:{i}" if i % 10 == 0 else None).to_json())
                  for i in range(n)), chunks=10)
    assert len(st._done) == n and not st._full
    assert st._done.memory_bytes() == 42 * n
