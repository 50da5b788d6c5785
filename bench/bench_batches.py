"""Building Kafka record batches: the compiled builder against aiokafka's append loop.

    python bench/bench_batches.py [--rows N] [--repeat K] [--partitions P]

One unit of N rows (default 20,000) of 200-byte values, turned into record batches of at most
512 KiB, uncompressed:
- unkeyed: every row on one partition;
- keyed: 16-byte string keys, placed by murmur2 over P partitions;
- keyed + headers: as the daemon sends Parquet rows (path and position headers).
"ours" is `build_batches` (placing, splitting, writing the records); "aiokafka" is what the
committer did before: aiokafka's pure-Python murmur2 per keyed row, then `BatchBuilder.append`
per row, a new builder when one is full. Rates are rows/s of CPU time (`time.process_time`),
best of K. Then the cost of writing one 512 KiB batch's header and CRC (`finish`, on the event
loop when aiokafka's sender takes the batch), against aiokafka's `build()` of such a batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from pipeline.kafka import _batches
from pipeline.kafka.batches import build_batches

BATCH_BYTES = 512 * 1024
TS = 1_700_000_000_000


def dataset(n: int) -> tuple[list[bytes], list[bytes | None], list[Any]]:
    values = [(f"{i:08d}" * 25).encode() for i in range(n)]  # 200 bytes each
    keys: list[bytes | None] = [f"user-{i % 50_000:011d}".encode() for i in range(n)]  # 16 bytes
    path = ("hdfs2kafka.path", b"/data/events/2024/part-00001.parquet")
    headers = [(path, ("hdfs2kafka.position", f"rg:0/{i}".encode())) for i in range(n)]
    return values, keys, headers


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    best, produced = float("inf"), 0
    for _ in range(repeat):
        start = time.process_time()
        produced = run()
        best = min(best, time.process_time() - start)
    return best, produced


def ours(values: list[bytes], keys: list[bytes | None] | None, headers: list[Any] | None,
         partitions: int) -> Callable[[], int]:
    def run() -> int:
        batches = build_batches(values, keys, headers, partitions=partitions, null_index=0,
                                max_batch_bytes=BATCH_BYTES, compression=None,
                                transactional=True, timestamp_ms=TS)
        return sum(b.record_count() for _, b in batches)
    return run


def aiokafka_loop(values: list[bytes], keys: list[bytes | None] | None,
                  headers: list[Any] | None, partitions: int) -> Callable[[], int]:
    """The committer's former path: group by murmur2, then append row by row."""
    def run() -> int:
        groups: dict[int, list[int]] = {}
        if keys is None:
            groups[0] = list(range(len(values)))
        else:
            for i, k in enumerate(keys):
                p = (murmur2(k) & 0x7FFFFFFF) % partitions if k is not None else 0
                groups.setdefault(p, []).append(i)
        records = 0
        for rows in groups.values():
            batch = BatchBuilder(BATCH_BYTES, 0, is_transactional=True)
            for i in rows:
                k = keys[i] if keys is not None else None
                h = list(headers[i]) if headers is not None else []
                if batch.append(timestamp=TS, key=k, value=values[i], headers=h) is None:
                    records += batch.record_count()
                    batch = BatchBuilder(BATCH_BYTES, 0, is_transactional=True)
                    batch.append(timestamp=TS, key=k, value=values[i], headers=h)
            records += batch.record_count()
        return records
    return run


def finish_cost(repeat: int) -> None:
    values = [bytes(200)] * (BATCH_BYTES // 210)
    [(_, count, buf)] = _batches.build(values, None, None, 1, 0, BATCH_BYTES, TS)
    calls = 2000

    def finish_all() -> int:
        for _ in range(calls):
            _batches.finish(buf, count, attributes=0x10, producer_id=1, producer_epoch=0,
                            base_sequence=0, first_timestamp=TS, max_timestamp=TS)
        return calls

    def crc_by_tables() -> int:
        for _ in range(calls // 10):
            _batches._crc32c_sw(buf)
        return calls // 10

    best, _ = best_of(repeat, finish_all)
    tables, _ = best_of(repeat, crc_by_tables)
    path = "SSE 4.2" if _batches.CRC32C_HARDWARE else "tables"
    print(f"finish() of one {len(buf) / 1024:.0f} KiB batch ({count:,} records): "
          f"{best / calls * 1e6:8.1f} us  (CRC-32C by {path}; by the tables alone: "
          f"{tables / (calls // 10) * 1e6:.1f} us)")

    def aiokafka_build() -> int:
        builder = BatchBuilder(BATCH_BYTES, 0, is_transactional=True)
        for v in values:
            builder.append(timestamp=TS, key=None, value=v, headers=[])
        builder._set_producer_state(1, 0, 0)
        start = time.process_time()
        builder._build()
        return int((time.process_time() - start) * 1e9)
    ns = min(aiokafka_build() for _ in range(max(repeat, 20)))
    print(f"aiokafka's _build() of the same batch:              {ns / 1e3:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args()
    values, keys, headers = dataset(args.rows)
    print(f"{args.rows:,} rows of 200-byte values, batches of at most {BATCH_BYTES // 1024} KiB, "
          f"{args.partitions} partitions for keyed rows; rows/s of CPU time, best of {args.repeat}")
    print(f"{'':24s} {'ours':>14s} {'aiokafka':>14s} {'speed-up':>9s}")
    for name, k, h in [("unkeyed", None, None), ("keyed", keys, None),
                       ("keyed + headers", keys, headers)]:
        t_ours, n_ours = best_of(args.repeat, ours(values, k, h, args.partitions))
        t_base, n_base = best_of(max(2, args.repeat // 5), aiokafka_loop(values, k, h,
                                                                          args.partitions))
        if n_ours != args.rows or n_base != args.rows:
            raise SystemExit(f"{name}: {n_ours} and {n_base} records for {args.rows} rows")
        print(f"{name:24s} {args.rows / t_ours:>14,.0f} {args.rows / t_base:>14,.0f} "
              f"{t_base / t_ours:>8.1f}x", flush=True)
    finish_cost(args.repeat)


if __name__ == "__main__":
    main()
