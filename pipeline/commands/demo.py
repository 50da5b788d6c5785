"""`hdfs2kafka demo`: the product working against the local dev stack, live.

It writes sample files into HDFS (Parquet clicks in Hive-style `dt=` partitions, Avro orders),
starts the daemon on them as a subprocess, keeps writing new files while it runs, and shows the
daemon's progress (from `GET /status`) and a sample of the rows a read_committed consumer finds
in Kafka. When stopped (Ctrl-C or `--duration`) it stops writing, lets the daemon stream what is
left, stops the daemon with SIGTERM and checks that every row written arrived exactly once. The
last line it prints is a JSON summary: `{"event": "demo.summary", ...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from pipeline.commands.common import Connection, add_connection_arguments, connection_from

NAME = "demo"
HELP = "run hdfs2kafka against the local dev stack and show rows arriving in Kafka"

ROWS_PER_FILE_ID = 1_000_000  # row id = file number * ROWS_PER_FILE_ID + row number in the file
SOURCES = ("clicks", "orders")
INITIAL_FILES = 2  # per source, written before the daemon starts
DRAIN_TIMEOUT_S = 120.0  # after the writer stops: how long to wait for the daemon to catch up
PAGES = ("/", "/search", "/cart", "/checkout", "/product/1", "/product/2", "/help")
ITEMS = ("kettle", "lamp", "mug", "chair", "desk", "pen", "notebook", "rug")
ORDER_SCHEMA = {
    "type": "record", "name": "Order", "namespace": "demo",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "item", "type": "string"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "created", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop by itself after this long (default: run until Ctrl-C)")
    parser.add_argument("--files-per-minute", type=float, default=30, metavar="N",
                        help="new files written while it runs, both sources together (default 30)")
    parser.add_argument("--rows-per-file", type=int, default=10_000, metavar="N",
                        help="rows in each sample file (default 10000)")
    parser.add_argument("--rows-per-second", type=float, default=5_000, metavar="N",
                        help="the daemon's rate limit per source, so that files are seen in "
                             "flight; 0 for none (default 5000)")
    parser.add_argument("--sample-every", type=int, default=2_500, metavar="N",
                        help="print one row of every N consumed from Kafka (default 2500)")
    parser.add_argument("--workdir", default="demo-run", metavar="DIR",
                        help="where the daemon's config and log go, under RUN-ID/ (default ./demo-run)")
    parser.add_argument("--json-only", action="store_true",
                        help="send orders as JSON even when SCHEMA_REGISTRY_URL is set")
    add_connection_arguments(parser)


async def run(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        print(f"demo: {problem}", file=sys.stderr)
        return 2
    conn = connection_from(args)
    if not conn.webhdfs_url or not conn.kafka_bootstrap or not (
            conn.namenodes or os.environ.get("HADOOP_CONF_DIR")):
        print('demo: set HDFS_NAMENODE, WEBHDFS_URL and KAFKA_BOOTSTRAP '
              '(eval "$(deploy/devstack/devstack env)")', file=sys.stderr)
        return 2
    registry = None if args.json_only else (os.environ.get("SCHEMA_REGISTRY_URL") or None)
    return await Demo(args, conn, registry).main()


def _check_args(args: argparse.Namespace) -> str | None:
    if not 1 <= args.rows_per_file < ROWS_PER_FILE_ID:
        return f"--rows-per-file must be from 1 to {ROWS_PER_FILE_ID - 1}"
    if args.files_per_minute <= 0:
        return "--files-per-minute must be greater than 0"
    if args.duration is not None and args.duration <= 0:
        return "--duration must be greater than 0"
    if args.rows_per_second < 0:
        return "--rows-per-second must be 0 or more"
    if args.sample_every < 1:
        return "--sample-every must be 1 or more"
    return None


# --------------------------------------------------------------------------- sample files


@dataclass(frozen=True)
class Written:
    source: str
    file_no: int
    path: str
    rows: int


def clicks_parquet(file_no: int, rows: int, day: dt.date) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rnd = random.Random(file_no)
    start = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=file_no * 60)
    table = pa.table({
        "id": pa.array([file_no * ROWS_PER_FILE_ID + i for i in range(rows)], pa.int64()),
        "user": [f"user-{rnd.randrange(200)}" for _ in range(rows)],
        "page": [rnd.choice(PAGES) for _ in range(rows)],
        "duration_ms": pa.array([rnd.randrange(20, 30_000) for _ in range(rows)], pa.int32()),
        "at": pa.array([start + dt.timedelta(milliseconds=i * 7) for i in range(rows)],
                       pa.timestamp("ms", tz="UTC")),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2_000)
    return buf.getvalue()


def orders_avro(file_no: int, rows: int) -> bytes:
    import fastavro

    rnd = random.Random(file_no)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    records = [{"id": file_no * ROWS_PER_FILE_ID + i,
                "customer": f"customer-{rnd.randrange(100)}",
                "item": rnd.choice(ITEMS),
                "quantity": rnd.randrange(1, 6),
                "price": round(rnd.uniform(1, 200), 2),
                "created": start + dt.timedelta(milliseconds=i * 11)} for i in range(rows)]
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(ORDER_SCHEMA), records, codec="deflate",
                    sync_interval=32_000)
    return buf.getvalue()


class Writer:
    """Writes the sample files into HDFS as `hdfs dfs -put` does (`name._COPYING_`, then a
    rename), first a few, then one every so often from a background thread."""

    def __init__(self, conn: Connection, base: str, rows_per_file: int, files_per_minute: float) -> None:
        from hdfs import InsecureClient

        self.client = InsecureClient(conn.webhdfs_url, user=conn.hdfs_user)
        self.base = base
        self.rows_per_file = rows_per_file
        self.interval = 60.0 / files_per_minute
        self.lock = threading.Lock()
        self.files: list[Written] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._next_no = 1
        self._thread: threading.Thread | None = None

    def dir_of(self, source: str) -> str:
        return f"{self.base}/{source}"

    def write_one(self, source: str, day: dt.date | None = None) -> Written:
        with self.lock:
            file_no = self._next_no
            self._next_no += 1
        n = self.rows_per_file
        if source == "clicks":
            day = day or dt.datetime.now(dt.UTC).date()
            path = f"{self.base}/clicks/dt={day.isoformat()}/part-{file_no:05d}.parquet"
            data = clicks_parquet(file_no, n, day)
        else:
            path = f"{self.base}/orders/orders-{file_no:05d}.avro"
            data = orders_avro(file_no, n)
        tmp = f"{path}._COPYING_"
        self.client.write(tmp, data, overwrite=True)
        self.client.rename(tmp, path)
        written = Written(source, file_no, path, n)
        with self.lock:
            self.files.append(written)
        return written

    def write_initial(self) -> None:
        for source in SOURCES:
            self.client.makedirs(self.dir_of(source))
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        for _ in range(INITIAL_FILES):
            self.write_one("clicks", yesterday)
            self.write_one("orders")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="demo-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        turn = 0
        while not self.stop.wait(self.interval):
            source = SOURCES[turn % len(SOURCES)]
            turn += 1
            try:
                self.write_one(source)
            except Exception as exc:  # HDFS hiccup: say so and try again at the next tick
                with self.lock:
                    self.errors.append(f"{source}: {exc}")

    def join(self, timeout: float = 30) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self) -> list[Written]:
        with self.lock:
            return list(self.files)


# --------------------------------------------------------------------------- Kafka side


@dataclass
class Seen:
    """What the read_committed consumer found for one source: per file, a count per row."""

    rows: int = 0
    counts: dict[int, bytearray] = field(default_factory=dict)
    unexpected: int = 0

    def add(self, row_id: int) -> None:
        self.rows += 1
        if row_id < 0:
            self.unexpected += 1
            return
        file_no, seq = divmod(row_id, ROWS_PER_FILE_ID)
        counts = self.counts.get(file_no)
        if counts is None or len(counts) <= seq:
            grown = bytearray(max(seq + 1, 2 * len(counts) if counts else seq + 1))
            if counts:
                grown[:len(counts)] = counts
            counts = self.counts[file_no] = grown
        counts[seq] = min(255, counts[seq] + 1)

    def check(self, files: list[Written]) -> dict[str, int]:
        expected = {f.file_no: f.rows for f in files}
        missing = duplicates = 0
        unexpected = self.unexpected
        for file_no, counts in self.counts.items():
            n = expected.get(file_no, 0)
            duplicates += sum(c - 1 for c in counts if c > 1)
            unexpected += sum(1 for c in counts[n:] if c)
            missing += counts[:n].count(0) + max(0, n - len(counts))
        for file_no, n in expected.items():
            if file_no not in self.counts:
                missing += n
        return {"missing": missing, "duplicates": duplicates, "unexpected": unexpected,
                "unique": sum(len(c) - c.count(0) for c in self.counts.values())}

    def caught_up(self, files: list[Written]) -> bool:
        return all(len(self.counts.get(f.file_no, b"")) >= f.rows
                   and self.counts[f.file_no][:f.rows].count(0) == 0 for f in files)


class Consumer:
    """A read_committed consumer of both topics: counts every row by id, samples a few."""

    def __init__(self, bootstrap: str, topics: dict[str, str], registry: str | None,
                 sample_every: int, on_sample: Any) -> None:
        self.bootstrap = bootstrap
        self.topics = topics  # topic -> source
        self.registry_url = registry
        self.sample_every = sample_every
        self.on_sample = on_sample
        self.seen = {s: Seen() for s in topics.values()}
        self._consumer: Any = None
        self._registry: Any = None
        self._schemas: dict[int, Any] = {}

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024)
        await self._consumer.start()
        if self.registry_url:
            from pipeline.encoders.registry import SchemaRegistryClient

            self._registry = SchemaRegistryClient(self.registry_url)
            await self._registry.__aenter__()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._registry is not None:
            await self._registry.__aexit__(None, None, None)

    async def poll(self, timeout_ms: int = 300) -> int:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        got = 0
        for tp, messages in batch.items():
            source = self.topics[tp.topic]
            seen = self.seen[source]
            for m in messages:
                value = await self._decode(m.value)
                row_id = value.get("id") if isinstance(value, dict) else None
                seen.add(row_id if isinstance(row_id, int) else -1)
                if (seen.rows - 1) % self.sample_every == 0:
                    self.on_sample(source, tp.topic, tp.partition, m.offset, m.key, value)
            got += len(messages)
        return got

    async def _decode(self, raw: bytes | None) -> Any:
        if raw is None:
            return None
        if raw[:1] == b"\0" and len(raw) > 5 and self._registry is not None:
            import struct

            import fastavro

            (schema_id,) = struct.unpack(">I", raw[1:5])
            schema = self._schemas.get(schema_id)
            if schema is None:
                schema = fastavro.parse_schema(await self._registry.get_by_id(schema_id))
                self._schemas[schema_id] = schema
            return fastavro.schemaless_reader(io.BytesIO(raw[5:]), schema, None)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def caught_up_to_end(self) -> bool:
        """Whether every partition has been read to its (last stable) end offset."""
        parts = self._consumer.assignment()
        if not parts:
            return False
        ends = await self._consumer.end_offsets(list(parts))
        for tp in parts:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True


async def create_topics(bootstrap: str, topics: list[str], partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()


# --------------------------------------------------------------------------- the view


class View:
    """The live view. On a terminal, a block redrawn in place with sampled rows scrolling
    above it (plain ANSI escapes); otherwise, plain lines: the samples as they come and one
    `progress` line per source every few seconds."""

    PLAIN_EVERY_S = 2.0

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0
        self._pending: list[str] = []
        self._last_plain = 0.0

    def line(self, text: str) -> None:
        self._pending.append(text)

    def refresh(self, block: list[str], plain: list[str], force: bool = False) -> None:
        width = shutil.get_terminal_size((120, 40)).columns if self.tty else 0
        parts = []
        if self.tty:
            if self._drawn:
                parts.append(f"\x1b[{self._drawn}F\x1b[J")
            parts += [_fit(t, width) + "\n" for t in self._pending]
            parts += [_fit(t, width) + "\n" for t in block]
            self._drawn = len(block)
        else:
            parts += [t + "\n" for t in self._pending]
            now = time.monotonic()
            if force or now - self._last_plain >= self.PLAIN_EVERY_S:
                parts += [t + "\n" for t in plain]
                self._last_plain = now
        self._pending.clear()
        self.out.write("".join(parts))
        self.out.flush()

    def leave(self) -> None:
        """Stop redrawing: the last block stays on screen and text continues below it."""
        self._drawn = 0
        if self._pending:
            self.out.write("".join(t + "\n" for t in self._pending))
            self._pending.clear()
            self.out.flush()


def _fit(text: str, width: int) -> str:
    if width and len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text


def _short(value: Any, limit: int = 90) -> str:
    text = orjson.dumps(value, default=str).decode() if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, args: argparse.Namespace, conn: Connection, registry: str | None) -> None:
        self.args = args
        self.conn = conn
        self.registry = registry
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        self.base = f"/demo/{self.run_id}"
        self.workdir = Path(args.workdir) / self.run_id
        self.topics = {s: f"demo-{self.run_id}.{s}" for s in SOURCES}
        self.ledger_topic = f"demo-{self.run_id}.ledger"
        self.http_port = _free_port()
        self.tty = sys.stdout.isatty()
        self.view = View(sys.stdout, self.tty)
        self.writer = Writer(conn, self.base, args.rows_per_file, args.files_per_minute)
        self.consumer = Consumer(conn.kafka_bootstrap or "", {t: s for s, t in self.topics.items()},
                                 registry, args.sample_every, self._sample)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] | None = None
        self.status_error: str | None = None
        self.rates: dict[str, deque[tuple[float, int]]] = {s: deque() for s in SOURCES}
        self.started = time.monotonic()
        self.phase = "starting"
        self.stops = 0
        self.stop_event = asyncio.Event()

    @property
    def orders_format(self) -> str:
        return "avro" if self.registry else "json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    # ---- setup

    def write_config(self) -> Path:
        nn = ", ".join(f'"{n}"' for n in self.conn.namenodes)
        hdfs_where = (f"namenodes = [{nn}]" if self.conn.namenodes
                      else f'hadoop_conf_dir = "{os.environ["HADOOP_CONF_DIR"]}"')
        rate = (f"rows_per_second = {self.args.rows_per_second:g}\n"
                if self.args.rows_per_second else "")
        registry = f'schema_registry = "{self.registry}"\n' if self.registry else ""
        text = f"""# Written by `hdfs2kafka demo` for run {self.run_id}.
