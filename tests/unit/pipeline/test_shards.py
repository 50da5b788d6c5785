"""Shards: which member streams a file, and what each shard's ledger says across a member's
shards (pure: no Kafka)."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import pytest

from pipeline.items import FilesRecorded, UnitRecords
from pipeline.kafka.group import ShardAssignor, member_info
from pipeline.ledger import ACTIVE, DONE, FileEntry, LedgerState
from pipeline.shards import Member, OwnedLedger, ShardQueues, assign, shard_of

pytestmark = pytest.mark.unit


def entry(fid: int, state: str = "pending", ready_txid: int = 0, source: str = "s") -> FileEntry:
    return FileEntry(source=source, path=f"/d/{fid}", file_id=fid, size=10, mtime=1, state=state,
                     ready_txid=ready_txid, next="rg:1/0" if state == ACTIVE else None)


def test_a_files_shard_never_changes_and_files_spread_evenly() -> None:
    # Fixed values: a group's ledger places entries by them, so they must never change.
    assert [shard_of(f, 8) for f in (16386, 16387, 16388, 16389)] == [6, 6, 5, 6]
    assert [shard_of(f, 3) for f in (16386, 16387, 16388, 16389)] == [1, 2, 1, 2]
    assert shard_of(123, 1) == 0
    # Inode ids in steps (a job's file and its temporary directory alternate) still spread.
    for step in (1, 2, 4, 8):
        counts = Counter(shard_of(16386 + step * i, 8) for i in range(8000))
        assert set(counts) == set(range(8))
        assert max(counts.values()) < 1.15 * 1000, (step, counts)


def test_shard_of_is_the_same_in_every_process() -> None:
    # SplitMix64's finalizer on the id, modulo: no per-process salt (Python's hash() has one).
    assert [shard_of(f, 6) for f in range(16386, 16394)] == [_splitmix(f) % 6 for f in range(16386, 16394)]


def _splitmix(x: int) -> int:
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_assignment_gives_every_shard_to_one_member_balanced() -> None:
    for members in range(1, 8):
        for shards in (1, 2, 6, 12):
            plan = assign([Member(f"m{i}") for i in range(members)], shards)
            got = sorted(s for v in plan.values() for s in v)
            assert got == list(range(shards))
            sizes = [len(v) for v in plan.values()]
            assert max(sizes) - min(sizes) <= 1


def test_assignment_is_sticky_when_a_member_joins_or_leaves() -> None:
    first = assign([Member("a"), Member("b"), Member("c")], 6)
    # A fourth joins: each old member keeps what its new share allows; only 1-2 shards move.
    second = assign([Member(m, tuple(first[m])) for m in "abc"] + [Member("d")], 6)
    moved = sum(1 for m in "abc" for s in first[m] if s not in second[m])
    assert moved == len(second["d"]) and moved in (1, 2)
    # One leaves: its shards are shared out, nobody else loses any.
    third = assign([Member(m, tuple(second[m])) for m in "abd"], 6)
    for m in "abd":
        assert set(second[m]) <= set(third[m])
    # Every member computing it gets the same answer (the order given does not matter).
    assert assign([Member("b", (1,)), Member("a", (0,))], 2) == assign([Member("a", (0,)), Member("b", (1,))], 2)


def test_assignment_ignores_claims_on_shards_that_do_not_exist_or_are_claimed_twice() -> None:
    plan = assign([Member("a", (0, 1, 7)), Member("b", (1,))], 2)
    assert sorted(plan["a"] + plan["b"]) == [0, 1] and len(plan["a"]) == len(plan["b"]) == 1


def _owned(shards: int, states: dict[int, LedgerState]) -> OwnedLedger:
    return OwnedLedger(states, shards)


def test_owned_ledger_takes_only_its_shards_and_edits_past_each_shards_txid() -> None:
    shards = 4
    a, b = LedgerState("g"), LedgerState("g")
    a.stream_txid, b.stream_txid = 100, 250
    owned = _owned(shards, {0: a, 2: b})
    fids = {s: next(f for f in range(16386, 20000) if shard_of(f, shards) == s) for s in range(4)}
    assert owned.takes(fids[0], 101) and not owned.takes(fids[0], 100)
    assert not owned.takes(fids[2], 250) and owned.takes(fids[2], 251)
    assert not owned.takes(fids[1], 10_000) and not owned.takes(fids[3], None)
    assert owned.takes(fids[2], None)  # a listing: the ledger decides
    assert owned.stream_txid == 100  # the edit stream is read from the lowest shard's txid
    # A shard with no txid yet (first start) takes every edit.
    fresh = _owned(shards, {0: a, 1: LedgerState("g")})
    assert fresh.takes(fids[1], 5) and fresh.stream_txid == 100
    assert _owned(shards, {1: LedgerState("g")}).stream_txid is None


def test_owned_ledger_answers_across_its_shards() -> None:
    shards = 2
    f0 = [f for f in range(16386, 16500) if shard_of(f, shards) == 0][:2]
    f1 = [f for f in range(16386, 16500) if shard_of(f, shards) == 1][:2]
    a, b = LedgerState("g"), LedgerState("g")
    a.apply(a.keys.file(f0[0]), entry(f0[0], ACTIVE, ready_txid=5).to_json())
    a.apply(a.keys.file(f0[1]), entry(f0[1], DONE).to_json())
    b.apply(b.keys.file(f1[0]), entry(f1[0], "pending", ready_txid=3).to_json())
    # An entry left in a shard it does not hash to (never written by the daemon) is not ours.
    a.apply(a.keys.file(f1[1]), entry(f1[1], "pending", ready_txid=1).to_json())
    a.apply(a.keys.source("s"), b'{"start_from": "earliest"}')
    owned = _owned(shards, {0: a, 1: b})
    assert [e.file_id for e in owned.unfinished()] == [f1[0], f0[0]]  # in ready order
    assert owned.get(f0[1]) is not None and owned.get(f0[1]).state == DONE  # type: ignore[union-attr]
    assert owned.decide(f0[1], 10, 1, "parquet", False) == ("skip", None)
    assert owned.counts()["done"] == 1 and owned.counts()["active"] == 1
    assert owned.sources == {}  # started in shard 0 only: its first start runs again for shard 1
    b.apply(b.keys.source("s"), b'{"start_from": "earliest"}')
    assert set(owned.sources) == {"s"}


async def test_shard_queues_route_each_item_to_its_files_shard_in_order() -> None:
    shards = 3
    queues: dict[int, asyncio.Queue] = {0: asyncio.Queue(), 2: asyncio.Queue()}  # type: ignore[type-arg]
    router = ShardQueues(queues, shards)
    f0 = next(f for f in range(16386, 16500) if shard_of(f, shards) == 0)
    f2 = next(f for f in range(16386, 16500) if shard_of(f, shards) == 2)
    f1 = next(f for f in range(16386, 16500) if shard_of(f, shards) == 1)
    await router.put(FilesRecorded(entries=[entry(f0), entry(f2)], stream_txid=42, sources_started=["s"]))
    unit = UnitRecords(file_id=f2, source="s", topic="t", start="rg:0/0", end=None, values=[b"x"],
                       keys=None, headers=None, nbytes=1)
    await router.put(unit)
    await router.put(FilesRecorded(entries=[], stream_txid=43))
    got0 = [queues[0].get_nowait() for _ in range(queues[0].qsize())]
    got2 = [queues[2].get_nowait() for _ in range(queues[2].qsize())]
    assert [([e.file_id for e in i.entries], i.stream_txid, list(i.sources_started)) for i in got0] == \
        [([f0], 42, ["s"]), ([], 43, [])]
    assert isinstance(got2[0], FilesRecorded) and [e.file_id for e in got2[0].entries] == [f2]
    assert got2[1] is unit and got2[2].stream_txid == 43  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        await router.put(FilesRecorded(entries=[entry(f1)]))


def test_entries_in_a_shard_they_do_not_hash_to_are_found() -> None:
    """A ledger written for another shard count (partitions added by hand, a reshard cut short)
    is found before anything streams: done files would go again, unfinished ones be dropped."""
    a, b = LedgerState("g"), LedgerState("g")
    for fid in range(16386, 16400):
        st = a if shard_of(fid, 2) == 0 else b
        st.apply(st.keys.file(fid), entry(fid, DONE).to_json())
    assert OwnedLedger({0: a, 1: b}, 2).misplaced() == []
    # The same entries seen with a third partition added: most are now in the wrong shard.
    wrong = OwnedLedger({0: a, 1: b}, 3).misplaced()
    assert wrong and all(shard_of(f, 3) != s for s, f in wrong)


async def test_a_shards_edit_stream_txid_never_goes_back() -> None:
    """The edit stream is read from the lowest owned shard's txid: a shard restored further on
    is not told a lower txid (its next owner would read edits again whose done files are
    compacted away), and a shard with none gets the anchor."""
    queues: dict[int, asyncio.Queue] = {0: asyncio.Queue(), 1: asyncio.Queue(), 2: asyncio.Queue()}  # type: ignore[type-arg]
    router = ShardQueues(queues, 3, floors={0: 500, 1: 1000, 2: None})
    for txid in (500, 700, 1001):
        await router.put(FilesRecorded(entries=[], stream_txid=txid))
    got = {s: [i.stream_txid for i in (q.get_nowait() for _ in range(q.qsize()))] for s, q in queues.items()}
    assert got == {0: [700, 1001], 1: [1001], 2: [500, 700, 1001]}


def test_a_shard_knows_which_sources_started_in_it_and_whether_it_has_a_txid() -> None:
    a, b = LedgerState("g"), LedgerState("g")
    a.stream_txid = 10
    a.apply(a.keys.source("s"), b'{"start_from": "latest"}')
    owned = OwnedLedger({0: a, 1: b}, 2)
    f0 = next(f for f in range(16386, 16500) if shard_of(f, 2) == 0)
    f1 = next(f for f in range(16386, 16500) if shard_of(f, 2) == 1)
    assert owned.started(f0, "s") and not owned.started(f1, "s")
    assert owned.unanchored() and not OwnedLedger({0: a}, 2).unanchored()


def test_the_leader_tells_every_member_its_shards_and_how_many_members_tail() -> None:
    """The assignor as aiokafka calls it: each member's join data carries the shards it owned;
    each assignment carries the member count (each member's edit-stream poll share)."""
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocol

    from pipeline.kafka.group import ShardAssignor, member_info

    cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(6)) if topic == "ledger" else None)
    members = {}
    for mid, owned in (("m-a", (0, 1, 2)), ("m-b", (3, 4, 5)), ("m-c", ())):
        a = ShardAssignor("ledger", {"instance": mid, "http": "127.0.0.1:1"})
        a.owned = owned
        raw = ConsumerProtocol.METADATA.encode(a.metadata(["ledger"]))
        members[mid] = ConsumerProtocol.METADATA.decode(raw)
        assert member_info(members[mid].user_data)["instance"] == mid
    plan = ShardAssignor("ledger", {}).assign(cluster, members)  # type: ignore[arg-type]
    got = {}
    for mid, assignment in plan.items():
        me = ShardAssignor("ledger", {})
        me.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(ConsumerProtocol.ASSIGNMENT.encode(assignment)))
        got[mid] = me.owned
        assert me.members == 3
    assert sorted(s for v in got.values() for s in v) == list(range(6))
    assert set(got["m-a"]) <= {0, 1, 2} and set(got["m-b"]) <= {3, 4, 5} and len(got["m-c"]) == 2


