"""Membership of a group: which shards this daemon owns, decided by Kafka's group protocol.

Every daemon with the same `[daemon] group` joins the Kafka consumer group `hdfs2kafka-<group>`,
subscribed to the ledger topic. The group coordinator (a broker) keeps the members' list and
their heartbeats; the leader member assigns the ledger topic's partitions, which are the shards
(`pipeline.shards`), with `ShardAssignor`: balanced and sticky. Nothing else decides who owns
what. No record of the ledger is read through this consumer (its partitions stay paused): a
shard is restored by `pipeline.kafka.ledger_io` after its producer has fenced the last owner.

The members must run the same source registry (`config.registry_digest`, in their user
data): a member without a source would pass over that source's files in its shards for good.
While their registries differ the leader assigns nothing to anyone (the group is *held*): no
shard streams, no edit-stream position moves, and once the last member has reloaded the same
registry the group resumes where it stopped, the files that landed meanwhile included.

aiokafka's rebalances are eager: on a change of members every member gives up all its shards
(`on_revoke`, which drains the daemon's flow: the open transactions commit at a unit boundary)
before the new assignment is made. The daemon then starts a new life for the shards it got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from pipeline import shards as shards_mod
from pipeline.config import KafkaConfig
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.client import (
    client_args,
    connection_args,
    kafka_identity,
    start_client,
    stop_within,
)

log = structlog.get_logger("hdfs2kafka.group")

ASSIGNOR_NAME = "hdfs2kafka-shards"


def group_id(group: str) -> str:
    """The Kafka consumer group of a daemon group (ACLs: prefix `hdfs2kafka-`, as the
    transactional ids)."""
    return f"hdfs2kafka-{group}"


@dataclass(frozen=True)
class Assignment:
    generation: int
    shards: tuple[int, ...]
    total: int
    """The group's shard count (the ledger topic's partitions)."""
    members: int = 1
    """The group's members in this generation (each tails the edit stream)."""
    held: Mapping[str, list[str]] | None = None
    """While the members' registries differ: each registry digest with its members (by
    instance); no member is assigned a shard."""


def member_info(raw: bytes | None) -> dict[str, Any]:
    """A member's user data (what it told the group when it joined), {} if unreadable."""
    try:
        info = orjson.loads(raw) if raw else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def registries(infos: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The members (by instance) running each registry digest ("VERSION:HEX"), among those
    whose digest is of the newest version present: a member that does not say, or says in an
    older version (another release of hdfs2kafka, during a rolling upgrade), is left out."""
    said: list[tuple[int, str, str]] = []
    for info in infos:
        digest = info.get("registry")
        if not isinstance(digest, str):
            continue
        version, _, rest = digest.partition(":")
        if version.isdigit() and rest:
            said.append((int(version), digest, str(info.get("instance") or "?")))
    newest = max((said_version for said_version, _, _ in said), default=None)
    found: dict[str, list[str]] = {}
    for said_version, digest, instance in said:
        if said_version == newest:
            found.setdefault(digest, []).append(instance)
    return {d: sorted(names) for d, names in sorted(found.items())}


class ShardAssignor:
    """aiokafka's assignor interface for the shards: `pipeline.shards.assign` over the ledger
    topic's partitions. Each member's user data carries what it is (instance, host, status URL)
    and the shards it owned, for stickiness and for `hdfs2kafka status --group`."""

    name = ASSIGNOR_NAME
    version = 0

    def __init__(self, topic: str, info: Mapping[str, Any]) -> None:
        self.topic = topic
        self.info = dict(info)
        self.owned: tuple[int, ...] = ()
        self.members = 1
        """The members of the last assignment (the leader tells every member)."""
        self.held: dict[str, list[str]] | None = None
        """The registries of the last assignment's members, when they differed."""

    def metadata(self, topics: Iterable[str]) -> Any:
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

        data = orjson.dumps({**self.info, "owned": list(self.owned)})
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), data)

    def assign(self, cluster: Any, members: Mapping[str, Any]) -> dict[str, Any]:
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        parts = cluster.partitions_for_topic(self.topic) or set()
        total = max(parts) + 1 if parts else 0
        infos = {mid: member_info(m.user_data) for mid, m in members.items()}
        differ = registries(infos.values())
        if len(differ) > 1:
            # Held: a member would stream its shards without some source's files.
            told = orjson.dumps({"members": len(members), "held": differ})
            return {mid: ConsumerProtocolMemberAssignment(self.version, [(self.topic, [])], told)
                    for mid in members}
        plan = shards_mod.assign(
            [shards_mod.Member(mid, tuple(info.get("owned") or ())) for mid, info in infos.items()],
            total)
        told = orjson.dumps({"members": len(plan)})
        return {mid: ConsumerProtocolMemberAssignment(self.version, [(self.topic, got)], told)
                for mid, got in plan.items()}

    def on_assignment(self, assignment: Any) -> None:
        owned = tuple(sorted(tp.partition for tp in assignment.partitions()))
        told = member_info(assignment.user_data)
        members = told.get("members")
        self.members = members if isinstance(members, int) and members > 0 else 1
        held = told.get("held")
        self.held = held if isinstance(held, dict) and held else None
        if not self.held:  # held: nothing assigned; the shards owned before stay claimed
            self.owned = owned


