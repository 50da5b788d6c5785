"""Kafka record headers saying where a row came from: `hdfs2kafka.path` and `hdfs2kafka.position`.

The position is the row's own seekable place for Parquet (`rg:G/R`: row group G, row R in it)
and the place of the row's block for Avro (`block:OFFSET`; the rows of a block follow in order).
Headers are (str, bytes) tuples as aiokafka takes them. Rows that share a position share one
headers object, so an Avro block costs one object, not one per row.
"""

from __future__ import annotations

from pipeline.positions import AvroPosition, ParquetPosition

PATH = "hdfs2kafka.path"
POSITION = "hdfs2kafka.position"

Headers = tuple[tuple[str, bytes], ...]


class HeaderBuilder:
    """Headers for the rows of one file."""

    def __init__(self, path: str) -> None:
        self._path = (PATH, path.encode())

    def parquet(self, start: ParquetPosition, count: int) -> list[Headers]:
        """Headers of `count` rows starting at `start`, one position per row."""
        prefix = f"rg:{start.row_group}/"
        path = self._path
        return [
            (path, (POSITION, (prefix + str(row)).encode()))
            for row in range(start.row_offset, start.row_offset + count)
        ]

    def avro(self, block: AvroPosition, count: int) -> list[Headers]:
        """Headers of the `count` rows of the block at `block`."""
        headers: Headers = (self._path, (POSITION, str(block).encode()))
        return [headers] * count
