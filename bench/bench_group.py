"""Groups of daemons (`[daemon] group`): throughput by member count, failover after a SIGKILL, and
the pause of the rebalance when a member joins. Every daemon is `hdfs2kafka run` as a subprocess
against the dev stack, on a fresh ledger topic, group and topic (6 partitions) per measurement.

Three measurements, each chosen by its flag (none given: all three):

`--throughput`  The same backlog of Parquet files (`--files` 24 x `--rows-per-file` 100,000
    rows of `demo.sample_data.events_table`, about 200 bytes of JSON a row, row groups of 65,536)
    streamed by: one daemon alone with no `shards` (a one-shard ledger: the baseline), then a
    group of 1, 2 and 3 members with `shards = 6`; no speed limit, `workers = 2` each. The files
    are written first into a staging directory, keeping only files whose inode id puts them on a
    shard that has fewer than its share, so that every shard holds the same number of files
    (`--files` must be a multiple of 6: the members' shares are then equal, and a group's time is
    not one member's luck with the hash). Once every member streams its shards, the files are
    renamed into the source directory at once (one RENAME each: the whole backlog arrives within
    a fraction of a second). Time runs from the first row committed to the last, by the members'
    `/metrics` (`hdfs2kafka_rows_produced_total`, polled every 0.1 s); CPU is user + system
    from /proc/<pid>/stat of each member, the broker, the NameNode and the DataNode (from the dev
    stack's pid files) and of the whole machine (/proc/stat), from the renames to the last commit,
    and for 3 s before the renames with the members idle (what others use of the machine and the
    stack). A read_committed consumer then reads the topic back: every id once. `--repeat N` runs
    the four N times, in the reverse order every other time.

`--failover`  A group of 2 members (`shards = 4`, `group_session_timeout_s = 6`, the broker's
    least) streams a steady flow: a file of `--flow-file-rows` (2,500) rows of checked ids
    (`demo.sample_data.parquet_bytes`) every `--flow-interval` (0.5 s), 5,000 rows/s, faster
    than the source's `rows_per_second` for the group (`--flow-rate`, 4,000), so that every shard
    keeps a backlog and a stopped shard is always a shard with rows to send. `--kills` times,
    alternately, one member is SIGKILLed once both stream; a read_committed consumer (reading all
    along) times from the kill to the first row of a file of the dead member's shards that the
    survivor built after the kill (its record timestamp is later than the kill) becoming visible,
    and to every one of those shards having such a row; the survivor's log gives the steps
    (revoke, "shards assigned" with rebalance_s, "ledger read"). The dead member is then started
    again and the next round waits until both stream.

`--join`  A group of 2 members (`shards = 6`, `--join-session-timeout` 10 s: the default) streams
    the same flow; a third member starts and joins, `--joins` times, and is stopped with SIGTERM
    (it leaves the group) before the next round. Each member's "shards revoked" and "shards
    assigned" log lines (with rebalance_s) and the first row its new life built becoming visible
    give: for the members that keep shards, their revoke -> their rows again; for the shards
    that move, their owners' revoke -> the new member's first row; and the first revoke -> every
    shard having rows again (which also waits for a worker to reach a file of each shard: a
    member's 2 workers take the oldest waiting files first). The same for the leave, from the
    SIGTERM for the leaver's shards.

After a flow measurement the writer stops, the speed limits are lifted through the admin API,
and the consumer must have every row written exactly once; a row lost or duplicated, a member
that exits unasked or a group that does not settle ends the run with the members' log tails.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_group.py [--throughput] [--failover] [--join] [--files 24]
        [--rows-per-file 100000] [--repeat 1] [--kills 10] [--joins 5] [--keep-logs]

The machine may be shared: the load average is printed at the start and the end of each
measurement. HDFS files and topics are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.sample_data import events_table, parquet_bytes  # noqa: E402
from pipeline.kafka.client import committed_consumer, create_topics, delete_topics  # noqa: E402
from pipeline.shards import shard_of  # noqa: E402
from tests.integration.pipeline.harness import DaemonProcess, free_port, write_config  # noqa: E402

ROWS_METRIC = "hdfs2kafka_rows_produced_total"
READY = "ready: recovery done, streaming"
ASSIGNED = "shards assigned"
REVOKED = "shards revoked: stopping them at a unit boundary"
LEDGER_READ = "ledger read"
PARTITIONS = 6  # of every data topic
SOURCE = "rows"


class Stuck(RuntimeError):
    """A member that did not do what it had to within the time given (a bug to report)."""


# --------------------------------------------------------------------------- the machine


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, /proc/stat: not idle, not iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def stack_pids() -> dict[str, int]:
    """The dev stack's broker, NameNode and DataNode (its pid files)."""
    home = Path(os.environ.get("DEVSTACK_HOME", Path.home() / ".cache" / "hdfs2kafka" / "devstack"))
    out = {}
    for role, name in (("kafka", "broker"), ("namenode", "NameNode"), ("datanode", "DataNode")):
        try:
            out[name] = int((home / "run" / f"{role}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


# --------------------------------------------------------------------------- members


@dataclass(frozen=True)
class Stack:
    """What `write_config` needs of the dev stack."""

    namenode: str
    webhdfs_url: str
    hdfs_user: str
    kafka_bootstrap: str


@dataclass
class Event:
    t: float  # unix time of the log line
    event: str
    fields: dict[str, Any]


class Member:
    """One daemon: its config, process, status URL, and its log read as events."""

    def __init__(self, name: str, tmp: Path, stack: Stack, *, ledger: str,
                 source: dict[str, Any], **daemon: Any) -> None:
        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cfg = write_config(tmp, stack, instance_id=name, ledger_topic=ledger,
                           sources=[dict(source)], http_port=port, **daemon)
        self.proc = DaemonProcess(cfg, tmp)
        self.start_mark = 0
        self.expected_exit = False

    def start(self) -> None:
        self.start_mark = self.mark()
        self.expected_exit = False
        self.proc.start()

    def kill(self) -> None:
        self.expected_exit = True
        self.proc.kill()

    def terminate(self) -> int:
        self.expected_exit = True
        return self.proc.terminate(90)

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def mark(self) -> int:
        """Where the log ends now (bytes)."""
        try:
            return self.proc.log_path.stat().st_size
        except OSError:
            return 0

    def events(self, since: int = 0) -> list[Event]:
        try:
            with open(self.proc.log_path, "rb") as f:
                f.seek(since)
                data = f.read()
        except OSError:
            return []
        out = []
        for line in data.splitlines():
            if not line.startswith(b"{"):
                continue
            try:
                d = orjson.loads(line)
                t = dt.datetime.fromisoformat(d["timestamp"]).timestamp()
            except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                continue  # a line being written, or not one of ours
            out.append(Event(t, str(d.get("event")), d))
        return out

    def current(self) -> tuple[float, tuple[int, ...]] | None:
        """(time of the "shards assigned" line, shards) of what this member streams now, by its
        log since its last start; None while it has no assignment or does not stream it yet."""
        got: tuple[float, tuple[int, ...]] | None = None
        streaming = False
        for e in self.events(self.start_mark):
            if e.event == ASSIGNED:
                got, streaming = (e.t, tuple(e.fields.get("shards") or ())), False
            elif e.event == REVOKED:
                got = None
            elif e.event == READY and got is not None:
                streaming = True
        return got if streaming else None

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            return None

    def rows(self) -> float | None:
        """Rows this member committed (its /metrics), None when it does not answer."""
        text = self._get("/metrics")
        if text is None:
            return None
        return sum(float(line.rsplit(b" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(ROWS_METRIC.encode() + b"{"))

    def unlimit(self) -> None:
        """Lift the source's speed limit (admin API; no token on loopback)."""
        req = urllib.request.Request(f"{self.url}/sources/{SOURCE}/rate", method="PUT",
                                     data=b'{"rows_per_second": null}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def tail(self, n: int = 4000) -> str:
        return f"--- {self.name} (alive={self.proc.alive()}, log {self.proc.log_path}):\n" \
               f"{self.proc.log_text()[-n:]}"


def check_alive(members: list[Member]) -> None:
    for m in members:
        if m.proc.proc is not None and not m.expected_exit and not m.proc.alive():
            raise Stuck(f"member {m.name} exited (code {m.proc.proc.returncode}) unasked")


def until(check: Any, what: str, timeout: float, members: list[Member]) -> Any:
    """Poll `check` every 0.1 s until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(members)
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise Stuck(f"not within {timeout:.0f} s: {what}")


def spread(members: list[Member], shards: int) -> dict[int, tuple[Member, float]] | None:
    """shard -> (its member, when assigned), once every shard is streamed by exactly one of
    `members` and each of them streams some; None until then."""
    owners: dict[int, tuple[Member, float]] = {}
    for m in members:
        cur = m.current()
        if cur is None or not cur[1]:
            return None
        for s in cur[1]:
            if s in owners:
                return None
            owners[s] = (m, cur[0])
    return owners if sorted(owners) == list(range(shards)) else None


# --------------------------------------------------------------------------- HDFS and Kafka


def hdfs_client() -> Any:
    from hdfs import InsecureClient

    return InsecureClient(os.environ["WEBHDFS_URL"], user=os.environ["HDFS_USER"])


def topics(create: list[str] = (), delete: list[str] = ()) -> None:  # type: ignore[assignment]
    bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    if create:
        asyncio.run(create_topics(bootstrap, create, PARTITIONS))
    if delete:
        asyncio.run(delete_topics(bootstrap, delete))


class Flow:
    """Files arriving at a steady pace (a writer thread, `hdfs dfs -put` style) and a
    read_committed consumer (a thread) that sees every row, counts each one once, and notes when
    it first saw each record batch of each shard (batches carry the time the daemon built them)."""

    def __init__(self, client: Any, directory: str, topic: str, shards: int, file_rows: int,
                 interval: float) -> None:
        self.client, self.directory, self.topic = client, directory, topic
        self.shards, self.file_rows, self.interval = shards, file_rows, interval
        self.lock = threading.Lock()
        self.file_shard: dict[int, int] = {}
        self.written: Counter[int] = Counter()  # rows written, by shard
        self.landed: Counter[int] = Counter()  # rows seen, by shard (first time only)
        self.seen: dict[int, bytearray] = {}  # file -> one byte a row
        self.duplicates = 0
        self.dup_samples: list[tuple[int, int]] = []
        self.first_seen: dict[tuple[int, int], float] = {}  # (shard, record ms) -> seen at
        self.files = 0
        self._stop_writing = threading.Event()
        self._stop_reading = threading.Event()
        self.errors: list[str] = []
        self._writer = threading.Thread(target=self._write, name="writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="reader", daemon=True)

    def start(self) -> None:
        self._reader.start()
        self._writer.start()

    def _write(self) -> None:
        next_at = time.monotonic()
        f = 0
        while not self._stop_writing.is_set():
            data = parquet_bytes(f, self.file_rows, row_group_size=self.file_rows)
            tmp = f"{self.directory}/part-{f:05d}.parquet._COPYING_"
            try:
                self.client.write(tmp, data, overwrite=True)
                file_id = int(self.client.status(tmp)["fileId"])
                with self.lock:
                    self.file_shard[f] = shard_of(file_id, self.shards)
                    self.seen[f] = bytearray(self.file_rows)
                    self.written[self.file_shard[f]] += self.file_rows
                self.client.rename(tmp, f"{self.directory}/part-{f:05d}.parquet")
            except Exception as exc:  # a retry would write the file twice: report it
                self.errors.append(f"writing file {f}: {type(exc).__name__}: {exc}")
                return
            f += 1
            self.files = f
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _read(self) -> None:
        try:
            asyncio.run(self._consume())
        except Exception as exc:
            self.errors.append(f"consumer: {type(exc).__name__}: {exc}")

    async def _consume(self) -> None:
        consumer = committed_consumer(os.environ["KAFKA_BOOTSTRAP"], self.topic)
        await consumer.start()
        try:
            while not self._stop_reading.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                now = time.time()
                with self.lock:
                    for msgs in batch.values():
                        for m in msgs:
                            v = orjson.loads(m.value)
                            f, seq = v["file_no"], v["seq"]
                            shard = self.file_shard[f]
                            self.first_seen.setdefault((shard, m.timestamp), now)
                            seen = self.seen[f]
                            if seen[seq]:
                                self.duplicates += 1
                                if len(self.dup_samples) < 20:
                                    self.dup_samples.append((f, seq))
                            else:
                                seen[seq] = 1
                                self.landed[shard] += 1
        finally:
            await consumer.stop()

    def first_after(self, shards: Any, t: float) -> float | None:
        """When a record of `shards` built at `t` or later was first seen (None: not yet)."""
        ms = t * 1000
        with self.lock:
            got = [at for (s, ts), at in self.first_seen.items() if s in shards and ts >= ms]
        return min(got) if got else None

    def backlog(self) -> dict[int, int]:
        """Rows written and not seen yet, by shard."""
        with self.lock:
            return {s: self.written[s] - self.landed[s] for s in range(self.shards)}

    def stop_writing(self) -> None:
        self._stop_writing.set()
        self._writer.join(30)

    def all_landed(self) -> bool:
        with self.lock:
            return sum(self.landed.values()) == sum(self.written.values())

    def stop(self) -> None:
        self._stop_writing.set()
        self._stop_reading.set()
        self._writer.join(30)
        self._reader.join(30)

    def check(self) -> tuple[int, int, int]:
        """(rows written, rows missing, duplicates)."""
        with self.lock:
            written = sum(self.written.values())
            return written, written - sum(self.landed.values()), self.duplicates

    def missing_detail(self) -> str:
        with self.lock:
            gaps = {f: len(s) - sum(s) for f, s in self.seen.items() if sum(s) != len(s)}
        return ", ".join(f"file {f} (shard {self.file_shard[f]}): {n} rows"
                         for f, n in list(gaps.items())[:20])


def end_flow(flow: Flow, members: list[Member]) -> bool:
    """`finish_flow`, then stop the members and print the load: the end of a flow measurement."""
    ok = finish_flow(flow, members)
    for m in members:
        m.terminate()
    print(f"load average at the end: {loadavg()}", flush=True)
    return ok


def finish_flow(flow: Flow, members: list[Member]) -> bool:
    """Stop the writer, lift the limits, wait until every row is seen (then 3 s more for late
    duplicates); report. True when every row landed once."""
    flow.stop_writing()
    for m in members:
        m.unlimit()
    try:
        until(flow.all_landed, "every row written seen by the consumer", 180, members)
    except Stuck as exc:
        print(f"STUCK: {exc}", flush=True)
    time.sleep(3)
    written, missing, dups = flow.check()
    ok = missing == 0 and dups == 0 and not flow.errors
    print(f"  exactly once: {flow.files} files, {written:,} rows written, {missing:,} missing, "
          f"{dups:,} duplicated ({'OK' if ok else 'FAILED'})", flush=True)
    if missing:
        print(f"  missing: {flow.missing_detail()}")
    if dups:
        print(f"  duplicated (file, seq): {flow.dup_samples}")
    for e in flow.errors:
        print(f"  flow error: {e}")
    return ok


# --------------------------------------------------------------------------- throughput


@dataclass
class Placed:
    name: str
    file_id: int
    shard: int


def place_files(client: Any, stage: str, files: int, rows: int, shards: int) -> list[Placed]:
    """`files` Parquet files of `rows` rows in `stage`, `files / shards` on each shard: a file
    whose inode puts it on a full shard is deleted and its bytes written again (a new inode)."""
    per = files // shards
    count: Counter[int] = Counter()
    placed: list[Placed] = []
    blob: bytes | None = None
    attempts = 0
    while len(placed) < files:
        k = len(placed)
        if blob is None:
            buf = io.BytesIO()
            pq.write_table(events_table(k * rows, rows), buf, row_group_size=65_536,
                           compression="snappy")
            blob = buf.getvalue()
        path = f"{stage}/try-{attempts:04d}"
        client.write(path, blob, overwrite=True)
        file_id = int(client.status(path)["fileId"])
        s = shard_of(file_id, shards)
        attempts += 1
        if count[s] < per:
            count[s] += 1
            name = f"part-{k:03d}.parquet"
            client.rename(path, f"{stage}/{name}")
            placed.append(Placed(name, file_id, s))
            blob = None
        else:
            client.delete(path)
        if attempts > files * 30:
            raise RuntimeError("could not place the files evenly over the shards")
    return placed


@dataclass
class ThroughputRun:
    label: str
    members: int
    rows_s: float
    wall_s: float
    window_s: float
    member_cpu: list[float]
    stack_cpu: dict[str, float]
    machine_cpu: float
    load: str
    landed: str
    idle: dict[str, float]
    files_by_member: list[int] = field(default_factory=list)


async def read_back(topic: str, ids: int, timeout: float = 240) -> tuple[int, int, int, float]:  # noqa: ASYNC109
    """A read_committed consumer reads `topic` (ids 0 .. ids-1): (records, duplicates, missing,
    seconds from the first record's build time to the last's)."""
    consumer = committed_consumer(os.environ["KAFKA_BOOTSTRAP"], topic,
                                  max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    seen = bytearray(ids)
    n = dups = 0
    ts_min, ts_max = float("inf"), 0.0
    try:
        deadline = time.monotonic() + timeout
        quiet = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            for msgs in batch.values():
                for m in msgs:
                    v = m.value
                    i = int(v[6:v.index(b",", 6)]) if v.startswith(b'{"id":') else orjson.loads(v)["id"]
                    if seen[i]:
                        dups += 1
                    seen[i] = 1
                n += len(msgs)
                if msgs:
                    ts_min = min(ts_min, msgs[0].timestamp)
                    ts_max = max(ts_max, msgs[-1].timestamp)
                    quiet = time.monotonic()
            if n >= ids and time.monotonic() - quiet > 2:
                break
    finally:
        await consumer.stop()
    return n, dups, ids - (n - dups), (ts_max - ts_min) / 1000


def throughput_run(k: int, label: str, n_members: int, shards: int | None, ctx: Context,
                   placed: list[Placed], prev_dir: str, rows: int) -> tuple[ThroughputRun, str]:
    src_dir = f"{ctx.base}/in-{k}"
    topic, ledger = f"bench-group-{ctx.run}-t{k}", f"bench-group-ledger-{ctx.run}-t{k}"
    ctx.topics += [topic, ledger]
    topics(create=[topic])
    ctx.client.makedirs(src_dir)
    source = {"name": SOURCE, "path": f"{src_dir}/*", "format": "parquet", "topic": topic,
              "start_from": "earliest"}
    daemon: dict[str, Any] = {"workers": 2}
    if shards:
        daemon.update(group=f"bench-{ctx.run}-t{k}", shards=shards)
    members = [Member(f"t{k}{x}-{ctx.run}", ctx.tmp, ctx.stack, ledger=ledger, source=source, **daemon)
               for x in "abc"[:n_members]]
    ctx.members += members
    expected = len(placed) * rows
    for m in members:
        m.start()
    owners = until(lambda: spread(members, shards or 1), "every member streams its shards", 90, members)
    time.sleep(1.0)
    if spread(members, shards or 1) != owners:  # one more rebalance under way: wait for it
        owners = until(lambda: spread(members, shards or 1), "the group settles", 90, members)
    pids = stack_pids()
    # The stack is shared: what the broker, NameNode, DataNode and machine use with the members
    # idle, for 3 s before the renames.
    idle0 = {r: cpu_seconds(p) for r, p in pids.items()} | {"machine": machine_busy()}
    time.sleep(3.0)
    idle = {r: (cpu_seconds(p) if r != "machine" else machine_busy()) - c
            for r, c, p in ((r, c, pids.get(r, 0)) for r, c in idle0.items())}
    cpu0 = {m.name: cpu_seconds(m.pid) for m in members}
    stack0 = {r: cpu_seconds(p) for r, p in pids.items()}
    busy0 = machine_busy()
    t0 = time.time()
    for p in placed:
        ctx.client.rename(f"{prev_dir}/{p.name}", f"{src_dir}/{p.name}")
    first: float | None = None
    last_rise = {m.name: 0.0 for m in members}
    prev = {m.name: 0.0 for m in members}
    deadline = time.monotonic() + 600
    while True:
        check_alive(members)
        now = time.time()
        for m in members:
            r = m.rows()
            if r is not None and r > prev[m.name]:
                prev[m.name], last_rise[m.name] = r, now
        total = sum(prev.values())
        if first is None and total > 0:
            first = now
        if total >= expected:
            break
        if time.monotonic() > deadline:
            raise Stuck(f"{label}: {total:,.0f} of {expected:,} rows committed after 600 s")
        time.sleep(0.1)
    done = time.time()
    cpu = [cpu_seconds(m.pid) - cpu0[m.name] for m in members]
    stack_cpu = {r: cpu_seconds(p) - stack0[r] for r, p in pids.items()}
    busy = machine_busy() - busy0
    load = loadavg()
    assert first is not None
    codes = [m.terminate() for m in members]
    if any(codes):
        raise Stuck(f"{label}: members exited {codes} on SIGTERM")
    n, dups, missing, span = asyncio.run(read_back(topic, expected))
    landed = f"{n:,} records, {dups:,} duplicated, {missing:,} missing"
    if dups or missing:
        raise Stuck(f"{label}: read_committed: {landed}")
    window = done - t0
    by_member = Counter(owners[shard_of(p.file_id, shards or 1)][0].name for p in placed)
    res = ThroughputRun(label, n_members, expected / (done - first), done - first, window, cpu,
                        stack_cpu, busy, load, landed, idle, [by_member[m.name] for m in members])
    print(f"{label}: {expected:,} rows, first row committed {first - t0:.2f} s after the renames, "
          f"the last {done - t0:.2f} s after: {res.rows_s:,.0f} rows/s over {res.wall_s:.2f} s",
          flush=True)
    for m, c in zip(members, cpu, strict=True):
        shards_of = sorted(s for s, (o, _) in owners.items() if o is m)
        print(f"  {m.name}: shards {shards_of}, {by_member[m.name]} files, "
              f"{prev[m.name]:,.0f} rows, its last commit {last_rise[m.name] - t0:.2f} s after the "
              f"renames, CPU {c:.2f} s ({c / window:.2f} cores)")
    total_cpu = sum(cpu) + sum(stack_cpu.values())
    print(f"  CPU over the {window:.2f} s from the renames to the last commit: daemons {sum(cpu):.2f} s, "
          + ", ".join(f"{r} {c:.2f} s" for r, c in stack_cpu.items())
          + f"; together {total_cpu:.2f} s = {total_cpu / window:.2f} cores; the whole machine "
          f"{busy:.2f} s = {busy / window:.2f} of {os.cpu_count()} cores busy; load {load}")
    print("  before the renames, members idle, over 3 s: "
          + ", ".join(f"{r} {c / 3:.2f} cores" for r, c in idle.items()))
    print(f"  read_committed consumer: {landed}; record build times span {span:.2f} s", flush=True)
    return res, src_dir


def measure_throughput(ctx: Context, args: argparse.Namespace) -> bool:
    shards = 6
    if args.files % shards:
        sys.exit(f"--files must be a multiple of {shards}")
    print(f"\n== throughput: {args.files} Parquet files x {args.rows_per_file:,} rows, no speed "
          f"limit, workers 2 a member; load average {loadavg()}", flush=True)
    stage = f"{ctx.base}/stage"
    ctx.client.makedirs(stage)
    t = time.monotonic()
    placed = place_files(ctx.client, stage, args.files, args.rows_per_file, shards)
    print(f"wrote {len(placed)} files, {args.files // shards} on each of {shards} shards "
          f"({time.monotonic() - t:.1f} s)", flush=True)
    runs = [("one daemon, no group (1 shard)", 1, None), ("group of 1, 6 shards", 1, shards),
            ("group of 2, 6 shards", 2, shards), ("group of 3, 6 shards", 3, shards)]
    results = []
    prev = stage
    # --repeat N: the four again, in the reverse order every other time.
    order = [run for r in range(args.repeat) for run in (runs if r % 2 == 0 else runs[::-1])]
    for k, (label, n, s) in enumerate(order):
        res, prev = throughput_run(k, label, n, s, ctx, placed, prev, args.rows_per_file)
        results.append(res)
    print("\n| daemons                        | rows/s  | first->last commit | daemons' CPU s (each) "
          "| daemons' CPU a row | broker | NameNode | DataNode | sum / wall | machine busy (before, idle) | load |")
    for r in sorted(results, key=lambda r: [x[0] for x in runs].index(r.label)):
        total = sum(r.member_cpu) + sum(r.stack_cpu.values())
        print(f"| {r.label:30} | {r.rows_s:,.0f} | {r.wall_s:.2f} s | {sum(r.member_cpu):.1f} "
              f"({', '.join(f'{c:.1f}' for c in r.member_cpu)}) "
              f"| {sum(r.member_cpu) / (args.files * args.rows_per_file) * 1e6:.2f} us "
              f"| {r.stack_cpu.get('broker', 0):.1f} "
              f"| {r.stack_cpu.get('NameNode', 0):.1f} | {r.stack_cpu.get('DataNode', 0):.1f} "
              f"| {total / r.window_s:.2f} | {r.machine_cpu / r.window_s:.2f} ({r.idle.get('machine', 0) / 3:.2f}) "
              f"| {r.load.split()[0]} |")
    if args.repeat > 1:
        for label, _, _ in runs:
            got = [r.rows_s for r in results if r.label == label]
            print(f"{label}: median {statistics.median(got):,.0f} rows/s of "
                  + ", ".join(f"{x:,.0f}" for x in got))
    print(f"load average at the end: {loadavg()}", flush=True)
    return True


# --------------------------------------------------------------------------- failover


def flow_group(ctx: Context, tag: str, names: str, shards: int, session: float,
               args: argparse.Namespace) -> tuple[list[Member], Flow]:
    topic, ledger = f"bench-group-{ctx.run}-{tag}", f"bench-group-ledger-{ctx.run}-{tag}"
    ctx.topics += [topic, ledger]
    topics(create=[topic])
    src_dir = f"{ctx.base}/{tag}"
    ctx.client.makedirs(src_dir)
    source = {"name": SOURCE, "path": f"{src_dir}/*", "format": "parquet", "topic": topic,
              "start_from": "earliest", "rows_per_second": args.flow_rate}
    members = [Member(f"{tag}{x}-{ctx.run}", ctx.tmp, ctx.stack, ledger=ledger, source=source,
                      workers=2, group=f"bench-{ctx.run}-{tag}", shards=shards,
                      group_session_timeout_s=session)
               for x in names]
    ctx.members += members
    flow = Flow(ctx.client, src_dir, topic, shards, args.flow_file_rows, args.flow_interval)
    ctx.flows.append(flow)
    return members, flow


def flowing(members: list[Member], shards: int, flow: Flow) -> dict[int, tuple[Member, float]] | None:
    """The owners, once every shard is streamed by one of `members` and rows built by its owner
    since its assignment have been seen."""
    owners = spread(members, shards)
    if owners is None:
        return None
    for s, (_, since) in owners.items():
        if flow.first_after((s,), since) is None:
            return None
    return owners


def first_event(events: list[Event], name: str, after: float = 0.0, pred: Any = None) -> Event | None:
    return next((e for e in events if e.event == name and e.t >= after and (pred is None or pred(e))), None)


def pct(values: list[float]) -> str:
    return (f"p50 {statistics.median(values):.2f} s, min {min(values):.2f} s, "
            f"max {max(values):.2f} s (n={len(values)})")


def measure_failover(ctx: Context, args: argparse.Namespace) -> bool:
    shards, session = 4, 6.0
    print(f"\n== failover: group of 2, shards {shards}, group_session_timeout_s {session:g}; a file "
          f"of {args.flow_file_rows:,} rows every {args.flow_interval:g} s, source limited to "
          f"{args.flow_rate:,} rows/s for the group; {args.kills} SIGKILLs; load average "
          f"{loadavg()}", flush=True)
    (a, b), flow = flow_group(ctx, "f", "ab", shards, session, args)
    both = [a, b]
    for m in both:
        m.start()
    until(lambda: spread(both, shards), "both members stream", 90, both)
    flow.start()
    until(lambda: flowing(both, shards, flow), "rows flow on every shard", 60, both)
    time.sleep(args.warmup)
    takeovers: list[float] = []
    own_pause: list[float] = []
    every_dead: list[float] = []
    for k in range(args.kills):
        victim, survivor = (a, b) if k % 2 == 0 else (b, a)
        until(lambda: flowing(both, shards, flow), "both members stream, rows flow on every shard",
              120, both)
        time.sleep(args.settle)
        owners = until(lambda: flowing(both, shards, flow), "still streaming", 60, both)
        dead = tuple(s for s, (m, _) in owners.items() if m is victim)
        kept = tuple(s for s, (m, _) in owners.items() if m is survivor)
        backlog = flow.backlog()
        mark = survivor.mark()
        t_kill = time.time()
        victim.kill()
        t_take = until(lambda d=dead, t=t_kill: flow.first_after(d, t),
                       f"the survivor {survivor.name} streams the dead member's shards {list(dead)}",
                       session + 90, [survivor])
        def survivor_back(d: tuple[int, ...] = dead, kept: tuple[int, ...] = kept,
                          m: Member = survivor, mark: int = mark,
                          t_kill: float = t_kill) -> tuple[list[Event], Event, float, float] | None:
            evs = m.events(mark)
            asg = first_event(evs, ASSIGNED, pred=lambda e: set(d) <= set(e.fields.get("shards") or ()))
            own = flow.first_after(kept, asg.t) if asg else None
            every = [flow.first_after((s,), t_kill) for s in d]
            if not (asg and own and all(every)):
                return None
            return evs, asg, own, max(t for t in every if t is not None)

        evs, asg, own, t_every = until(
            survivor_back, f"{survivor.name} streams its own shards and every one of the dead's", 60,
            [survivor])
        rev = first_event(evs, REVOKED)
        read = first_event(evs, LEDGER_READ, after=asg.t)
        takeovers.append(t_take - t_kill)
        every_dead.append(t_every - t_kill)
        if rev:
            own_pause.append(own - rev.t)
        steps = []
        if rev:
            steps.append(f"survivor's revoke +{rev.t - t_kill:.2f} s")
        steps.append(f"assigned +{asg.t - t_kill:.2f} s (rebalance_s {asg.fields.get('rebalance_s')})")
        if read:
            steps.append(f"ledger read +{read.t - t_kill:.2f} s ({read.fields.get('seconds')} s, "
                         f"{read.fields.get('unfinished')} unfinished files)")
        print(f"kill {k + 1:2}: {victim.name} (shards {list(dead)}, {sum(backlog[s] for s in dead):,} "
              f"rows waiting on them): {', '.join(steps)}; first row of its shards from "
              f"{survivor.name} +{t_take - t_kill:.2f} s, on every one of them +{t_every - t_kill:.2f} s; the survivor's own shards again "
              f"{(own - rev.t) if rev else float('nan'):.2f} s after its revoke", flush=True)
        victim.start()
    until(lambda: flowing(both, shards, flow), "both members stream again", 120, both)
    print(f"kill -> first row of the dead member's shards committed by the survivor: {pct(takeovers)}; "
          f"target: session timeout + 5 s = {session + 5:g} s")
    print(f"kill -> every shard of the dead member has rows from the survivor: {pct(every_dead)}")
    if own_pause:
        print(f"the survivor's own shards, revoke -> rows again: {pct(own_pause)}")
    return end_flow(flow, both)


# --------------------------------------------------------------------------- join


@dataclass
class Back:
    """A member after a rebalance: when it stopped its shards (its revoke line), got its new ones
    (its last "shards assigned" line), and when rows its new life built were first seen, for any
    of its shards and for each."""

    member: Member
    revoked: float | None
    assigned: list[Event]
    first_row: float
    shard_rows: dict[int, float]

    @property
    def pause(self) -> float | None:
        return self.first_row - self.revoked if self.revoked is not None else None


def back(m: Member, mark: int, owners: dict[int, tuple[Member, float]], flow: Flow) -> Back:
    evs = m.events(mark)
    rev = first_event(evs, REVOKED)
    shards = [s for s, (o, _) in owners.items() if o is m]
    since = owners[shards[0]][1]
    rows = {s: flow.first_after((s,), since) or float("nan") for s in shards}
    return Back(m, rev.t if rev else None, [e for e in evs if e.event == ASSIGNED],
                min(rows.values()), rows)


def assigned_text(b: Back, t0: float) -> str:
    return ", ".join(f"assigned +{e.t - t0:.2f} s {e.fields.get('shards')} (rebalance_s "
                     f"{e.fields.get('rebalance_s')})" for e in b.assigned)


def measure_join(ctx: Context, args: argparse.Namespace) -> bool:
    shards, session = 6, args.join_session_timeout
    print(f"\n== join: group of 2, shards {shards}, group_session_timeout_s {session:g}; a third "
          f"member joins and leaves (SIGTERM) {args.joins} times; a file of {args.flow_file_rows:,} "
          f"rows every {args.flow_interval:g} s, source limited to {args.flow_rate:,} rows/s for the "
          f"group; load average {loadavg()}", flush=True)
    (a, b, c), flow = flow_group(ctx, "j", "abc", shards, session, args)
    two, three = [a, b], [a, b, c]
    for m in two:
        m.start()
    until(lambda: spread(two, shards), "both members stream", 90, two)
    flow.start()
    until(lambda: flowing(two, shards, flow), "rows flow on every shard", 60, two)
    time.sleep(args.warmup)
    j_stay: list[float] = []  # a member that keeps shards: its revoke -> its first row again
    j_move: list[float] = []  # moved shards: their owners' first revoke -> the new member's first row
    j_all: list[float] = []  # the first revoke -> every shard has rows again
    l_stay: list[float] = []
    l_move: list[float] = []  # the leaver's shards: its SIGTERM -> their first row from another member
    l_all: list[float] = []  # the SIGTERM -> every shard has rows again
    rebalance_s: dict[str, list[float]] = {"joins": [], "joiner": [], "leaves": []}
    for k in range(args.joins):
        # -- join
        until(lambda: flowing(two, shards, flow), "two members stream", 120, three)
        time.sleep(args.settle)
        before = until(lambda: flowing(two, shards, flow), "two members stream", 60, three)
        marks = {m.name: m.mark() for m in two}
        t0 = time.time()
        c.start()
        after = until(lambda: flowing(three, shards, flow), f"{c.name} joins, rows flow on every shard",
                      120, three)
        marks[c.name] = c.start_mark
        backs = {m.name: back(m, marks[m.name], after, flow) for m in three}
        first_rev = min(backs[m.name].revoked or t0 for m in two)
        moved_from = {before[s][0].name for s, (o, _) in after.items() if o is c}
        for m in two:
            if backs[m.name].pause is not None:
                j_stay.append(backs[m.name].pause)  # type: ignore[arg-type]
            rebalance_s["joins"] += [float(e.fields.get("rebalance_s") or 0) for e in backs[m.name].assigned]
        rebalance_s["joiner"] += [float(e.fields.get("rebalance_s") or 0) for e in backs[c.name].assigned]
        move = backs[c.name].first_row - min(backs[n].revoked or t0 for n in moved_from)
        every = max(r for bk in backs.values() for r in bk.shard_rows.values()) - first_rev
        j_move.append(move)
        j_all.append(every)
        parts = [f"{m.name} revoke +{(backs[m.name].revoked or t0) - t0:.2f} s, "
                 f"{assigned_text(backs[m.name], t0)}, rows again +{backs[m.name].first_row - t0:.2f} s"
                 for m in two]
        parts.append(f"{c.name} {assigned_text(backs[c.name], t0)}, its first row "
                     f"+{backs[c.name].first_row - t0:.2f} s")
        print(f"join {k + 1} (times from {c.name}'s start): " + "; ".join(parts)
              + ". Revoke -> rows again: members that stay "
              + ", ".join(f"{backs[m.name].pause:.2f} s" for m in two if backs[m.name].pause is not None)
              + f", moved shards {move:.2f} s, every shard {every:.2f} s", flush=True)
        # -- leave
        time.sleep(args.settle)
        before = until(lambda: flowing(three, shards, flow), "three members stream", 60, three)
        leaver_shards = tuple(s for s, (o, _) in before.items() if o is c)
        marks = {m.name: m.mark() for m in two}
        t0 = time.time()
        code = c.terminate()
        t_exit = time.time()
        if code:
            raise Stuck(f"{c.name} exited {code} on SIGTERM")
        after = until(lambda: flowing(two, shards, flow), f"{c.name} left, rows flow on every shard",
                      120, two)
        backs = {m.name: back(m, marks[m.name], after, flow) for m in two}
        for m in two:
            if backs[m.name].pause is not None:
                l_stay.append(backs[m.name].pause)  # type: ignore[arg-type]
            rebalance_s["leaves"] += [float(e.fields.get("rebalance_s") or 0) for e in backs[m.name].assigned]
        move = min(backs[after[s][0].name].shard_rows[s] for s in leaver_shards) - t0
        every = max(r for bk in backs.values() for r in bk.shard_rows.values()) - t0
        l_move.append(move)
        l_all.append(every)
        parts = [f"{m.name} revoke +{(backs[m.name].revoked or t0) - t0:.2f} s, "
                 f"{assigned_text(backs[m.name], t0)}, rows again +{backs[m.name].first_row - t0:.2f} s"
                 for m in two]
        print(f"leave {k + 1} (times from {c.name}'s SIGTERM; it exited +{t_exit - t0:.2f} s): "
              + "; ".join(parts) + ". Revoke -> rows again: members that stay "
              + ", ".join(f"{backs[m.name].pause:.2f} s" for m in two if backs[m.name].pause is not None)
              + f"; SIGTERM -> the leaver's shards {list(leaver_shards)} again {move:.2f} s, "
              f"every shard {every:.2f} s", flush=True)
    print(f"join, revoke -> rows again, members that stay: {pct(j_stay)}")
    print(f"join, moved shards (their owners' revoke -> the new member's first row): {pct(j_move)}")
    print(f"join, the first revoke -> every shard has rows again: {pct(j_all)}")
    print(f"leave, revoke -> rows again, members that stay: {pct(l_stay)}")
    print(f"leave, SIGTERM -> the leaver's shards have rows again: {pct(l_move)}")
    print(f"leave, SIGTERM -> every shard has rows again: {pct(l_all)}")
    labels = {"joins": "the two members, at joins",
              "joiner": "the joining member, from the start of its join",
              "leaves": "the two members, at leaves"}
    for what, vals in rebalance_s.items():
        if vals:
            print(f"rebalance_s ({labels[what]}): " + ", ".join(f"{v:.3f}" for v in vals))
    return end_flow(flow, two)


# --------------------------------------------------------------------------- main


@dataclass
class Context:
    run: str
    base: str
    client: Any
    stack: Stack
    tmp: Path
    topics: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--failover", action="store_true")
    ap.add_argument("--join", action="store_true")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--rows-per-file", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="--throughput: run the four N times, alternating their order")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--joins", type=int, default=5)
    ap.add_argument("--join-session-timeout", type=float, default=10.0)
    ap.add_argument("--flow-rate", type=int, default=4000,
                    help="the source's rows_per_second (the group's) in --failover and --join")
    ap.add_argument("--flow-file-rows", type=int, default=2500)
    ap.add_argument("--flow-interval", type=float, default=0.5, help="seconds between two files")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of flow before the first round")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of flow before each round")
    ap.add_argument("--keep-logs", action="store_true", help="keep the members' configs and logs")
    args = ap.parse_args()
    if not (args.throughput or args.failover or args.join):
        args.throughput = args.failover = args.join = True

    env = {k: os.environ.get(k) for k in ("WEBHDFS_URL", "HDFS_USER", "KAFKA_BOOTSTRAP", "HDFS_NAMENODE")}
    if not all(env.values()):
        sys.exit('set the dev stack environment first: eval "$(deploy/devstack/devstack env)"')
    run = uuid.uuid4().hex[:8]
    stack = Stack(env["HDFS_NAMENODE"], env["WEBHDFS_URL"], env["HDFS_USER"], env["KAFKA_BOOTSTRAP"])  # type: ignore[arg-type]
    ctx = Context(run, f"/bench/group-{run}", hdfs_client(), stack,
                  Path(tempfile.mkdtemp(prefix="bench-group-")))
    print(f"run {run}; {os.cpu_count()} cores; load average {loadavg()} (the machine may be shared)",
          flush=True)
    ok = True
    try:
        ctx.client.makedirs(ctx.base)
        if args.throughput:
            ok = measure_throughput(ctx, args) and ok
        if args.failover:
            ok = measure_failover(ctx, args) and ok
        if args.join:
            ok = measure_join(ctx, args) and ok
    except Stuck as exc:
        ok = False
        print(f"\nSTUCK: {exc}", flush=True)
        for m in ctx.members:
            if m.proc.proc is not None:
                print(m.tail())
    finally:
        for flow in ctx.flows:
            flow.stop()
        for m in ctx.members:
            if m.proc.alive():
                m.proc.signal(signal.SIGKILL)
                m.proc.wait(30)
        try:
            ctx.client.delete(ctx.base, recursive=True)
        except Exception as exc:
            print(f"cleanup: HDFS {ctx.base}: {exc}", file=sys.stderr)
        try:
            if ctx.topics:
                topics(delete=ctx.topics)
        except Exception as exc:
            print(f"cleanup: topics: {exc}", file=sys.stderr)
        if args.keep_logs or not ok:
            print(f"configs and logs kept in {ctx.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
