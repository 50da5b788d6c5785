"""Decode + encode throughput on one core, on the reference dataset (bench/dataset.py).

    python bench/bench_encode.py [--rows N] [--repeat K]

Paths measured (rows/s, best of K passes over the whole file):
- parquet -> json: pyarrow reads each row group (one thread), JsonEncoder encodes it.
- avro -> json: the Avro reader's decoder (polars-avro) per unit, JsonEncoder encodes it.
- parquet -> avro: pyarrow reads each row group, AvroEncoder writes Confluent-framed values.
- avro -> avro: the file's own records re-framed (AvroBlockEncoder), no decoding.
Each figure is CPU time of this process (`time.process_time`), so that other work on the
machine does not count; decoders and polars are held to one thread. The naive paths of
DESIGN.md (to_pylist + orjson, fastavro) are printed for comparison on a smaller slice.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dataset

from pipeline.encoders.avro import (
    SYNC_SIZE,
    AvroBlockEncoder,
    AvroEncoder,
    arrow_to_avro_schema,
    iter_blocks,
)
from pipeline.encoders.json import JsonEncoder

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

AVRO_UNIT_ROWS = 65_536


def measure(name: str, rows: int, run: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        produced = run()
        best = min(best, time.process_time() - start)
        if produced != rows:
            raise SystemExit(f"{name}: produced {produced} values for {rows} rows")
    rate = rows / best
    print(f"{name:34s} {rate:>12,.0f} rows/s   ({best:.2f} s CPU for {rows:,} rows)", flush=True)
    return rate


def parquet_to(encode: Callable[[pa.RecordBatch], list[bytes]], path: Path) -> Callable[[], int]:
    def run() -> int:
        f = pq.ParquetFile(path)
        n = 0
        for rg in range(f.num_row_groups):
            for batch in f.read_row_group(rg, use_threads=False).to_batches():
                n += len(encode(batch))
        return n
    return run


def avro_units(path: Path) -> tuple[bytes, list[bytes]]:
    """The file's header and its blocks grouped into units of about AVRO_UNIT_ROWS rows, as the
    Avro reader cuts them (read once, outside the timing: reading bytes is not decoding)."""
    data = path.read_bytes()
    buf = io.BytesIO(data)
    fastavro.schemaless_reader(buf, fastavro.read.HEADER_SCHEMA, None)  # type: ignore[attr-defined]
    header_end = buf.tell()
    units: list[bytes] = []
    unit_start, rows = header_end, 0
    for _, count, _, data_end in iter_blocks(data, header_end):
        rows += count
        if rows >= AVRO_UNIT_ROWS:
            units.append(data[unit_start:data_end + SYNC_SIZE])
            unit_start, rows = data_end + SYNC_SIZE, 0
    if unit_start < len(data):
        units.append(data[unit_start:])
    return data[:header_end], units


def avro_decode(header: bytes, unit: bytes) -> pa.RecordBatch:
    """Decode a unit as the Avro reader does (pipeline/readers/avro.py: polars-avro)."""
    import polars_avro

    table = polars_avro.read_avro(io.BytesIO(header + unit), batch_size=1 << 20).to_arrow()
    return table.combine_chunks().to_batches()[0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=dataset.ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows, repeat = args.rows, args.repeat

    parquet = dataset.write_parquet(dataset.DEFAULT_DIR, rows)
    avro = dataset.write_avro(dataset.DEFAULT_DIR, rows)
    print(f"reference dataset: {rows:,} rows x 12 columns; {parquet.name} "
          f"{parquet.stat().st_size / 2**20:.0f} MiB, {avro.name} {avro.stat().st_size / 2**20:.0f} MiB")

    schema = pq.read_schema(parquet)
    avro_schema = arrow_to_avro_schema(schema, "Reference")
    json_encoder = JsonEncoder()
    avro_encoder = AvroEncoder(1, avro_schema)
    header, units = avro_units(avro)
    writer_schema = fastavro.reader(io.BytesIO(header)).writer_schema

    def decode_parquet() -> int:
        f = pq.ParquetFile(parquet)
        return sum(f.read_row_group(rg, use_threads=False).num_rows
                   for rg in range(f.num_row_groups))

    def decode_avro() -> int:
        return sum(avro_decode(header, unit).num_rows for unit in units)

    def avro_to_json() -> int:
        return sum(len(json_encoder.encode(avro_decode(header, unit))) for unit in units)

    block_encoder = AvroBlockEncoder(1, writer_schema, "null")

    def avro_to_avro() -> int:
        return sum(len(block_encoder.encode(unit)) for unit in units)

    results = {
        "parquet decode only": measure("parquet decode only", rows, decode_parquet, repeat),
        "parquet -> json": measure("parquet -> json", rows, parquet_to(json_encoder.encode, parquet), repeat),
        "parquet -> avro": measure("parquet -> avro (Confluent)", rows,
                                   parquet_to(avro_encoder.encode, parquet), repeat),
        "avro decode only": measure("avro decode only (polars-avro)", rows, decode_avro, repeat),
        "avro -> json": measure("avro -> json", rows, avro_to_json, repeat),
        "avro -> avro": measure("avro -> avro (re-framed blocks)", rows, avro_to_avro, repeat),
    }

    # The naive paths, on a slice (they are slow).
    import orjson

    sample = pq.read_table(parquet).slice(0, min(rows, 100_000)).combine_chunks().to_batches()[0]

    def naive_json() -> int:
        return len([orjson.dumps(r, default=str) for r in sample.to_pylist()])

    measure("naive: to_pylist + orjson", sample.num_rows, naive_json, 1)
    parsed = fastavro.parse_schema(avro_schema)

    def naive_avro() -> int:
        out = []
        for r in sample.to_pylist():
            b = io.BytesIO()
            fastavro.schemaless_writer(b, parsed, r)
            out.append(b.getvalue())
        return len(out)

    measure("naive: to_pylist + fastavro", sample.num_rows, naive_avro, 1)

    targets = {"parquet -> json": 1_000_000, "avro -> json": 250_000,
               "parquet -> avro": 300_000, "avro -> avro": 300_000}
    print("targets:", ", ".join(
        f"{k} {'met' if results[k] >= v else 'MISSED'} ({results[k]:,.0f} vs {v:,})"
        for k, v in targets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
