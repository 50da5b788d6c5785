"""`hdfs2kafka ledger reshard --shards N --config FILE`: give a group's one-partition ledger N
shards.

A ledger topic written by a single daemon (a group of one shard) has one partition. A group of
N shards keeps file F's entry in partition `shard_of(F, N)`, and the edit-stream txid, the
sources started and the watermark in every partition (`pipeline.shards`). With every daemon of
the group stopped, `reshard`:

1. checks the topic (1 partition, or N with a reshard to N left unfinished) and that the
   consumer group `hdfs2kafka-<group>` has no members;
2. starts the one-shard group's transactional producer (`hdfs2kafka-<group>`): that fences a
   daemon still running with it and aborts its open transaction;
3. reads partition 0 whole (read_committed);
4. records `<group>|reshard` = {"state": "copying", ...} in partition 0, then adds partitions up
   to N;
5. with that producer, in transactions of at most `--records-per-transaction` records, writes
   to each shard s > 0 the shared records (stream, sources, watermark: partition 0's values)
   and the entries of its files, then tombstones in partition 0 the entries that moved; the
   last transaction records `<group>|reshard` as done.

Copies come before tombstones, so an interruption never loses an entry. Run again after an
interruption, it finds the marker still "copying" (or entries of other shards left in
partition 0) and finishes the job; a record already in its shard (copied by the interrupted
run) is not written again. The daemons' ledger ignores the `reshard` record.

Which record goes where is `plan_reshard` (pure); the rest is I/O.

Exit codes: 0 done (or nothing to do), 1 Kafka failed (run it again: it continues), 2 a wrong
config or argument, 3 refused: daemons of the group are running.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.ledger import FileEntry, Keys, LedgerState
from pipeline.shards import producer_name, shard_of

NAME = "ledger"
HELP = "a group's ledger topic: `reshard` gives a one-partition ledger more shards"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

RECORDS_PER_TRANSACTION = 10_000
"""Records one transaction carries: a big ledger is copied in many transactions, each far
shorter than transaction.timeout.ms."""
SHARED_KINDS = (b"stream", b"source", b"watermark")
"""The records every shard of a group keeps a copy of (the file entries go to their shard)."""
MARKER_KIND = b"reshard"
COPYING = "copying"
DONE = "done"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser(
        "reshard", help="give a one-partition ledger (one daemon's) N shards; every daemon of "
                        "the group stopped",
        description="Add partitions to the group's one-partition ledger topic up to N and move "
                    "each file's entry to its shard's partition (the edit-stream position, the "
                    "sources started and the watermark are copied to every shard). Stop every "
                    "daemon of the group first. Safe to interrupt: run it again to finish.")
    p.add_argument("--shards", type=int, required=True, metavar="N",
                   help="the group's shard count after it (the ledger topic's partitions)")
    p.add_argument("--config", "-c", required=True, metavar="FILE",
                   help="a config of the group's daemons (its [daemon] group and [kafka])")
    p.add_argument("--records-per-transaction", type=int, default=RECORDS_PER_TRANSACTION,
                   metavar="N", help=f"records written per transaction (default "
                                     f"{RECORDS_PER_TRANSACTION})")
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> Any:
    if getattr(args, "action", None) != "reshard":
        args._parser.print_help(sys.stderr)
        return EXIT_USAGE
    return reshard(args)


# --------------------------------------------------------------------------- the plan (pure)


@dataclass(frozen=True)
class Held:
    """What a shard's partition holds already (an interrupted run's copies)."""

    files: Container[int] = frozenset()
    shared: Container[bytes] = frozenset()


Value = bytes | FileEntry | None
"""A record's value in a plan: raw bytes, a file entry (encoded when it is sent: a plan of a big
ledger holds no second copy of it) or None (a tombstone)."""
Record = tuple[int, bytes, Value]
"""(partition, key, value)."""


def encoded(value: Value) -> bytes | None:
    return value.to_json() if isinstance(value, FileEntry) else value


@dataclass
class ReshardPlan:
    """The records a reshard writes, in the order it writes them: copies first, then the
    tombstones of partition 0 (so a tombstone is never committed before its copy)."""

    records: list[Record] = field(default_factory=list)
    moved: dict[int, int] = field(default_factory=dict)
    """Shard -> file entries that belong to it (shard 0: those that stay in partition 0)."""
    copies: int = 0
    tombstones: int = 0


def plan_reshard(keys: Keys, entries: Iterable[FileEntry], shared: Mapping[bytes, bytes | None],
                 shards: int, held: Mapping[int, Held] | None = None) -> ReshardPlan:
    """Where each record of a one-shard ledger (partition 0: its file `entries` and its
    `shared` records, raw) goes in a ledger of `shards` shards: every shard s > 0 gets the
    shared records, each file entry goes to partition `shard_of(file_id, shards)`, and the
    entries that moved are tombstoned in partition 0. What a shard `held` already (copied by an
    interrupted run) is not copied again; its entries in partition 0 are still tombstoned."""
    held = held or {}
    plan = ReshardPlan(moved=dict.fromkeys(range(shards), 0))
    empty = Held()
    live_shared = sorted((k, v) for k, v in shared.items() if v is not None)
    for s in range(1, shards):
        has = held.get(s, empty)
        for key, value in live_shared:
            if key not in has.shared:
                plan.records.append((s, key, value))
                plan.copies += 1
    moved: list[bytes] = []
    for e in sorted(entries, key=lambda e: e.file_id):
        s = shard_of(e.file_id, shards)
        plan.moved[s] += 1
        if s == 0:
            continue
        if e.file_id not in held.get(s, empty).files:
            plan.records.append((s, keys.file(e.file_id), e))
            plan.copies += 1
        moved.append(keys.file(e.file_id))
    plan.records.extend((0, key, None) for key in moved)
    plan.tombstones = len(moved)
    return plan


def chunks(records: list[Record], size: int) -> list[list[Record]]:
    """`records` in transactions of at most `size` (one empty one when there are none: the
    marker still has to be written)."""
    size = max(1, size)
    return [records[i:i + size] for i in range(0, len(records), size)] or [[]]


def marker_key(keys: Keys) -> bytes:
    return keys.prefix + MARKER_KIND


class ShardRead(LedgerState):
    """A shard's ledger as read back, with the raw value of each shared record and the
    reshard marker (what `LedgerState` keeps of them is parsed)."""

    def __init__(self, group: str, *, compact_done: bool = True) -> None:
        super().__init__(group, compact_done=compact_done)
        self.shared: dict[bytes, bytes | None] = {}
        self.marker: dict[str, Any] | None = None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        super().apply(key, value)
        if key is None or not key.startswith(self.keys.prefix):
            return
        kind = key[len(self.keys.prefix):].partition(b"|")[0]
        if kind in SHARED_KINDS:
            self.shared[key] = value
        elif kind == MARKER_KIND:
            try:
                self.marker = orjson.loads(value) if value is not None else None
            except ValueError:
                self.marker = None

    def held(self) -> Held:
        return Held(files=set(self.files), shared={k for k, v in self.shared.items() if v is not None})


# --------------------------------------------------------------------------- the command


class Refused(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


async def reshard(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError, ProducerFenced

    from pipeline import config as config_mod
    from pipeline import logs
    from pipeline.ledger import LedgerError

    logs.configure("warning", "console")
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"hdfs2kafka ledger reshard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.shards < 1 or args.shards > config_mod.MAX_SHARDS:
        print(f"hdfs2kafka ledger reshard: --shards must be 1 to {config_mod.MAX_SHARDS}",
              file=sys.stderr)
        return EXIT_USAGE
    if cfg.daemon.shards is not None and cfg.daemon.shards != args.shards:
        print(f"note: {args.config} has [daemon] shards = {cfg.daemon.shards}; set it to "
              f"{args.shards} (or remove it) before starting the daemons", file=sys.stderr)
    try:
        await _kerberos(cfg)
        return await Resharder(cfg, args.shards, args.records_per_transaction).run()
    except Refused as exc:
        print(f"hdfs2kafka ledger reshard: {exc}", file=sys.stderr)
        return exc.code
    except ProducerFenced:
        print(f"hdfs2kafka ledger reshard: another producer with the transactional id "
              f"hdfs2kafka-{cfg.daemon.group_name} started meanwhile (a daemon of the group): stop "
              "every daemon of the group, then run this again; nothing is lost", file=sys.stderr)
        return EXIT_REFUSED
    except (KafkaError, LedgerError, OSError, TimeoutError) as exc:
        print(f"hdfs2kafka ledger reshard: {type(exc).__name__}: {exc}; nothing is lost: run it "
              "again to finish", file=sys.stderr)
        return EXIT_FAILED


async def _kerberos(cfg: Any) -> None:
    """Kafka over GSSAPI: the daemon's ticket (from its keytab, else the ticket cache)."""
    if str(cfg.kafka.client.get("sasl_mechanism", "")).upper() != "GSSAPI":
        return
    from pipeline.kerberos_login import login

    await asyncio.to_thread(login, cfg.kerberos)


