"""End to end: files in HDFS -> the daemon -> one 6-partition Kafka topic, against Kafka's own
producer benchmark (ProducerPerformance) with the daemon's producer settings in the same run as
the ceiling.

Three modes (`--mode`), each 2,000,000 rows in 16 files by default:
- `json`  (default): Parquet files, unkeyed JSON values (a JSON value of about 200 bytes a row);
- `keyed`: the same Parquet files, JSON values keyed by `user_id` (its digits as a string key,
  about a billion distinct values), so rows go by key over the partitions;
- `avro`:  Avro container files (snappy blocks of 1,000 records) of the same rows, streamed as
  Avro values with the Confluent framing (source `format = "avro"`, `value_format = "avro"`;
  the dev stack's schema registry, `SCHEMA_REGISTRY_URL`).

Uploads the files to the dev stack's HDFS, starts `hdfs2kafka run` as a subprocess on a fresh
ledger topic with the source at `start_from = "earliest"`, and times from the daemon's readiness
log line until its /metrics count every row as committed. Then a read_committed consumer counts
what landed, and ProducerPerformance sends the same number of records of the daemon's average
record size (key + value, from its /metrics) to another new 6-partition topic with acks=all,
idempotence and the daemon's batch size, linger and compression. ProducerPerformance's records
have no key (keyed mode: its records are as large as key + value, but unkeyed). HDFS files,
topics and the ledger topic are removed afterwards.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_end_to_end.py [--mode json|keyed|avro] [--rows 2000000] [--files 16]
                                     [--daemon KEY=VALUE ...] [--kafka KEY=VALUE ...]
                                     [--skip-ceiling] [--kafka-defaults-ceiling] [--profile FILE]

`--daemon unit_rows=50000` sets a [daemon] field, `--kafka batch.size=1048576` a [kafka] one (the
ceiling takes batch.size, linger.ms and compression.type from there too).
`--profile FILE` runs the daemon under py-spy (on PATH or beside this Python) and writes FILE:
.svg a flame graph, .json speedscope, anything else py-spy's raw collapsed stacks, which are then
summed up by where the daemon's time goes (decode, encode, hash/batch, event loop, other threads).
Printed at the end: rows/s, MB/s, the daemon's CPU seconds per million rows, its largest event
loop stall (`hdfs2kafka_event_loop_lag_max_seconds`, when its daemon runs the monitor) and the
ratio daemon / ceiling. The machine may be shared: the load average is printed at the start and
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.sample_data import events_table  # noqa: E402
from pipeline.kafka.client import PRODUCER_DEFAULTS, admin_client, committed_consumer  # noqa: E402

PARTITIONS = 6
READY_LINE = "ready: recovery done"
MODES = ("json", "keyed", "avro")
KEY_COLUMN = "user_id"  # int64 of ~1e9 distinct values: its digits are the string key
LOOP_LAG_MAX = "hdfs2kafka_event_loop_lag_max_seconds"
LOOP_LAG_HIST = "hdfs2kafka_event_loop_lag_seconds"


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


def avro_files(rows: int, files: int, block_rows: int) -> list[bytes]:
    """The same rows as `parquet_files`, as Avro container files with snappy blocks."""
    out = []
    per = rows // files
    for i in range(files):
        n = per if i < files - 1 else rows - per * (files - 1)
        out.append(avro_container(events_table(i * per, n), block_rows))
    return out


def avro_container(table: pa.Table, block_rows: int) -> bytes:
    """An Avro object container file of `table` (schema from `arrow_to_avro_schema`), its
    records written by the project's Arrow-to-Avro encoder (fastavro's per-record writer
    takes a minute for 2,000,000 rows); fastavro writes the header."""
    import json

    import cramjam
    import fastavro

    from hdfswatch.framing import encode_zigzag
    from pipeline.encoders.avro import AvroEncoder, arrow_to_avro_schema

    schema = arrow_to_avro_schema(table.schema, "Event", "bench")
    encoder = AvroEncoder(0, schema)
    sync = os.urandom(16)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.read.HEADER_SCHEMA,  # type: ignore[arg-type]
                               {"magic": b"Obj\x01", "sync": sync,
                                "meta": {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"snappy"}})
    for batch in table.to_batches(max_chunksize=block_rows):
        raw = b"".join(v[5:] for v in encoder.encode(batch))  # without the Confluent prefix
        data = bytes(cramjam.snappy.compress_raw(raw)) + struct.pack(">I", zlib.crc32(raw))
        out.write(encode_zigzag(batch.num_rows) + encode_zigzag(len(data)) + data + sync)
    return out.getvalue()


def check_avro(blob: bytes, expect: int) -> None:
    """fastavro reads the file back: the generator writes valid Avro."""
    import fastavro

    n = sum(1 for _ in fastavro.reader(io.BytesIO(blob)))
    if n != expect:
        raise RuntimeError(f"generated Avro file reads back {n} records, not {expect}")


def mean_record_bytes(mode: str, sample: pa.Table) -> float:
    """Key + value bytes a row, as the daemon encodes it (before Kafka's record overhead)."""
    batch = sample.to_batches()[0]
    if mode == "avro":
        from pipeline.encoders.avro import AvroEncoder, arrow_to_avro_schema

        values = AvroEncoder(0, arrow_to_avro_schema(sample.schema, "Event", "bench")).encode(batch)
        return sum(map(len, values)) / len(values)
    from pipeline.encoders.json import JsonEncoder, JsonOptions

    values = JsonEncoder(JsonOptions()).encode(batch)
    size = sum(map(len, values))
    if mode == "keyed":
        from pipeline.encoders.keys import KeyEncoder

        size += sum(len(k or b"") for k in KeyEncoder([KEY_COLUMN]).encode(batch) or [])
    return size / len(values)


def source_lines(mode: str, hdfs_dir: str, topic: str) -> list[str]:
    lines = ["[[sources]]", 'name = "bench"', f'path = "{hdfs_dir}"', f'topic = "{topic}"',
             'start_from = "earliest"']
    if mode == "avro":
        return [*lines, 'format = "avro"', 'value_format = "avro"']
    lines.append('format = "parquet"')
    if mode == "keyed":
        lines.append(f'key = ["{KEY_COLUMN}"]')
    return lines


def ceiling_settings(kafka_overrides: list[str]) -> list[str]:
    """ProducerPerformance settings that match the daemon's producer: its batch size, linger and
    compression (its defaults, or the `--kafka` overrides), acks=all and idempotence."""
    settings = {"batch.size": str(PRODUCER_DEFAULTS["max_batch_size"]),
                "linger.ms": str(PRODUCER_DEFAULTS["linger_ms"]), "compression.type": "none"}
    for kv in kafka_overrides:
        k, v = kv.split("=", 1)
        if k in settings:
            settings[k] = v
    return [f"{k}={v}" for k, v in settings.items()]


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


def metrics_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def metric(url: str, name: str, text: str | None = None) -> float:
    """The sum of a metric's series (0 when the daemon does not answer or has no such series)."""
    return metric_or_none(text if text is not None else metrics_text(url), name) or 0.0


def metric_or_none(text: str, name: str, labels: str = "") -> float | None:
    found = None
    for line in text.splitlines():
        if line.startswith(name + "{" + labels) or (not labels and line.startswith(name + " ")):
            found = (found or 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def loop_stalls(text: str, at_ready: str) -> str:
    """The daemon's largest event loop stall since it started, and the wake-ups of its monitor
    (10 ms sleeps) that came late between readiness (`at_ready`, a scrape) and the end."""
    worst = metric_or_none(text, LOOP_LAG_MAX)
    if worst is None:
        return "not measured (this daemon has no loop-lag monitor)"

    def wakeups(doc: str, le: str | None = None) -> float:
        if le is None:
            return metric_or_none(doc, LOOP_LAG_HIST + "_count") or 0.0
        return metric_or_none(doc, LOOP_LAG_HIST + "_bucket", f'le="{le}"') or 0.0

    total = wakeups(text) - wakeups(at_ready)
    late = {le: total - (wakeups(text, le) - wakeups(at_ready, le))
            for le in ("0.01", "0.025", "0.05", "0.1", "0.25")}
    worst_at_ready = metric_or_none(at_ready, LOOP_LAG_MAX) or 0.0
    if worst > worst_at_ready:  # the largest stall came while streaming: its exact length
        worst_streaming = f"{worst * 1000:.0f} ms"
    else:
        worst_streaming = next((f"{float(le) * 1000:g} ms or less" for le in
                                ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10")
                                if wakeups(text, le) - wakeups(at_ready, le) == total), "over 10 s")
    return (f"largest since start {worst * 1000:.0f} ms; while streaming {total:.0f} wake-ups, "
            f"{late['0.01']:.0f} more than 10 ms late, {late['0.025']:.0f} more than 25 ms, "
            f"{late['0.05']:.0f} more than 50 ms, {late['0.1']:.0f} more than 100 ms, "
            f"{late['0.25']:.0f} more than 250 ms; the worst {worst_streaming}")


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


# Where a py-spy sample goes: the first of these, from the innermost frame out, that a frame's
# text (function and file) contains; a stack that matches none is the event loop's on the main
# thread, decoding on a decode thread and "other threads" elsewhere. (Avro blocks are
# decompressed in pipeline/encoders/avro.py: that counts as encode.)
PROFILE_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("encode", ("pipeline/encoders/", "pipeline/records.py")),
    ("hash/batch", ("pipeline/kafka/batches.py", "pipeline/kafka/layout.py", "murmur2",
                    "aiokafka/record/", "message_accumulator.py", "Committer._send",
                    "Committer._submit", "TransactionBuilder._runs", "TransactionBuilder.add",
                    "pipeline/kafka/transaction.py", "create_batch", "send_batch")),
    ("decode", ("pipeline/readers/", "hdfsread/", "pyarrow/", "fastavro/", "polars", "cramjam")),
)


def profile_summary(raw: Path) -> list[str]:
    """py-spy's raw collapsed stacks (`--threads`), summed by where the time goes; the imports
    of the daemon's start are counted apart."""
    by_bucket: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    startup = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[1] if ": " in frames[0] else frames[0]
        # The main thread has no name in py-spy's samples taken before `threading` is imported.
        main = thread == "MainThread" or (len(frames) > 1 and frames[1].startswith("_run_module_as_main"))
        if any("importlib._bootstrap" in f for f in frames):
            startup += n
            continue
        bucket = next((name for frame in reversed(frames) for name, needles in PROFILE_BUCKETS
                       if any(x in frame for x in needles)), None)
        if bucket is None:  # a decode thread's own glue (pipeline/workers.py) is decoding's
            bucket = "event loop" if main else "decode" if thread.startswith("decode") else "other threads"
        by_bucket[bucket] += n
        if main:
            by_thread["main thread"] += n
        elif thread.startswith("thread ("):
            by_thread["unnamed (native pools: polars, hdfs-native)"] += n
        else:
            by_thread[re.sub(r"_\d+$", "_*", thread)] += n
    total = sum(by_bucket.values())
    if not total:
        return ["profile: no samples"]
    order = ["decode", "encode", "hash/batch", "event loop", "other threads"]
    return [f"profile: {total:,} samples of busy threads after start-up ({startup:,} more in imports): "
            + ", ".join(f"{b} {by_bucket[b] / total:.0%}" for b in order if by_bucket[b]),
            "profile by thread: " + ", ".join(f"{t} {n / total:.0%}" for t, n in by_thread.most_common(6))]


def toml_value(v: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?|true|false", v):
        return v
    return f'"{v}"'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=MODES, default="json")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--row-group-rows", type=int, default=65_536)
    ap.add_argument("--avro-block-rows", type=int, default=1_000)
    ap.add_argument("--daemon", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--hdfs", action="append", default=[], metavar="KEY=VALUE",
                    help="[hdfs] settings, e.g. reader=webhdfs")
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--kafka-defaults-ceiling", action="store_true",
                    help="also run ProducerPerformance with Kafka's own producer defaults (16 KiB batches)")
    ap.add_argument("--skip-count", action="store_true", help="no read_committed count afterwards")
    ap.add_argument("--profile", metavar="FILE", help="run the daemon under py-spy record")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    webhdfs, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    bootstrap, namenode = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("HDFS_NAMENODE")
    registry = os.environ.get("SCHEMA_REGISTRY_URL")
    if not (webhdfs and user and bootstrap and namenode) or (args.mode == "avro" and not registry):
        sys.exit('set the dev stack environment first: eval "$(deploy/devstack/devstack env)"')

    from hdfs import InsecureClient

    from tests.integration.pipeline.harness import free_port

    load_start = loadavg()
    print(f"mode {args.mode}; load average at start: {load_start} (2 cores; the machine may be shared)",
          flush=True)
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
        if args.mode == "avro":
            blobs = avro_files(args.rows, args.files, args.avro_block_rows)
            check_avro(blobs[-1], args.rows - (args.rows // args.files) * (args.files - 1))
            suffix = "avro"
        else:
            blobs = parquet_files(args.rows, args.files, args.row_group_rows)
            suffix = "parquet"
        expected_size = mean_record_bytes(args.mode, events_table(0, 10_000))
        print(f"generated {args.files} {suffix} files, {args.rows:,} rows, "
              f"{sum(map(len, blobs)) / 2**20:.1f} MiB, key + value ~{expected_size:.0f} bytes a row "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        client.makedirs(hdfs_dir)
        for i, blob in enumerate(blobs):
            client.write(f"{hdfs_dir}/part-{i:03d}.{suffix}._COPYING_", blob, overwrite=True)
            client.rename(f"{hdfs_dir}/part-{i:03d}.{suffix}._COPYING_", f"{hdfs_dir}/part-{i:03d}.{suffix}")
        del blobs
        asyncio.run(admin(bootstrap, create=[topic, ceiling_topic, ceiling_topic2]))

        port = free_port()
        lines = ["[daemon]", f'instance_id = "bench-{run}"', f'http = "127.0.0.1:{port}"', 'log_level = "info"']
        lines += [f"{k} = {toml_value(v)}" for k, v in (kv.split("=", 1) for kv in args.daemon)]
        lines += ["", "[hdfs]", f'namenodes = ["{namenode}"]', f'webhdfs = "{webhdfs}"', f'user = "{user}"']
        lines += [f"{k} = {toml_value(v)}" for k, v in (kv.split("=", 1) for kv in args.hdfs)]
        lines += ["", "[kafka]", f'bootstrap = "{bootstrap}"', f'ledger_topic = "{ledger}"']
        if args.mode == "avro":
            lines.append(f'schema_registry = "{registry}"')
        lines += [f'"{k}" = {toml_value(v)}' for k, v in (kv.split("=", 1) for kv in args.kafka)]
        lines += ["", *source_lines(args.mode, hdfs_dir, topic)]
        config = tmp / "daemon.toml"
        config.write_text("\n".join(lines) + "\n")
        print("daemon settings: " + (", ".join(args.daemon + args.hdfs + args.kafka) or "defaults"),
              flush=True)

        log_path = tmp / "daemon.log"
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
        fmt = None
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
                                    env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
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
        at_ready = metrics_text(metrics_url)
        rows_at_ready = metric(metrics_url, rows_metric, at_ready)
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
        final = metrics_text(metrics_url)
        record_bytes = metric(metrics_url, bytes_metric, final)
        hwm = vm_kib(pid, "VmHWM")
        cpu = cpu_seconds(pid) - cpu_at_ready
        os.kill(pid, signal.SIGTERM)  # the daemon itself: py-spy writes its file when its child ends
        proc.wait(120)
        seconds = t_done - t_ready
        rate = args.rows / seconds
        mbps = record_bytes / seconds / 1e6
        record_size = round(record_bytes / args.rows)
        load_mid = loadavg()
        print(f"daemon: {args.rows:,} rows, {record_bytes / 1e6:.1f} MB of keys + values "
              f"({record_bytes / args.rows:.1f} bytes a row) in {seconds:.2f} s from readiness "
              f"(ready {t_ready - started:.2f} s after start, {rows_at_ready:,.0f} rows committed by then)")
        print(f"daemon: {rate:,.0f} rows/s, {mbps:.1f} MB/s, peak RSS {hwm / 1024:.0f} MiB, load {load_mid}")
        print(f"daemon CPU: {cpu:.2f} s user+system ({cpu / seconds:.2f} cores, "
              f"{cpu / args.rows * 1e6:.2f} CPU s per million rows)")
        print(f"daemon event loop stalls: {loop_stalls(final, at_ready)}", flush=True)
        if args.profile:
            if fmt == "raw":
                for line in profile_summary(Path(args.profile)):
                    print(line)
            else:
                print(f"profile written to {args.profile} (a summary needs the raw format: any other suffix)")
        if not args.skip_count:
            landed = asyncio.run(count_committed(bootstrap, topic, args.rows + 1, timeout=30))
            print(f"read_committed consumer: {landed:,} records in {topic} "
                  f"({'OK' if landed == args.rows else 'MISMATCH'})", flush=True)
        if args.skip_ceiling:
            print(f"load average at end: {loadavg()}", flush=True)
            return 0
        props = ceiling_settings(args.kafka)
        line, pp_rate, pp_mbps = producer_performance(bootstrap, ceiling_topic, args.rows, record_size, props)
        print(f"ProducerPerformance ({record_size}-byte records without key, acks=all, idempotent, "
              f"{' '.join(props)}): {line}")
        print(f"ceiling: {pp_rate:,.0f} rows/s, {pp_mbps:.1f} MiB/s (as Kafka counts)")
        print(f"ratio daemon / ceiling: {rate / pp_rate:.2f}", flush=True)
        if args.kafka_defaults_ceiling:
            line, pp2, _ = producer_performance(bootstrap, ceiling_topic2, args.rows, record_size, [])
            print(f"ProducerPerformance (Kafka's producer defaults): {line}")
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
        if registry and args.mode == "avro":
            delete_subject(registry, f"{topic}-value")
        if os.environ.get("BENCH_KEEP_LOG"):
            print(f"daemon log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def delete_subject(registry: str, subject: str) -> None:
    """The run's schema subject, gone from the registry (best effort)."""
    for url in (f"{registry}/subjects/{subject}", f"{registry}/subjects/{subject}?permanent=true"):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=5).close()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
