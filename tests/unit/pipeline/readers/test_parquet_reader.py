"""Parquet files read back whole and from every position: every row, once, in order."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pytest
from reader_samples import arrow_table, parquet_bytes, write

from hdfsread.base import LocalFile
from pipeline.positions import AvroPosition, ParquetPosition
from pipeline.readers import BadPosition, open_reader
from pipeline.readers.parquet import ParquetReader

TABLE = arrow_table(240)


def _read(path: Path, start: ParquetPosition | None = None, max_rows: int = 20) -> list[dict]:
    with LocalFile(path) as f:
        return [row for u in open_reader(f, "parquet").units(start, max_rows)
                for row in u.batch.to_pylist()]


@pytest.mark.parametrize("compression", ["none", "snappy", "gzip", "zstd", "lz4", "brotli"])
def test_every_row_comes_back_in_order(tmp_path: Path, compression: str) -> None:
    path = write(tmp_path, "t.parquet", parquet_bytes(TABLE, 50, compression))
    with LocalFile(path) as f:
        reader = open_reader(f)  # auto
        units = list(reader.units(max_rows=20))
        assert reader.format == "parquet" and reader.total_rows == 240
        got = pa.Table.from_batches([u.batch for u in units], schema=reader.schema)
    assert got.equals(TABLE)
    assert all(u.rows == u.batch.num_rows <= 20 for u in units)


def test_units_chain_and_stay_inside_one_row_group(tmp_path: Path) -> None:
    path = write(tmp_path, "t.parquet", parquet_bytes(TABLE, 50))
    with LocalFile(path) as f:
        units = list(open_reader(f).units(max_rows=20))
    for a, b in itertools.pairwise(units):
        assert a.end == b.start
    assert units[0].start == ParquetPosition(0, 0) and units[-1].end is None
    # 240 rows in groups of 50 (the last has 40), sliced by 20 -> 3 units per group.
    assert [u.start for u in units[:4]] == [ParquetPosition(0, 0), ParquetPosition(0, 20),
                                            ParquetPosition(0, 40), ParquetPosition(1, 0)]
    assert sum(u.nbytes for u in units) > 0


def test_resume_from_every_position_gives_exactly_the_remaining_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.parquet", parquet_bytes(TABLE, 50))
    expected = TABLE.to_pylist()
    with LocalFile(path) as f:
        reader = open_reader(f)
        starts = [u.start for u in reader.units(max_rows=20)]
    for pos in starts:
        assert isinstance(pos, ParquetPosition)
        before = pos.row_group * 50 + pos.row_offset
        assert _read(path, pos) == expected[before:]
    # Positions that are not unit boundaries work too (rows of the same group are skipped).
    for pos in [ParquetPosition(1, 7), ParquetPosition(4, 39), ParquetPosition(2, 50)]:
        assert _read(path, pos) == expected[pos.row_group * 50 + pos.row_offset:]
    assert _read(path, ParquetPosition(5, 0)) == []


def test_starting_at_a_row_group_reads_nothing_before_it(tmp_path: Path) -> None:
    # A later row group is read without the earlier ones: corrupt group 0's data and
    # start at group 1.
    data = bytearray(parquet_bytes(TABLE, 50, "none"))
    path = write(tmp_path, "t.parquet", bytes(data))
    with LocalFile(path) as f:
        reader = ParquetReader(f)
        start = reader._pf.metadata.row_group(0).column(0).data_page_offset
    data[start:start + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))
    assert _read(path, ParquetPosition(1, 0)) == TABLE.to_pylist()[50:]


def test_bad_positions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "t.parquet", parquet_bytes(TABLE, 50))
    for pos in [ParquetPosition(9, 0), ParquetPosition(0, 51), AvroPosition(4)]:
        with LocalFile(path) as f, pytest.raises(BadPosition) as exc:
            list(open_reader(f).units(pos))
        assert str(path) in str(exc.value) and str(pos) in str(exc.value)


def test_empty_table(tmp_path: Path) -> None:
    path = write(tmp_path, "t.parquet", parquet_bytes(TABLE.slice(0, 0)))
    with LocalFile(path) as f:
        reader = open_reader(f)
        assert reader.total_rows == 0 and list(reader.units()) == []
