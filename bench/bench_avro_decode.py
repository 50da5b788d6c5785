"""Avro decode throughput: the reader's path (fastavro header + block walk, polars-avro to Arrow)
against fastavro's per-record reader, on the reference dataset of `bench/dataset.py`, per codec.

Rows/s on one core: polars is held to one thread and CPU time of the process is reported next
to wall time (the machine may be shared). Codec variants are made from the null-codec file by
recompressing its blocks (fast), not by rewriting every record.

    python bench/bench_avro_decode.py [--rows 1000000] [--codecs null,snappy,deflate,zstandard]
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse
import io
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _compressor(codec: str) -> Callable[[bytes], bytes]:
    if codec == "deflate":
        return lambda d: (lambda c: c.compress(d) + c.flush())(zlib.compressobj(6, zlib.DEFLATED, -15))
    if codec == "snappy":
        import cramjam

        return lambda d: bytes(cramjam.snappy.compress_raw(d)) + zlib.crc32(d).to_bytes(4, "big")
    if codec == "zstandard":
        import cramjam

        return lambda d: bytes(cramjam.zstd.compress(d))
    raise ValueError(codec)


def recompress(null_file: Path, codec: str) -> Path:
    """The same blocks under another codec."""
    import fastavro

    from hdfsread.base import LocalFile
    from hdfswatch.framing import encode_zigzag
    from pipeline.encoders.avro import read_block_head
    from pipeline.readers.avro import AvroReader

    out = null_file.with_name(null_file.stem.replace("-null", "") + f"-{codec}.avro")
    if out.exists():
        return out
    compress = _compressor(codec)
    with LocalFile(null_file) as f:
        reader = AvroReader(f)
        meta = dict(reader.metadata, **{"avro.codec": codec.encode()})
        head = io.BytesIO()
        fastavro.schemaless_writer(head, fastavro.read.HEADER_SCHEMA,  # type: ignore[arg-type]
                                   {"magic": b"Obj\x01", "meta": meta, "sync": reader.sync_marker})
        tmp = out.with_suffix(".partial")
        with tmp.open("wb") as w:
            w.write(head.getvalue())
            for pos, count, length in reader.blocks():
                raw = f.read_at(pos.block_offset, length)
                _, p, size = read_block_head(raw)
                data = compress(raw[p:p + size])
                w.write(encode_zigzag(count) + encode_zigzag(len(data)) + data
                        + reader.sync_marker)
        tmp.rename(out)
    return out


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    rows = fn()
    return rows, time.perf_counter() - w0, time.process_time() - c0


def reader_units(path: Path, max_rows: int) -> int:
    from hdfsread.base import LocalFile
    from pipeline.readers import open_reader

    with LocalFile(path) as f:
        return sum(u.batch.num_rows for u in open_reader(f, "avro").units(max_rows=max_rows))


def fastavro_records(path: Path) -> int:
    import fastavro

    with path.open("rb") as f:
        return sum(1 for _ in fastavro.reader(f))


def jetliner_read(path: Path) -> int:
    import jetliner

    return jetliner.read_avro(str(path)).height


def main() -> int:
    from dataset import write_avro

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--codecs", default="null,snappy,deflate,zstandard")
    parser.add_argument("--max-rows", type=int, default=65_536, help="rows per unit")
    parser.add_argument("--fastavro", action="store_true", help="also time fastavro (slow)")
    args = parser.parse_args()
    base = write_avro(n=args.rows, codec="null")
    print(f"{args.rows:,} rows x 12 columns; POLARS_MAX_THREADS={os.environ['POLARS_MAX_THREADS']}")
    print(f"{'codec':10} {'decoder':34} {'MB':>6} {'wall s':>7} {'cpu s':>6} {'rows/s (cpu)':>13}")
    for codec in args.codecs.split(","):
        path = base if codec == "null" else recompress(base, codec)
        runs: list[tuple[str, Callable[[], int]]] = [
            ("reader units (polars-avro)", lambda p=path: reader_units(p, args.max_rows))]
        try:
            import jetliner  # noqa: F401

            runs.append(("jetliner.read_avro (whole file)", lambda p=path: jetliner_read(p)))
        except ImportError:
            pass
        if args.fastavro:
            runs.append(("fastavro.reader (dict per record)", lambda p=path: fastavro_records(p)))
        for name, fn in runs:
            best = min((timed(fn) for _ in range(2 if "fastavro" in name else 3)),
                       key=lambda r: r[2])
            rows, wall, cpu = best
            assert rows == args.rows, (name, rows)
            print(f"{codec:10} {name:34} {path.stat().st_size / 1e6:6.0f} {wall:7.2f} "
                  f"{cpu:6.2f} {rows / cpu:13,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
