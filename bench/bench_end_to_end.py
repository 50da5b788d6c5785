"""End to end: Parquet files in HDFS -> the daemon -> one 6-partition Kafka topic, against Kafka's
own producer benchmark (ProducerPerformance, acks=all, idempotent) in the same run as the ceiling.

Writes N Parquet files (2,000,000 rows in all by default, each row's JSON value about 200 bytes),
uploads them to the dev stack's HDFS, starts `hdfs2kafka run` as a subprocess on a fresh ledger
topic with the source at `start_from = "earliest"`, and times from the daemon's readiness log line
until its /metrics count every row as committed. Then a read_committed consumer counts what landed,
and ProducerPerformance sends the same number of records of the same size to another new
6-partition topic. HDFS files, topics and the ledger topic are removed afterwards.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_end_to_end.py [--rows 2000000] [--files 16] [--daemon KEY=VALUE ...]
                                     [--kafka KEY=VALUE ...] [--skip-ceiling] [--profile FILE]

`--daemon unit_rows=50000` sets a [daemon] field, `--kafka batch.size=1048576` a [kafka] one.
`--profile FILE` runs the daemon under py-spy (on PATH) and writes FILE: .svg a flame graph, .json
speedscope, anything else collapsed stacks.
The machine may be shared: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.sample_data import events_table  # noqa: E402
from pipeline.kafka.client import admin_client, committed_consumer  # noqa: E402

PARTITIONS = 6
READY_LINE = "ready: recovery done"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parquet_files(rows: int, files: int, row_group_rows: int) -> list[bytes]:
    out = []
    per = rows // files
    for i in range(files):
        n = per if i < files - 1 else rows - per * (files - 1)
        buf = io.BytesIO()
        pq.write_table(events_table(i * per, n), buf, row_group_size=row_group_rows, compression="snappy")
        out.append(buf.getvalue())
    return out


def mean_value_bytes(sample: pa.Table) -> float:
    from pipeline.encoders.json import JsonEncoder, JsonOptions

    values = JsonEncoder(JsonOptions()).encode(sample.to_batches()[0])
    return sum(map(len, values)) / len(values)


async def admin(bootstrap: str, create: list[str] = (), delete: list[str] = ()) -> None:  # type: ignore[assignment]
    from aiokafka.admin import NewTopic

    async with admin_client(bootstrap) as client:
        if create:
            await client.create_topics([NewTopic(t, PARTITIONS, 1) for t in create])
        if delete:
            await client.delete_topics(list(delete))


async def count_committed(bootstrap: str, topic: str, expect: int, timeout: float) -> int:  # noqa: ASYNC109
    """Records a read_committed consumer sees in `topic` (stops at `expect` or after `timeout`)."""
    consumer = committed_consumer(bootstrap, topic, max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    n = 0
    try:
        deadline = time.monotonic() + timeout
        while n < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            n += sum(len(msgs) for msgs in batch.values())
    finally:
        await consumer.stop()
    return n


def metric(url: str, name: str) -> float:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(proc: subprocess.Popen[bytes], profiled: bool) -> int:
    """The daemon's own pid (under py-spy, the python child of py-spy)."""
    if not profiled:
        return proc.pid
    for _ in range(100):
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.1)
    return proc.pid


