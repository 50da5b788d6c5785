"""Reads from the Kerberized dev stack (`devstack up --secure`) over WebHDFS: https verified
with the stack's CA, SPNEGO to the NameNode, the DataNode read with the delegation token of the
NameNode's redirect; the one-line errors of what an operator must fix (no ticket, an untrusted
certificate, a client without Kerberos, a user without permission); and `hdfs2kafka cat`,
`watch` and `demo` with nothing but `devstack env --secure` in their environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pyarrow as pa
import pytest
import requests

from demo.sample_data import avro_bytes, parquet_bytes, rows_for
from hdfsread.webhdfs import (
    UntrustedCertificate,
    WebHdfsAuthMismatch,
    WebHdfsCredentialsError,
    WebHdfsFile,
    WebHdfsPrincipalError,
    WebHdfsRefused,
    webhdfs_client,
)
from hdfswatch.errors import AccessError, FatalError, KerberosCredentialsError, TransientError
from pipeline.readers import open_reader

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def hdfs(secure: dict[str, str]) -> Iterator[Any]:
    """A WebHDFS client of the daemon's principal (https, SPNEGO), and a directory of this
    module's own, deleted afterwards."""
    client = webhdfs_client(secure["WEBHDFS_URL"], ca_file=secure["HDFS2KAFKA_CA"], kerberos=True)
    client.base = f"/tmp/webhdfs-secure-{uuid.uuid4().hex[:8]}"
    client.makedirs(client.base)
    yield client
    client.delete(client.base, recursive=True)


def _open(secure: dict[str, str], path: str, **kwargs: Any) -> WebHdfsFile:
    options: dict[str, Any] = {"ca_file": secure["HDFS2KAFKA_CA"], "kerberos": True,
                               "retries": 1, "backoff": 0.01, **kwargs}
    return WebHdfsFile(secure["WEBHDFS_URL"], path, **options)


def _all_rows(file: WebHdfsFile, fmt: str) -> dict[str, list[Any]]:
    reader = open_reader(file, fmt)
    batches = [unit.batch for unit in reader.units(max_rows=700)]
    return pa.Table.from_batches(batches).to_pydict()


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_a_file_is_read_over_https_with_spnego_every_row_in_order(secure, hdfs, fmt):
    n = 12_000
    data = parquet_bytes(3, n, row_group_size=2500) if fmt == "parquet" else avro_bytes(3, n, 1000)
    path = f"{hdfs.base}/rows.{fmt}"
    hdfs.write(path, data, overwrite=True)

    # Small read-ahead windows: many ranged reads, each a NameNode redirect to the DataNode.
    with _open(secure, path, read_ahead=64 * 1024, expected_size=len(data)) as f:
        rows = _all_rows(f, fmt)
        assert f.requests > 1  # not one whole-file GET
    assert rows == rows_for(3, n)


def test_the_datanode_is_read_with_the_namenodes_delegation_token_not_spnego(secure, hdfs):
    data = os.urandom(300_000)
    path = f"{hdfs.base}/token.bin"
    hdfs.write(path, data, overwrite=True)
    nn_port = urlsplit(secure["WEBHDFS_URL"]).port
    seen: list[tuple[int, str, bool, int]] = []

    def record(response: requests.Response, **_: Any) -> None:
        req = response.request
        seen.append((urlsplit(req.url).port or 0, req.url or "",
                     "Authorization" in req.headers, response.status_code))

    client = webhdfs_client(secure["WEBHDFS_URL"], ca_file=secure["HDFS2KAFKA_CA"], kerberos=True)
    client._session.hooks["response"].append(record)
    with WebHdfsFile(client, path, read_ahead=100_000) as f:
        assert f.read_at(0, 300_000) == data

    datanode = [s for s in seen if s[0] != nn_port]
    assert datanode and all(status == 200 for *_, status in datanode)
    for _port, url, authorized, _status in datanode:
        assert not authorized  # no SPNEGO token went to the DataNode
        assert parse_qs(urlsplit(url).query).get("delegation")
    # The token is what lets it in: the same DataNode URL without it is refused.
    url = datanode[0][1]
    query = {k: v for k, v in parse_qs(urlsplit(url).query).items() if k != "delegation"}
    bare = requests.get(url.split("?")[0], params={k: v[0] for k, v in query.items()},
                        verify=secure["HDFS2KAFKA_CA"], timeout=30)
    assert bare.status_code in (401, 403), bare.text[:300]
    with_token = requests.get(url, verify=secure["HDFS2KAFKA_CA"], timeout=30)
    assert with_token.status_code == 200


