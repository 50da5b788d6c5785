"""`hdfs2kafka ledger reshard`'s plan: which record of a one-shard ledger goes to which
partition, and that an interrupted reshard run again ends with the same ledger (pure: no Kafka)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from pipeline.cli import main
from pipeline.commands.ledger import (
    COPYING,
    DONE,
    Held,
    ShardRead,
    chunks,
    encoded,
    marker_key,
    plan_reshard,
)
from pipeline.ledger import ACTIVE, PENDING, QUARANTINED, FileEntry, LedgerState
from pipeline.ledger import DONE as FILE_DONE
from pipeline.shards import OwnedLedger, shard_of

pytestmark = pytest.mark.unit

GROUP = "etl"
STATES = (FILE_DONE, PENDING, ACTIVE, QUARANTINED)


def entry(fid: int, state: str = FILE_DONE) -> FileEntry:
    return FileEntry(source="clicks" if fid % 2 else "orders", path=f"/data/f-{fid}", file_id=fid,
                     size=100 + fid, mtime=5_000 + fid, state=state,
                     next="rg:1/0" if state == ACTIVE else None, rows=10, ready_txid=fid,
                     ready_ms=7_000 + fid, reason="bad" if state == QUARANTINED else None)


def one_shard_ledger(n_files: int = 200) -> list[tuple[bytes, bytes | None]]:
    """The records of partition 0 of a one-shard ledger, in offset order: entries (some
    rewritten, some tombstoned), the edit-stream txid, sources (one removed), the watermark."""
    keys = LedgerState(GROUP).keys
    records: list[tuple[bytes, bytes | None]] = []
    for fid in range(16_386, 16_386 + n_files):
        records.append((keys.file(fid), entry(fid, PENDING).to_json()))
        records.append((keys.file(fid), entry(fid, STATES[fid % 4]).to_json()))
    for fid in range(16_386, 16_386 + n_files, 7):
        records.append((keys.file(fid), None))  # compacted away by the watermark
    records += [
        (keys.stream(), b'{"txid": 41}'), (keys.stream(), b'{"txid": 4242}'),
        (keys.source("clicks"), b'{"name": "clicks", "started_ms": 1}'),
        (keys.source("orders"), b'{"name": "orders", "started_ms": 2}'),
        (keys.source("gone"), b'{"name": "gone", "started_ms": 3}'), (keys.source("gone"), None),
        (keys.watermark(), b'{"mtime_floor": 4000, "updated_ms": 9}'),
        (keys.owner(), b'{"life": "old"}'),
    ]
    return records


def read(records: list[tuple[bytes, bytes | None]], *, compact_done: bool = True) -> ShardRead:
    """Partition records folded as `read_shards` folds them (the loader)."""
    st = ShardRead(GROUP, compact_done=compact_done)
    loader = st.loader()
    loader.add([SimpleNamespace(key=k, value=v) for k, v in records])
    loader.finish()
    return st


def run_plan(parts: dict[int, list[tuple[bytes, bytes | None]]], shards: int,
             per_transaction: int, transactions: int | None = None) -> int:
    """One run of the reshard over `parts` (appending what it writes), its transactions cut
    after `transactions` (an interruption); returns the transactions committed."""
    p0 = read(parts[0], compact_done=False)
    held = {s: read(parts[s]).held() for s in range(1, shards)}
    plan = plan_reshard(p0.keys, p0.files.values(), p0.shared, shards, held)
    batches = chunks(plan.records, per_transaction)
    for i, batch in enumerate(batches[:transactions]):
        for p, key, value in batch:
            parts[p].append((key, encoded(value)))
        if i == len(batches) - 1:
            parts[0].append((marker_key(p0.keys), orjson.dumps({"state": DONE})))
    return len(batches) if transactions is None else min(transactions, len(batches))


def check_resharded(parts: dict[int, list[tuple[bytes, bytes | None]]], original: ShardRead,
                    shards: int) -> None:
    """Each shard holds exactly its files' entries, as they were, and the shared records."""
    states = {s: read(records, compact_done=False) for s, records in parts.items()}
    for s, st in states.items():
        assert {fid for fid in st.files} == {f for f in original.files if shard_of(f, shards) == s}
        for fid, e in st.files.items():
            assert e == original.files[fid]
        assert st.stream_txid == 4242
        assert st.sources == {"clicks": {"name": "clicks", "started_ms": 1},
                              "orders": {"name": "orders", "started_ms": 2}}
        assert st.mtime_floor == 4000
    # What the daemons see: a member owning every shard finds every unfinished file once.
    owned = OwnedLedger(states, shards)
    assert sorted(e.file_id for e in owned.unfinished()) == sorted(
        e.file_id for e in original.unfinished())
    assert owned.stream_txid == 4242


