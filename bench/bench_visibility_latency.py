"""Visibility latency on the dev stack: from a file's rename into a watched directory to all its
rows being readable by a read_committed consumer, p50/p99/max over 50 files of 10,000 rows,
with the daemon idle and again while another source streams a backlog at full speed.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_visibility_latency.py [--files 50] [--rows 10000] [--phases idle,load]
                                             [--backlog-files 24] [--backlog-file-rows 500000]
                                             [--daemon KEY=VALUE ...] [--trace]

The daemon (`hdfs2kafka run`, a subprocess, default settings) watches two sources: `vis`
(`<dir>/in`, JSON values into a 6-partition topic) and `load` (`<dir>/backlog`, another topic,
`start_from = "earliest"`). All the measured Parquet files are written to `<dir>/staging` first;
then, one at a time, a file is renamed into `<dir>/in` (WebHDFS RENAME) and the clock runs from
the rename's return until a read_committed consumer, assigned to the topic and polling since
before the first rename, has received every row of that file (a row's file is its id // 10^6;
its fetch.max.wait.ms is 50 ms, `--fetch-max-wait-ms`).
After each file a pause of 0.3-0.5 s lets the daemon go idle. In the `load` phase the backlog
(`--backlog-files` copies of one Parquet file, renamed into `<dir>/backlog` at once) streams
meanwhile; files measured after the backlog was done are reported apart.

Also printed for each phase: the detection latency of the renames as the daemon saw them (from
the daemon's log with `--trace`, below) and the daemon's largest event loop stall.

`--trace` runs the daemon with HDFS2KAFKA_TRACE=1 and prints where each file's time went, from
the daemon's log lines "trace" (event, CLOCK_MONOTONIC time, file): detected, recorded (the
FilesRecorded item queued), unit queued, transaction begun, committed. Those lines exist only in
a tree instrumented for this (see bench/RESULTS.md, "Visibility latency"); without them only the
totals are printed. The edit log is rolled first (`--no-roll`: not), since every poll that
finds new edits makes the NameNode read its in-progress segment from the start.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.sample_data import events_table  # noqa: E402
from pipeline.kafka.client import admin_client, committed_consumer  # noqa: E402

PARTITIONS = 6
READY_LINE = "ready: recovery done"
ID_BLOCK = 1_000_000  # a measured file's rows have ids file_no * ID_BLOCK + row
LOOP_LAG = "hdfs2kafka_event_loop_lag_seconds"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def parquet_blob(first_id: int, rows: int, row_group_rows: int = 65_536) -> bytes:
    buf = io.BytesIO()
    pq.write_table(events_table(first_id, rows), buf, row_group_size=row_group_rows, compression="snappy")
    return buf.getvalue()


def metrics_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def metric(text: str, name: str, labels: str = "") -> float | None:
    found = None
    for line in text.splitlines():
        if line.startswith(name + "{" + labels) or (not labels and line.startswith(name + " ")):
            found = (found or 0.0) + float(line.rsplit(" ", 1)[1])
    return found


class RowWatcher:
    """A read_committed consumer assigned to every partition of `topic`, polling from before the
    first rename: when each measured file's last row arrived (CLOCK_MONOTONIC)."""

    def __init__(self, bootstrap: str, topic: str, rows_per_file: int, fetch_max_wait_ms: int) -> None:
        self.consumer = committed_consumer(bootstrap, fetch_max_wait_ms=fetch_max_wait_ms,
                                           max_partition_fetch_bytes=8 * 1024 * 1024)
        self.topic = topic
        self.rows_per_file = rows_per_file
        self.counts: dict[int, int] = defaultdict(int)
        self.complete: dict[int, float] = {}
        self.events: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import TopicPartition

        await self.consumer.start()
        self.consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        await self.consumer.seek_to_end()
        await self.consumer.getmany(timeout_ms=200)  # a first fetch: polling from here on
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=50_000)
            now = time.monotonic()
            for msgs in batches.values():
                for m in msgs:
                    # The value starts with {"id":N, (the JSON encoder writes columns in order).
                    v = m.value
                    file_no = int(v[6:v.index(b",", 6)]) // ID_BLOCK
                    self.counts[file_no] += 1
                    if self.counts[file_no] == self.rows_per_file:
                        self.complete[file_no] = now
                        self.events[file_no].set()

    async def wait(self, file_no: int, timeout: float) -> float | None:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self.events[file_no].wait(), timeout)
        except TimeoutError:
            return None
        return self.complete[file_no]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