def test_without_a_ticket_the_error_says_kinit_in_one_line(secure, hdfs, tmp_path, monkeypatch):
    path = f"{hdfs.base}/noticket.parquet"
    hdfs.write(path, parquet_bytes(1, 10), overwrite=True)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-ccache'}")
    monkeypatch.delenv("KRB5_CLIENT_KTNAME")  # else MIT krb5 logs in from it by itself
    with pytest.raises(WebHdfsCredentialsError) as err:
        _open(secure, path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: no Kerberos ticket") and "run kinit or set the keytab" in text
    assert isinstance(err.value, KerberosCredentialsError) and isinstance(err.value, TransientError)

    # The keytab heals it: the same read with the principal and its keytab.
    with _open(secure, path, principal=secure["HDFS2KAFKA_PRINCIPAL"],
               keytab=secure["HDFS2KAFKA_KEYTAB"]) as f:
        assert _all_rows(f, "parquet") == rows_for(1, 10)


def _other_ca(tmp_path: Path) -> str:
    pem = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=not the stack's CA", "-keyout", str(tmp_path / "other-ca.key"),
                    "-out", str(pem)], check=True, capture_output=True)
    return str(pem)


@pytest.mark.parametrize("trust", ["another CA", "the system's CAs"])
def test_an_untrusted_certificate_names_the_url_and_the_ca_file(secure, hdfs, tmp_path, trust):
    path = f"{hdfs.base}/any.parquet"
    ca_file = _other_ca(tmp_path) if trust == "another CA" else None
    started = time.monotonic()
    with pytest.raises(UntrustedCertificate) as err:
        _open(secure, path, ca_file=ca_file, retries=5, backoff=1.0)
    assert time.monotonic() - started < 5  # refused at once, not retried
    text = str(err.value)
    # Retried by the daemon without end, as Kafka's: a CA added to the file heals it.
    assert "\n" not in text and isinstance(err.value, AccessError)
    assert f"the certificate of {secure['WEBHDFS_URL']} is not trusted" in text
    assert "set the CA file" in text
    if ca_file:
        assert ca_file in text


def test_a_client_without_kerberos_is_told_webhdfs_wants_it(secure, hdfs):
    path = f"{hdfs.base}/simple.parquet"
    with pytest.raises(WebHdfsAuthMismatch) as err:
        _open(secure, path, kerberos=False, user="hdfs2kafka")
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, FatalError)  # the config must change
    assert "HTTP 401" in text and "wants Kerberos (SPNEGO)" in text


