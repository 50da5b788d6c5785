"""Peak RSS while streaming a Parquet file from HDFS: a 2 GB file against a 200 MB one with the
same row-group size. Memory must depend on the row group, not on the file.

Each file is written locally (the reference rows of `bench/dataset.py`, repeated), uploaded to the
dev stack's HDFS, streamed by a fresh child process (WebHdfsFile + the Parquet reader, every
unit's batch touched) that reports its own peak RSS, then deleted from HDFS and from disk.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_parquet_rss.py [--sizes-mb 200,2000] [--row-group-rows 131072]
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


def _hwm_kib() -> int:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(url: str, user: str, path: str, max_rows: int) -> None:
    import pyarrow.compute as pc

    from hdfsread.webhdfs import WebHdfsFile
    from pipeline.readers import open_reader

    base = _hwm_kib()
    t0 = time.perf_counter()
    rows = units = 0
    checksum = 0
    with WebHdfsFile(url, path, user) as f:
        reader = open_reader(f, "parquet")
        for unit in reader.units(max_rows=max_rows):
            rows += unit.rows
            units += 1
            checksum += pc.sum(unit.batch.column("id")).as_py() or 0
        requests = f.requests
        size = f.size
    seconds = time.perf_counter() - t0
    peak = _hwm_kib()
    print(json.dumps({"bytes": size, "rows": rows, "units": units, "requests": requests,
                      "seconds": round(seconds, 1), "rss_after_imports_kib": base,
                      "peak_rss_kib": peak, "checksum": checksum}))


def write_file(path: Path, target_bytes: int, row_group_rows: int) -> tuple[int, int]:
    import pyarrow.parquet as pq
    from dataset import reference_table

    table = reference_table(1_000_000)
    rows = 0
    with pq.ParquetWriter(path, table.schema, compression="snappy") as w:
        while path.stat().st_size < target_bytes:
            w.write_table(table, row_group_size=row_group_rows)
            rows += table.num_rows
    return path.stat().st_size, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="200,2000")
    parser.add_argument("--row-group-rows", type=int, default=131_072)
    parser.add_argument("--max-rows", type=int, default=65_536, help="rows per unit")
    parser.add_argument("--child", nargs=3, metavar=("URL", "USER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.max_rows)
        return 0
    from hdfs import InsecureClient

    url, user = os.environ.get("WEBHDFS_URL"), os.environ.get("HDFS_USER")
    if not url or not user:
        print('set WEBHDFS_URL and HDFS_USER: eval "$(deploy/devstack/devstack env)"')
        return 2
    client = InsecureClient(url, user=user)
    hdfs_dir = f"/bench/parquet-rss-{os.getpid()}"
    results = []
    try:
        for mb in (int(s) for s in args.sizes_mb.split(",")):
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
                local = Path(tmp) / f"{mb}mb.parquet"
                size, rows = write_file(local, mb * 1_000_000, args.row_group_rows)
                remote = f"{hdfs_dir}/{local.name}"
                t0 = time.perf_counter()
                with local.open("rb") as f:
                    client.write(remote, f, overwrite=True)
                upload = time.perf_counter() - t0
            out = subprocess.run([sys.executable, __file__, "--max-rows", str(args.max_rows),
                                  "--child", url, user, remote],
                                 check=False, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"child failed:\n{out.stderr}")
            out = out.stdout
            r = json.loads(out.strip().splitlines()[-1])
            r["upload_seconds"] = round(upload, 1)
            assert r["rows"] == rows, (r, rows)
            results.append(r)
            client.delete(remote)
            print(f"{size / 1e6:8.0f} MB  {rows:>11,} rows  {r['units']:5} units  "
                  f"{r['requests']:5} HTTP reads  {r['seconds']:6.1f} s "
                  f"({size / 1e6 / r['seconds']:.0f} MB/s, {rows / r['seconds']:,.0f} rows/s)  "
                  f"peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB "
                  f"(after imports {r['rss_after_imports_kib'] / 1024:.0f} MiB)", flush=True)
    finally:
        client.delete(hdfs_dir, recursive=True)
    if len(results) >= 2:
        small, big = results[0], results[-1]
        ratio = big["peak_rss_kib"] / small["peak_rss_kib"]
        print(f"peak RSS {big['bytes'] / 1e6:.0f} MB file / {small['bytes'] / 1e6:.0f} MB file: "
              f"{ratio:.3f} (target: within 10%)")
        return 0 if ratio <= 1.10 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