class Resharder:
    def __init__(self, cfg: Any, shards: int, per_transaction: int) -> None:
        self.cfg = cfg
        self.kafka = cfg.kafka
        self.topic: str = cfg.kafka.ledger_topic
        self.group: str = cfg.daemon.group_name
        self.keys = Keys(self.group)
        self.shards = shards
        self.per_transaction = per_transaction
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        print(line, flush=True)

    async def run(self) -> int:
        from pipeline.kafka.client import (
            start_transactional_producer,
            stop_producer,
            transactional_id,
        )

        have = await self._partitions()
        n = self.shards
        resuming = False
        if have == n == 1:
            self.say(f"ledger topic {self.topic!r} of group {self.group!r} has 1 partition "
                     "already: nothing to do")
            return EXIT_OK
        if have == n:
            # Already N: done, or a reshard to N that an interruption left unfinished.
            first = await self._read({0: ShardRead(self.group)})
            if not self._unfinished(first[0]):
                self.say(f"ledger topic {self.topic!r} of group {self.group!r} has {n} "
                         f"partition{'s' if n > 1 else ''} already: nothing to do")
                return EXIT_OK
            resuming = True
            self.say(f"ledger topic {self.topic!r} has {n} partitions and a reshard to {n} left "
                     "unfinished: finishing it")
        elif have != 1:
            first = await self._read({0: ShardRead(self.group)})
            if self._unfinished(first[0], have):
                raise Refused(
                    f"ledger topic {self.topic!r} has {have} partitions and a reshard to {have} "
                    f"left unfinished: run this again with --shards {have} to finish it")
            raise Refused(
                f"ledger topic {self.topic!r} has {have} partitions (the group's shards); a ledger "
                f"is resharded from 1 partition only (Kafka cannot take partitions away): set "
                f"[daemon] shards = {have}, or remove it")
        await self._no_members()
        producer = await start_transactional_producer(self.kafka, self.group)
        self.say(f"fenced transactional id {transactional_id(self.group)!r} (a daemon still "
                 "running with it is out, its open transaction aborted)")
        try:
            if resuming:
                await self._fence_shards()
            p0 = (await self._read({0: ShardRead(self.group, compact_done=False)}))[0]
            self.say(f"read partition 0: {len(p0.files)} file entries, {p0.records_read} records")
            marker = {"state": COPYING, "from": 1, "to": n, "started_ms": _now_ms()}
            if resuming and p0.marker and p0.marker.get("state") == COPYING:
                marker = {**p0.marker, "to": n}
            held: dict[int, Held] = {}
            if not resuming:
                await self._transaction(producer, [(0, marker_key(self.keys), orjson.dumps(marker))])
                await self._add_partitions(n)
            else:
                reads = await self._read({s: ShardRead(self.group) for s in range(1, n)})
                held = {s: st.held() for s, st in reads.items()}
            await self._wait_for_partitions(producer, n)
            plan = plan_reshard(self.keys, p0.files.values(), p0.shared, n, held)
            done = {**marker, "state": DONE, "finished_ms": _now_ms(),
                    "entries": {str(s): c for s, c in plan.moved.items()}}
            batches = chunks(plan.records, self.per_transaction)
            for i, batch in enumerate(batches):
                if i == len(batches) - 1:
                    batch = [*batch, (0, marker_key(self.keys), orjson.dumps(done))]
                await self._transaction(producer, batch)
        finally:
            await stop_producer(producer)
        seconds = time.monotonic() - self.started
        self.say(f"resharded ledger topic {self.topic!r} of group {self.group!r}: 1 -> {n} shards "
                 f"in {seconds:.1f} s ({plan.copies} records copied, {plan.tombstones} moved "
                 f"entries tombstoned in partition 0, {len(batches)} transaction"
                 f"{'s' if len(batches) > 1 else ''})")
        for s, count in sorted(plan.moved.items()):
            what = "stay in partition 0" if s == 0 else "moved"
            self.say(f"  shard {s}: {count} entr{'y' if count == 1 else 'ies'} {what}")
        self.say(f"start the group's daemons with [daemon] shards = {n} (or without `shards`)")
        return EXIT_OK

    def _unfinished(self, p0: ShardRead, shards: int | None = None) -> bool:
        """Whether partition 0 shows a reshard (to `shards`) that did not finish: the marker
        still copying, or entries of other shards (partitions added by hand, say)."""
        shards = shards or self.shards
        if p0.marker is not None and p0.marker.get("state") == COPYING:
            return True
        return any(shard_of(fid, shards) != 0 for fid in p0.files)

    # ---- Kafka

    async def _partitions(self) -> int:
        from pipeline.kafka.client import admin_client

        async with admin_client(self.kafka.bootstrap, self.kafka.client) as admin:
            # Not asked by name first: the metadata of a missing topic can make a broker create it.
            if self.topic not in await admin.list_topics():
                raise Refused(f"ledger topic {self.topic!r} does not exist: nothing to reshard (a "
                              "daemon with [daemon] shards = N creates it with N partitions)")
            meta = await admin.describe_topics([self.topic])
        have = len(meta[0].get("partitions") or []) if meta else 0
        if have < 1:
            raise Refused(f"ledger topic {self.topic!r}: no partitions in its metadata", EXIT_FAILED)
        return have

    async def _no_members(self) -> None:
        """Refuse while the group's consumer group has members: daemons still running."""
        from pipeline.kafka.client import admin_client
        from pipeline.kafka.group import group_id

        gid = group_id(self.group)
        async with admin_client(self.kafka.bootstrap, self.kafka.client) as admin:
            responses = await admin.describe_consumer_groups([gid])
        members: list[str] = []
        states: list[str] = []
        for resp in responses:
            for g in resp.groups:
                code, state, found = g[0], g[2], g[5]
                if code not in (0, 69):  # 69: GROUP_ID_NOT_FOUND
                    from aiokafka.errors import for_code

                    raise for_code(code)(f"describing consumer group {gid!r}")
                members.extend(describe_member(m) for m in found)
                states.append(state)
        if members:
            raise Refused(
                f"consumer group {gid!r} ({', '.join(states)}) has {len(members)} member"
                f"{'s' if len(members) > 1 else ''}: daemons of group {self.group!r} are running. "
                "Stop every one of them, then run this again (a daemon killed leaves the group "
                "after its group_session_timeout_s):\n" + "\n".join(f"  {m}" for m in members),
                EXIT_REFUSED)

    async def _fence_shards(self) -> None:
        """Finishing an interrupted run: fence the shards' producers too, in case a daemon ran on
        them meanwhile (its open transaction would hold the partition's reading back)."""
        from pipeline.kafka.client import start_transactional_producer, stop_producer

        gate = asyncio.Semaphore(8)

        async def fence(s: int) -> None:
            async with gate:
                await stop_producer(await start_transactional_producer(
                    self.kafka, producer_name(self.group, s, self.shards)))

        await asyncio.gather(*(fence(s) for s in range(self.shards)))

    async def _read(self, states: dict[int, ShardRead]) -> dict[int, ShardRead]:
        from pipeline.kafka.ledger_io import read_shards

        await read_shards(self.kafka, dict(states))
        return states

    async def _add_partitions(self, n: int) -> None:
        from aiokafka.admin import NewPartitions
        from aiokafka.errors import InvalidPartitionsError

        from pipeline.kafka.client import admin_client

        async with admin_client(self.kafka.bootstrap, self.kafka.client) as admin:
            try:
                await admin.create_partitions({self.topic: NewPartitions(n)})
            except InvalidPartitionsError:
                if await self._partitions() != n:
                    raise
        self.say(f"added partitions to ledger topic {self.topic!r}: 1 -> {n}")

    async def _wait_for_partitions(self, producer: Any, n: int, timeout_s: float = 60.0) -> None:
        """Until the producer's metadata has the `n` partitions, each with a leader."""
        client = producer.client
        deadline = time.monotonic() + timeout_s
        while True:
            await client.force_metadata_update()
            parts = client.cluster.partitions_for_topic(self.topic) or set()
            leaders = [client.cluster.leader_for_partition(_tp(self.topic, p)) for p in parts]
            if len(parts) >= n and all(x is not None and x != -1 for x in leaders):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"ledger topic {self.topic!r}: {len(parts)} partitions with a "
                                   f"leader after {timeout_s:.0f} s, {n} expected")
            await asyncio.sleep(0.2)

    async def _transaction(self, producer: Any, records: list[Record]) -> None:
        """One transaction of `records` (partition, key, value), committed once every send was
        confirmed."""
        bound = float(self.kafka.client.get("transaction_timeout_ms", 60_000)) / 1000 + 30
        async with asyncio.timeout(bound):
            await producer.begin_transaction()
            try:
                sends = [await producer.send(self.topic, encoded(value), key=key, partition=p)
                         for p, key, value in records]
                await asyncio.gather(*sends)
            except BaseException:
                try:
                    await producer.abort_transaction()
                except Exception:
                    pass
                raise
            await producer.commit_transaction()


def describe_member(m: Any) -> str:
    """One member of a DescribeGroups answer: its id, host and what the daemon told the group."""
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

    from pipeline.kafka.group import member_info

    member_id, host, metadata = m[0], m[-3], m[-2]
    info: dict[str, Any] = {}
    try:
        info = member_info(ConsumerProtocolMemberMetadata.decode(metadata).user_data)
    except Exception:
        pass
    about = ", ".join(f"{k} {info[k]}" for k in ("instance", "host", "pid") if k in info)
    return f"{member_id} at {host}" + (f" ({about})" if about else "")


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)


def _now_ms() -> int:
    return int(time.time() * 1000)