def _join_and_assign(infos: dict[str, dict[str, object]]) -> dict[str, ShardAssignor]:
    """Each member's join data as aiokafka carries it, the leader's plan, each member's view."""
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocol

    cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(4)))
    members = {mid: ConsumerProtocol.METADATA.decode(ConsumerProtocol.METADATA.encode(
        ShardAssignor("ledger", info).metadata(["ledger"]))) for mid, info in infos.items()}
    plan = ShardAssignor("ledger", {}).assign(cluster, members)  # type: ignore[arg-type]
    views = {}
    for mid, assignment in plan.items():
        me = ShardAssignor("ledger", {})
        me.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(ConsumerProtocol.ASSIGNMENT.encode(assignment)))
        views[mid] = me
    return views


def test_members_with_different_registries_get_no_shard_until_they_agree() -> None:
    """A member without a source would pass over its files in its shards: while the members'
    registries differ, nobody streams, and each member is told which registry who runs."""
    held = _join_and_assign({"m-a": {"instance": "edge-01", "registry": "1:r1", "owned": [0, 1]},
                             "m-b": {"instance": "edge-02", "registry": "1:r2", "owned": [2, 3]},
                             "m-c": {"instance": "edge-03", "registry": "1:r1"}})
    for view in held.values():
        assert view.members == 3
        assert view.held == {"1:r1": ["edge-01", "edge-03"], "1:r2": ["edge-02"]}
    agreed = _join_and_assign({"m-a": {"instance": "edge-01", "registry": "2:r2"},
                               "m-b": {"instance": "edge-02", "registry": "2:r2"},
                               # a member of a release that does not tell its registry, and
                               # one that digests in an older way (a rolling upgrade)
                               "m-c": {"instance": "edge-03"},
                               "m-d": {"instance": "edge-04", "registry": "1:r1"}})
    assert sorted(s for v in agreed.values() for s in v.owned) == [0, 1, 2, 3]
    assert all(v.held is None for v in agreed.values())


