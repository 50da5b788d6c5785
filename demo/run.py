"""`hdfs2kafka demo`: the command, and the demo's life from setup to the exactly-once verdict.

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
import json
import os
import signal
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import orjson

from demo import screen
from demo.consume import Consumer
from demo.sample_data import ROWS_PER_FILE_ID
from demo.supervise import DaemonProcess, free_port
from demo.writer import SOURCES, Writer
from pipeline.commands.common import Connection, add_connection_arguments, connection_from
from pipeline.config import load_connection
from pipeline.kafka.client import create_topics

NAME = "demo"
HELP = "run hdfs2kafka against the local dev stack and show rows arriving in Kafka"

DRAIN_TIMEOUT_S = 120.0  # after the writer stops: how long to wait for the daemon to catch up
TOPIC_PARTITIONS = 3


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
    from hdfswatch.errors import HdfsWatchError
    from pipeline.config import ConfigError

    try:
        demo = Demo(args, conn, registry)
    except (ConfigError, HdfsWatchError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return await demo.main()


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


class Demo:
    """The demo's run: its HDFS directory, topics, daemon config (written at once, so that the
    demo's own Kafka clients use the settings the daemon uses) and workdir."""

    def __init__(self, args: argparse.Namespace, conn: Connection, registry: str | None) -> None:
        self.args = args
        self.conn = conn
        self.registry = registry
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        self.base = f"/demo/{self.run_id}"
        self.workdir = Path(args.workdir) / self.run_id
        self.topics = {s: f"demo-{self.run_id}.{s}" for s in SOURCES}
        self.ledger_topic = f"demo-{self.run_id}.ledger"
        self.http_port = free_port()
        self.tty = sys.stdout.isatty()
        self.view = screen.View(sys.stdout, self.tty)
        self.writer = Writer(conn.webhdfs_client(), self.base, args.rows_per_file,
                             args.files_per_minute)
        self.daemon = DaemonProcess(self.workdir / "hdfs2kafka.toml", self.workdir / "daemon.log")
        self.workdir.mkdir(parents=True, exist_ok=True)
        _, kafka = load_connection(self.write_config())
        self.kafka_settings = kafka.client
        self.consumer = Consumer(conn.kafka_bootstrap or "", {t: s for s, t in self.topics.items()},
                                 registry, args.sample_every, self._sample,
                                 settings=self.kafka_settings,
                                 registry_ca_file=self.registry_ca_file)
        self.status: dict[str, Any] | None = None
        self.status_error: str | None = None
        self.rates: dict[str, deque[tuple[float, int]]] = {s: deque() for s in SOURCES}
        self.started = time.monotonic()
        self.phase = "starting"
        self.stops = 0
        self.stop_event = asyncio.Event()

    @property
    def registry_ca_file(self) -> str | None:
        """The registry is trusted as the daemon trusts it: kafka's ssl.ca.location."""
        return self.conn.kafka_settings.get("ssl.ca.location") or self.conn.ca_file

    @property
    def orders_format(self) -> str:
        return "avro" if self.registry else "json"

    @property
    def log_path(self) -> Path:
        return self.daemon.log_path

    # ---- setup

    def write_config(self) -> Path:
        """The daemon's config: the demo's sources, and the connection as the environment
        gives it (on a secure stack: Hadoop's configuration, the CA, the Kerberos identity and
        Kafka's security settings under their own names)."""
        conn = self.conn
        hdfs_where = ""
        if conn.namenodes:
            hdfs_where = f"namenodes = [{', '.join(_q(n) for n in conn.namenodes)}]\n"
        if conn.hadoop_conf_dir:
            hdfs_where += f"hadoop_conf_dir = {_q(conn.hadoop_conf_dir)}\n"
        if conn.ca_file:
            hdfs_where += f"ca_file = {_q(conn.ca_file)}\n"
        kerberos = ""
        gssapi = conn.kafka_settings.get("sasl.mechanism", "").upper() == "GSSAPI"
        if (conn.principal or conn.keytab) and (conn.kerberos or gssapi):
            kerberos = "\n[kerberos]\n" + "".join(
                f"{name} = {_q(value)}\n"
                for name, value in (("principal", conn.principal), ("keytab", conn.keytab)) if value)
        kafka = "".join(f"{_q(name)} = {_q(value)}\n" for name, value in conn.kafka_settings.items())
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
{hdfs_where}webhdfs = "{self.conn.webhdfs_url}"
user = "{self.conn.hdfs_user}"
{kerberos}
[kafka]
bootstrap = "{self.conn.kafka_bootstrap}"
ledger_topic = "{self.ledger_topic}"
{registry}{kafka}
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
        path = self.daemon.config
        path.write_text(text)
        return path

    # ---- running

    def request_stop(self) -> None:
        self.stops += 1
        self.stop_event.set()
        if self.stops == 1:
            self.view.line("stopping: no new files; the daemon streams what is left "
                           "(Ctrl-C again to stop now)")

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        self._say(f"hdfs2kafka demo {self.run_id}: HDFS {self.base}/{{clicks,orders}} -> Kafka "
                  f"{self.topics['clicks']}, {self.topics['orders']}")
        try:
            await create_topics(self.consumer.bootstrap, list(self.topics.values()),
                                partitions=TOPIC_PARTITIONS, settings=self.kafka_settings)
            await asyncio.to_thread(self.writer.write_initial)
        except Exception as exc:
            print(f"demo: cannot set up the sample data: {exc}", file=sys.stderr)
            return 1
        config = self.daemon.config
        self.daemon.start()
        self._say(f"config {config}; daemon log {self.log_path} (pid {self.daemon.pid or '?'})")
        self._say(f"orders as {self.orders_format}"
                  + (f" through the Schema Registry {self.registry}" if self.registry else "")
                  + "; Ctrl-C stops" + (f"; stopping by itself after {self.args.duration:g}s"
                                       if self.args.duration else ""))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        if self.tty:
            sys.stdout.write(screen.HIDE_CURSOR)
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
            self.daemon.stop_now()
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            if self.tty:
                sys.stdout.write(screen.SHOW_CURSOR)
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
            code = self.daemon.exit_code()
            if code is not None:
                self.view.line(f"the daemon exited with code {code}; its log: {self.log_path}")
                for line in self.daemon.log_tail(10):
                    self.view.line("  " + line)
                return code
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
            if self.daemon.exited():
                return False
            await self._tick(http)
        return False

    async def _stop_daemon(self, http: Any) -> int | None:
        self.phase = "stopping: daemon (SIGTERM)"
        self.daemon.terminate()
        self.stop_event.clear()
        deadline = time.monotonic() + 60
        while not self.daemon.exited() and time.monotonic() < deadline:
            if self.stop_event.is_set():  # asked twice more: do not wait
                break
            await self._tick(http, status=False)
        return self.daemon.kill()

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
        frame = self._frame()
        self.view.refresh(screen.block(frame), screen.plain(frame))

    async def _poll_status(self, http: Any) -> None:
        try:
            async with http.get(f"http://127.0.0.1:{self.http_port}/status") as resp:
                self.status = await resp.json()
                self.status_error = None
        except Exception as exc:
            self.status_error = type(exc).__name__
            return
        now = time.monotonic()
        for s in (self.status or {}).get("sources", []):
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
        code = self.daemon.exit_code()
        if code is not None:
            return f"exited ({code})"
        if self.status is None:
            return "starting"
        return "ready" if self.status.get("ready") else "recovering"

    def _frame(self) -> screen.Frame:
        return screen.Frame(
            run_id=self.run_id, up_s=int(time.monotonic() - self.started),
            daemon=self._daemon_state(), phase=self.phase, orders_format=self.orders_format,
            base=self.base, sources=self._source_rows(),
            in_flight=list((self.status or {}).get("files_in_flight", [])),
            edit_stream=screen.edit_stream(self.status))

    def _sample(self, source: str, topic: str, partition: int, offset: int, key: bytes | None,
                value: Any) -> None:
        self.view.line(screen.sample(source, topic, partition, offset, key, value))

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


def _q(text: str) -> str:
    """`text` as a TOML string (JSON's escapes are TOML's)."""
    return json.dumps(text)
