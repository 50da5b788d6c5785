"""The daemon's life, top to bottom: recover, stream, reload, drain; and its live controls.

    run()
      join the group (pipeline/kafka/group.py): daemons with the same [daemon] group share its
      shards (pipeline/shards.py); a daemon alone is a group of one
      loop until stopped:
        assigned    wait for the shards the group gives this member
        recover()   start one transactional producer per shard (this fences the shard's last
                    owner and aborts its open transaction); read each shard's partition of the
                    ledger with read_committed to its end
        stream()    intake (pipeline/intake.py) -> work queue -> worker pool (pipeline/workers.py)
                    -> one committer per shard (pipeline/kafka/committer.py), until stopped,
                    reloaded with new sources, failed, or the shards are revoked (a member
                    joined or left: the group rebalances)
        on a failed transaction: rebuild everything from the ledger, as after a crash; on an
        error no rebuild can fix (a bug, a FatalError): exit non-zero for systemd to restart
      drain         stop intake and workers, commit the open transactions, stop the producers

    controls: set_rate, pause, set_workers (live), reload (SIGHUP; per config.RELOAD)

Signal handlers only set state that the loop acts on: SIGTERM/SIGINT stop, SIGHUP reloads the
source registry.

A fenced producer (the shard's epoch was bumped) means another member took the shard over
while this one was paused or cut off from the group, or the coordinator aborted a transaction
that outlived transaction.timeout.ms (a stalled broker): either way the daemon asks the group
for a new generation and recovers from the ledger like after any failed transaction. Files
whose records the broker refused are quarantined at their last committed position before the
others resume.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from hdfswatch.backoff import Backoff
from pipeline import config as config_mod
from pipeline import ledger as ledger_mod
from pipeline import logs, looplag
from pipeline.config import Config, SourceConfig
from pipeline.intake import Intake
from pipeline.items import FileQuarantined, FileWork
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.client import (
    PRODUCER_STOP_TIMEOUT_S,
    batch_settings,
    start_transactional_producer,
    stop_producer,
)
from pipeline.kafka.committer import Committer
from pipeline.kafka.errors import CommitterError, Fenced, RecordsRefused
from pipeline.kafka.group import Assignment, Membership
from pipeline.kafka.layout import RecordLayout
from pipeline.kafka.ledger_io import ensure_ledger_topic, read_shards
from pipeline.kafka.transaction import CommitStats, Committed, TransactionBuilder
from pipeline.ledger import FileEntry, LedgerState
from pipeline.ratelimit import GLOBAL, RateLimiter
from pipeline.shards import OwnedLedger, ShardQueues, producer_name
from pipeline.workers import FileOpener, WorkerPool, WorkQueue

log = structlog.get_logger("hdfs2kafka.daemon")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FATAL = 1  # a FatalError: a setting or privilege that no retry fixes
EXIT_INTERNAL = 70  # a programming error (EX_SOFTWARE)


@dataclass
class SourceRuntime:
    """Live state of one source (what /status shows and the admin verbs change)."""

    config: SourceConfig
    paused: bool = False
    failed: str | None = None
    files_detected: int = 0
    last_error: str | None = None


@dataclass
class FlowState:
    """What belongs to one life of the flow (rebuilt after a failed transaction)."""

    state: OwnedLedger
    committers: dict[int, Committer]
    queues: ShardQueues
    """The committers' queues (one per owned shard), as the intake and the workers see them."""
    assignment: Assignment
    pool: WorkerPool
    work_queue: asyncio.Queue[FileWork]
    intake: Intake
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sources: dict[str, SourceRuntime] = {
            s.name: SourceRuntime(config=s, paused=s.paused) for s in config.sources}
        self.stopping = asyncio.Event()
        self.ready = False
        self.exit_code = EXIT_OK
        self.flow: FlowState | None = None
        self.edit_txid: int | None = None
        self.namenode_txid: int | None = None
        self.last_edit_batch_unix: float | None = None
        self.last_errors: list[dict[str, Any]] = []
        self.started_unix = time.time()
        self._reload_requested = False
        self._restart_requested = False
        self.namenode: Any = None  # the NameNode client, kept across lives
        self.read_stack: Any = None  # files are read through it (hdfsread); kept across lives
        self.kerberos_principal: str | None = None  # who the daemon is, once logged in
        self.limiter = RateLimiter()
        self.assignment: Assignment | None = None  # the shards this life streams
        self._overrides: dict[str, tuple[float | None, float | None]] = {}
        """Limits set live (rows/s, bytes/s) by source (GLOBAL: the daemon's), until a reload."""
        self._apply_limits()
        self.hooks: list[Any] = []  # observers (metrics, sd_notify) with optional callbacks
        self.early_stop: list[int] = []  # stop signals that came before the loop was running
        self.membership: Membership | None = None  # this daemon in its group, across lives
        self.shards_total: int | None = None  # the group's shard count (the ledger's partitions)
        self._life_task: asyncio.Task[None] | None = None
        self._revoking = False  # the group took the shards back: the life drains and ends
        self._ending = False  # the life is past streaming: stopping its producers, or failed
        # Kept across lives: files whose records the broker refused (to quarantine before the
        # flow resumes) and the record batch size each topic's broker accepts.
        self.refused: dict[int, tuple[str, str]] = {}
        self.batch_limits: dict[str, int] = {}
        self.stats = CommitStats()  # what was committed, over the daemon's life
        self.backoff = Backoff(initial=1.0, cap=30.0)  # between lives that failed in a row
        self.loop_lag: looplag.LoopLagMonitor | None = None  # the event loop's stalls, while it runs

    # ------------------------------------------------------------------ life

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # What every task waits on (SIGUSR1), and every thread's stack even when the event loop
        # is blocked (SIGUSR2), to the log: for a daemon that seems stuck.
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        faulthandler.register(signal.SIGUSR2, all_threads=True)
        self.loop_lag = looplag.start(loop)
        # The event loop's thread shares the GIL with the workers' threads: asking for it after
        # 1 ms rather than CPython's 5 ms keeps the loop's waits for it short (the compiled
        # encoders let go of it every few thousand rows); bench/RESULTS.md, "Event loop stalls".
        sys.setswitchinterval(0.001)
        if self.early_stop:
            self.request_stop()
        log.info("starting", instance_id=self.config.daemon.instance_id,
                 sources=[s.name for s in self.config.sources], config=self.config.path)
        backoff = self.backoff
        try:
            while not self.stopping.is_set():
                try:
                    await self._live_until_stopped()
                    backoff.reset()
                except Fenced as exc:
                    self._notify("abort")
                    self._note_error(None, str(exc))
                    log.warning("fenced: another member took over a shard of ours (this daemon "
                                "was paused or cut off from the group past its session timeout), "
                                "or the coordinator aborted a transaction that ran past "
                                "transaction.timeout.ms (a stalled broker); asking the group for "
                                "a new generation and recovering from the ledger", error=str(exc),
                                shards=list(self.assignment.shards) if self.assignment else [])
                    if self.membership is not None:
                        self.membership.rejoin()
                    self.ready = False
                except RecordsRefused as exc:
                    # Not a fault of the flow: quarantine the files (or send smaller batches)
                    # and go on at once.
                    self._notify("abort")
                    self.refused.update(exc.files)
                    log.error("Kafka refused records; their files will be quarantined, the others "
                              "resume", error=str(exc),
                              files=[{"file_id": f, "source": s, "reason": r}
                                     for f, (s, r) in exc.files.items()])
                    self.ready = False
                except Exception as exc:
                    if isinstance(exc, CommitterError):
                        self._notify("abort")
                    if self.stopping.is_set():
                        break
                    if not _recoverable(exc):
                        # A bug, or a setting no retry can fix: end with a clear line and let
                        # systemd restart us (Restart=on-failure) rather than loop on it.
                        self.exit_code = (EXIT_CONFIG if isinstance(exc, ledger_mod.ShardCountMismatch)
                                          else EXIT_FATAL if _fatal(exc) else EXIT_INTERNAL)
                        log.critical("stopping: an error that recovering from the ledger cannot fix",
                                     error=f"{type(exc).__name__}: {exc}", exit_code=self.exit_code,
                                     exc_info=not _fatal(exc))
                        return self.exit_code
                    self._note_error(None, f"{type(exc).__name__}: {exc}")
                    delay = backoff.next_delay()
                    log.error("flow failed; recovering from the ledger", error=str(exc),
                              error_type=type(exc).__name__, retry_in_s=round(delay, 2),
                              exc_info=not _explained(exc))
                    self.ready = False
                    try:
                        async with asyncio.timeout(delay):
                            await self.stopping.wait()
                    except TimeoutError:
                        pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            faulthandler.unregister(signal.SIGUSR2)
            self.loop_lag.stop()
            if self.membership is not None:
                await self.membership.stop()
            if self.read_stack is not None:
                await asyncio.to_thread(self.read_stack.close)
            if self.namenode is not None:
                await self.namenode.close()
        log.info("stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _live_until_stopped(self) -> None:
        """One life; a stop during recovery (Kafka or HDFS unreachable, say) cancels it, a stop
        while streaming lets it drain and commit the open transaction."""
        life = self._life_task = asyncio.create_task(self._life(), name="life")
        stop = asyncio.create_task(self.stopping.wait(), name="stop-wait")
        try:
            await asyncio.wait({life, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not life.done():
                if self.flow is not None:
                    await asyncio.wait({life}, timeout=self.config.daemon.shutdown_timeout_s + 10)
                while not life.done():
                    life.cancel()
                    # Again only if this cancel was lost (caught in a library's clean-up), and
                    # not before the life's own clean-up (its producers' bounded stop) is over.
                    await asyncio.wait({life}, timeout=PRODUCER_STOP_TIMEOUT_S + 10)
            try:
                await life
            except asyncio.CancelledError:
                if self._revoking and not self.stopping.is_set():
                    return  # the group took the shards back before they streamed
                if not self.stopping.is_set():
                    raise
                log.info("stopped before streaming began")
        finally:
            stop.cancel()
            self._revoking = False

    def request_stop(self) -> None:
        log.info("stop requested")
        self._notify("stopping")
        self.stopping.set()

    def request_reload(self) -> None:
        self._reload_requested = True

    async def _life(self) -> None:
        """One life of the flow: wait for shards, recover them, stream until stopped, failed or
        revoked, drain."""
        self._restart_requested = False
        self._ending = False
        self.ready = False  # not ready while the ledger is being read
        self.assignment = None  # a revoke before the assignment has nothing of this life to stop
        await self._kerberos_login()
        membership = await self._membership()
        assignment = self.assignment = await membership.assigned()
        self._apply_limits()
        if not assignment.shards:
            await self._stand_by(membership)
            return
        producers = await self._start_producers(assignment.shards)
        try:
            state = await self._recover(assignment)
            await self._open_read_stack()
            flow = self._build_flow(producers, state, assignment)
            self.flow = flow
            await self._stream(flow)
        finally:
            self.flow = None
            self._ending = True  # a revoke now waits for the end, it does not cancel it
            # Shielded: a cancel (a revoke) must not leave a producer half stopped, its sender
            # and connections alive.
            await asyncio.shield(asyncio.gather(*(stop_producer(p) for p in producers.values())))

    async def _stand_by(self, membership: Membership) -> None:
        """No shard for this member (more members than shards): ready, streaming nothing, until
        the group rebalances or the daemon stops."""
        if self.assignment is None or not self.assignment.held:
            log.info("no shard assigned: standing by (the group has more members than shards)",
                     shards=self.shards_total)
        self._mark_ready()
        while not membership.revoked() and not self._restart_requested:
            failure = membership.failure()
            if failure is not None:
                raise failure
            await asyncio.sleep(0.5)
            if self._reload_requested:
                self._reload_requested = False
                await self.reload()

    async def _membership(self) -> Membership:
        """Join the group, once per daemon (after the ledger topic exists: its partitions are
        the shards the group assigns), and again if its consumer failed."""
        if self.membership is not None and self.membership.failure() is not None:
            await self.membership.stop()
            self.membership = None
        if self.membership is None:
            d = self.config.daemon
            self.shards_total = await ensure_ledger_topic(self.config.kafka, d.shards)
            membership = Membership(
                self.config.kafka, d.group_name,
                {"instance": d.instance_id, "host": socket.gethostname(), "pid": os.getpid(),
                 "http": d.http, "tls": bool(d.http_tls_cert),
                 "registry": config_mod.registry_digest(self.config.sources)},
                session_timeout_s=d.group_session_timeout_s,
                # The revoke drains the flow within shutdown_timeout_s (see _on_revoke).
                rebalance_timeout_s=d.shutdown_timeout_s + 30, on_revoke=self._on_revoke)
            await membership.start()
            self.membership = membership
            log.info("joined the group", group=d.group_name, shards=self.shards_total)
        return self.membership

    async def _on_revoke(self) -> None:
        """The group takes this member's shards back (a rebalance): the life drains, committing
        its open transactions at a unit boundary, and ends before the shards go to others. A
        life that is not streaming yet (recovering) is cancelled: it has written nothing."""
        task = self._life_task
        if task is None or task.done() or self.assignment is None:
            return  # no life, or one still waiting for shards: nothing to stop
        self._revoking = True
        deadline = time.monotonic() + self.config.daemon.shutdown_timeout_s + 10
        cancelled_at: float | None = None
        while not task.done():
            now = time.monotonic()
            starting = self.flow is None and not self._ending
            if (starting or now > deadline) and (cancelled_at is None or now - cancelled_at > 5):
                # Not streaming yet (its producers starting, its shards being read), or not
                # drained in time: its transactions are fenced by the shards' next owners.
                # Once, and again only if the cancel was lost (a wait_for that finished in the
                # same step): a second cancel would cut the life's clean-up short.
                task.cancel()
                cancelled_at = now
            await asyncio.wait({task}, timeout=0.5)

    async def _kerberos_login(self) -> None:
        """With Kerberos anywhere (NameNode, WebHDFS, Kafka GSSAPI): a ticket now, or the line
        naming what to fix (retried as any transient failure)."""
        if not uses_kerberos(self.config, self.rpc_security()):
            return
        from pipeline.kerberos_login import login

        principal = await asyncio.to_thread(login, self.config.kerberos)
        if principal != self.kerberos_principal:
            self.kerberos_principal = principal
            log.info("kerberos: logged in", principal=principal,
                     keytab=self.config.kerberos.keytab or "(ticket cache)")

    def rpc_security(self) -> Any:
        """How the NameNode client authenticates: Hadoop's configuration, then [hdfs]."""
        from hdfswatch.hadoop_conf import load_rpc_security

        h = self.config.hdfs
        security = load_rpc_security(h.hadoop_conf_dir).with_overrides(
            authentication=h.authentication, namenode_principal=h.namenode_principal,
            protection=tuple(p.strip() for p in h.rpc_protection.split(",") if p.strip())
            if h.rpc_protection else None)
        return security.with_overrides(client_principal=self.config.kerberos.principal)

    def _wait_timeout_s(self) -> float:
        """The bound on any single wait on Kafka in a transaction: past it, the coordinator has
        aborted the transaction anyway."""
        return kafka_errors.transaction_timeout_ms(self.config.kafka.client) / 1000

    # ------------------------------------------------------------------ recover

    async def _start_producers(self, shards: tuple[int, ...]) -> dict[int, Any]:
        """One transactional producer per shard, started together: each fences the shard's
        last owner (a zombie member) and aborts its open transaction, so the shard's partition
        of the ledger can then be read to its end."""
        total = self.shards_total or 1
        group = self.config.daemon.group_name
        names = {s: producer_name(group, s, total) for s in shards}
        tasks = {s: asyncio.ensure_future(start_transactional_producer(self.config.kafka, names[s]))
                 for s in shards}
        try:
            # Bounded: aiokafka waits without end for a transaction coordinator it cannot reach;
            # the life fails instead, and the daemon tries again with backoff.
            async with asyncio.timeout(self._wait_timeout_s()):
                await asyncio.gather(*tasks.values())
        except BaseException:
            for t in tasks.values():
                t.cancel()
            started = [t.result() for t in tasks.values()
                       if t.done() and not t.cancelled() and t.exception() is None]
            await asyncio.gather(*(stop_producer(p) for p in started), return_exceptions=True)
            raise
        return {s: t.result() for s, t in tasks.items()}

    async def _recover(self, assignment: Assignment) -> OwnedLedger:
        started = time.monotonic()
        group = self.config.daemon.group_name
        states = {s: LedgerState(group) for s in assignment.shards}
        await read_shards(self.config.kafka, states)
        state = OwnedLedger(states, assignment.total)
        misplaced = state.misplaced()
        if misplaced or assignment.total != self.shards_total:
            # Streaming would place files by another count than their entries: done files
            # would go again, unfinished ones would be dropped.
            raise ledger_mod.ShardCountMismatch(
                f"ledger topic {self.config.kafka.ledger_topic!r}: its entries were written for "
                f"another shard count than its {assignment.total} partitions (partitions added "
                "to it, or a reshard that did not finish); run `hdfs2kafka ledger reshard` with "
                f"every daemon of the group stopped (misplaced entries, shard/file: {misplaced[:5]})")
        counts = state.counts()
        log.info("ledger read", shards=list(assignment.shards), of=assignment.total,
                 records=state.records_read, stream_txid=state.stream_txid,
                 unfinished=counts["pending"] + counts["active"], done=counts["done"],
                 quarantined=counts["quarantined"], mtime_floor=state.mtime_floor,
                 seconds=round(time.monotonic() - started, 3))
        return state

    # ------------------------------------------------------------------ stream

    def _build_flow(self, producers: dict[int, Any], state: OwnedLedger,
                    assignment: Assignment) -> FlowState:
        d = self.config.daemon
        max_batch_bytes, compression = batch_settings(self.config.kafka.client)
        first = next(iter(producers.values()))
        layout = RecordLayout(max_batch_bytes=max_batch_bytes, compression=compression,
                              batch_limits=self.batch_limits, partitions_for=first.partitions_for)
        committers: dict[int, Committer] = {}
        for shard, producer in producers.items():
            builder = TransactionBuilder(state.states[shard],
                                         retention_ms=int(d.ledger_retention_hours * 3600_000),
                                         batch_limits=self.batch_limits, layout=layout)
            committers[shard] = Committer(
                producer, builder, self.config.kafka.ledger_topic, ledger_partition=shard,
                max_rows=d.transaction_max_rows, max_bytes=d.transaction_max_bytes,
                max_ms=d.transaction_max_ms,
                # Few units between the speed limiter and Kafka: a changed limit shows within a
                # second.
                queue_size=max(2, self.workers), wait_timeout_s=self._wait_timeout_s(),
                on_commit=self._on_commit)
        queues = ShardQueues({s: c.queue for s, c in committers.items()}, assignment.total,
                             floors=state.restored_txid)
        work_queue: asyncio.Queue[FileWork] = WorkQueue(maxsize=d.queue_size)
        pool = WorkerPool(
            queue=work_queue, out=queues, sources=self._source_config,
            opener=FileOpener(self._read_stack(), self.config.kafka.schema_registry,
                              registry_ca_file=(self.config.kafka.client.get("_ssl") or {}).get(
                                  "ssl.ca.location") or self.config.hdfs.ca_file,
                              # Records must fit a produce request and the broker's default limit.
                              max_record_bytes=min(int(self.config.kafka.client.get(
                                  "max_request_size", 1_048_576)), 1_000_000) - 512),
            unit_rows=d.unit_rows, workers=self.workers,
            limiter=self.limiter, is_paused=self._is_paused,
            on_source_failed=self._source_failed, locate=self._locate,
            on_read_error=self._note_error, layout=layout)
        intake = Intake(state, to_committer=queues, to_workers=work_queue,
                        sources=lambda: [rt.config for rt in self.sources.values()],
                        refused=self.refused, on_detected=self._on_detected,
                        on_ready=self._mark_ready, on_edits=self._on_edits,
                        poll_share=assignment.members)
        return FlowState(state=state, committers=committers, queues=queues, assignment=assignment,
                         pool=pool, work_queue=work_queue, intake=intake)

    async def _open_read_stack(self) -> None:
        """The read stack ([hdfs] reader), built at the first life and kept until the daemon
        stops: connections are pooled for the daemon, not opened per file. Built in a thread
        (a Kerberos client may ask the KDC); the native reader checks files with the edit
        stream's NameNode client, on this loop."""
        if self.read_stack is None:
            from hdfsread.stack import ReadSettings, open_read_stack

            h = self.config.hdfs
            settings = ReadSettings(reader=h.reader, user=h.user, namenodes=h.namenodes,
                                    hadoop_conf_dir=h.hadoop_conf_dir, security=self.rpc_security(),
                                    webhdfs_url=h.webhdfs or None, ca_file=h.ca_file,
                                    keytab=self.config.kerberos.keytab)
            self.read_stack = await asyncio.to_thread(
                open_read_stack, settings, namenode=self.namenode_client,
                loop=asyncio.get_running_loop())
            log.info("read stack ready", reader=self.read_stack.name)

    def _read_stack(self) -> Any:
        assert self.read_stack is not None, "built by _open_read_stack before the flow"
        return self.read_stack

    async def _stream(self, flow: FlowState) -> None:
        flow.pool.start()
        committer_tasks = [asyncio.create_task(c.run(), name=f"committer-{s}")
                           for s, c in flow.committers.items()]
        intake_task = asyncio.create_task(self._detect(flow), name="intake")
        stop_task = asyncio.create_task(self.stopping.wait(), name="stop")
        membership = self.membership
        try:
            while True:
                done, _ = await asyncio.wait([*committer_tasks, intake_task, stop_task],
                                             timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                if self._reload_requested:
                    self._reload_requested = False
                    if await self.reload():
                        # Added sources get their first-start treatment in a new life.
                        self._restart_requested = True
                if stop_task in done or self._restart_requested or self._revoking:
                    break
                for t in done:
                    if t is not stop_task:
                        exc = t.exception()
                        if exc is not None:
                            raise exc
                        raise CommitterError(f"{t.get_name()} ended unexpectedly")
                failure = flow.pool.failure() or (membership.failure() if membership else None)
                if failure is not None:
                    raise failure
            # Drain: stop detecting and decoding, then commit what the committers hold.
            intake_task.cancel()
            await flow.pool.stop()
            for c in flow.committers.values():
                c.stop()
            _, late = await asyncio.wait([asyncio.shield(t) for t in committer_tasks],
                                         timeout=self.config.daemon.shutdown_timeout_s)
            if late:
                log.warning("open transactions not committed in time; they will be aborted",
                            timeout_s=self.config.daemon.shutdown_timeout_s)
            for t in committer_tasks:
                if t.done() and not t.cancelled() and t.exception():
                    raise t.exception()  # type: ignore[misc]
        finally:
            stop_task.cancel()
            for c in flow.committers.values():
                c.stop()  # a committer whose cancel is lost still returns
            tasks = [intake_task, *committer_tasks, *flow.tasks]
            for t in tasks:
                t.cancel()
            while True:
                _, pending = await asyncio.wait(tasks, timeout=2.0)
                if not pending:
                    break
                for t in pending:  # a cancel lost in a wait_for that finished in the same step
                    t.cancel()
            for t in tasks:
                if not t.cancelled():
                    t.exception()  # retrieved: the error that ended the flow is raised above
            await flow.pool.stop()

    async def _detect(self, flow: FlowState) -> None:
        client = await self.namenode_client()
        listing = self.config.hdfs.detector == "listing"
        await flow.intake.run(client, listing_interval=self.config.hdfs.listing_interval_s if listing else None)

    async def namenode_client(self) -> Any:
        """The NameNode client, kept across lives (its connection outlives a failed flow)."""
        if self.namenode is None:
            from hdfswatch.namenode import NameNodeClient

            h = self.config.hdfs
            if h.namenodes:
                self.namenode = NameNodeClient(list(h.namenodes), user=h.user,
                                               security=self.rpc_security())
            else:
                self.namenode = NameNodeClient.from_hadoop_conf(h.hadoop_conf_dir, user=h.user,
                                                                security=self.rpc_security())
        return self.namenode

    async def _locate(self, entry: FileEntry, source: SourceConfig) -> str | None:
        """Where a file renamed while it is read is now, if its source still holds it."""
        from hdfswatch.detector import PathMatcher
        from hdfswatch.listing import locate_file

        client = await self.namenode_client()
        return await locate_file(client, entry.file_id, PathMatcher([source.path]))

    # ------------------------------------------------------------------ callbacks

    def _on_commit(self, committed: Committed) -> None:
        if self.flow is not None:
            self.flow.intake.on_commit(committed.items)
        self.stats.add(committed)
        for item in committed.items:
            if isinstance(item, FileQuarantined):
                self._note_error(item.source, item.reason)
        for hook in self.hooks:
            fn = getattr(hook, "on_commit", None)
            if fn:
                fn(committed)

    def _on_detected(self, source: str) -> None:
        rt = self.sources.get(source)
        if rt is not None:
            rt.files_detected += 1

    def _on_edits(self, txid: int | None) -> None:
        self.edit_txid = txid
        self.last_edit_batch_unix = time.time()

    def _source_config(self, name: str) -> SourceConfig | None:
        rt = self.sources.get(name)
        return rt.config if rt is not None else None

    def _is_paused(self, name: str) -> bool:
        rt = self.sources.get(name)
        return bool(rt and (rt.paused or self.stopping.is_set()))

    def _source_failed(self, name: str, reason: str) -> None:
        rt = self.sources.get(name)
        if rt is not None:
            rt.failed = reason
            rt.paused = True
        self._note_error(name, reason)

    def _note_error(self, source: str | None, message: str) -> None:
        self.last_errors.append({"time": time.time(), "source": source, "error": message})
        del self.last_errors[:-20]

    def _mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            log.info("ready: recovery done, streaming")
            self._notify("ready")

    def _reload_result(self, ok: bool) -> None:
        for hook in self.hooks:
            fn = getattr(hook, "on_reload_result", None)
            if fn:
                fn(ok)

    def _notify(self, what: str) -> None:
        for hook in self.hooks:
            fn = getattr(hook, f"on_{what}", None)
            if fn:
                fn()

    # ------------------------------------------------------------------ speed (live)

    @property
    def share(self) -> float:
        """This member's share of the group's limits: the shards it owns over all shards (files
        spread evenly over the shards, so the members' shares add up to each limit)."""
        a = self.assignment
        if a is None or not a.total:
            return 1.0
        return len(a.shards) / a.total

    def _limit(self, value: float | None) -> float | None:
        share = self.share
        return value if value is None or share == 0 else value * share

    def _apply_limits(self) -> None:
        """The limits of the config, or those set live since the last reload, times this
        member's share (applied again when the group gives it other shards)."""
        rows = self._overrides.get(GLOBAL, (self.config.daemon.rows_per_second, None))[0]
        self.limiter.set(GLOBAL, self._limit(rows), None)
        for name, rt in self.sources.items():
            rows, nbytes = self._overrides.get(
                name, (rt.config.rows_per_second, rt.config.bytes_per_second))
            self.limiter.set(name, self._limit(rows), self._limit(nbytes))

    def set_rate(self, name: str, rows_per_second: float | None, bytes_per_second: float | None) -> None:
        """Change a source's limits now (until the next reload sets them from the file)."""
        if name != GLOBAL and name not in self.sources:
            raise KeyError(name)
        self._overrides[name] = (rows_per_second, None if name == GLOBAL else bytes_per_second)
        self._apply_limits()
        log.info("rate changed", source=name, rows_per_second=rows_per_second,
                 bytes_per_second=bytes_per_second)

    def pause(self, name: str, paused: bool) -> None:
        rt = self.sources[name]
        rt.paused = paused
        if not paused:
            rt.failed = None
            if self.flow is not None:
                # Files set aside when the source was stopped by its error policy go again.
                parked = self.flow.pool.take_parked(name)
                if parked:
                    task = asyncio.get_running_loop().create_task(self._requeue(self.flow, parked))
                    self.flow.tasks.append(task)
        log.info("source paused" if paused else "source resumed", source=name)

    @staticmethod
    async def _requeue(flow: FlowState, works: list[FileWork]) -> None:
        for work in works:
            await flow.work_queue.put(work)

    def set_workers(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._workers = workers
        if self.flow is not None:
            self.flow.pool.resize(workers)
        log.info("workers changed", workers=workers)

    @property
    def workers(self) -> int:
        return getattr(self, "_workers", self.config.daemon.workers)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """Re-read the config file; apply it atomically or keep the running one.

        Each changed setting is applied as `config.RELOAD` says: live, by a new flow rebuilt
        from the ledger, or not at all (a restart is needed: the whole reload is refused).
        Returns True when the flow must be rebuilt (added sources, flow-shaping settings).
        """
        self._notify("reloading")
        path = self.config.path
        try:
            new = config_mod.load(path)
        except config_mod.ConfigError as exc:
            return self._refuse_reload("reload refused; the running registry stays", config=path,
                                       problems=exc.problems)
        plan = config_mod.reload_plan(self.config, new)
        if plan.restart_needed:
            return self._refuse_reload(
                "reload refused: these settings need a restart (systemctl restart hdfs2kafka); "
                "the running registry stays", config=path, restart_needed=list(plan.restart_needed))
        # Rebuilt in the file's order: a file goes to the first source whose path matches it.
        sources: dict[str, SourceRuntime] = {}
        for s in new.sources:
            rt = self.sources.get(s.name)
            if rt is None:
                rt = SourceRuntime(config=s, paused=s.paused)
            else:
                if rt.config.paused != s.paused:
                    rt.paused = s.paused
                rt.config = s
            sources[s.name] = rt
        self.sources = sources
        for name in plan.removed:
            self.limiter.remove(name)
        self._overrides.clear()  # the file's limits again
        # hdfs and kafka are unchanged (else refused above); the admin token is read per request.
        self.config = new
        self._apply_limits()
        self.set_workers(new.daemon.workers)
        logs.configure(new.daemon.log_level, new.daemon.log_format)
        log.info("registry reloaded", added=list(plan.added), removed=list(plan.removed),
                 sources=[s.name for s in new.sources], new_flow=list(plan.new_flow), config=path)
        if self.membership is not None and self.membership.announce_registry(
                config_mod.registry_digest(new.sources)):
            # The group decides again with this member's new registry (holds it while the
            # members' registries differ); this life ends at the revoke.
            self._restart_requested = True
        self._reload_result(True)
        self._notify("ready")
        return bool(plan.new_flow)

    def _refuse_reload(self, message: str, **details: Any) -> bool:
        log.error(message, **details)
        self._note_error(None, f"{message}: {details.get('restart_needed') or details.get('problems')}")
        self._reload_result(False)
        self._notify("ready")
        return False


def dump_tasks() -> None:
    """Log the stack of every asyncio task: where each one waits."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        out = io.StringIO()
        task.print_stack(file=out)
        log.warning("task stack", task=task.get_name(), stack=out.getvalue())
    log.warning("task stacks dumped", tasks=len(tasks))


def uses_kerberos(config: config_mod.Config, rpc_security: Any) -> bool:
    """Whether any connection of the daemon authenticates with Kerberos."""
    return bool(config.kerberos.keytab or config.kerberos.principal or rpc_security.kerberos
                or config.kafka.client.get("sasl_mechanism") == "GSSAPI")


def _explained(exc: BaseException) -> bool:
    """An error whose message says what happened (a typed error of ours, a Kafka or network
    error): logged as one line, without a traceback."""
    from aiokafka.errors import KafkaError

    from hdfswatch.errors import HdfsWatchError, TransientError

    return isinstance(exc, CommitterError | OSError | TransientError | KafkaError | HdfsWatchError)


def _fatal(exc: BaseException) -> bool:
    from hdfswatch.errors import FatalError

    return isinstance(exc, FatalError | ledger_mod.ShardCountMismatch)


def _recoverable(exc: BaseException) -> bool:
    """A failure a new life may not meet: Kafka, HDFS or the network away, a failed transaction,
    a transient error. Anything else (a bug, a FatalError) ends the daemon."""
    from aiokafka.errors import KafkaError

    from hdfswatch.errors import HdfsWatchError, TransientError

    if _fatal(exc):
        return False
    return isinstance(exc, CommitterError | ledger_mod.LedgerError | OSError | TimeoutError
                      | KafkaError | HdfsWatchError | TransientError)