[daemon]
instance_id = "demo-{self.run_id}"
http = "127.0.0.1:{self.http_port}"
log_format = "json"
workers = 2
unit_rows = 1000

[hdfs]
{hdfs_where}
webhdfs = "{self.conn.webhdfs_url}"
user = "{self.conn.hdfs_user}"

[kafka]
bootstrap = "{self.conn.kafka_bootstrap}"
ledger_topic = "{self.ledger_topic}"
{registry}
[[sources]]
name = "clicks"
path = "{self.writer.dir_of("clicks")}"
topic = "{self.topics["clicks"]}"
format = "parquet"
key = ["user"]
value_format = "json"
start_from = "earliest"
{rate}
[[sources]]
name = "orders"
path = "{self.writer.dir_of("orders")}"
topic = "{self.topics["orders"]}"
format = "avro"
key = ["customer"]
value_format = "{self.orders_format}"
start_from = "earliest"
{rate}"""
        path = self.workdir / "hdfs2kafka.toml"
        path.write_text(text)
        return path

    def start_daemon(self, config: Path) -> None:
        log = open(self.log_path, "ab")
        # Its own session: Ctrl-C reaches the demo only, which then stops the daemon in order.
        # Should the demo itself die, the daemon gets SIGTERM rather than run on alone.
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_term_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    # ---- running

    def request_stop(self) -> None:
        self.stops += 1
        self.stop_event.set()
        if self.stops == 1:
            self.view.line("stopping: no new files; the daemon streams what is left "
                           "(Ctrl-C again to stop now)")

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._say(f"hdfs2kafka demo {self.run_id}: HDFS {self.base}/{{clicks,orders}} -> Kafka "
                  f"{self.topics['clicks']}, {self.topics['orders']}")
        try:
            await create_topics(self.consumer.bootstrap, list(self.topics.values()))
            await asyncio.to_thread(self.writer.write_initial)
        except Exception as exc:
            print(f"demo: cannot set up the sample data: {exc}", file=sys.stderr)
            return 1
        config = self.write_config()
        self.start_daemon(config)
        self._say(f"config {config}; daemon log {self.log_path} (pid {self.daemon.pid if self.daemon else '?'})")
        self._say(f"orders as {self.orders_format}"
                  + (f" through the Schema Registry {self.registry}" if self.registry else "")
                  + "; Ctrl-C stops" + (f"; stopping by itself after {self.args.duration:g}s"
                                       if self.args.duration else ""))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        if self.tty:
            sys.stdout.write("\x1b[?25l")
        import aiohttp

        daemon_exit: int | None = None
        drained = False
        try:
            await self.consumer.start()
            self.writer.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                daemon_exit = await self._watch(http, loop)
                if daemon_exit is None:
                    self.phase = "stopping: writer"
                    await asyncio.to_thread(self.writer.join)
                    drained = await self._drain(http, loop)
                    daemon_exit = await self._stop_daemon(http)
                    await self._settle(http, loop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.writer.stop.set()
            if self.daemon is not None and self.daemon.poll() is None:
                self.daemon.terminate()
                try:
                    self.daemon.wait(30)
                except subprocess.TimeoutExpired:
                    self.daemon.kill()
                    self.daemon.wait()
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            if self.tty:
                sys.stdout.write("\x1b[?25h")
            self.view.leave()
        return self.summary(daemon_exit, drained)

    async def _watch(self, http: Any, loop: asyncio.AbstractEventLoop) -> int | None:
        """Until asked to stop: poll, refresh. Returns the daemon's exit code if it died."""
        deadline = loop.time() + self.args.duration if self.args.duration else None
        while not self.stop_event.is_set():
            if deadline is not None and loop.time() >= deadline:
                self.request_stop()
                break
            await self._tick(http)
            if self.daemon is not None and self.daemon.poll() is not None:
                self.view.line(f"the daemon exited with code {self.daemon.returncode}; "
                               f"its log: {self.log_path}")
                for line in _tail(self.log_path, 10):
                    self.view.line("  " + line)
                return self.daemon.returncode
        return None

    async def _drain(self, http: Any, loop: asyncio.AbstractEventLoop) -> bool:
        """Let the daemon stream every file written; False if it did not in time."""
        files = self.writer.snapshot()
        self.phase = "stopping: streaming the last files"
        deadline = loop.time() + DRAIN_TIMEOUT_S
        self.stop_event.clear()
        while loop.time() < deadline and not self.stop_event.is_set():
            if all(self.consumer.seen[s].caught_up([f for f in files if f.source == s])
                   for s in SOURCES):
                return True
            if self.daemon is not None and self.daemon.poll() is not None:
                return False
            await self._tick(http)
        return False

    async def _stop_daemon(self, http: Any) -> int | None:
        assert self.daemon is not None
        self.phase = "stopping: daemon (SIGTERM)"
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
        self.stop_event.clear()
        deadline = time.monotonic() + 60
        while self.daemon.poll() is None and time.monotonic() < deadline:
            if self.stop_event.is_set():  # asked twice more: do not wait
                break
            await self._tick(http, status=False)
        if self.daemon.poll() is None:
            self.daemon.kill()
        return self.daemon.wait()

    async def _settle(self, http: Any, loop: asyncio.AbstractEventLoop) -> None:
        """After the daemon stopped: read both topics to their end, so duplicates would show."""
        self.phase = "checking: reading the topics to their end"
        deadline = loop.time() + 15
        while loop.time() < deadline:
            await self._tick(http, status=False)
            with contextlib.suppress(Exception):
                if await self.consumer.caught_up_to_end():
                    return

    async def _tick(self, http: Any, status: bool = True) -> None:
        try:
            await self.consumer.poll(300)
        except Exception as exc:
            self.view.line(f"kafka: {exc}")
            await asyncio.sleep(0.3)
        if status:
            await self._poll_status(http)
        self.view.refresh(self._block(), self._plain())

    async def _poll_status(self, http: Any) -> None:
        try:
            async with http.get(f"http://127.0.0.1:{self.http_port}/status") as resp:
                self.status = await resp.json()
                self.status_error = None
        except Exception as exc:
            self.status_error = type(exc).__name__
            return
        now = time.monotonic()
        for s in self.status.get("sources", []):
            window = self.rates.get(s["name"])
            if window is not None:
                window.append((now, s["rows_committed"]))
                while len(window) > 2 and now - window[0][0] > 3.0:
                    window.popleft()

    def _rate(self, source: str) -> float:
        window = self.rates[source]
        if (len(window) < 2 or window[-1][0] <= window[0][0]
                or time.monotonic() - window[-1][0] > 3.0):
            return 0.0
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])

    def _source_rows(self) -> dict[str, dict[str, Any]]:
        by_name = {s["name"]: s for s in (self.status or {}).get("sources", [])}
        written = self.writer.snapshot()
        out = {}
        for source in SOURCES:
            st = by_name.get(source, {})
            mine = [f for f in written if f.source == source]
            out[source] = {
                "files_done": st.get("files_done", 0), "files_detected": st.get("files_detected", 0),
                "rows_committed": st.get("rows_committed", 0), "rate": self._rate(source),
                "state": st.get("state", "-"), "files_written": len(mine),
                "rows_written": sum(f.rows for f in mine),
                "kafka_rows": self.consumer.seen[source].rows,
            }
        return out

    def _daemon_state(self) -> str:
        if self.daemon is not None and self.daemon.poll() is not None:
            return f"exited ({self.daemon.returncode})"
        if self.status is None:
            return "starting"
        return "ready" if self.status.get("ready") else "recovering"

    def _edit_stream(self) -> str:
        es = (self.status or {}).get("edit_stream") or {}
        if es.get("txid") is None:
            return "edit stream: -"
        age = es.get("last_batch_age_s")
        return (f"edit stream: txid {es['txid']}  NameNode txid {_dash(es.get('namenode_txid'))}"
                f"  lag {_dash(es.get('lag'))}" + (f"  last batch {age:.1f}s ago" if age is not None else ""))

    def _in_flight(self) -> list[dict[str, Any]]:
        return list((self.status or {}).get("files_in_flight", []))

    def _block(self) -> list[str]:
        up = int(time.monotonic() - self.started)
        fmt = {"clicks": "parquet->json", "orders": f"avro->{self.orders_format}"}
        lines = [
            f"── hdfs2kafka demo {self.run_id}  up {up // 60:02d}:{up % 60:02d}  "
            f"daemon {self._daemon_state()}  {self.phase if self.phase != 'starting' else ''}",
            f"{'source':<8}{'format':<15}{'state':<11}{'files done/detected':>20}"
            f"{'rows committed':>16}{'rows/s':>9}{'in Kafka':>11}{'written':>18}",
        ]
        for source, r in self._source_rows().items():
            lines.append(
                f"{source:<8}{fmt[source]:<15}{r['state']:<11}"
                f"{r['files_done']:>11,}/{r['files_detected']:<8,}{r['rows_committed']:>16,}"
                f"{r['rate']:>9,.0f}{r['kafka_rows']:>11,}"
                f"{r['files_written']:>7,} / {r['rows_written']:<8,}")
        flight = self._in_flight()
        if flight:
            for f in flight[:6]:
                total = f.get("rows_total") or 0
                done = f.get("rows_done") or 0
                # Avro files do not say how many rows they hold until they are read.
                progress = (f"{_bar(done, total)} {done:>7,}/{total:<7,}" if total
                            else f"{'':22}{done:>7,} rows ")
                lines.append(f"  in flight {f['source']:<7} {progress} "
                             f"{f['path'].removeprefix(self.base + '/')}")
            if len(flight) > 6:
                lines.append(f"  ... and {len(flight) - 6} more in flight")
        else:
            lines.append("  in flight: none")
        lines.append("  " + self._edit_stream())
        return lines

    def _plain(self) -> list[str]:
        lines = []
        flight = self._in_flight()
        for source, r in self._source_rows().items():
            mine = " ".join(
                f"{f['path'].rsplit('/', 1)[-1]}:{f.get('rows_done') or 0}/{f.get('rows_total') or '?'}"
                for f in flight if f["source"] == source)
            lines.append(
                f"progress {source}: files {r['files_done']}/{r['files_detected']} done/detected, "
                f"rows committed {r['rows_committed']}, {r['rate']:.0f} rows/s, "
                f"in Kafka {r['kafka_rows']}, written {r['files_written']} files "
                f"{r['rows_written']} rows, in flight [{mine}]")
        lines.append(f"progress daemon {self._daemon_state()}; {self._edit_stream()}"
                     + (f"; {self.phase}" if self.phase != "starting" else ""))
        return lines

    def _sample(self, source: str, topic: str, partition: int, offset: int, key: bytes | None,
                value: Any) -> None:
        k = key.decode("utf-8", "replace") if key is not None else "-"
        self.view.line(f"{source:<7} {topic}[{partition}]@{offset:<7} key={k:<13} {_short(value)}")

    def _say(self, text: str) -> None:
        print(text, flush=True)

    # ---- the end

    def summary(self, daemon_exit: int | None, drained: bool) -> int:
        files = self.writer.snapshot()
        sources: dict[str, dict[str, Any]] = {}
        ok = True
        for source in SOURCES:
            mine = [f for f in files if f.source == source]
            seen = self.consumer.seen[source]
            check = seen.check(mine)
            exact = check["missing"] == 0 and check["duplicates"] == 0 and check["unexpected"] == 0
            ok = ok and exact
            sources[source] = {"topic": self.topics[source], "files_written": len(mine),
                               "rows_written": sum(f.rows for f in mine),
                               "rows_consumed": seen.rows, **check, "exactly_once": exact}
        rows_written = sum(s["rows_written"] for s in sources.values())
        rows_consumed = sum(s["rows_consumed"] for s in sources.values())
        print()
        print(f"files written {len(files)}, rows written {rows_written:,}, rows consumed from "
              f"Kafka (read_committed) {rows_consumed:,}")
        for source, s in sources.items():
            verdict = "every row exactly once" if s["exactly_once"] else (
                f"{s['missing']:,} missing, {s['duplicates']:,} duplicated, "
                f"{s['unexpected']:,} unexpected")
            print(f"  {source}: {s['files_written']} files, {s['rows_written']:,} rows written, "
                  f"{s['rows_consumed']:,} consumed from {s['topic']}: {verdict}")
        if not drained and not ok:
            print("  (stopped before the daemon had streamed every file written)")
        if self.writer.errors:
            print(f"  {len(self.writer.errors)} file write(s) failed; last: {self.writer.errors[-1]}")
        print(f"daemon exit code {daemon_exit}; log {self.log_path}")
        if files:
            print(f"look inside a file: hdfs2kafka cat {files[0].path} --limit 3")
        print(orjson.dumps({
            "event": "demo.summary", "run_id": self.run_id, "hdfs_dir": self.base,
            "files_written": len(files), "rows_written": rows_written,
            "rows_consumed": rows_consumed, "exactly_once": ok, "drained": drained,
            "daemon_exit_code": daemon_exit, "log": str(self.log_path), "sources": sources,
        }).decode(), flush=True)
        return 0 if ok and daemon_exit == 0 else 1


def _term_with_parent() -> None:
    """In the daemon's process, before exec: SIGTERM when the demo's process goes (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []
