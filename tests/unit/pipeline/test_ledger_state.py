"""The ledger's decisions: what is produced again and what never is."""

from __future__ import annotations

from pipeline.ledger import ACTIVE, DONE, PENDING, QUARANTINED, FileEntry, LedgerState

DAY = 86_400_000


def entry(fid: int, state: str, size: int = 100, mtime: int = 10 * DAY, nxt: str | None = None,
          txid: int = 1) -> FileEntry:
    return FileEntry(source="s", path=f"/d/{fid}", file_id=fid, size=size, mtime=mtime, state=state,
                     next=nxt, ready_txid=txid)


def folded(*entries: FileEntry) -> LedgerState:
    st = LedgerState("edge")
    for e in entries:
        st.apply(st.keys.file(e.file_id), e.to_json())
    return st


def test_records_of_other_instances_are_ignored() -> None:
    st = LedgerState("edge")
    other = LedgerState("other")
    st.apply(other.keys.file(1), entry(1, DONE).to_json())
    st.apply(st.keys.stream(), b'{"txid": 42}')
    assert st.files == {} and st.stream_txid == 42


def test_done_files_are_never_produced_again() -> None:
    st = folded(entry(1, DONE))
    assert st.decide(1, 100, 10 * DAY, "parquet", listed=False) == ("skip", None)
    assert st.decide(1, 100, 10 * DAY, "parquet", listed=True) == ("skip", None)


def test_unfinished_files_resume_in_ready_order() -> None:
    st = folded(entry(3, ACTIVE, nxt="rg:2/0", txid=9), entry(1, DONE), entry(2, PENDING, txid=5))
    assert [(e.file_id, e.next) for e in st.unfinished()] == [(2, None), (3, "rg:2/0")]
    # In flight: not admitted a second time.
    assert st.decide(3, 100, 10 * DAY, "parquet", listed=True)[0] == "skip"


def test_a_rewritten_file_is_new_and_an_appended_avro_file_resumes_at_its_old_end() -> None:
    st = folded(entry(1, DONE, nxt="block:100"))
    assert st.decide(2, 100, 11 * DAY, "parquet", listed=False) == ("new", None)
    assert st.decide(1, 180, 11 * DAY, "avro", listed=False) == ("appended", "block:100")
    assert st.decide(1, 180, 11 * DAY, "parquet", listed=False) == ("changed", None)


def test_tombstones_remove_entries_and_the_floor_covers_them() -> None:
    st = folded(entry(1, DONE, mtime=DAY), entry(2, DONE, mtime=20 * DAY), entry(3, ACTIVE, mtime=15 * DAY))
    floor = st.new_floor(now_ms=30 * DAY, retention_ms=7 * DAY)
    assert floor == 15 * DAY  # held back by the unfinished file
    assert [e.file_id for e in st.compactable(floor)] == [1]
    st.apply(st.keys.file(1), None)
    st.apply(st.keys.watermark(), b'{"mtime_floor": %d}' % floor)
    assert 1 not in st.files
    # A listed file below the floor counts as done; one above it, or seen by an event, is new.
    assert st.decide(1, 100, DAY, "parquet", listed=True) == ("skip", None)
    assert st.decide(9, 100, 16 * DAY, "parquet", listed=True) == ("new", None)
    assert st.decide(1, 100, DAY, "parquet", listed=False) == ("new", None)


def test_quarantined_file_rewritten_in_place_is_tried_again() -> None:
    st = folded(entry(1, QUARANTINED, size=50))
    assert st.decide(1, 100, 11 * DAY, "parquet", listed=False) == ("new", None)
    assert st.decide(1, 50, 10 * DAY, "parquet", listed=False) == ("skip", None)


def test_a_done_file_that_changed_is_quarantined_once_and_never_produced_again() -> None:
    st = folded(entry(1, DONE, nxt="block:100"), entry(2, DONE))
    # Truncated Avro, appended or truncated Parquet: quarantined.
    assert st.decide(1, 60, 11 * DAY, "avro", listed=False) == ("changed", None)
    assert st.decide(2, 180, 11 * DAY, "parquet", listed=True) == ("changed", None)
    assert st.decide(2, 60, 11 * DAY, "parquet", listed=False) == ("changed", None)
    # Once recorded so (with its rows and new size), no later change brings it back.
    quarantined = FileEntry(source="s", path="/d/1", file_id=1, size=60, mtime=11 * DAY,
                            state=QUARANTINED, rows=500, reason="changed")
    st.apply(st.keys.file(1), quarantined.to_json())
    assert st.decide(1, 60, 11 * DAY, "avro", listed=True) == ("skip", None)
    assert st.decide(1, 900, 12 * DAY, "avro", listed=False) == ("skip", None)
