"""Reading real files from the dev stack's HDFS with each backend of the read stack (native:
hdfs-native over RPC and data transfer; webhdfs): the same rows as reading them locally, in few
requests, the same typed error for a bad file, and the same clear errors when a file vanishes,
moves or changes under the reader."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdfsread.base import (
    FileChanged,
    FileMoved,
    FileVanished,
    LocalFile,
    RandomAccessFile,
    RemoteFile,
)
from hdfsread.stack import READERS, ReadSettings, ReadStack, open_read_stack
from pipeline.cli import main
from pipeline.positions import AvroPosition, ParquetPosition
from pipeline.readers import ReadError, open_reader

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


@pytest.fixture(params=READERS)
def stacks(request: pytest.FixtureRequest, stack: Any) -> Iterator[Callable[..., ReadStack]]:
    """Read stacks of one backend (the test's parameter) on the dev stack, closed afterwards."""
    made: list[ReadStack] = []

    def make(**settings: Any) -> ReadStack:
        rs = open_read_stack(ReadSettings(reader=request.param, user=stack.hdfs_user,
                                          namenodes=(stack.namenode,),
                                          webhdfs_url=stack.webhdfs_url, **settings))
        made.append(rs)
        return rs

    yield make
    for rs in made:
        rs.close()


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


def test_hdfs_gives_the_same_rows_as_the_local_copy(stacks: Callable[..., ReadStack],
                                                    webhdfs: Any, hdfs_dir: str,
                                                    tmp_path: Path) -> None:
    rs = stacks()
    for remote, local in _files(webhdfs, hdfs_dir, tmp_path).values():
        with LocalFile(local) as lf:
            expected = _rows(lf)
        status = webhdfs.status(remote)
        with rs.open(remote, expected_size=status["length"],
                     expected_file_id=status["fileId"]) as f:
            got = _rows(f)
            # Read-ahead and pyarrow's coalescing keep requests far below one per unit/column.
            assert f.requests <= 12, f.requests
        assert got == expected
        assert sum(len(rows) for _, rows in got) == ROWS
        # Resuming from every position on HDFS gives the remaining rows.
        for i in (1, len(got) // 2, len(got) - 1):
            middle = got[i][0]
            assert isinstance(middle, ParquetPosition | AvroPosition)
            with rs.open(remote) as f:
                assert _rows(f, middle) == expected[i:]


def _bad_files() -> dict[str, bytes]:
    """Broken files, one of each kind the readers tell apart."""
    pbuf = io.BytesIO()
    pq.write_table(_table().slice(0, 2000), pbuf, row_group_size=500)
    parquet = pbuf.getvalue()
    footer = bytearray(parquet)
    n = int.from_bytes(footer[-8:-4], "little")
    footer[len(footer) - 8 - n:len(footer) - 8 - n // 2] = b"\x17" * (n - n // 2)
    avro = _avro()
    sync = bytearray(avro)
    sync[len(avro) // 2:len(avro) // 2 + 64] = b"\0" * 64  # inside a block: its marker or data
    return {"empty.parquet": b"", "csv.parquet": b"id,name\n1,a\n",
            "truncated.parquet": parquet[:len(parquet) // 2], "footer.parquet": bytes(footer),
            "avro.parquet": avro, "truncated.avro": avro[:len(avro) // 3],
            "damaged.avro": bytes(sync)}


def _error(file: RandomAccessFile) -> ReadError:
    fmt = "parquet" if file.path.endswith(".parquet") else "avro"
    with pytest.raises(ReadError) as info:
        for unit in open_reader(file, fmt).units(max_rows=1000):
            assert unit.batch.num_rows == unit.rows  # decoded when first asked for
    return info.value


def test_bad_files_fail_the_same_way_as_local_copies(stacks: Callable[..., ReadStack],
                                                    webhdfs: Any, hdfs_dir: str,
                                                    tmp_path: Path) -> None:
    rs = stacks()
    for name, data in _bad_files().items():
        local = tmp_path / name
        local.write_bytes(data)
        webhdfs.write(f"{hdfs_dir}/{name}", data, overwrite=True)
        with LocalFile(local) as lf:
            expected = _error(lf)
        with rs.open(f"{hdfs_dir}/{name}", expected_size=len(data)) as f:
            got = _error(f)
        assert (type(got), got.position, got.reason) == \
            (type(expected), expected.position, expected.reason), name


def test_expected_identity_is_checked(stacks: Callable[..., ReadStack], webhdfs: Any,
                                      hdfs_dir: str) -> None:
    rs = stacks()
    path = f"{hdfs_dir}/x.parquet"
    webhdfs.write(path, b"PAR1" + b"\0" * 100 + b"PAR1")
    status = webhdfs.status(path)
    with rs.open(path, expected_size=108, expected_file_id=status["fileId"]) as f:
        assert f.size == 108
        assert f.read_at(100, 20) == b"\0" * 4 + b"PAR1"
    with pytest.raises(FileChanged, match="length"):
        rs.open(path, expected_size=5000)
    with pytest.raises(FileChanged, match="fileId"):
        rs.open(path, expected_file_id=status["fileId"] + 10**12)  # no such inode
    with pytest.raises(FileVanished):
        rs.open(f"{hdfs_dir}/missing.parquet")
    with pytest.raises(FileVanished, match="not a file"):
        rs.open(hdfs_dir)


def test_file_deleted_or_replaced_while_reading(stacks: Callable[..., ReadStack], webhdfs: Any,
                                                hdfs_dir: str) -> None:
    rs = stacks(read_ahead=1024)
    path = f"{hdfs_dir}/big.bin"
    webhdfs.write(path, b"x" * 3_000_000)
    f = rs.open(path)
    assert f.read_at(0, 10) == b"x" * 10
    webhdfs.write(path, b"y" * 1000, overwrite=True)  # replaced: shorter, new fileId
    with pytest.raises(FileChanged):
        f.read_at(2_000_000, 10)
    f2 = rs.open(path)
    assert isinstance(f2, RemoteFile)
    webhdfs.write(path, b"z" * 1000, overwrite=True)  # same length, new inode
    with pytest.raises(FileChanged, match="fileId"):
        f2.verify()
    with pytest.raises(FileChanged, match="fileId"):
        f2.read_at(0, 10)  # never the new file's bytes under the old file's name
    webhdfs.delete(path)
    with pytest.raises(FileVanished):
        f2.read_at(500, 10)


@pytest.mark.parametrize("reader", READERS)
def test_cat_reads_from_hdfs_with_the_devstack_environment(
        stack: Any, webhdfs: Any, hdfs_dir: str, tmp_path: Path, reader: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = _files(webhdfs, hdfs_dir, tmp_path)
    remote, _ = files["t.parquet"]
    assert main(["cat", remote, "--reader", reader, "--from", "rg:2/6998", "--limit", "3",
                 "--key", "id"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [ln["position"] for ln in lines] == ["rg:2/6998", "rg:2/6999", "rg:3/0"]
    assert [ln["value"]["id"] for ln in lines] == [20998, 20999, 21000]
    assert json.loads(err.splitlines()[-1])["next"] == "rg:3/1"
    # The config's reader, and only what that reader needs: no WebHDFS URL for native.
    config = tmp_path / "h.toml"
    where = (f'namenodes = ["{stack.namenode}"]' if reader == "native"
             else f'webhdfs = "{stack.webhdfs_url}"')
    config.write_text(f'[hdfs]\nreader = "{reader}"\n{where}\nuser = "{stack.hdfs_user}"\n')
    remote, _ = files["t.avro"]
    assert main(["cat", remote, "--config", str(config), "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [ln["value"]["id"] for ln in lines] == [0, 1]


def test_a_file_renamed_while_read_is_told_from_one_deleted(stacks: Callable[..., ReadStack],
                                                            webhdfs: Any, hdfs_dir: str) -> None:
    """A rename keeps the inode: the reader says where to look (FileMoved, with the inode id),
    and the file reads on from its new path; a deleted file is just gone."""
    rs = stacks(read_ahead=1024)
    path, moved = f"{hdfs_dir}/a/f.bin", f"{hdfs_dir}/b/f.bin"
    webhdfs.write(path, b"x" * 2_000_000 + b"y" * 1_000_000)
    file_id = webhdfs.status(path)["fileId"]
    f = rs.open(path, expected_size=3_000_000, expected_file_id=file_id)
    assert f.read_at(0, 10) == b"x" * 10
    webhdfs.makedirs(f"{hdfs_dir}/b")
    webhdfs.rename(path, moved)
    with pytest.raises(FileMoved) as info:
        f.read_at(2_500_000, 10)
    assert info.value.file_id == file_id
    # Opened again by its old path (a restart): moved, also when the name is taken by another file.
    with pytest.raises(FileMoved):
        rs.open(path, expected_size=3_000_000, expected_file_id=file_id)
    webhdfs.write(path, b"z" * 3_000_000)
    with pytest.raises(FileMoved):
        rs.open(path, expected_size=3_000_000, expected_file_id=file_id)
    with rs.open(moved, expected_size=3_000_000, expected_file_id=file_id) as g:
        assert g.read_at(2_500_000, 3) == b"yyy"
    webhdfs.delete(moved)
    with pytest.raises(FileVanished) as gone:
        rs.open(moved, expected_size=3_000_000, expected_file_id=file_id)
    assert not isinstance(gone.value, FileMoved)


def test_the_native_reader_is_the_configured_user_on_every_connection(
        stack: Any, webhdfs: Any, hdfs_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SIMPLE authentication, HDFS sees `[hdfs] user` on every connection hdfs-native
    opens (it opens them lazily, at the first read), not the process's own user (here the
    superuser, who may read anything)."""
    from hdfsread.base import ReadRefused

    # The stack sets HADOOP_USER_NAME for the whole process; put it back afterwards.
    monkeypatch.delenv("HADOOP_USER_NAME", raising=False)
    private = f"{hdfs_dir}/alice-only"
    path = f"{private}/f.bin"
    webhdfs.write(path, b"a" * 5000)
    file_id = webhdfs.status(path)["fileId"]
    # Anyone may see the file (the directory is traversable); only alice may read it.
    webhdfs.set_owner(private, owner="alice")
    webhdfs.set_owner(path, owner="alice")
    webhdfs.set_permission(path, "400")
    for user, allowed in (("alice", True), ("bob", False), ("alice", True)):
        rs = open_read_stack(ReadSettings(reader="native", user=user,
                                          namenodes=(stack.namenode,)))
        try:
            if allowed:
                with rs.open(path, expected_size=5000, expected_file_id=file_id) as f:
                    assert f.read_at(4990, 100) == b"a" * 10
            else:
                with pytest.raises(ReadRefused) as info:
                    rs.open(path, expected_size=5000, expected_file_id=file_id).read_at(0, 10)
                assert "user bob" in str(info.value) and "Permission denied" in str(info.value)
        finally:
            rs.close()


class _NoReservedPaths:
    """hdfs-native's client behind something that does not resolve /.reserved paths (a
    router-based federation, a gateway): they name nothing there."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self, path: str) -> Any:
        if path.startswith("/.reserved/"):
            raise FileNotFoundError(f"File does not exist: {path}")
        return self._client.read(path)


def _gateway_without_reserved_paths(webhdfs_url: str) -> tuple[str, Callable[[], None]]:
    """A WebHDFS gateway in front of the stack's NameNode that answers 404 for inode paths,
    as some do; everything else is relayed (the redirect goes to the DataNode itself)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    class Gateway(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/webhdfs/v1/.reserved/"):
                status, headers, body = 404, {}, json.dumps({"RemoteException": {
                    "exception": "FileNotFoundException", "message": "File does not exist"}
                }).encode()
            else:
                res = requests.get(webhdfs_url + self.path, allow_redirects=False, timeout=30)
                status, body = res.status_code, res.content
                headers = {k: v for k, v in res.headers.items() if k.lower() == "location"}
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_port}", stop


@pytest.mark.parametrize("reader", READERS)
def test_where_inode_paths_are_not_resolved_files_are_read_by_path(
        stack: Any, webhdfs: Any, hdfs_dir: str, reader: str) -> None:
    """Not every way to HDFS resolves /.reserved/.inodes: when the inode path names nothing
    but the path is still the very file, the stack reads by path from then on, instead of
    calling every file vanished."""
    data = bytes(range(256)) * 4000
    paths = [f"{hdfs_dir}/by-path-{i}.bin" for i in range(2)]
    for path in paths:
        webhdfs.write(path, data)
    stop: Callable[[], None] = lambda: None  # noqa: E731
    url = stack.webhdfs_url
    if reader == "webhdfs":
        url, stop = _gateway_without_reserved_paths(stack.webhdfs_url)
    rs = open_read_stack(ReadSettings(reader=reader, user=stack.hdfs_user,
                                      namenodes=(stack.namenode,), webhdfs_url=url,
                                      read_ahead=64 * 1024))
    try:
        if reader == "native":
            rs.client = _NoReservedPaths(rs.client)  # type: ignore[attr-defined]
        for path in paths:
            file_id = webhdfs.status(path)["fileId"]
            with rs.open(path, expected_size=len(data), expected_file_id=file_id) as f:
                assert f.read_at(0, 100) == data[:100]
                assert f.read_at(len(data) - 300_000, 300_000) == data[-300_000:]
        # A file deleted is still told as gone, not read by some other means.
        file_id = webhdfs.status(paths[0])["fileId"]
        f = rs.open(paths[0], expected_size=len(data), expected_file_id=file_id)
        webhdfs.delete(paths[0])
        with pytest.raises(FileVanished):
            f.read_at(500_000, 10)
    finally:
        rs.close()
        stop()