def test_a_url_naming_the_host_otherwise_than_its_principal_is_told_which_name(secure, hdfs,
                                                                               caplog):
    path = f"{hdfs.base}/by-address.parquet"
    url = secure["WEBHDFS_URL"].replace("localhost", "127.0.0.1")
    with pytest.raises(WebHdfsPrincipalError) as err:
        WebHdfsFile(url, path, ca_file=secure["HDFS2KAFKA_CA"], kerberos=True, retries=1)
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, FatalError)
    assert "the KDC does not know HTTP/127.0.0.1" in text and "use the host name" in text
    # Said once, by the error: no library error log (with its traceback) on the way.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_user_without_permission_is_named_with_the_path(secure, hdfs):
    path = f"{hdfs.base}/private.avro"
    hdfs.write(path, avro_bytes(2, 10), overwrite=True)
    hdfs.set_permission(path, "600")
    analyst = secure["HDFS2KAFKA_ANALYST_PRINCIPAL"]
    # The analyst may see the file (its directory is open) but not read it.
    with _open(secure, path, principal=analyst, keytab=secure["HDFS2KAFKA_ANALYST_KEYTAB"]) as f:
        with pytest.raises(WebHdfsRefused) as err:
            f.read_at(0, 100)
    text = str(err.value)
    assert "\n" not in text
    assert f"refused {analyst} access to {path} (HTTP 403" in text
    assert "user=analyst" in text  # HDFS's own reason


def test_a_stack_reads_with_one_delegation_token_and_gets_another_when_it_is_cancelled(
        secure, hdfs):
    """A NameNode asked without a token mints one for every redirect to a DataNode (an
    edit-log transaction, kept a day in its memory); the stack's redirects all carry the one
    token it got, and when that one is cancelled behind its back it gets another."""
    from hdfsread.webhdfs import WebHdfsStack

    data = os.urandom(2_000_000)
    path = f"{hdfs.base}/one-token.bin"
    hdfs.write(path, data, overwrite=True)
    redirected: list[str] = []

    def record(response: requests.Response, **_: Any) -> None:
        if response.is_redirect:
            query = parse_qs(urlsplit(response.headers["Location"]).query)
            redirected.append(query["delegation"][0])

    stack = WebHdfsStack(secure["WEBHDFS_URL"], ca_file=secure["HDFS2KAFKA_CA"], kerberos=True,
                         read_ahead=64 * 1024)
    stack.client._session.hooks["response"].append(record)
    try:
        with stack.open(path, expected_size=len(data)) as f:
            got = b"".join(f.read_at(offset, 1000) for offset in range(0, len(data), 64 * 1024))
            assert got == b"".join(data[o:o + 1000] for o in range(0, len(data), 64 * 1024))
            assert f.requests >= 30
        assert len(redirected) >= 30 and len(set(redirected)) == 1  # not one per redirect
        token = stack.client._token._token
        assert set(redirected) == {token}
        assert stack.client.tokens_fetched == 1

        # Cancelled behind the stack's back: the next read gets another one and goes on.
        from requests_gssapi import OPTIONAL, HTTPSPNEGOAuth

        requests.put(f"{secure['WEBHDFS_URL']}/webhdfs/v1/", params={
            "op": "CANCELDELEGATIONTOKEN", "token": token},
            auth=HTTPSPNEGOAuth(mutual_authentication=OPTIONAL),
            verify=secure["HDFS2KAFKA_CA"], timeout=30).raise_for_status()
        redirected.clear()
        with stack.open(path, expected_size=len(data)) as f:
            assert f.read_at(1_500_000, 100) == data[1_500_000:1_500_100]
        second = stack.client._token._token
        assert stack.client.tokens_fetched == 2 and second != token
        assert set(redirected) == {second}
    finally:
        stack.close()
    # Closing cancels it: the NameNode no longer knows it.
    res = requests.get(f"{secure['WEBHDFS_URL']}/webhdfs/v1{path}", params={
        "op": "GETFILESTATUS", "delegation": second}, verify=secure["HDFS2KAFKA_CA"], timeout=30)
    assert res.status_code == 403 and "InvalidToken" in res.text, res.text[:300]


def test_threads_negotiating_spnego_at_once_do_not_mix_their_contexts(secure, hdfs):
    """When the hadoop.auth cookie is gone (it expires), every worker thread negotiates
    SPNEGO again at the same moment: each completes its own exchange."""
    client = webhdfs_client(secure["WEBHDFS_URL"], ca_file=secure["HDFS2KAFKA_CA"], kerberos=True)
    errors: list[str] = []

    def work() -> None:
        for _ in range(15):
            client._session.cookies.clear()
            try:
                assert client.status(hdfs.base)["type"] == "DIRECTORY"
            except Exception as exc:  # every failure counts, whatever it is
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------- the commands


