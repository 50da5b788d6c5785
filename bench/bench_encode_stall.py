"""How long a worker's encoding stalls the event loop's thread.

    python bench/bench_encode_stall.py [--rows N] [--units K] [--native PATH]

A worker thread encodes units of N rows (default 20,000, rows of the reference dataset:
bench/dataset.py) one after the other, K of each kind, while an asyncio task on the main thread
sleeps 1 ms in a loop and records by how much each sleep overshot. The encoder walks a whole
unit in C; if it held the GIL for all of it, the loop would wait that long (about 15 ms for
JSON) for every timer and socket. Printed per encoder: the worker's rate and the loop's
overshoots (median, 99th percentile, largest), next to the same loop with no worker.
`--native PATH` loads another build of `_rows` (a .so file) in place of the installed one, to
compare builds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.sample_data import reference_table
from pipeline.encoders import avro as avro_module
from pipeline.encoders import json as json_module
from pipeline.encoders.avro import AvroEncoder, arrow_to_avro_schema
from pipeline.encoders.json import JsonEncoder

TICK_S = 0.001


def load_native(path: str) -> None:
    """Use the `_rows` build at `path` in both encoders."""
    spec = importlib.util.spec_from_file_location("_rows", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    json_module._rows = module  # type: ignore[attr-defined]
    avro_module._rows = module  # type: ignore[attr-defined]


async def overshoots_while(work: Callable[[], None] | None) -> tuple[list[float], float]:
    """The loop's 1 ms sleeps overshoot (seconds) while `work` runs in a thread; its wall time."""
    done = threading.Event()
    started = time.perf_counter()
    if work is not None:
        def run() -> None:
            try:
                work()
            finally:
                done.set()
        threading.Thread(target=run, daemon=True).start()
    else:
        asyncio.get_running_loop().call_later(1.0, done.set)
    late: list[float] = []
    while not done.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        late.append(time.perf_counter() - before - TICK_S)
    return late, time.perf_counter() - started


def report(name: str, late: list[float], rows: int, wall: float) -> None:
    late_ms = sorted(x * 1000 for x in late)
    p99 = late_ms[min(len(late_ms) - 1, int(len(late_ms) * 0.99))]
    rate = f"{rows / wall:>12,.0f} rows/s" if rows else " " * 19
    print(f"{name:22s} {rate}   loop overshoot: median {statistics.median(late_ms):5.2f} ms, "
          f"p99 {p99:5.2f} ms, largest {late_ms[-1]:5.2f} ms  ({len(late_ms)} sleeps)",
          flush=True)


async def main_async(args: argparse.Namespace) -> None:
    table = reference_table(args.rows)
    unit = table.combine_chunks().to_batches(max_chunksize=args.rows)[0]
    json_encoder = JsonEncoder()
    avro_encoder = AvroEncoder(1, arrow_to_avro_schema(unit.schema, "Reference"))

    def encoding(encode: Callable[[pa.RecordBatch], list[bytes]]) -> Callable[[], None]:
        def work() -> None:
            for _ in range(args.units):
                encode(unit)
        return work

    late, wall = await overshoots_while(None)
    report("idle loop", late, 0, wall)
    for name, encoder in [("parquet -> json", json_encoder.encode),
                          ("parquet -> avro", avro_encoder.encode)]:
        encoder(unit)  # warm: first-batch set-up is not the steady state
        late, wall = await overshoots_while(encoding(encoder))
        report(name, late, args.rows * args.units, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--native", help="a build of pipeline/encoders/_rows.c to use instead")
    args = parser.parse_args()
    if args.native:
        load_native(args.native)
    print(f"units of {args.rows:,} rows, {args.units} per encoder, switch interval "
          f"{sys.getswitchinterval() * 1000:.0f} ms")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