def trace_lines(log: str) -> list[dict[str, Any]]:
    """The daemon's "trace" log lines (an instrumented tree only), as dicts."""
    out = []
    for line in log.splitlines():
        if '"trace"' not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "trace":
            out.append(doc)
    return out


def breakdown(traces: list[dict[str, Any]], renamed: dict[str, float], visible: dict[str, float]) -> list[str]:
    """Where each measured file's time went, from the trace lines: medians and p90 of each step,
    and how many files had their rows in a transaction of their own after the one that recorded
    them."""
    by_path: dict[str, dict[str, float]] = defaultdict(dict)
    txn_of_unit: dict[str, int] = {}
    txn_of_recorded: dict[str, int] = {}
    begun: dict[int, float] = {}
    committed: dict[int, tuple[float, float]] = {}
    for t in traces:
        what, mono = str(t.get("what")), float(t.get("mono", 0))
        path = t.get("path")
        if what == "txn_begin":
            begun[int(t["txn"])] = mono
        elif what == "txn_committed":
            committed[int(t["txn"])] = (float(t["commit_start"]), mono)
        elif isinstance(path, str) and path in renamed:
            by_path[path].setdefault(what, mono)
            if what == "recorded_taken":
                txn_of_recorded[path] = int(t["txn"])
            elif what == "unit_taken":
                txn_of_unit.setdefault(path, int(t["txn"]))
    steps: dict[str, list[float]] = defaultdict(list)
    own_txn = 0
    for path, r in renamed.items():
        p = by_path.get(path, {})
        if path not in visible or "detected" not in p:
            continue
        steps["rename -> detected"].append(p["detected"] - r)
        if "unit_queued" in p:
            steps["detected -> unit queued (read + encode)"].append(p["unit_queued"] - p["detected"])
        txn = txn_of_unit.get(path)
        if txn is not None and txn in committed:
            start, done = committed[txn]
            if txn in begun:
                steps["unit's txn: begun -> commit call"].append(start - begun[txn])
            steps["unit's txn: commit call -> committed"].append(done - start)
            steps["committed -> last row at consumer"].append(visible[path] - done)
            if "unit_queued" in p:
                steps["unit queued -> its txn committed"].append(done - p["unit_queued"])
            if txn_of_recorded.get(path) not in (None, txn):
                own_txn += 1
    out = []
    for name, vals in steps.items():
        out.append(f"  {name:42s} median {statistics.median(vals) * 1000:6.0f} ms, "
                   f"p90 {percentile(vals, 90) * 1000:6.0f} ms, max {max(vals) * 1000:6.0f} ms")
    if steps:
        out.append(f"  files whose rows committed in a later transaction than their FilesRecorded: "
                   f"{own_txn} of {len(steps['rename -> detected'])}")
    return out


async def run_phase(name: str, args: argparse.Namespace, client: Any, base: str, watcher: RowWatcher,
                    file_numbers: list[int], backlog_done: Any, daemon_log: Path) -> dict[str, Any]:
    """Rename each staged file into the watched directory, one at a time; returns the figures."""
    rng = random.Random(7)
    renamed: dict[str, float] = {}
    visible: dict[str, float] = {}
    under_load: dict[str, bool] = {}
    lat: list[float] = []
    log_mark = log_size(daemon_log)
    for file_no in file_numbers:
        src, dst = f"{base}/staging/f{file_no:05d}.parquet", f"{base}/in/f{file_no:05d}.parquet"

        def rename(s: str = src, d: str = dst) -> float:
            client.rename(s, d)
            return time.monotonic()

        t_renamed = await asyncio.to_thread(rename)
        renamed[dst] = t_renamed
        t_visible = await watcher.wait(file_no, timeout=60)
        if t_visible is None:
            raise RuntimeError(f"{dst}: its rows were not all readable within 60 s "
                               f"({watcher.counts.get(file_no, 0)} of {args.rows})")
        visible[dst] = t_visible
        under_load[dst] = not backlog_done()
        lat.append(t_visible - t_renamed)
        await asyncio.sleep(rng.uniform(0.3, 0.5))
    return {"name": name, "lat": lat, "renamed": renamed, "visible": visible, "under_load": under_load,
            "traces": trace_lines(read_log(daemon_log, log_mark))}


def log_size(path: Path) -> int:
    return path.stat().st_size


