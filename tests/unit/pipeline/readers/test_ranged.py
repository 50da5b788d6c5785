"""The byte layer under the readers: the file object adapter, errors passing through pyarrow
and polars untouched, and WebHdfsFile's retry and read-ahead rules (against a stand-in client;
the real WebHDFS is exercised in tests/integration/pipeline/test_read_from_hdfs.py)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hdfs.util import HdfsError
from reader_samples import arrow_table, avro_bytes, avro_records, parquet_bytes, write

from hdfsread.base import FileChanged, FileIO, FileVanished, LocalFile, ReadFailed
from hdfsread.webhdfs import WebHdfsFile
from pipeline.readers import open_reader


def test_file_io_seeks_and_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "b", bytes(range(256)) * 4)
    with LocalFile(path) as f:
        fo = FileIO(f)
        assert fo.read(4) == b"\0\1\2\3" and fo.tell() == 4
        fo.seek(-2, io.SEEK_END)
        assert fo.read() == b"\xfe\xff" and fo.read(10) == b""
        fo.seek(10)
        buf = bytearray(3)
        assert fo.readinto(buf) == 3 and bytes(buf) == b"\n\x0b\x0c"


class _Vanishing(LocalFile):
    """A local file that disappears once reading gets past its middle (its tail excepted,
    where the Parquet footer is)."""

    def __init__(self, path: Path, tail: int) -> None:
        super().__init__(path)
        self.tail = tail

    def read_at(self, offset: int, length: int) -> bytes:
        if self.size // 2 < offset < self.size - self.tail:
            raise FileVanished(self.path, "deleted while it was being read")
        return super().read_at(offset, length)


@pytest.mark.parametrize("name", ["t.parquet", "t.avro"])
def test_transport_errors_reach_the_caller_unchanged(tmp_path: Path, name: str) -> None:
    data = parquet_bytes(arrow_table(8000), 1000) if name.endswith("parquet") else \
        avro_bytes(avro_records(2000), block_records=200)
    path = write(tmp_path, name, data)
    tail = 65_536 if name.endswith("parquet") else 0  # pyarrow reads the last 64 KiB first
    units: list[object] = []
    with pytest.raises(FileVanished), _Vanishing(path, tail) as f:
        units.extend(open_reader(f).units(max_rows=10))
    assert units  # it vanished part way through


class _Response:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data


class _StandInClient:
    """Answers like HdfsCLI's client; fails the first `failures` reads with `error`."""

    def __init__(self, data: bytes, failures: int = 0, error: Exception | None = None) -> None:
        self.data = data
        self.failures = failures
        self.error = error
        self.reads: list[tuple[int, int]] = []

    def status(self, path: str, strict: bool = True) -> dict[str, Any] | None:
        return {"type": "FILE", "length": len(self.data), "fileId": 1001}

    @contextlib.contextmanager
    def read(self, path: str, offset: int = 0, length: int | None = None) -> Iterator[_Response]:
        self.reads.append((offset, length or 0))
        if self.failures:
            self.failures -= 1
            assert self.error is not None
            raise self.error
        yield _Response(self.data[offset:offset + (length or len(self.data))])


def test_read_ahead_serves_small_reads_from_one_request() -> None:
    client = _StandInClient(bytes(range(256)) * 200)
    f = WebHdfsFile(client, "/f", read_ahead=4096)  # type: ignore[arg-type]
    assert f.read_at(0, 10) == client.data[:10]
    assert f.read_at(100, 50) == client.data[100:150]
    assert f.read_at(4000, 96) == client.data[4000:4096]
    assert client.reads == [(0, 4096)]
    assert f.read_at(20_000, 8000) == client.data[20_000:28_000]  # large: straight through
    assert client.reads[-1] == (20_000, 8000)
    assert f.read_at(51_190, 100) == client.data[51_190:]  # clipped at the end of the file


def test_transient_errors_are_retried() -> None:
    client = _StandInClient(b"x" * 1000, failures=2, error=requests.ConnectionError("reset"))
    f = WebHdfsFile(client, "/f", backoff=0.001)  # type: ignore[arg-type]
    assert f.read_at(0, 10) == b"x" * 10
    assert len(client.reads) == 3


def test_errors_that_are_not_transient() -> None:
    client = _StandInClient(b"x" * 1000, failures=9, error=requests.ConnectionError("refused"))
    f = WebHdfsFile(client, "/f", retries=2, backoff=0.001)  # type: ignore[arg-type]
    with pytest.raises(ReadFailed, match="3 attempts"):
        f.read_at(0, 10)
    gone = HdfsError("File /f not found.", exception="FileNotFoundException")
    deleted = _StandInClient(b"x" * 10, 1, gone)
    f = WebHdfsFile(deleted, "/f")  # type: ignore[arg-type]
    deleted.status = lambda path, strict=True: None  # type: ignore[method-assign]
    with pytest.raises(FileVanished):
        f.read_at(0, 1)
    with pytest.raises(FileChanged, match="expected 5"):
        WebHdfsFile(_StandInClient(b"x" * 10), "/f", expected_size=5)  # type: ignore[arg-type]
