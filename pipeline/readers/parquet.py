"""Parquet: a file streamed row group by row group, in record batches.

Only one row group is ever in memory (its column chunks, fetched in a few coalesced ranges by
pyarrow's `pre_buffer`, and the batch being decoded). A position is `(row_group, row_offset)`;
starting at one reads the footer and then that row group only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from hdfsread.base import FileIO, RandomAccessFile, RangedReadError
from pipeline.positions import ParquetPosition, Position
from pipeline.readers.base import (
    DEFAULT_MAX_ROWS,
    PARQUET_MAGIC,
    BadPosition,
    CorruptFile,
    Format,
    TruncatedFile,
    Unit,
    UnsupportedType,
    check_magic,
)

MAGIC = PARQUET_MAGIC


class ParquetReader:
    """Reads a Parquet file as units of at most `max_rows` rows, never across row groups."""

    format: Format = "parquet"

    def __init__(self, file: RandomAccessFile, *, use_threads: bool = True) -> None:
        self._file = file
        self._use_threads = use_threads
        path = file.path
        size = file.size
        check_magic(file, "parquet")
        if size < 12:
            raise TruncatedFile(path, f"byte {size}", f"only {size} bytes, no room for a footer")
        tail = file.read_at(size - 8, 8)
        if tail[4:] != MAGIC:
            raise TruncatedFile(path, f"byte {size}",
                                f"ends with {tail[4:]!r}, not {MAGIC!r}: the footer is missing")
        footer_len = int.from_bytes(tail[:4], "little")
        if footer_len + 12 > size:
            raise CorruptFile(path, "footer", f"footer length {footer_len} is larger than the "
                                              f"file ({size} bytes)")
        try:
            self._pf = pq.ParquetFile(pa.PythonFile(FileIO(file), mode="r"), pre_buffer=True)
            self._schema = self._pf.schema_arrow
        except RangedReadError:
            raise
        except pa.ArrowNotImplementedError as exc:
            raise UnsupportedType(path, "footer", str(exc)) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CorruptFile(path, "footer", str(exc)) from None
        md = self._pf.metadata
        self._rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        self._compressed = [
            sum(md.row_group(g).column(c).total_compressed_size for c in range(md.num_columns))
            for g in range(md.num_row_groups)
        ]

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def total_rows(self) -> int:
        return sum(self._rows)

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def num_row_groups(self) -> int:
        return len(self._rows)

    def positions(self, max_rows: int = DEFAULT_MAX_ROWS) -> list[ParquetPosition]:
        """Every place a unit starts when reading from the beginning (without reading data)."""
        return [ParquetPosition(g, r) for g, n in enumerate(self._rows)
                for r in range(0, n, max_rows)]

    def units(self, start: Position | None = None,
              max_rows: int = DEFAULT_MAX_ROWS) -> Iterator[Unit]:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        group, offset = self._start(start)
        last = self._last_nonempty()
        for g in range(group, len(self._rows)):
            rows = self._rows[g]
            first = offset if g == group else 0
            if first >= rows:
                continue
            yield from self._group_units(g, first, max_rows, last)

    def _group_units(self, g: int, first: int, max_rows: int, last: int) -> Iterator[Unit]:
        rows = self._rows[g]
        at = 0  # rows of the group decoded so far
        try:
            batches = self._pf.iter_batches(batch_size=max_rows, row_groups=[g],
                                            use_threads=self._use_threads)
            for batch in batches:
                lo, hi = at, at + batch.num_rows
                at = hi
                if hi <= first:
                    continue
                if lo < first:
                    batch = batch.slice(first - lo)
                    lo = first
                if batch.num_rows == 0:
                    continue
                end: ParquetPosition | None = ParquetPosition(g, hi)
                if hi >= rows:
                    end = None if g >= last else ParquetPosition(g + 1, 0)
                yield Unit(
                    start=ParquetPosition(g, lo),
                    end=end,
                    batch=batch,
                    rows=batch.num_rows,
                    nbytes=self._compressed[g] * batch.num_rows // max(rows, 1),
                )
        except RangedReadError:
            raise
        except pa.ArrowNotImplementedError as exc:
            raise UnsupportedType(self.path, ParquetPosition(g, at), str(exc)) from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CorruptFile(self.path, ParquetPosition(g, at), str(exc)) from None
        if at != rows:
            raise CorruptFile(self.path, ParquetPosition(g, at),
                              f"row group {g} decoded {at} rows, its metadata says {rows}")

    def _last_nonempty(self) -> int:
        nonempty = [g for g, n in enumerate(self._rows) if n > 0]
        return nonempty[-1] if nonempty else -1

    def _start(self, start: Position | None) -> tuple[int, int]:
        if start is None:
            return 0, 0
        if not isinstance(start, ParquetPosition):
            raise BadPosition(self.path, start, "not a Parquet position (expected rg:GROUP/ROW)")
        groups = len(self._rows)
        if start.row_group > groups or (start.row_group == groups and start.row_offset > 0):
            raise BadPosition(self.path, start, f"the file has {groups} row groups")
        if start.row_group < groups and start.row_offset > self._rows[start.row_group]:
            raise BadPosition(self.path, start, f"row group {start.row_group} has "
                                                f"{self._rows[start.row_group]} rows")
        return start.row_group, start.row_offset