def read_log(path: Path, start: int) -> str:
    with path.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def start_daemon(config: Path, log_path: Path, trace: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    if trace:
        env["HDFS2KAFKA_TRACE"] = "1"
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def lag_buckets(text: str) -> dict[str, float]:
    """The daemon's event loop lag histogram: upper bound -> wake-ups at or under it."""
    out = {}
    for line in text.splitlines():
        if line.startswith(LOOP_LAG + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def stalls_between(before: dict[str, float], after: dict[str, float]) -> str:
    """Wake-ups of the loop-lag monitor between two scrapes that came more than 50, 100 and 250 ms
    late, and the bucket of the worst."""
    if not after:
        return "not measured (this daemon has no loop-lag monitor)"
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta["+Inf"]
    over = {ms: total - delta.get(f"{ms / 1000:g}", total) for ms in (50, 100, 250)}
    bounds = sorted((float(le), n) for le, n in delta.items() if le != "+Inf")
    worst = next((f"<= {b * 1000:g} ms" for b, n in bounds if n == total), "> 10 s")
    return (f"{total:.0f} wake-ups; more than 50 ms late: {over[50]:.0f}, 100 ms: {over[100]:.0f}, "
            f"250 ms: {over[250]:.0f}; the worst {worst}")


def report(result: dict[str, Any], load: str) -> None:
    lat, name = result["lat"], result["name"]
    loaded = [t for (p, t) in zip(result["renamed"], lat, strict=True) if result["under_load"][p]]
    print(f"\n{name}: {len(lat)} files of the run, load average {load}")
    print(f"  rename -> all rows readable: p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p99 {percentile(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, "
          f"min {min(lat) * 1000:.0f} ms")
    if name == "load":
        if loaded:
            print(f"  of which {len(loaded)} while the backlog streamed: p50 {statistics.median(loaded) * 1000:.0f} ms, "
                  f"p99 {percentile(loaded, 99) * 1000:.0f} ms, max {max(loaded) * 1000:.0f} ms")
        else:
            print("  none while the backlog streamed (it ended first: give a larger --backlog-files)")
    traces = result["traces"]
    detected = {t["path"]: float(t["mono"]) for t in traces if t.get("what") == "detected"}
    det = [detected[p] - r for p, r in result["renamed"].items() if p in detected]
    if det:
        print(f"  detection (rename -> the daemon's FileReady): p50 {statistics.median(det) * 1000:.0f} ms, "
              f"p99 {percentile(det, 99) * 1000:.0f} ms, max {max(det) * 1000:.0f} ms")
        for line in breakdown(traces, result["renamed"], result["visible"]):
            print(line)
    print(f"  all latencies (ms): {', '.join(f'{x * 1000:.0f}' for x in lat)}", flush=True)


async def main_async(args: argparse.Namespace) -> int:
    from hdfs import InsecureClient

    from hdfswatch.namenode import NameNodeClient
    from tests.integration.pipeline.harness import free_port

    webhdfs, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    bootstrap, namenode = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("HDFS_NAMENODE")
    if not (webhdfs and user and bootstrap and namenode):
        sys.exit('set the dev stack environment first: eval "$(deploy/devstack/devstack env)"')
    phases = args.phases.split(",")
    print(f"load average at start: {loadavg()} (2 cores; the machine may be shared)", flush=True)
    run = uuid.uuid4().hex[:8]
    base = f"/bench/vis-{run}"
    topic, load_topic, ledger = f"bench-vis-{run}", f"bench-vis-load-{run}", f"bench-vis-ledger-{run}"
    client = InsecureClient(webhdfs, user=user)
    tmp = Path(tempfile.mkdtemp(prefix="bench-vis-"))
    proc: subprocess.Popen[bytes] | None = None
    watcher: RowWatcher | None = None
    try:
        for d in ("in", "staging", "backlog", "backlog-staging"):
            client.makedirs(f"{base}/{d}")
        numbers = {ph: [(i + 1) + 1000 * k for i in range(args.files)] for k, ph in enumerate(phases)}
        t0 = time.perf_counter()
        for ph in phases:
            for n in numbers[ph]:
                client.write(f"{base}/staging/f{n:05d}.parquet", parquet_blob(n * ID_BLOCK, args.rows))
        print(f"staged {sum(map(len, numbers.values()))} files of {args.rows:,} rows "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        if "load" in phases:
            t0 = time.perf_counter()
            blob = parquet_blob(0, args.backlog_file_rows)
            for i in range(args.backlog_files):
                client.write(f"{base}/backlog-staging/b{i:04d}.parquet", blob)
            print(f"staged a backlog of {args.backlog_files} files of {args.backlog_file_rows:,} rows "
                  f"({len(blob) * args.backlog_files / 2**20:.0f} MiB, {time.perf_counter() - t0:.1f} s)",
                  flush=True)
        async with admin_client(bootstrap) as admin:
            from aiokafka.admin import NewTopic

            await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (topic, load_topic)])
        if not args.no_roll:
            async with NameNodeClient([namenode], user) as nn:
                await nn.roll_edits()

        port = free_port()
        lines = ["[daemon]", f'instance_id = "bench-vis-{run}"', f'http = "127.0.0.1:{port}"',
                 'log_level = "info"']
        lines += [f"{k} = {v}" for k, v in (kv.split("=", 1) for kv in args.daemon)]
        lines += ["", "[hdfs]", f'namenodes = ["{namenode}"]', f'webhdfs = "{webhdfs}"', f'user = "{user}"']
        lines += ["", "[kafka]", f'bootstrap = "{bootstrap}"', f'ledger_topic = "{ledger}"']
        for name, path, t in (("vis", f"{base}/in", topic), ("load", f"{base}/backlog", load_topic)):
            lines += ["", "[[sources]]", f'name = "{name}"', f'path = "{path}"', f'topic = "{t}"',
                      'format = "parquet"', 'start_from = "earliest"']
        config = tmp / "daemon.toml"
        config.write_text("\n".join(lines) + "\n")
        log_path = tmp / "daemon.log"
        proc = start_daemon(config, log_path, args.trace)
        deadline = time.monotonic() + 120
        while READY_LINE not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.05)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        watcher = RowWatcher(bootstrap, topic, args.rows, args.fetch_max_wait_ms)
        await watcher.start()
        await asyncio.sleep(2.0)  # the daemon's first listing and transactions are behind it

        backlog_rows = args.backlog_files * args.backlog_file_rows

        def backlog_done() -> bool:
            rows = metric(metrics_text(metrics_url), "hdfs2kafka_rows_produced_total", 'source="load"')
            return (rows or 0) >= backlog_rows

        for ph in phases:
            if ph == "load":
                for i in range(args.backlog_files):
                    client.rename(f"{base}/backlog-staging/b{i:04d}.parquet", f"{base}/backlog/b{i:04d}.parquet")
                await asyncio.sleep(1.0)  # the backlog is streaming
            load_before = loadavg()
            lags_before = lag_buckets(metrics_text(metrics_url))
            result = await run_phase(ph, args, client, base, watcher, numbers[ph],
                                     backlog_done if ph == "load" else lambda: True, log_path)
            report(result, f"{load_before} at the start, {loadavg()} at the end")
            text = metrics_text(metrics_url)
            print(f"  the daemon's event loop during the phase: {stalls_between(lags_before, lag_buckets(text))}")
            worst = metric(text, LOOP_LAG + "_max_seconds")
            if worst is not None:
                print(f"  its largest stall since it started: {worst * 1000:.0f} ms")
            if ph == "load":
                rows = metric(text, "hdfs2kafka_rows_produced_total", 'source="load"') or 0
                print(f"  backlog: {rows:,.0f} of {backlog_rows:,} rows committed when the phase ended")
        return 0
    finally:
        if watcher is not None:
            await watcher.stop()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        try:
            client.delete(base, recursive=True)
        except Exception as exc:
            print(f"cleanup: HDFS {base}: {exc}", file=sys.stderr)
        try:
            async with admin_client(bootstrap) as admin:
                await admin.delete_topics([topic, load_topic, ledger])
        except Exception as exc:
            print(f"cleanup: topics: {exc}", file=sys.stderr)
        if os.environ.get("BENCH_KEEP_LOG"):
            print(f"daemon log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=50, help="files measured in each phase")
    ap.add_argument("--rows", type=int, default=10_000, help="rows of each measured file")
    ap.add_argument("--phases", default="idle,load")
    ap.add_argument("--backlog-files", type=int, default=24)
    ap.add_argument("--backlog-file-rows", type=int, default=500_000)
    ap.add_argument("--daemon", action="append", default=[], metavar="KEY=VALUE",
                    help="a [daemon] setting, as TOML (transaction_max_ms=50)")
    ap.add_argument("--trace", action="store_true", help="where the time goes (an instrumented tree)")
    ap.add_argument("--fetch-max-wait-ms", type=int, default=50,
                    help="the consumer's fetch.max.wait.ms (Kafka's default is 500)")
    ap.add_argument("--no-roll", action="store_true", help="do not roll the edit log first")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
