"""The reference dataset of the performance targets, as Parquet and as Avro.

1,000,000 rows x 12 mixed columns (`demo.sample_data.reference_table`: ints, doubles, a
20-character string, a timestamp, a date, a decimal, a bool, nullable columns, a struct and a
list, the same columns as `avro_reference.SCHEMA`), generated in about a second; the Avro copy
takes longer (fastavro writes it row by row) and is cached.

    python bench/dataset.py [DIR] [--rows N]     # writes DIR/reference-N.parquet and .avro

Other benchmarks use `reference_table(n)`, `write_parquet(dir, n)` and `write_avro(dir, n)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.sample_data import REFERENCE_ROWS, reference_table

ROWS = REFERENCE_ROWS
ROW_GROUP_ROWS = 128 * 1024
AVRO_BLOCK_RECORDS = 16_000
DEFAULT_DIR = Path(__file__).resolve().parent / "out"


def write_parquet(directory: Path = DEFAULT_DIR, n: int = ROWS) -> Path:
    path = directory / f"reference-{n}.parquet"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        pq.write_table(reference_table(n), tmp, row_group_size=ROW_GROUP_ROWS)
        tmp.rename(path)
    return path


def write_avro(directory: Path = DEFAULT_DIR, n: int = ROWS, codec: str = "null") -> Path:
    """The same rows as an Avro container file, with the schema derived from the Arrow one."""
    import fastavro

    from pipeline.encoders.avro import arrow_to_avro_schema

    path = directory / f"reference-{n}-{codec}.avro"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        table = reference_table(n)
        schema = arrow_to_avro_schema(table.schema, "Reference")
        tmp = path.with_suffix(".partial")
        with tmp.open("wb") as f:
            fastavro.writer(f, fastavro.parse_schema(schema), _rows(table), codec=codec,
                            sync_interval=AVRO_BLOCK_RECORDS * 200)
        tmp.rename(path)
    return path


def _rows(table: pa.Table):  # type: ignore[no-untyped-def]
    for batch in table.to_batches(max_chunksize=65536):
        yield from batch.to_pylist()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv)
    print(write_parquet(args.dir, args.rows))
    print(write_avro(args.dir, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
