"""Reads from the Kerberized dev stack with the native backend (hdfs-native): Kerberos RPC to the
NameNode with each `hadoop.rpc.protection`, SASL on data transfer to the DataNode
(`dfs.data.transfer.protection`) with the block tokens the NameNode hands out, and the file's
identity checked by hdfswatch's NameNode client; every row of Parquet and Avro files checked;
a user without permission and a client without a ticket are one line each; `hdfs2kafka cat`
reads natively with nothing but `devstack env --secure`.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from demo.sample_data import avro_bytes, parquet_bytes, rows_for
from hdfsread.base import ReadRefused, RemoteFile
from hdfsread.stack import ReadSettings, ReadStack, open_read_stack
from hdfsread.webhdfs import webhdfs_client
from hdfswatch.errors import KerberosCredentialsError
from hdfswatch.hadoop_conf import load_rpc_security
from pipeline.cli import main
from pipeline.readers import open_reader


@pytest.fixture(scope="module")
def hdfs(secure: dict[str, str]) -> Iterator[Any]:
    """A WebHDFS client of the daemon's principal to write the files, and a directory of this
    module's own, deleted afterwards."""
    client = webhdfs_client(secure["WEBHDFS_URL"], ca_file=secure["HDFS2KAFKA_CA"], kerberos=True)
    client.base = f"/tmp/native-secure-{uuid.uuid4().hex[:8]}"
    client.makedirs(client.base)
    yield client
    client.delete(client.base, recursive=True)


def _stack(secure: dict[str, str], protection: str | None = None, *,
           principal: str | None = None, read_ahead: int = 64 * 1024) -> ReadStack:
    security = load_rpc_security(secure["HADOOP_CONF_DIR"]).with_overrides(
        protection=(protection,) if protection else None, client_principal=principal)
    return open_read_stack(ReadSettings(
        reader="native", user=secure["HDFS_USER"], namenodes=(secure["HDFS_NAMENODE"],),
        hadoop_conf_dir=secure["HADOOP_CONF_DIR"], security=security, read_ahead=read_ahead))


def _all_rows(file: RemoteFile, fmt: str) -> dict[str, list[Any]]:
    reader = open_reader(file, fmt)
    batches = [unit.batch for unit in reader.units(max_rows=700)]
    return pa.Table.from_batches(batches).to_pydict()


@pytest.mark.parametrize("protection", ["authentication", "integrity", "privacy"])
@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_every_row_is_read_natively_with_kerberos_and_sasl_data_transfer(
        secure: dict[str, str], hdfs: Any, fmt: str, protection: str) -> None:
    n = 12_000
    data = parquet_bytes(3, n, row_group_size=2500) if fmt == "parquet" else avro_bytes(3, n, 1000)
    path = f"{hdfs.base}/rows-{protection}.{fmt}"
    hdfs.write(path, data, overwrite=True)
    file_id = hdfs.status(path)["fileId"]
    stack = _stack(secure, protection)
    try:
        # Small read-ahead windows: many DataNode reads, each through SASL with a block token.
        with stack.open(path, expected_size=len(data), expected_file_id=file_id) as f:
            rows = _all_rows(f, fmt)
            assert f.requests > 1
        assert rows == rows_for(3, n)
    finally:
        stack.close()


def _kinit(secure: dict[str, str], ccache: Path, principal: str, keytab: str) -> None:
    subprocess.run(["kinit", "-c", f"FILE:{ccache}", "-kt", keytab, principal], check=True,
                   env={"KRB5_CONFIG": secure["KRB5_CONFIG"], "PATH": "/usr/bin:/bin"},
                   timeout=60)


def test_a_user_without_permission_is_refused_in_one_line(
        secure: dict[str, str], hdfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"{hdfs.base}/private.parquet"
    hdfs.write(path, parquet_bytes(1, 10), overwrite=True)
    hdfs.set_permission(path, "600")
    ccache = tmp_path / "analyst-ccache"
    _kinit(secure, ccache, secure["HDFS2KAFKA_ANALYST_PRINCIPAL"],
           secure["HDFS2KAFKA_ANALYST_KEYTAB"])
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME")
    stack = _stack(secure)
    try:
        with pytest.raises(ReadRefused) as info:
            stack.open(path).read_at(0, 4)
    finally:
        stack.close()
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert "analyst" in message and "Permission denied" in message, message


def test_without_a_ticket_the_error_is_one_line_naming_the_fix(
        secure: dict[str, str], hdfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hdfs-native's own GSSAPI failure: the stat client (hdfswatch's) has the keytab and
    opens the file; hdfs-native, with no ticket, fails at its first read."""
    from hdfsread.base import ReadCredentialsError

    path = f"{hdfs.base}/noticket.parquet"
    hdfs.write(path, parquet_bytes(1, 10), overwrite=True)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-ccache'}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME")  # else MIT krb5 logs in from it by itself
    security = load_rpc_security(secure["HADOOP_CONF_DIR"]).with_overrides(
        client_principal=secure["HDFS2KAFKA_PRINCIPAL"], keytab=secure["HDFS2KAFKA_KEYTAB"])
    stack = open_read_stack(ReadSettings(
        reader="native", user=secure["HDFS_USER"], namenodes=(secure["HDFS_NAMENODE"],),
        hadoop_conf_dir=secure["HADOOP_CONF_DIR"], security=security, keytab=None))
    try:
        with pytest.raises(ReadCredentialsError) as info:
            stack.open(path).read_at(0, 4)
    finally:
        stack.close()
    message = str(info.value)
    assert isinstance(info.value, KerberosCredentialsError)
    assert message.startswith(f"{path}: the Kerberos/SASL login of "), message
    assert len(message.splitlines()) == 1 and "kinit" in message, message


def test_cat_reads_natively_with_only_the_secure_environment(
        secure: dict[str, str], hdfs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"{hdfs.base}/cat.avro"
    hdfs.write(path, avro_bytes(2, 500, 100), overwrite=True)
    assert main(["cat", path, "--reader", "native", "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    values = [json.loads(line)["value"] for line in out.splitlines()]
    expected = rows_for(2, 500)
    assert values == [{k: v[i] for k, v in expected.items()} for i in range(3)], err