def test_a_held_member_keeps_claiming_the_shards_it_owned_before() -> None:
    """Held, a member is assigned nothing, but its next join still claims the shards it
    streamed before the hold: once the registries agree, the shards go back where they were."""
    from aiokafka.coordinator.protocol import ConsumerProtocol
    from aiokafka.structs import TopicPartition

    me = ShardAssignor("ledger", {"instance": "edge-01"})
    me.owned = (0, 2)
    held = SimpleNamespace(partitions=lambda: [], user_data=b'{"members": 2, "held": {"1:a": ["edge-01"], "1:b": ["edge-02"]}}')
    me.on_assignment(held)
    assert me.held and me.owned == (0, 2)
    joined = ConsumerProtocol.METADATA.decode(ConsumerProtocol.METADATA.encode(me.metadata(["ledger"])))
    assert member_info(joined.user_data)["owned"] == [0, 2]
    again = SimpleNamespace(partitions=lambda: [TopicPartition("ledger", 2)], user_data=b'{"members": 2}')
    me.on_assignment(again)
    assert me.held is None and me.owned == (2,)


async def test_a_reload_that_changes_the_registry_asks_the_group_again_unless_alone() -> None:
    """A member in a group with others rejoins when its registry digest changes (the leader then
    holds or releases the group); one alone only tells its new digest at its next join (no
    rebalance for a reload of a single daemon); an unchanged digest asks for nothing."""
    from pipeline.config import KafkaConfig
    from pipeline.kafka.group import Assignment, Membership

    async def nothing() -> None:
        return None

    def member(members: int, held: dict[str, list[str]] | None = None) -> Membership:
        m = Membership(KafkaConfig(bootstrap="127.0.0.1:1", ledger_topic="ledger"), "g",
                       {"instance": "edge-01", "registry": "1:old"}, session_timeout_s=10,
                       rebalance_timeout_s=60, on_revoke=nothing)
        m.current = Assignment(generation=3, shards=(0,), total=2, members=members, held=held)
        return m

    alone = member(1)
    assert not alone.announce_registry("1:new")
    assert alone.current is not None and alone.assignor.info["registry"] == "1:new"
    assert not alone.announce_registry("1:new")
    others = member(2)
    assert not others.announce_registry("1:old")
    assert others.current is not None
    assert others.announce_registry("1:new")
    assert others.current is None and others.revoked()
    held = member(2, {"1:old": ["edge-01"], "1:x": ["edge-02"]})
    assert held.announce_registry("1:x") and held.current is None


def test_the_registry_digest_changes_with_what_decides_files_and_rows_only() -> None:
    from dataclasses import replace

    from pipeline.config import SourceConfig, registry_digest

    a = SourceConfig(name="clicks", path="/data/clicks", topic="clicks")
    b = SourceConfig(name="orders", path="/data/orders", topic="orders", format="avro")
    base = registry_digest([a, b])
    assert registry_digest([a, b]) == base and base.startswith("1:")
    # Speed, pauses and error policies may differ between members.
    assert registry_digest([replace(a, rows_per_second=10.0, paused=True), b]) == base
    for changed in ([a], [b, a], [replace(a, path="/data/clicks2"), b],
                    [replace(a, topic="clicks-v2"), b], [replace(a, key=("user",)), b],
                    [replace(a, value_format="avro"), b], [replace(a, start_from="latest"), b]):
        assert registry_digest(changed) != base, changed
