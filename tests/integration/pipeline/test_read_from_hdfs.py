"""Reading real files from the dev stack's HDFS: the same rows as reading them locally, in few
requests, and clear errors when a file vanishes or changes under the reader."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdfswatch.ranged import (
    FileChanged,
    FileMoved,
    FileVanished,
    LocalFile,
    RandomAccessFile,
    WebHdfsFile,
)
from pipeline.cli import main
from pipeline.positions import AvroPosition, ParquetPosition
from pipeline.readers import open_reader

ROWS = 30_000


def _table() -> pa.Table:
    n = ROWS
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "name": pa.array([None if i % 11 == 0 else f"name-{i}" for i in range(n)]),
        "price": pa.array([i * 0.25 for i in range(n)]),
        "amount": pa.array([decimal.Decimal(i).scaleb(-2) for i in range(n)], pa.decimal128(12, 2)),
        "ts": pa.array([dt.datetime(2024, 1, 1) + dt.timedelta(seconds=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "tags": pa.array([[f"t{j}" for j in range(i % 3)] for i in range(n)]),
    })


def _avro() -> bytes:
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                    "precision": 12, "scale": 2}}]})
    buf = io.BytesIO()
    w = fastavro.write.Writer(buf, schema, codec="snappy")
    for i in range(ROWS):
        w.write({"id": i, "name": None if i % 11 == 0 else f"name-{i}",
                 "day": dt.date(2020, 1, 1) + dt.timedelta(days=i % 1000),
                 "amount": decimal.Decimal(i).scaleb(-2)})
        if i % 2500 == 2499:
            w.flush()
    w.flush()
    return buf.getvalue()


@pytest.fixture
def hdfs_dir(webhdfs: Any, unique: str) -> Iterator[str]:
    path = f"/test/readers/{unique}"
    webhdfs.makedirs(path)
    yield path
    webhdfs.delete(path, recursive=True)


def _files(webhdfs: Any, hdfs_dir: str, tmp_path: Path) -> dict[str, tuple[str, Path]]:
    out = {}
    pbuf = io.BytesIO()
    pq.write_table(_table(), pbuf, row_group_size=7_000)
    for name, data in (("t.parquet", pbuf.getvalue()), ("t.avro", _avro())):
        local = tmp_path / name
        local.write_bytes(data)
        webhdfs.write(f"{hdfs_dir}/{name}", data, overwrite=True)
        out[name] = (f"{hdfs_dir}/{name}", local)
    return out


def _rows(file: RandomAccessFile, start: Any = None) -> list[tuple[Any, list[dict]]]:
    reader = open_reader(file)
    return [(u.start, u.batch.to_pylist()) for u in reader.units(start, max_rows=3000)]


def test_hdfs_gives_the_same_rows_as_the_local_copy(stack: Any, webhdfs: Any, hdfs_dir: str,
                                                    tmp_path: Path) -> None:
    for remote, local in _files(webhdfs, hdfs_dir, tmp_path).values():
        with LocalFile(local) as lf:
            expected = _rows(lf)
        with WebHdfsFile(stack.webhdfs_url, remote, stack.hdfs_user) as f:
            got = _rows(f)
            # Read-ahead and pyarrow's coalescing keep requests far below one per unit/column.
            assert f.requests <= 12, f.requests
        assert got == expected
        assert sum(len(rows) for _, rows in got) == ROWS
        # Resuming from a middle position on HDFS gives the remaining rows.
        middle = got[len(got) // 2][0]
        assert isinstance(middle, ParquetPosition | AvroPosition)
        with WebHdfsFile(stack.webhdfs_url, remote, stack.hdfs_user) as f:
            assert _rows(f, middle) == expected[len(got) // 2:]


def test_expected_identity_is_checked(stack: Any, webhdfs: Any, hdfs_dir: str) -> None:
    path = f"{hdfs_dir}/x.parquet"
    webhdfs.write(path, b"PAR1" + b"\0" * 100 + b"PAR1")
    status = webhdfs.status(path)
    with WebHdfsFile(webhdfs, path, expected_size=108, expected_file_id=status["fileId"]) as f:
        assert f.size == 108
    with pytest.raises(FileChanged, match="length"):
        WebHdfsFile(webhdfs, path, expected_size=5000)
    with pytest.raises(FileChanged, match="fileId"):
        WebHdfsFile(webhdfs, path, expected_file_id=status["fileId"] + 10**12)  # no such inode
    with pytest.raises(FileVanished):
        WebHdfsFile(webhdfs, f"{hdfs_dir}/missing.parquet")


def test_file_deleted_or_replaced_while_reading(stack: Any, webhdfs: Any, hdfs_dir: str) -> None:
    path = f"{hdfs_dir}/big.bin"
    webhdfs.write(path, b"x" * 3_000_000)
    f = WebHdfsFile(webhdfs, path, read_ahead=1024)
    assert f.read_at(0, 10) == b"x" * 10
    webhdfs.write(path, b"y" * 1000, overwrite=True)  # replaced: shorter, new fileId
    with pytest.raises(FileChanged):
        f.read_at(2_000_000, 10)
    f2 = WebHdfsFile(webhdfs, path)
    webhdfs.write(path, b"z" * 1000, overwrite=True)  # same length, new inode
    with pytest.raises(FileChanged, match="fileId"):
        f2.verify()
    webhdfs.delete(path)
    with pytest.raises(FileVanished):
        f2.read_at(500, 10)


def test_cat_reads_from_hdfs_with_the_devstack_environment(
        stack: Any, webhdfs: Any, hdfs_dir: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(webhdfs, hdfs_dir, tmp_path)
    remote, _ = files["t.parquet"]
    assert main(["cat", remote, "--from", "rg:2/6998", "--limit", "3", "--key", "id"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [ln["position"] for ln in lines] == ["rg:2/6998", "rg:2/6999", "rg:3/0"]
    assert [ln["value"]["id"] for ln in lines] == [20998, 20999, 21000]
    assert json.loads(err.splitlines()[-1])["next"] == "rg:3/1"
    config = tmp_path / "h.toml"
    config.write_text(f'[hdfs]\nwebhdfs = "{stack.webhdfs_url}"\nuser = "{stack.hdfs_user}"\n')
    remote, _ = files["t.avro"]
    assert main(["cat", remote, "--config", str(config), "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [ln["value"]["id"] for ln in lines] == [0, 1]


def test_a_file_renamed_while_read_is_told_from_one_deleted(stack: Any, webhdfs: Any, hdfs_dir: str) -> None:
    """A rename keeps the inode: the reader says where to look (FileMoved, with the inode id),
    and the file reads on from its new path; a deleted file is just gone."""
    path, moved = f"{hdfs_dir}/a/f.bin", f"{hdfs_dir}/b/f.bin"
    webhdfs.write(path, b"x" * 2_000_000 + b"y" * 1_000_000)
    file_id = webhdfs.status(path)["fileId"]
    f = WebHdfsFile(webhdfs, path, expected_size=3_000_000, expected_file_id=file_id, read_ahead=1024)
    assert f.read_at(0, 10) == b"x" * 10
    webhdfs.makedirs(f"{hdfs_dir}/b")
    webhdfs.rename(path, moved)
    with pytest.raises(FileMoved) as info:
        f.read_at(2_500_000, 10)
    assert info.value.file_id == file_id
    # Opened again by its old path (a restart): moved, also when the name is taken by another file.
    with pytest.raises(FileMoved):
        WebHdfsFile(webhdfs, path, expected_size=3_000_000, expected_file_id=file_id)
    webhdfs.write(path, b"z" * 3_000_000)
    with pytest.raises(FileMoved):
        WebHdfsFile(webhdfs, path, expected_size=3_000_000, expected_file_id=file_id)
    with WebHdfsFile(webhdfs, moved, expected_size=3_000_000, expected_file_id=file_id) as g:
        assert g.read_at(2_500_000, 3) == b"yyy"
    webhdfs.delete(moved)
    with pytest.raises(FileVanished) as gone:
        WebHdfsFile(webhdfs, moved, expected_size=3_000_000, expected_file_id=file_id)
    assert not isinstance(gone.value, FileMoved)