def kafka_lib() -> Path:
    home = Path(os.environ.get("DEVSTACK_HOME", Path.home() / ".cache" / "hdfs2kafka" / "devstack"))
    lib = Path(os.environ.get("DEVSTACK_LIB") or home / "lib")
    version = os.environ.get("DEVSTACK_KAFKA_VERSION", "4.4.0")
    # kafka-<version>-<digest of its pom.xml>: the newest one the dev stack resolved.
    found = sorted((p for p in lib.glob(f"kafka-{version}*") if (p / ".complete").exists()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no resolved Kafka {version} under {lib}: run deploy/devstack/devstack up")
    return found[-1]


def producer_performance(bootstrap: str, topic: str, records: int, size: int,
                         extra: list[str]) -> tuple[str, float, float]:
    """Kafka's ProducerPerformance: (summary line, records/s, MB/s)."""
    cmd = ["java", "-Xmx1g", "-cp", f"{kafka_lib()}/*", "org.apache.kafka.tools.ProducerPerformance",
           "--topic", topic, "--num-records", str(records), "--record-size", str(size),
           "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
           "enable.idempotence=true", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    pat = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")
    for line in reversed(res.stdout.splitlines()):
        m = pat.match(line.strip())
        if m and int(m.group(1)) == records:
            return line.strip(), float(m.group(2)), float(m.group(3))
    raise RuntimeError(f"ProducerPerformance failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n"
                       f"{res.stderr[-2000:]}")


def toml_value(v: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?|true|false", v):
        return v
    return f'"{v}"'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--row-group-rows", type=int, default=65_536)
    ap.add_argument("--daemon", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--hdfs", action="append", default=[], metavar="KEY=VALUE",
                    help="[hdfs] settings, e.g. reader=webhdfs")
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--ceiling-props", default="batch.size=524288 linger.ms=5",
                    help="a second ProducerPerformance run with these producer settings (the daemon's "
                         "batch size by default; '' for none)")
    ap.add_argument("--skip-count", action="store_true", help="no read_committed count afterwards")
    ap.add_argument("--profile", metavar="FILE", help="run the daemon under py-spy record")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    webhdfs, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    bootstrap, namenode = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("HDFS_NAMENODE")
    if not (webhdfs and user and bootstrap and namenode):
        sys.exit('set the dev stack environment first: eval "$(deploy/devstack/devstack env)"')

    from hdfs import InsecureClient

    from tests.integration.pipeline.harness import free_port

    load_start = loadavg()
    print(f"load average at start: {load_start} (2 cores; the machine may be shared)", flush=True)
    run = uuid.uuid4().hex[:8]
    hdfs_dir = f"/bench/e2e-{run}"
    topic, ledger = f"bench-e2e-{run}", f"bench-e2e-ledger-{run}"
    ceiling_topic, ceiling_topic2 = f"bench-e2e-pp-{run}", f"bench-e2e-pp2-{run}"
    client = InsecureClient(webhdfs, user=user)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    try:
        t0 = time.perf_counter()
        blobs = parquet_files(args.rows, args.files, args.row_group_rows)
        value_size = mean_value_bytes(events_table(0, 10_000))
        print(f"generated {args.files} Parquet files, {args.rows:,} rows, "
              f"{sum(map(len, blobs)) / 2**20:.1f} MiB, JSON value ~{value_size:.0f} bytes "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        client.makedirs(hdfs_dir)
        for i, blob in enumerate(blobs):
            client.write(f"{hdfs_dir}/part-{i:03d}.parquet._COPYING_", blob, overwrite=True)
            client.rename(f"{hdfs_dir}/part-{i:03d}.parquet._COPYING_", f"{hdfs_dir}/part-{i:03d}.parquet")
        del blobs
        asyncio.run(admin(bootstrap, create=[topic, ceiling_topic, ceiling_topic2]))

        port = free_port()
        lines = ["[daemon]", f'instance_id = "bench-{run}"', f'http = "127.0.0.1:{port}"', 'log_level = "info"']
        lines += [f"{k} = {toml_value(v)}" for k, v in (kv.split("=", 1) for kv in args.daemon)]
        lines += ["", "[hdfs]", f'namenodes = ["{namenode}"]', f'webhdfs = "{webhdfs}"', f'user = "{user}"']
        lines += [f"{k} = {toml_value(v)}" for k, v in (kv.split("=", 1) for kv in args.hdfs)]
        lines += ["", "[kafka]", f'bootstrap = "{bootstrap}"', f'ledger_topic = "{ledger}"']
        lines += [f'"{k}" = {toml_value(v)}' for k, v in (kv.split("=", 1) for kv in args.kafka)]
        lines += ["", "[[sources]]", 'name = "bench"', f'path = "{hdfs_dir}"', f'topic = "{topic}"',
                  'format = "parquet"', 'start_from = "earliest"']
        config = tmp / "daemon.toml"
        config.write_text("\n".join(lines) + "\n")
        print("daemon settings: " + (", ".join(args.daemon + args.hdfs + args.kafka) or "defaults"),
              flush=True)

        log_path = tmp / "daemon.log"
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
        if args.profile:
            pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(args.profile).suffix, "raw")
            cmd = [pyspy, "record", "-o", args.profile, "-r", "200", "--nonblocking", "--threads", "-f", fmt,
                   "--", *cmd]
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        rows_metric, bytes_metric = "hdfs2kafka_rows_produced_total", "hdfs2kafka_bytes_produced_total"
        started = time.perf_counter()
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        pid = daemon_pid(proc, bool(args.profile))
        t_ready = None
        deadline = time.monotonic() + args.timeout
        while t_ready is None:
            if READY_LINE in log_path.read_text(errors="replace"):
                t_ready = time.perf_counter()
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            else:
                time.sleep(0.02)
        cpu_at_ready = cpu_seconds(pid)
        rows_at_ready = metric(metrics_url, rows_metric)
        rows = 0.0
        while rows < args.rows:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon stopped at {rows:,.0f} rows:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            # Scrapes cost the daemon's event loop: few while far from the end, every 50 ms near it.
            elapsed = time.perf_counter() - t_ready
            eta = (args.rows - rows) / (rows / elapsed) if rows else 1.0
            time.sleep(min(0.25, max(0.05, eta / 8)))
            rows = metric(metrics_url, rows_metric)
        t_done = time.perf_counter()
        value_bytes = metric(metrics_url, bytes_metric)
        hwm = vm_kib(pid, "VmHWM")
        cpu = cpu_seconds(pid) - cpu_at_ready
        os.kill(pid, signal.SIGTERM)  # the daemon itself: py-spy writes its file when its child ends
        proc.wait(120)
        seconds = t_done - t_ready
        rate = args.rows / seconds
        mbps = value_bytes / seconds / 1e6
        load_mid = loadavg()
        print(f"daemon: {args.rows:,} rows, {value_bytes / 1e6:.1f} MB of values in {seconds:.2f} s from readiness "
              f"(ready {t_ready - started:.2f} s after start, {rows_at_ready:,.0f} rows committed by then)")
        print(f"daemon: {rate:,.0f} rows/s, {mbps:.1f} MB/s, peak RSS {hwm / 1024:.0f} MiB, load {load_mid}")
        print(f"daemon CPU: {cpu:.2f} s user+system ({cpu / seconds:.2f} cores, {cpu / args.rows * 1e6:.2f} us a row)",
              flush=True)
        if not args.skip_count:
            landed = asyncio.run(count_committed(bootstrap, topic, args.rows + 1, timeout=30))
            print(f"read_committed consumer: {landed:,} records in {topic} "
                  f"({'OK' if landed == args.rows else 'MISMATCH'})", flush=True)
        if args.skip_ceiling:
            return 0
        line, pp_rate, pp_mbps = producer_performance(bootstrap, ceiling_topic, args.rows, round(value_size), [])
        print(f"ProducerPerformance (Kafka's producer defaults): {line}")
        print(f"ceiling: {pp_rate:,.0f} rows/s, {pp_mbps:.1f} MiB/s (as Kafka counts)")
        print(f"ratio daemon / ceiling: {rate / pp_rate:.2f} (target >= 0.50)", flush=True)
        if args.ceiling_props:
            line, pp2, _ = producer_performance(bootstrap, ceiling_topic2, args.rows, round(value_size),
                                                  args.ceiling_props.split())
            print(f"ProducerPerformance ({args.ceiling_props}): {line}")
            print(f"ratio daemon / that: {rate / pp2:.2f}")
        print(f"load average at end: {loadavg()}", flush=True)
        return 0
    finally:
        if pid is not None and pid != getattr(proc, "pid", None):
            try:  # under py-spy: the daemon is py-spy's child and would outlive it
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        try:
            client.delete(hdfs_dir, recursive=True)
        except Exception as exc:
            print(f"cleanup: HDFS {hdfs_dir}: {exc}", file=sys.stderr)
        try:
            asyncio.run(admin(bootstrap, delete=[topic, ceiling_topic, ceiling_topic2, ledger]))
        except Exception as exc:
            print(f"cleanup: topics: {exc}", file=sys.stderr)
        if os.environ.get("BENCH_KEEP_LOG"):
            print(f"daemon log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
