"""Recovery with a big ledger: how long the daemon takes to be ready, and how much memory it
holds then, when its ledger topic carries N entries of done files.

For each N, fills a fresh compacted ledger topic (created as the daemon creates it) with N
`<instance>|file|<fileId>` records of done files, as the daemon writes them (JSON, a path under
a `dt=` partition, mtimes and ready times inside the default 7-day retention, 1 in 10 an Avro
file with its end position), plus the source's record, in transactions of `--per-transaction`
records. Then starts `hdfs2kafka run` as a subprocess on that ledger (same instance_id, one
source whose directory is empty) and measures from the process's start to its
"ready: recovery done" log line, the "ledger read" line's own seconds, and the process's
VmRSS and VmHWM (from /proc) at ready. The topic and the HDFS directory are removed afterwards.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_ledger_recovery.py [--entries 10000 100000 1000000] [--runs 1]
                                          [--superseded] [--per-transaction 2000]
                                          [--profile FILE]

`--superseded` writes each file's "pending" record before its "done" one, as a ledger holds
them until compaction has run (2N file records). `--profile FILE` runs the largest N's daemon
under py-spy (flame graph .svg, speedscope .json, else collapsed stacks).
The machine may be shared: the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import KafkaConfig  # noqa: E402
from pipeline.kafka.client import admin_client  # noqa: E402
from pipeline.kafka.ledger_io import ensure_ledger_topic  # noqa: E402
from pipeline.ledger import DONE, PENDING, FileEntry, Keys  # noqa: E402

READY_LINE = "ready: recovery done"
FIRST_FILE_ID = 16_400_000  # HDFS inode ids of a NameNode that has seen a few million files
DAY_MS = 86_400_000


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def done_entries(n: int, hdfs_dir: str, now_ms: int, seed: int = 1) -> list[FileEntry]:
    """N done files over the last six days, oldest first, each ready a few seconds after its
    mtime; one in ten an Avro file (whose end position a later append resumes at)."""
    rng = random.Random(seed)
    out = []
    span = 6 * DAY_MS
    for i in range(n):
        mtime = now_ms - span + span * i // max(1, n)
        avro = i % 10 == 0
        size = rng.randrange(20_000, 4_000_000)
        day = time.strftime("%Y-%m-%d", time.gmtime(mtime / 1000))
        name = f"part-{i:07d}-{uuid.UUID(int=rng.getrandbits(128))}.{'avro' if avro else 'parquet'}"
        out.append(FileEntry(
            source="bench", path=f"{hdfs_dir}/dt={day}/{name}", file_id=FIRST_FILE_ID + i, size=size,
            mtime=mtime, state=DONE, next=f"block:{size}" if avro else None,
            rows=size // 180, ready_txid=1_000_000 + 3 * i, ready_ms=mtime + rng.randrange(50, 5000)))
    return out


async def fill_ledger(kafka: KafkaConfig, instance_id: str, entries: list[FileEntry], *,
                      per_transaction: int, superseded: bool) -> None:
    """Commit the entries' records (and the source's) to the ledger topic in transactions."""
    from aiokafka import AIOKafkaProducer

    keys = Keys(instance_id)
    records: list[tuple[bytes, bytes]] = [
        (keys.source("bench"), orjson.dumps({"name": "bench", "started_ms": entries[0].mtime if entries else 0}))]
    for e in entries:
        if superseded:
            pending = FileEntry(source=e.source, path=e.path, file_id=e.file_id, size=e.size,
                                mtime=e.mtime, state=PENDING, ready_txid=e.ready_txid, ready_ms=e.ready_ms)
            records.append((keys.file(e.file_id), pending.to_json()))
        records.append((keys.file(e.file_id), e.to_json()))
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, enable_idempotence=True, acks="all",
                                transactional_id=f"bench-fill-{instance_id}", linger_ms=5,
                                max_batch_size=1024 * 1024, compression_type=None)
    await producer.start()
    try:
        for lo in range(0, len(records), per_transaction):
            await producer.begin_transaction()
            batch = producer.create_batch()
            futures = []
            for key, value in records[lo:lo + per_transaction]:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, kafka.ledger_topic, partition=0))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, kafka.ledger_topic, partition=0))
            await asyncio.gather(*futures)
            await producer.commit_transaction()
    finally:
        await producer.stop()


async def delete_topic(bootstrap: str, topic: str) -> None:
    async with admin_client(bootstrap) as admin:
        await admin.delete_topics([topic])


def write_config(path: Path, *, instance_id: str, port: int, ledger: str, hdfs_dir: str,
                 namenode: str, webhdfs: str, user: str, bootstrap: str) -> None:
    path.write_text("\n".join([
        "[daemon]", f'instance_id = "{instance_id}"', f'http = "127.0.0.1:{port}"', 'log_level = "info"',
        "", "[hdfs]", f'namenodes = ["{namenode}"]', f'webhdfs = "{webhdfs}"', f'user = "{user}"',
        "", "[kafka]", f'bootstrap = "{bootstrap}"', f'ledger_topic = "{ledger}"',
        "", "[[sources]]", 'name = "bench"', f'path = "{hdfs_dir}"', f'topic = "{ledger}-rows"',
        'format = "auto"', 'start_from = "earliest"', "",
    ]))


def launch_and_measure(config: Path, log_path: Path, timeout: float, profile: str | None) -> dict[str, float]:
    """Start the daemon, wait for its readiness line; the times and memory at that moment."""
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)]
    if profile:
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(Path(profile).suffix, "raw")
        cmd = [pyspy, "record", "-o", profile, "-r", "200", "--nonblocking", "-f", fmt, "--", *cmd]
    started = time.perf_counter()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    pid = proc.pid
    try:
        if profile:
            while not (kids := Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()):
                time.sleep(0.01)
            pid = int(kids[0])
        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_text(errors="replace")
            if READY_LINE in text:
                ready = time.perf_counter() - started
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready:\n{text[-3000:]}")
            time.sleep(0.01)
        rss, hwm = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
        read_s = float("nan")
        for line in text.splitlines():
            if '"ledger read"' in line:
                read_s = float(orjson.loads(line[line.index("{"):])["seconds"])
        return {"ready_s": ready, "ledger_read_s": read_s, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024}
    finally:
        os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--runs", type=int, default=1, help="daemon starts per N (same ledger)")
    ap.add_argument("--per-transaction", type=int, default=2000)
    ap.add_argument("--superseded", action="store_true")
    ap.add_argument("--profile", metavar="FILE")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()

    webhdfs, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    bootstrap, namenode = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("HDFS_NAMENODE")
    if not (webhdfs and user and bootstrap and namenode):
        sys.exit('set the dev stack environment first: eval "$(deploy/devstack/devstack env)"')

    from hdfs import InsecureClient

    from tests.integration.pipeline.harness import free_port

    client = InsecureClient(webhdfs, user=user)
    print(f"load average at start: {loadavg()} (2 cores; the machine may be shared)", flush=True)
    for n in args.entries:
        run = uuid.uuid4().hex[:8]
        instance_id, ledger, hdfs_dir = f"bench-ledger-{run}", f"bench-ledger-{run}", f"/bench/ledger-{run}"
        kafka = KafkaConfig(bootstrap, ledger)
        tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
        try:
            client.makedirs(hdfs_dir)
            asyncio.run(ensure_ledger_topic(kafka))
            t0 = time.perf_counter()
            entries = done_entries(n, hdfs_dir, int(time.time() * 1000))
            asyncio.run(fill_ledger(kafka, instance_id, entries, per_transaction=args.per_transaction,
                                    superseded=args.superseded))
            del entries
            print(f"N={n:,}: ledger filled in {time.perf_counter() - t0:.1f} s "
                  f"({'pending + done records' if args.superseded else 'done records'})", flush=True)
            config = tmp / "daemon.toml"
            for i in range(args.runs):
                write_config(config, instance_id=instance_id, port=free_port(), ledger=ledger,
                             hdfs_dir=hdfs_dir, namenode=namenode, webhdfs=webhdfs, user=user,
                             bootstrap=bootstrap)
                profile = args.profile if args.profile and n == max(args.entries) and i == 0 else None
                m = launch_and_measure(config, tmp / f"daemon-{i}.log", args.timeout, profile)
                print(f"N={n:,} run {i + 1}: ready {m['ready_s']:.2f} s after start (ledger read "
                      f"{m['ledger_read_s']:.2f} s), VmRSS {m['rss_mib']:.0f} MiB, VmHWM "
                      f"{m['hwm_mib']:.0f} MiB at ready; load {loadavg()}", flush=True)
        finally:
            try:
                asyncio.run(delete_topic(bootstrap, ledger))
            except Exception as exc:
                print(f"cleanup: topic {ledger}: {exc}", file=sys.stderr)
            try:
                client.delete(hdfs_dir, recursive=True)
            except Exception as exc:
                print(f"cleanup: HDFS {hdfs_dir}: {exc}", file=sys.stderr)
            if os.environ.get("BENCH_KEEP_LOG"):
                print(f"daemon logs kept in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end: {loadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