def test_each_entry_goes_to_its_shard_and_the_shared_records_to_every_shard() -> None:
    p0 = read(one_shard_ledger(), compact_done=False)
    assert len(p0.files) == 200 - 29
    plan = plan_reshard(p0.keys, p0.files.values(), p0.shared, 4)
    keys = p0.keys
    by_key = {(p, k): encoded(v) for p, k, v in plan.records}
    for fid, e in p0.files.items():
        s = shard_of(fid, 4)
        if s == 0:
            assert not any(k == keys.file(fid) for _, k, _ in plan.records)  # stays as it is
        else:
            assert by_key[(s, keys.file(fid))] == e.to_json()
            assert by_key[(0, keys.file(fid))] is None  # tombstoned where it was
    for s in (1, 2, 3):
        # The same values as partition 0's; a removed source and the owner record are not copied.
        assert by_key[(s, keys.stream())] == b'{"txid": 4242}'
        assert by_key[(s, keys.watermark())] == b'{"mtime_floor": 4000, "updated_ms": 9}'
        assert by_key[(s, keys.source("clicks"))] == b'{"name": "clicks", "started_ms": 1}'
        assert (s, keys.source("gone")) not in by_key and (s, keys.owner()) not in by_key
    assert not any(p == 0 and v is not None for p, _, v in plan.records)
    moved = Counter(shard_of(fid, 4) for fid in p0.files)
    assert plan.moved == dict(moved)
    assert plan.tombstones == len(p0.files) - moved[0]
    assert plan.copies == 3 * 4 + plan.tombstones
    assert all(0 < n < len(p0.files) for n in moved.values())  # the files spread


def test_every_tombstone_comes_after_its_copy_whatever_the_transactions() -> None:
    p0 = read(one_shard_ledger(), compact_done=False)
    plan = plan_reshard(p0.keys, p0.files.values(), p0.shared, 8)
    for size in (1, 7, 50, 10_000):
        batches = chunks(plan.records, size)
        assert [r for b in batches for r in b] == plan.records
        assert all(len(b) <= size for b in batches)
        where = {(p, k): i for i, b in enumerate(batches) for p, k, v in b if v is not None}
        for i, b in enumerate(batches):
            for _, key, value in b:
                if value is None:
                    copies = [t for (q, k), t in where.items() if k == key and q != 0]
                    assert copies and copies[0] <= i
    assert chunks([], 10) == [[]]  # the marker still gets its transaction


def test_a_reshard_moves_every_entry_once_and_a_second_run_finds_nothing_to_move() -> None:
    records = one_shard_ledger()
    original = read(records, compact_done=False)
    parts: dict[int, list[tuple[bytes, bytes | None]]] = {s: [] for s in range(4)}
    parts[0] = list(records)
    run_plan(parts, 4, per_transaction=25)
    check_resharded(parts, original, 4)
    again = plan_reshard(original.keys, read(parts[0], compact_done=False).files.values(),
                         read(parts[0]).shared, 4, {s: read(parts[s]).held() for s in (1, 2, 3)})
    assert again.records == [] and again.moved[0] == len(read(parts[0]).files)


