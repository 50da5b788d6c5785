"""A seeded fault scenario: files stream through proxies while the network, the servers and the
daemon itself fail; afterwards every row must be in Kafka exactly once, or its file quarantined.

`Scenario` owns one run: the daemon (a real subprocess) reads a private HDFS and writes to a
private Kafka broker, both behind Toxiproxy; a writer puts Parquet and Avro files into the
watched directory; `run_faults` applies a random sequence of faults drawn from the seed;
`verdict` heals everything, waits until the ledger says every file is finished, then reads the
row topic, the ledger and the dead-letter topic (directly, not through the proxies) and lists
every broken promise. The same seed draws the same files, faults and timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from harness import (
    ROWS_PER_FILE_ID,
    DaemonProcess,
    Landed,
    free_port,
    missing,
    put,
    sample_file,
    toml_value,
)
from hdfs import InsecureClient

from pipeline.config import KafkaConfig
from pipeline.kafka.ledger_io import read_every_shard
from pipeline.ledger import DONE, QUARANTINED, FileEntry

# The producer's transaction timeout in every scenario: a blackhole or a stall longer than this
# makes the broker abort the open transaction.
TRANSACTION_TIMEOUT_MS = 6_000

# Faults on the way to Kafka and on the broker. "broker-stall" is a SIGSTOP longer than the
# transaction timeout, "broker-pause" a shorter one.
KAFKA_FAULTS = (
    "kafka-latency", "kafka-bandwidth", "kafka-reset", "kafka-blackhole", "kafka-slow-close",
    "kafka-limit-data", "kafka-down", "broker-pause", "broker-stall",
)
# Faults on the way to HDFS and on its servers.
HDFS_FAULTS = (
    "namenode-rpc-latency", "namenode-rpc-reset", "namenode-rpc-blackhole", "webhdfs-latency",
    "webhdfs-reset", "webhdfs-blackhole", "namenode-pause", "datanode-pause",
)
FAULT_KINDS = (*KAFKA_FAULTS, *HDFS_FAULTS, "daemon-kill")

# Where a failed scenario's daemon log is kept (pytest's temporary directories rotate).
LOG_KEEP = Path(os.environ.get("FAULTS_LOG_DIR", "/tmp/hdfs2kafka-faults"))


@dataclass
class FileSpec:
    file_no: int
    path: str
    rows: int
    data: bytes
    put_at: float = 0.0  # monotonic time it was put into HDFS (0: not yet)


@dataclass
class Outcome:
    """What a scenario found: figures for the summary line and every broken promise."""

    seed: str
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    exits: list[str] = field(default_factory=list)  # the daemon ending by itself
    files: int = 0
    done: int = 0
    quarantined: int = 0
    unfinished: int = 0
    expected: int = 0
    landed: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        faults = ",".join(f"{k}:{v}" for k, v in sorted(self.faults.items())) or "none"
        exits = ",".join(self.exits) or "none"
        return (f"fault-scenario seed={self.seed} seconds={self.seconds:.0f} faults={faults} "
                f"kills={self.kills} self_exits={exits} files={self.files} done={self.done} "
                f"quarantined={self.quarantined} unfinished={self.unfinished} "
                f"rows_expected={self.expected} rows_landed={self.landed} lost={self.lost} "
                f"duplicated={self.duplicated} out_of_order={self.out_of_order}")


class Scenario:
    """One daemon streaming one source through the proxies of `kafka` and `hdfs`."""

    def __init__(self, *, seed: str, name: str, kafka: Any, hdfs: Any, toxiproxy: Any,
                 hdfs_user: str, tmp: Path, partitions: int = 3, key: list[str] | None = None,
                 topic_config: dict[str, str] | None = None, daemon_root: Path | None = None,
                 **daemon_settings: Any) -> None:
        self.rng = random.Random(seed)
        self.kafka, self.hdfs, self.toxiproxy = kafka, hdfs, toxiproxy
        self.name = name
        self.base = f"/faults/{name}"
        self.topic, self.ledger_topic, self.dlq = f"rows-{name}", f"ledger-{name}", f"dlq-{name}"
        self.instance_id = f"faults-{name}"
        self.partitions = partitions
        self.topic_config = topic_config or {}
        self.webhdfs = InsecureClient(hdfs.hdfs.webhdfs_url, user=hdfs_user)
        self.files: dict[int, FileSpec] = {}
        self.outcome = Outcome(seed=seed)
        self.started = time.monotonic()
        self.http = f"127.0.0.1:{free_port()}"
        self.settings = {"unit_rows": 5000, "workers": 2, "shutdown_timeout_s": 10.0, **daemon_settings}
        self._config_args = (tmp, hdfs_user, key)
        self.config = self._write_config(tmp, hdfs_user, key, self.settings)
        self.daemon = DaemonProcess(self.config, tmp, daemon_root)

    # ---- set-up

    def _write_config(self, tmp: Path, user: str, key: list[str] | None,
                      settings: dict[str, Any]) -> Path:
        lines = ["[daemon]", f'instance_id = "{self.instance_id}"',
                 f'http = "{self.http}"', 'log_level = "info"']
        lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
        lines += ["", "[hdfs]", f'namenodes = ["{self.hdfs.namenode}"]',
                  f'webhdfs = "{self.hdfs.webhdfs_url}"', f'user = "{user}"',
                  "", "[kafka]", f'bootstrap = "{self.kafka.proxied_bootstrap}"',
                  f'ledger_topic = "{self.ledger_topic}"',
                  f"transaction.timeout.ms = {TRANSACTION_TIMEOUT_MS}",
                  "", "[[sources]]", 'name = "faults"', f'path = "{self.base}/**"',
                  f'topic = "{self.topic}"', 'start_from = "earliest"']
        if key:
            lines.append(f"key = {toml_value(key)}")
        lines += ["[sources.errors]", f'dead_letter_topic = "{self.dlq}"']
        path = tmp / f"{self.instance_id}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(self.topic, self.partitions, 1, topic_configs=self.topic_config),
                NewTopic(self.dlq, 1, 1)])
        finally:
            await admin.close()

    def add_files(self, sizes: list[int], first: int = 0) -> list[FileSpec]:
        """Files of these many rows, Parquet and Avro by turns, numbered from `first`."""
        specs = []
        for f, n in enumerate(sizes, start=first):
            suffix, data = sample_file(f, n)
            specs.append(self.add_file(FileSpec(f, f"{self.base}/dt={f % 3}/part-{f:03d}{suffix}", n, data)))
        return specs

    def add_file(self, spec: FileSpec) -> FileSpec:
        self.files[spec.file_no] = spec
        return spec

    def put(self, spec: FileSpec) -> None:
        put(self.webhdfs, spec.path, spec.data)
        spec.put_at = time.monotonic()

    def writer(self, specs: list[FileSpec], over_s: float) -> threading.Thread:
        """Put `specs` into HDFS one by one over about `over_s` seconds (a thread)."""
        gaps = [self.rng.uniform(0.2, 2.0) for _ in specs]
        scale = over_s / max(sum(gaps), 0.001)

        def run() -> None:
            for spec, gap in zip(specs, gaps, strict=True):
                for attempt in range(5):  # the test's own writes go around the proxies
                    try:
                        self.put(spec)
                        break
                    except Exception:
                        if attempt == 4:
                            raise
                        time.sleep(1)
                time.sleep(gap * scale)

        thread = threading.Thread(target=run, daemon=True, name="file-writer")
        thread.start()
        return thread

    # ---- the daemon

    def watch_daemon(self) -> None:
        """If the daemon ended by itself, note how, and start it again (as a supervisor would)."""
        if self.daemon.proc is not None and not self.daemon.alive():
            code = self.daemon.proc.returncode
            when = time.monotonic() - self.started
            self.outcome.exits.append(f"{code}@{when:.0f}s")
            self.outcome.problems.append(
                f"the daemon exited by itself with code {code} at {when:.0f}s "
                f"(last fault: {self.last_fault or 'none'})")
            self.daemon.start()

    async def daemon_log_wait(self, needle: str, timeout: float = 90) -> None:  # noqa: ASYNC109
        await asyncio.to_thread(self.daemon.wait_for_log, needle, timeout)

    def kill_daemon(self) -> None:
        self.daemon.kill()
        self.outcome.kills += 1

    # ---- faults

    last_fault: str | None = None

    async def run_faults(self, kinds: tuple[str, ...] = FAULT_KINDS, *, rounds: int = 1,
                         seconds: float = 0.0, kill_chance: float = 0.25) -> None:
        """Faults one after another, each healed before the next: every kind of `kinds` once
        per round in a drawn order, for `rounds` rounds or until `seconds` have passed,
        whichever is later. During any fault the daemon may be SIGKILLed (and started again)."""
        deadline = time.monotonic() + seconds
        deck: list[str] = []
        done_rounds = 0
        while done_rounds < rounds or time.monotonic() < deadline:
            if not deck:
                deck = self.rng.sample(kinds, len(kinds))
            await asyncio.sleep(self.rng.uniform(0.3, 1.5))
            self.watch_daemon()
            kind = deck.pop()
            done_rounds += not deck
            self.last_fault = kind
            self.outcome.faults[kind] += 1
            await self.fault(kind, kill=self.rng.random() < kill_chance)
            self.watch_daemon()

    async def fault(self, kind: str, kill: bool = False) -> None:
        """Apply one fault for a drawn while, then heal it; with `kill`, SIGKILL the daemon at a
        drawn moment inside that while and start it again."""
        rng = self.rng
        if kind == "daemon-kill":
            self.kill_daemon()
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            self.daemon.start()
            return
        heal, hold = self._start_fault(kind)
        kill_at = rng.uniform(0.0, hold) if kill else None
        try:
            if kill_at is None:
                await asyncio.sleep(hold)
            else:
                await asyncio.sleep(kill_at)
                self.kill_daemon()
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                self.daemon.start()
                await asyncio.sleep(hold - kill_at)
        finally:
            heal()

    def _start_fault(self, kind: str) -> tuple[Callable[[], None], float]:
        """Start fault `kind`: (how to heal it, how long to hold it)."""
        rng = self.rng
        timeout_s = TRANSACTION_TIMEOUT_MS / 1000
        processes: dict[str, tuple[Callable[[], None], Callable[[], None], float]] = {
            "kafka-down": (self.kafka.proxy.disable, self.kafka.proxy.enable, rng.uniform(1.5, 5.0)),
            "broker-pause": (self.kafka.pause, self.kafka.resume, rng.uniform(1.5, timeout_s / 2)),
            "broker-stall": (self.kafka.pause, self.kafka.resume, timeout_s + rng.uniform(2.0, 5.0)),
            "namenode-pause": (self.hdfs.pause_namenode, self.hdfs.resume_namenode, rng.uniform(2.0, 8.0)),
            "datanode-pause": (self.hdfs.pause_datanode, self.hdfs.resume_datanode, rng.uniform(2.0, 8.0)),
        }
        if kind in processes:
            start, stop, hold = processes[kind]
            start()
            return stop, hold
        target, _, effect = kind.partition("-")
        if target == "namenode":  # namenode-rpc-...
            target, _, effect = kind.partition("-rpc-")
        proxy = {"kafka": self.kafka.proxy, "namenode": self.hdfs.rpc, "webhdfs": self.hdfs.http}[target]
        hold = rng.uniform(1.5, 5.0)
        if effect == "latency":
            names = proxy.latency(rng.randint(50, 500), jitter=rng.randint(0, 100))
        elif effect == "bandwidth":
            names = proxy.bandwidth(rng.randint(30, 500))
        elif effect == "reset":
            names, hold = proxy.reset_peer(rng.choice([0, 0, 200, 2000])), rng.uniform(0.5, 2.5)
        elif effect == "blackhole" and target == "kafka":
            # Longer than the transaction timeout: the broker aborts the open transaction.
            names, hold = proxy.blackhole(), timeout_s + rng.uniform(2.0, 5.0)
        elif effect == "blackhole":
            names, hold = proxy.blackhole(), rng.uniform(2.0, 10.0)
        elif effect == "slow-close":
            # Connections cut after a little data, and each close reaches the client late.
            names = proxy.slow_close(rng.randint(1000, 5000)) + proxy.limit_data(rng.randint(20_000, 500_000))
        elif effect == "limit-data":
            names = proxy.limit_data(rng.randint(1000, 200_000))
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return (lambda: proxy.remove(*names)), hold

    def heal_all(self) -> None:
        self.toxiproxy.reset()
        for resume in (self.kafka.resume, self.hdfs.resume_namenode, self.hdfs.resume_datanode):
            with contextlib.suppress(OSError, ValueError):
                resume()

    async def lift_rate_limit(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Take away the rate limit that paced the streaming over the fault period: it leaves
        no room to make up for the time the faults stopped the flow, so the backlog they left
        would drain no faster than the limit and outlast the verdict's wait. The config loses
        it (a later start runs unlimited) and the running daemon is told over HTTP."""
        if self.settings.pop("rows_per_second", None) is None:
            return
        self._write_config(*self._config_args, self.settings)
        body = orjson.dumps({"rows_per_second": None})
        deadline = time.monotonic() + timeout
        while True:
            self.watch_daemon()
            request = urllib.request.Request(f"http://{self.http}/sources/*/rate", data=body,
                                             method="PUT", headers={"Content-Type": "application/json"})
            try:
                await asyncio.to_thread(_send, request)
                return
            except OSError:  # not listening yet (just started again), or busy
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    # ---- the verdict

    async def ledger(self) -> dict[str, FileEntry]:
        """Each file's committed ledger entry, by path (read directly, read_committed)."""
        states = await read_every_shard(KafkaConfig(self.kafka.bootstrap, self.ledger_topic),
                                        self.instance_id, compact_done=False, timeout_s=60)
        return {e.path: e for st in states.values() for e in st.files.values()}

    async def wait_finished(self, timeout: float) -> dict[str, FileEntry]:  # noqa: ASYNC109
        """Until the ledger says every file put is done or quarantined (or `timeout`)."""
        deadline = time.monotonic() + timeout
        entries: dict[str, FileEntry] = {}
        while time.monotonic() < deadline:
            self.watch_daemon()
            try:
                entries = await self.ledger()
            except Exception:  # the ledger topic may not exist yet
                entries = {}
            if all(s.path in entries and entries[s.path].finished
                   for s in self.files.values() if s.put_at):
                return entries
            await asyncio.sleep(2)
        return entries

    async def read_to_end(self, topic: str) -> list[tuple[int, int, bytes, bytes | None]]:
        """Every committed record of `topic` (partition, offset, value, key), read directly up
        to its last stable offsets."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap,
                                    isolation_level="read_committed", enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        out: list[tuple[int, int, bytes, bytes | None]] = []
        try:
            cluster = await consumer._client.fetch_all_metadata()
            parts = cluster.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return out
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            deadline = time.monotonic() + 120
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"reading {topic} to its end took over 120 s")
                batch = await consumer.getmany(*tps, timeout_ms=500, max_records=50_000)
                out.extend((tp.partition, m.offset, m.value, m.key)
                           for tp, msgs in batch.items() for m in msgs)
        finally:
            await consumer.stop()
        return out

    async def offsets(self, topic: str) -> str:
        """Per partition, the last stable offset (what read_committed readers reach) and the
        high watermark (everything written, aborted or still open included)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        ends = {}
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, isolation_level=isolation)
            await consumer.start()
            try:
                cluster = await consumer._client.fetch_all_metadata()
                tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
                ends[isolation] = await consumer.end_offsets(tps) if tps else {}
            finally:
                await consumer.stop()
        return ", ".join(f"p{tp.partition} {lso}/{ends['read_uncommitted'].get(tp)}"
                         for tp, lso in sorted(ends["read_committed"].items()))

    async def read_topic(self) -> Landed:
        return Landed([(p, o, orjson.loads(v), k) for p, o, v, k in await self.read_to_end(self.topic)])

    async def dead_letters(self) -> dict[str, dict[str, Any]]:
        """The dead-letter records, by path."""
        records = [orjson.loads(v) for _, _, v, _ in await self.read_to_end(self.dlq)]
        return {r["path"]: r for r in records}

    async def verdict(self, finish_timeout: float = 120, exempt: set[int] | None = None) -> Outcome:
        """Heal (the rate limit too), let the daemon finish, and check the promise file by
        file. Files in `exempt` (e.g. whose rows an operator deleted) need only be finished,
        without duplicates."""
        self.heal_all()
        await self.lift_rate_limit()
        o = self.outcome
        entries = await self.wait_finished(finish_timeout)
        self.watch_daemon()
        put_files = {f: s for f, s in self.files.items() if s.put_at}
        expected = {f: s.rows for f, s in put_files.items()}
        landed = await self.read_topic()
        # A transaction the broker has not yet aborted (its producer died) holds back what
        # read_committed readers see after it, until the transaction timeout aborts it.
        patience = time.monotonic() + TRANSACTION_TIMEOUT_MS / 1000 + 10
        while missing(landed, expected) and time.monotonic() < patience:
            await asyncio.sleep(2)
            landed = await self.read_topic()
        dead = await self.dead_letters()
        o.files = len(put_files)
        o.expected = sum(expected.values())
        o.landed = len(landed.records)
        dups = landed.duplicates()
        o.duplicated = sum(c - 1 for c in dups.values())
        if dups:
            by_file = Counter(i // ROWS_PER_FILE_ID for i in dups)
            o.problems.append(f"rows landed more than once: {o.duplicated} extra copies, per file "
                              f"{dict(sorted(by_file.items()))}")
        disorder = landed.out_of_order()
        o.out_of_order = len(disorder)
        if disorder:
            o.problems.append(f"{len(disorder)} rows out of file order in their partition, e.g. {disorder[:3]}")
        lacking = missing(landed, expected)
        for f, spec in sorted(put_files.items()):
            entry = entries.get(spec.path)
            if entry is None or not entry.finished:
                o.unfinished += 1
                o.problems.append(f"file {spec.path} never finished (ledger: "
                                  f"{entry.state if entry else 'no entry'}, {spec.rows - lacking.get(f, 0)} "
                                  f"of {spec.rows} rows landed)")
                o.lost += lacking.get(f, 0)
            elif entry.state == QUARANTINED:
                o.quarantined += 1
                if not entry.reason:
                    o.problems.append(f"file {spec.path} quarantined without a reason in the ledger")
                if spec.path not in dead:
                    o.problems.append(f"file {spec.path} quarantined ({entry.reason}) but not in the "
                                      f"dead-letter topic")
            elif entry.state == DONE:
                o.done += 1
                if f in (exempt or set()):
                    continue
                if lacking.get(f):
                    o.lost += lacking[f]
                    o.problems.append(f"file {spec.path} marked done with {lacking[f]} of its "
                                      f"{spec.rows} rows missing")
                if entry.rows != spec.rows:
                    o.problems.append(f"file {spec.path} done with rows={entry.rows} in the ledger, "
                                      f"it has {spec.rows}")
        if o.lost or o.unfinished:
            # A transaction nobody ends holds back read_committed readers (the daemon's own
            # ledger reads too): a last stable offset below the high watermark shows one.
            for topic in (self.topic, self.ledger_topic):
                o.problems.append(f"{topic} per partition, last stable offset/high watermark: "
                                  f"{await self.offsets(topic)}")
        o.seconds = time.monotonic() - self.started
        return o

    def report(self, outcome: Outcome) -> str:
        """The summary line, the problems and the daemon's last errors (for a failure); the
        daemon's log is kept under LOG_KEEP."""
        log = self.daemon.log_text()
        LOG_KEEP.mkdir(parents=True, exist_ok=True)
        kept = LOG_KEEP / self.daemon.log_path.name
        kept.write_text(log)
        errors = [line for line in log.splitlines()
                  if re.search(r'"level": ?"(error|critical)"|Traceback|exit', line)][-15:]
        return "\n".join([outcome.summary(), *(f"  - {p}" for p in outcome.problems),
                          f"daemon log {kept}; its last errors:", *errors])


def _send(request: urllib.request.Request) -> None:
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
