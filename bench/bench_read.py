"""Read throughput, CPU and peak RSS of each read backend (`[hdfs] reader`: native, webhdfs).

For each file size (Parquet from `bench/dataset.py`'s reference rows, uploaded once) and each
backend, a fresh child process opens the file through the read stack and either reads its
bytes in 4 MiB ranges (`bytes`: the transport alone) or streams it through the Parquet reader,
touching every unit's batch (`parquet`: what a worker does before encoding). Each child reports
wall time, its CPU seconds (user + system, all threads, hdfs-native's too) and its peak RSS.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_read.py [--sizes-mb 200,2000] [--readers native,webhdfs] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 4 * 1024 * 1024


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(reader: str, mode: str, path: str) -> None:
    import pyarrow.compute as pc

    from hdfsread.stack import ReadSettings, open_read_stack
    from pipeline.readers import open_reader

    stack = open_read_stack(ReadSettings(
        reader=reader, user=os.environ["HDFS_USER"], namenodes=(os.environ["HDFS_NAMENODE"],),
        webhdfs_url=os.environ["WEBHDFS_URL"]))
    base = _hwm_kib()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    rows = 0
    with stack.open(path) as f:
        size = f.size
        if mode == "bytes":
            for offset in range(0, size, CHUNK):
                f.read_at(offset, CHUNK)
        else:
            for unit in open_reader(f, "parquet").units(max_rows=65_536):
                rows += unit.rows
                pc.sum(unit.batch.column("id"))
        requests = f.requests
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stack.close()
    print(json.dumps({"bytes": size, "rows": rows, "requests": requests, "seconds": seconds,
                      "cpu_seconds": cpu, "rss_after_imports_kib": base,
                      "peak_rss_kib": _hwm_kib()}))


def write_file(path: Path, target_bytes: int, row_group_rows: int) -> int:
    import pyarrow.parquet as pq
    from dataset import reference_table

    table = reference_table(1_000_000)
    rows = 0
    with pq.ParquetWriter(path, table.schema, compression="snappy") as w:
        while path.stat().st_size < target_bytes:
            w.write_table(table, row_group_size=row_group_rows)
            rows += table.num_rows
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="200,2000")
    parser.add_argument("--readers", default="native,webhdfs")
    parser.add_argument("--modes", default="bytes,parquet")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--row-group-rows", type=int, default=131_072)
    parser.add_argument("--child", nargs=3, metavar=("READER", "MODE", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    from hdfs import InsecureClient

    url, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    if not url or not user or not os.environ.get("HDFS_NAMENODE"):
        print('set HDFS_NAMENODE, WEBHDFS_URL and HDFS_USER: eval "$(deploy/devstack/devstack env)"')
        return 2
    client = InsecureClient(url, user=user)
    hdfs_dir = f"/bench/read-{os.getpid()}"
    print(f"load {os.getloadavg()[0]:.1f}", flush=True)
    try:
        for mb in (int(s) for s in args.sizes_mb.split(",")):
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
                local = Path(tmp) / f"{mb}mb.parquet"
                rows = write_file(local, mb * 1_000_000, args.row_group_rows)
                remote = f"{hdfs_dir}/{local.name}"
                with local.open("rb") as f:
                    client.write(remote, f, overwrite=True)
            for run in range(args.runs):
                for mode in args.modes.split(","):
                    for reader in args.readers.split(","):
                        out = subprocess.run([sys.executable, __file__, "--child", reader, mode,
                                              remote], check=False, capture_output=True, text=True)
                        if out.returncode:
                            raise SystemExit(f"child failed:\n{out.stderr}")
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        if mode == "parquet":
                            assert r["rows"] == rows, (r, rows)
                        gb = r["bytes"] / 1e9
                        print(f"{r['bytes'] / 1e6:6.0f} MB  {mode:7}  {reader:7}  run {run + 1}  "
                              f"{r['seconds']:6.2f} s  {r['bytes'] / 1e6 / r['seconds']:5.0f} MB/s  "
                              f"CPU {r['cpu_seconds'] / gb:5.2f} s/GB  reads {r['requests']:5}  "
                              f"peak RSS {r['peak_rss_kib'] / 1024:5.0f} MiB "
                              f"(after imports {r['rss_after_imports_kib'] / 1024:.0f})  "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)
            client.delete(remote)
    finally:
        client.delete(hdfs_dir, recursive=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