@pytest.mark.parametrize("cut", [0, 1, 3, 9])
def test_an_interrupted_reshard_run_again_ends_with_the_same_ledger(cut: int) -> None:
    records = one_shard_ledger()
    original = read(records, compact_done=False)
    parts: dict[int, list[tuple[bytes, bytes | None]]] = {s: [] for s in range(4)}
    parts[0] = list(records)
    run_plan(parts, 4, per_transaction=20, transactions=cut)  # interrupted after `cut`
    written = sum(len(parts[s]) for s in (1, 2, 3))
    # Nothing is lost meanwhile: every entry is in partition 0 or its shard.
    now = {s: read(records) for s, records in parts.items()}
    for fid in original.files:
        assert fid in now[0].files or fid in now[shard_of(fid, 4)].files
    run_plan(parts, 4, per_transaction=20)
    check_resharded(parts, original, 4)
    # What the first run copied was not written again.
    copies = Counter((s, k) for s in (1, 2, 3) for k, _ in parts[s])
    assert max(copies.values()) == 1
    assert sum(copies.values()) >= written


def test_what_a_shard_holds_already_is_not_copied_but_still_tombstoned() -> None:
    p0 = read(one_shard_ledger(), compact_done=False)
    keys = p0.keys
    fid = next(f for f in p0.files if shard_of(f, 2) == 1)
    plan = plan_reshard(keys, p0.files.values(), p0.shared, 2,
                        {1: Held(files={fid}, shared={keys.stream()})})
    assert not any(p == 1 and k == keys.file(fid) for p, k, _ in plan.records)
    assert (0, keys.file(fid), None) in plan.records
    assert not any(p == 1 and k == keys.stream() for p, k, _ in plan.records)
    assert any(p == 1 and k == keys.watermark() for p, k, _ in plan.records)


def test_one_shard_plans_nothing() -> None:
    p0 = read(one_shard_ledger(), compact_done=False)
    plan = plan_reshard(p0.keys, p0.files.values(), p0.shared, 1)
    assert plan.records == [] and plan.moved == {0: len(p0.files)}


def test_the_marker_is_read_by_the_tool_and_ignored_by_the_daemons_ledger() -> None:
    records = one_shard_ledger(20)
    marker = (marker_key(LedgerState(GROUP).keys), orjson.dumps({"state": COPYING, "to": 4}))
    st = read([*records, marker])
    assert st.marker == {"state": COPYING, "to": 4}
    plain = LedgerState(GROUP)
    loader = plain.loader()
    loader.add([SimpleNamespace(key=k, value=v) for k, v in [*records, marker]])
    loader.finish()
    bare = LedgerState(GROUP)
    loader = bare.loader()
    loader.add([SimpleNamespace(key=k, value=v) for k, v in records])
    loader.finish()
    assert dict(plain.files) == dict(bare.files)
    assert (plain.stream_txid, plain.sources, plain.mtime_floor) == (
        bare.stream_txid, bare.sources, bare.mtime_floor)


def test_the_command_without_an_action_or_with_a_bad_shard_count_is_a_usage_error(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger"]) == 2
    cfg = tmp_path / "c.toml"
    cfg.write_text('[daemon]\ninstance_id = "x"\n[hdfs]\nnamenodes = ["127.0.0.1:1"]\n'
                   'webhdfs = "http://127.0.0.1:1"\nuser = "hdfs"\n[kafka]\nbootstrap = "127.0.0.1:1"\n'
                   '[[sources]]\nname = "s"\npath = "/d/**"\ntopic = "s"\n')
    assert main(["ledger", "reshard", "--shards", "0", "--config", str(cfg)]) == 2
    assert "--shards must be" in capsys.readouterr().err
    assert main(["ledger", "reshard", "--shards", "4", "--config", str(tmp_path / "none.toml")]) == 2
