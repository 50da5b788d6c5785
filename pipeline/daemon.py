"""The daemon's life, top to bottom: recover, stream, reload, drain; and its live controls.

    run()
      loop until stopped:
        recover()   create the ledger topic if missing; start the transactional producer (this
                    fences a zombie with the same instance_id and aborts its open transaction);
                    claim the ledger; read it with read_committed to its end
        stream()    intake (pipeline/intake.py) -> work queue -> worker pool (pipeline/workers.py)
                    -> committer (pipeline/kafka/committer.py), until stopped, reloaded with
                    new sources, or failed
        on a failed transaction: rebuild everything from the ledger, as after a crash; on an
        error no rebuild can fix (a bug, a FatalError): exit non-zero for systemd to restart
      drain         stop intake and workers, commit the open transaction, stop the producer

    controls: set_rate, pause, set_workers (live), reload (SIGHUP; per config.RELOAD)

Signal handlers only set state that the loop acts on: SIGTERM/SIGINT stop, SIGHUP reloads the
source registry.

Each life claims the ledger: right after its producer has fenced the previous one it commits an
owner record naming the life. A fenced producer (the epoch was bumped) then reads the owner back:
another life's record means a second instance took over (exit code 3); its own means the
coordinator aborted a transaction that outlived transaction.timeout.ms (a stalled broker, a
frozen process), and the daemon recovers like after any failed transaction. Files whose records
the broker refused are quarantined at their last committed position before the others resume.
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
import uuid
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
from pipeline.kafka.client import batch_settings, start_transactional_producer, stop_producer
from pipeline.kafka.committer import Committer
from pipeline.kafka.errors import CommitterError, Fenced, RecordsRefused
from pipeline.kafka.layout import RecordLayout
from pipeline.kafka.ledger_io import claim_ledger, ensure_ledger_topic, read_ledger
from pipeline.kafka.transaction import CommitStats, Committed, TransactionBuilder
from pipeline.ledger import FileEntry, LedgerState
from pipeline.ratelimit import GLOBAL, RateLimiter
from pipeline.workers import FileOpener, WorkerPool, WorkQueue

log = structlog.get_logger("hdfs2kafka.daemon")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FENCED = 3
EXIT_FATAL = 1  # a FatalError: a setting or privilege that no retry fixes
EXIT_INTERNAL = 70  # a programming error (EX_SOFTWARE)
# A fenced life waits this long before reading the owner record, so that a new instance that has
# just fenced it has committed its own claim (one round trip after its init_transactions).
FENCE_SETTLE_S = 3.0


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

    state: LedgerState
    committer: Committer
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
        self._apply_limits()
        self.hooks: list[Any] = []  # observers (metrics, sd_notify) with optional callbacks
        self.early_stop: list[int] = []  # stop signals that came before the loop was running
        self.life_id: str | None = None  # this life's claim in the ledger's owner record
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
                    owner = await self._owner_after_fence()
                    if owner is not None and owner != self.life_id:
                        log.error("fenced: another hdfs2kafka with this instance_id is running; "
                                  "stopping", instance_id=self.config.daemon.instance_id,
                                  error=str(exc), our_life=self.life_id, owner_life=owner)
                        self.exit_code = EXIT_FENCED
                        return self.exit_code
                    self._note_error(None, str(exc))
                    log.warning("transaction aborted by the coordinator (it ran past "
                                "transaction.timeout.ms: a stalled broker or a paused process); "
                                "no other instance owns the ledger; recovering from the ledger",
                                error=str(exc), life=self.life_id)
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
                        self.exit_code = EXIT_FATAL if _fatal(exc) else EXIT_INTERNAL
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
                        await asyncio.wait_for(self.stopping.wait(), delay)
                    except TimeoutError:
                        pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            faulthandler.unregister(signal.SIGUSR2)
            self.loop_lag.stop()
            if self.read_stack is not None:
                await asyncio.to_thread(self.read_stack.close)
            if self.namenode is not None:
                await self.namenode.close()
        log.info("stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _live_until_stopped(self) -> None:
        """One life; a stop during recovery (Kafka or HDFS unreachable, say) cancels it, a stop
        while streaming lets it drain and commit the open transaction."""
        life = asyncio.create_task(self._life(), name="life")
        stop = asyncio.create_task(self.stopping.wait(), name="stop-wait")
        try:
            await asyncio.wait({life, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not life.done():
                if self.flow is None:
                    life.cancel()
                else:
                    await asyncio.wait({life}, timeout=self.config.daemon.shutdown_timeout_s + 10)
                    life.cancel()
            try:
                await life
            except asyncio.CancelledError:
                if not self.stopping.is_set():
                    raise
                log.info("stopped before streaming began")
        finally:
            stop.cancel()

    def request_stop(self) -> None:
        log.info("stop requested")
        self._notify("stopping")
        self.stopping.set()

    def request_reload(self) -> None:
        self._reload_requested = True

    async def _life(self) -> None:
        """One life of the flow: recover, stream until stopped or failed, drain."""
        self._restart_requested = False
        self.ready = False  # not ready while the ledger is being read
        await self._kerberos_login()
        producer = await self._start_producer()
        try:
            await self._claim(producer)
            state = await self._recover()
            await self._open_read_stack()
            flow = self._build_flow(producer, state)
            self.flow = flow
            await self._stream(flow)
        finally:
            self.flow = None
            await stop_producer(producer)

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

    async def _claim(self, producer: Any) -> None:
        """Commit this life's owner record: who fenced whom can be read back from the ledger."""
        self.life_id = uuid.uuid4().hex
        await claim_ledger(producer, self.config.kafka, self.config.daemon.instance_id, {
            "life": self.life_id, "host": socket.gethostname(), "pid": os.getpid(),
            "started_ms": ledger_mod.now_ms()}, timeout_s=self._wait_timeout_s())
        log.info("ledger claimed", life=self.life_id)

    async def _owner_after_fence(self) -> str | None:
        """The life named by the ledger's owner record, read after a fence; None if unreadable."""
        try:
            await asyncio.wait_for(self.stopping.wait(), FENCE_SETTLE_S)
        except TimeoutError:
            pass
        state = LedgerState(self.config.daemon.instance_id)
        try:
            await read_ledger(self.config.kafka, state, timeout_s=self._wait_timeout_s())
        except Exception as exc:
            log.warning("could not read the ledger's owner record after a fence; recovering",
                        error=f"{type(exc).__name__}: {exc}")
            return None
        return state.owner

    def _wait_timeout_s(self) -> float:
        """The bound on any single wait on Kafka in a transaction: past it, the coordinator has
        aborted the transaction anyway."""
        return kafka_errors.transaction_timeout_ms(self.config.kafka.client) / 1000

    # ------------------------------------------------------------------ recover

    async def _start_producer(self) -> Any:
        """Create the ledger topic if missing; start the transactional producer (this fences a
        zombie with the same instance_id and aborts its open transaction, so the ledger can then
        be read to its end)."""
        await ensure_ledger_topic(self.config.kafka)
        return await start_transactional_producer(self.config.kafka, self.config.daemon.instance_id)

    async def _recover(self) -> LedgerState:
        started = time.monotonic()
        state = LedgerState(self.config.daemon.instance_id)
        await read_ledger(self.config.kafka, state)
        counts = state.counts()
        log.info("ledger read", records=state.records_read, stream_txid=state.stream_txid,
                 unfinished=counts["pending"] + counts["active"], done=counts["done"],
                 quarantined=counts["quarantined"], mtime_floor=state.mtime_floor,
                 seconds=round(time.monotonic() - started, 3))
        return state

    # ------------------------------------------------------------------ stream

    def _build_flow(self, producer: Any, state: LedgerState) -> FlowState:
        d = self.config.daemon
        max_batch_bytes, compression = batch_settings(self.config.kafka.client)
        layout = RecordLayout(max_batch_bytes=max_batch_bytes, compression=compression,
                              batch_limits=self.batch_limits, partitions_for=producer.partitions_for)
        builder = TransactionBuilder(state, retention_ms=int(d.ledger_retention_hours * 3600_000),
                                     batch_limits=self.batch_limits, layout=layout)
        committer = Committer(
            producer, builder, self.config.kafka.ledger_topic,
            max_rows=d.transaction_max_rows, max_bytes=d.transaction_max_bytes,
            max_ms=d.transaction_max_ms,
            # Few units between the speed limiter and Kafka: a changed limit shows within a second.
            queue_size=max(2, self.workers), wait_timeout_s=self._wait_timeout_s(),
            on_commit=self._on_commit)
        work_queue: asyncio.Queue[FileWork] = WorkQueue(maxsize=d.queue_size)
        pool = WorkerPool(
            queue=work_queue, out=committer.queue, sources=self._source_config,
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
        intake = Intake(state, to_committer=committer.queue, to_workers=work_queue,
                        sources=lambda: [rt.config for rt in self.sources.values()],
                        refused=self.refused, on_detected=self._on_detected,
                        on_ready=self._mark_ready, on_edits=self._on_edits)
        return FlowState(state=state, committer=committer, pool=pool, work_queue=work_queue,
                         intake=intake)

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
        committer_task = asyncio.create_task(flow.committer.run(), name="committer")
        intake_task = asyncio.create_task(self._detect(flow), name="intake")
        stop_task = asyncio.create_task(self.stopping.wait(), name="stop")
        try:
            while True:
                done, _ = await asyncio.wait([committer_task, intake_task, stop_task],
                                             timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                if self._reload_requested:
                    self._reload_requested = False
                    if await self.reload():
                        # Added sources get their first-start treatment in a new life.
                        self._restart_requested = True
                if stop_task in done or self._restart_requested:
                    break
                for t in done:
                    if t is not stop_task:
                        exc = t.exception()
                        if exc is not None:
                            raise exc
                        raise CommitterError(f"{t.get_name()} ended unexpectedly")
                failure = flow.pool.failure()
                if failure is not None:
                    raise failure
            # Drain: stop detecting and decoding, then commit what the committer holds.
            intake_task.cancel()
            await flow.pool.stop()
            flow.committer.stop()
            try:
                await asyncio.wait_for(asyncio.shield(committer_task), self.config.daemon.shutdown_timeout_s)
            except TimeoutError:
                log.warning("open transaction not committed in time; it will be aborted",
                            timeout_s=self.config.daemon.shutdown_timeout_s)
            if committer_task.done() and not committer_task.cancelled() and committer_task.exception():
                raise committer_task.exception()  # type: ignore[misc]
        finally:
            stop_task.cancel()
            for t in (intake_task, committer_task, *flow.tasks):
                t.cancel()
            await asyncio.gather(intake_task, committer_task, *flow.tasks, return_exceptions=True)
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

    def _apply_limits(self) -> None:
        self.limiter.set(GLOBAL, self.config.daemon.rows_per_second, None)
        for name, rt in self.sources.items():
            self.limiter.set(name, rt.config.rows_per_second, rt.config.bytes_per_second)

    def set_rate(self, name: str, rows_per_second: float | None, bytes_per_second: float | None) -> None:
        """Change a source's limits now (until the next reload sets them from the file)."""
        if name == GLOBAL:
            self.limiter.set(GLOBAL, rows_per_second, None)
            return
        if name not in self.sources:
            raise KeyError(name)
        self.limiter.set(name, rows_per_second, bytes_per_second)
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
        # hdfs and kafka are unchanged (else refused above); the admin token is read per request.
        self.config = new
        self._apply_limits()
        self.set_workers(new.daemon.workers)
        logs.configure(new.daemon.log_level, new.daemon.log_format)
        log.info("registry reloaded", added=list(plan.added), removed=list(plan.removed),
                 sources=[s.name for s in new.sources], new_flow=list(plan.new_flow), config=path)
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

    return isinstance(exc, FatalError)


def _recoverable(exc: BaseException) -> bool:
    """A failure a new life may not meet: Kafka, HDFS or the network away, a failed transaction,
    a transient error. Anything else (a bug, a FatalError) ends the daemon."""
    from aiokafka.errors import KafkaError

    from hdfswatch.errors import HdfsWatchError, TransientError

    if _fatal(exc):
        return False
    return isinstance(exc, CommitterError | ledger_mod.LedgerError | OSError | TimeoutError
                      | KafkaError | HdfsWatchError | TransientError)