def _command_env(secure: dict[str, str]) -> dict[str, str]:
    """The environment of a shell after `eval "$(devstack env --secure)"`, nothing else."""
    return {**os.environ, **secure, "PYTHONUNBUFFERED": "1"}


def test_cat_prints_the_rows_of_a_secure_file_with_no_flag(secure, hdfs):
    path = f"{hdfs.base}/cat.parquet"
    hdfs.write(path, parquet_bytes(5, 30), overwrite=True)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "cat", path], cwd=ROOT,
                         env=_command_env(secure), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [line["value"]["id"] for line in lines] == rows_for(5, 30)["id"]
    assert [line["position"] for line in lines[:2]] == ["rg:0/0", "rg:0/1"]


def test_cat_without_a_ticket_says_so_in_one_line(secure, hdfs, tmp_path):
    path = f"{hdfs.base}/cat-noticket.avro"
    hdfs.write(path, avro_bytes(6, 5), overwrite=True)
    env = _command_env(secure)
    env.pop("KRB5_CLIENT_KTNAME")
    env.pop("HDFS2KAFKA_KEYTAB")
    env["KRB5CCNAME"] = f"FILE:{tmp_path / 'empty-ccache'}"
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "cat", path], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    # The default reader (native) logs in before it opens the file: the principal is named.
    assert lines[0].startswith("cat: ") and "no Kerberos ticket for hdfs2kafka/" in lines[0]
    assert "run kinit or set the keytab" in lines[0]


def test_watch_prints_a_file_written_to_the_secure_hdfs(secure, hdfs):
    path = f"{hdfs.base}/watched/part-0.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "watch", "--path",
                             f"{hdfs.base}/watched/**", "--count", "1", "--duration", "90"],
                            cwd=ROOT, env=_command_env(secure), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = orjson.loads(proc.stdout.readline())
    assert first["event"] == "watching" and first["mode"] == "edits", first

    def put() -> None:
        hdfs.write(f"{path}._COPYING_", parquet_bytes(7, 100), overwrite=True)
        hdfs.rename(f"{path}._COPYING_", path)

    writer = threading.Thread(target=put)
    writer.start()
    try:
        rest, err = proc.communicate(timeout=120)
    finally:
        writer.join()
    assert proc.returncode == 0, err
    ready = [orjson.loads(line) for line in rest.splitlines()]
    assert [(r["event"], r["path"], r["reason"]) for r in ready] == [("ready", path, "rename")]


def test_the_demo_streams_every_row_exactly_once_on_the_secure_stack(secure, tmp_path):
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--workdir",
                          str(tmp_path), "--duration", "15", "--files-per-minute", "40",
                          "--rows-per-file", "2000", "--sample-every", "1000"],
                         cwd=ROOT, env=_command_env(secure), capture_output=True, text=True,
                         timeout=400)
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["event"] == "demo.summary", out.stdout[-3000:] + out.stderr[-3000:]
    assert out.returncode == 0, out.stdout[-3000:]
    assert summary["exactly_once"] is True and summary["drained"] is True
    assert summary["rows_consumed"] == summary["rows_written"] > 0
    for name in ("clicks", "orders"):
        s = summary["sources"][name]
        assert s["files_written"] > 2
        assert (s["rows_consumed"], s["missing"], s["duplicates"]) == (s["rows_written"], 0, 0)
    # Orders went through the registry (https, the stack's CA) as Avro.
    assert "orders as avro through the Schema Registry https://" in out.stdout
    config = next(tmp_path.glob("*/hdfs2kafka.toml")).read_text()
    assert 'webhdfs = "https://' in config and "[kerberos]" in config
    assert '"security.protocol" = "SASL_SSL"' in config