class Membership:
    """This daemon in its group, from `start` to `stop` (kept across the daemon's lives).

    `assigned()` waits for the shards of the current generation; `on_revoke` is awaited when
    they are taken back (it must have stopped writing them when it returns). `rejoin()` asks for
    a new generation (after this member's producer was fenced: its view may be stale).
    """

    def __init__(self, kafka: KafkaConfig, group: str, info: Mapping[str, Any], *,
                 session_timeout_s: float, rebalance_timeout_s: float,
                 on_revoke: Callable[[], Awaitable[None]]) -> None:
        self.kafka = kafka
        self.group = group
        self.assignor = ShardAssignor(kafka.ledger_topic, info)
        self.session_timeout_s = session_timeout_s
        self.rebalance_timeout_s = rebalance_timeout_s
        self.on_revoke = on_revoke
        self.current: Assignment | None = None
        self._changed = asyncio.Event()
        self.consumer: Any = None
        self._poll: asyncio.Task[None] | None = None
        self.rebalances = 0
        """Assignments received (the first join counts)."""
        self.last_rebalance_s: float | None = None
        """From the revoke (or the first join's start) to the assignment, last time."""
        self._revoked_at: float | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        membership = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await membership._revoked()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                membership._assigned(assigned)

        args = connection_args(client_args(self.kafka.client))
        session_ms = int(self.session_timeout_s * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap, group_id=group_id(self.group),
            enable_auto_commit=False, auto_offset_reset="latest", isolation_level="read_committed",
            partition_assignment_strategy=(self.assignor,),
            session_timeout_ms=session_ms, heartbeat_interval_ms=max(500, session_ms // 4),
            rebalance_timeout_ms=int(self.rebalance_timeout_s * 1000), **args)
        self._revoked_at = time.monotonic()
        await start_client(self.consumer, "joining the group", self.kafka.client)
        self.consumer.subscribe([self.kafka.ledger_topic], listener=Listener())
        self._poll = asyncio.create_task(self._keep_polling(), name="group-poll")

    async def _keep_polling(self) -> None:
        """The consumer must poll to stay in the group (aiokafka leaves it when no fetch is
        waiting for max.poll.interval.ms); its partitions are paused, so nothing is fetched."""
        while True:
            await self.consumer.getmany(timeout_ms=1000)

    def failure(self) -> BaseException | None:
        """Why the group's consumer stopped (an ACL refusing the group, say), if it did: a
        refusal for want of an ACL as one line naming the kafka-acls command that adds it."""
        if self._poll is None or not self._poll.done() or self._poll.cancelled():
            return None
        exc = self._poll.exception()
        if exc is not None and kafka_errors.is_authorization(exc):
            return kafka_errors.AccessDenied(kafka_errors.acl_message(
                exc, kafka_identity(self.consumer), bootstrap=self.kafka.bootstrap,
                resources=(group_id(self.group),)))
        return exc

    async def _revoked(self) -> None:
        self._revoked_at = time.monotonic()
        had = self.current
        self.current = None
        self._changed.set()
        if had is not None and had.shards:
            log.info("shards revoked: stopping them at a unit boundary", shards=list(had.shards),
                     generation=had.generation)
        await self.on_revoke()

    def _assigned(self, assigned: Any) -> None:
        if assigned:
            self.consumer.pause(*assigned)
        parts = self.consumer._client.cluster.partitions_for_topic(self.kafka.ledger_topic) or set()
        total = max(parts) + 1 if parts else 0
        generation = int(getattr(getattr(self.consumer, "_coordinator", None), "generation", -1) or -1)
        self.current = Assignment(generation, tuple(sorted(tp.partition for tp in assigned)), total,
                                  self.assignor.members, self.assignor.held)
        self.rebalances += 1
        if self._revoked_at is not None:
            self.last_rebalance_s = time.monotonic() - self._revoked_at
        self._changed.set()
        log.info("shards assigned", shards=list(self.current.shards), of=total,
                 generation=generation, rebalance_s=round(self.last_rebalance_s or 0.0, 3),
                 members=self.current.members)
        if self.current.held:
            log.error("the group is held: its members run different source registries, so no "
                      "member streams until they run the same one (reload or restart the odd "
                      "ones with the group's config file)",
                      registries=self.current.held, this_member=self.assignor.info.get("registry"))

    def announce_registry(self, digest: str) -> bool:
        """Tell the group this member now runs registry `digest` (a reload): a new generation
        if it changed and there are others to agree with, so the leader holds or releases the
        group. True if it asked for one."""
        if self.assignor.info.get("registry") == digest:
            return False
        self.assignor.info["registry"] = digest  # told at every join from now on
        current = self.current
        if current is not None and current.members <= 1 and not current.held:
            return False  # alone in the group: nobody to disagree with
        self.rejoin()
        return True

    async def assigned(self) -> Assignment:
        """The current generation's shards, once assigned."""
        while self.current is None:
            failure = self.failure()
            if failure is not None:
                raise failure
            self._changed.clear()
            if self.current is not None:
                break
            try:
                async with asyncio.timeout(1.0):
                    await self._changed.wait()
            except TimeoutError:
                pass
        return self.current

    def revoked(self) -> bool:
        """Whether the shards the caller got have been taken back since."""
        return self.current is None

    def rejoin(self) -> None:
        """Ask the coordinator for a new generation: this member's producers were fenced, so
        its assignment may be stale (it was out of the group while paused or cut off)."""
        self.current = None
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    async def stop(self) -> None:
        """Leave the group: the others take its shards at their next heartbeat (within a quarter
        of the session timeout), not after the session timeout."""
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.wait([self._poll])  # its end is no error here; ours goes through
            if not self._poll.cancelled():
                self._poll.exception()
        if self.consumer is not None:
            try:
                await stop_within(self.consumer.stop(), 10.0)
            except Exception as exc:
                log.warning("leaving the group failed; the others wait for the session timeout",
                            error=f"{type(exc).__name__}: {exc}")
