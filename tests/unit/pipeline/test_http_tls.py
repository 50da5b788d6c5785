"""The HTTP surface over TLS: `http_tls_cert` and `http_tls_key` make the daemon's listener
serve HTTPS, which a client trusting the certificate reads and one that does not refuses; the
config refuses half a pair or a key that is not the certificate's. The listener is the real
one (`HttpServer.start`) on a free loopback port; no Kafka or HDFS is contacted."""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from config_files import logging_kept, self_signed, write_config

from pipeline import config as config_mod
from pipeline.commands import admin
from pipeline.config import ConfigError
from pipeline.daemon import Daemon
from pipeline.http import CONTENT_TYPE_LATEST, HttpServer
from pipeline.metrics import PREFIX, Metrics


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with logging_kept():
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, server: HttpServer, path: Path, cert: Path) -> None:
        self.server = server
        self.path = path
        self.cert = cert


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    cert, _ = self_signed(tmp_path)
    path = write_config(tmp_path / "h.toml", daemon={
        "http": f"127.0.0.1:{free_port()}", "http_tls_cert": "cert.pem", "http_tls_key": "key.pem"})
    d = Daemon(config_mod.load(path))
    metrics = Metrics(d)
    d.hooks.append(metrics)
    server = HttpServer(d, metrics, d.config.daemon.http)
    await server.start()
    try:
        yield Served(server, path, cert)
    finally:
        await server.stop()


async def test_metrics_over_https_with_the_certificate_trusted(served: Served) -> None:
    assert served.server.url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(served.cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.server.url}/metrics", ssl=trusting) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert f"{PREFIX}_" in await resp.text()
        # A client that does not trust the certificate refuses the connection.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{served.server.url}/metrics", ssl=ssl.create_default_context())
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"{served.server.url.replace('https', 'http')}/metrics")


async def test_ctl_with_the_config_speaks_https_to_it(served: Served) -> None:
    args = argparse.Namespace(url=None, config=str(served.path), token=None)
    status, doc = await asyncio.to_thread(admin.call, args, "GET", "/status")
    assert status == 200 and doc["instance_id"] == "unit-01"


def test_half_a_pair_or_a_wrong_key_is_refused(tmp_path: Path) -> None:
    self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    self_signed(other)
    cases = [
        ({"http_tls_cert": "cert.pem"}, "daemon.http_tls_key: missing: daemon.http_tls_cert is set"),
        ({"http_tls_cert": "cert.pem", "http_tls_key": "other/key.pem"},
         f"daemon.http_tls_cert: {tmp_path}/cert.pem and {tmp_path}/other/key.pem are not a PEM certificate chain"),
        ({"http_tls_cert": "nope.pem", "http_tls_key": "key.pem"},
         f"daemon.http_tls_cert: cannot read {tmp_path}/nope.pem: No such file or directory"),
        ({"http_tls_cert": "cert.pem", "http_tls_key": "nope.key"},
         f"daemon.http_tls_key: cannot read {tmp_path}/nope.key: No such file or directory"),
    ]
    for settings, expected in cases:
        with pytest.raises(ConfigError) as exc:
            config_mod.load(write_config(tmp_path / "h.toml", daemon=settings))
        (problem,) = exc.value.problems
        assert problem.startswith(expected), problem


def test_the_key_can_be_a_systemd_credential(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    creds = tmp_path / "credentials"
    creds.mkdir()
    key.rename(creds / "http.key")
    path = write_config(tmp_path / "h.toml", daemon={"http_tls_cert": "cert.pem",
                                                      "http_tls_key": "${credential:http.key}"})
    cfg = config_mod.load(path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert (cfg.daemon.http_tls_cert, cfg.daemon.http_tls_key) == (str(cert), str(creds / "http.key"))


async def test_ctl_outside_the_service_takes_a_credential_token_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    self_signed(tmp_path)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "admin-token").write_text("f00d" * 16 + "\n")
    path = write_config(tmp_path / "h.toml", daemon={
        "http": f"127.0.0.1:{free_port()}", "http_tls_cert": "cert.pem", "http_tls_key": "key.pem",
        "admin_token": "${credential:admin-token}"})
    d = Daemon(config_mod.load(path, env={"CREDENTIALS_DIRECTORY": str(creds)}))  # the service
    server = HttpServer(d, Metrics(d), d.config.daemon.http)
    await server.start()
    try:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)  # an operator's shell
        monkeypatch.delenv("HDFS2KAFKA_TOKEN", raising=False)
        args = argparse.Namespace(url=None, config=str(path), token=None)
        code, doc = await asyncio.to_thread(admin.call, args, "PUT", "/workers", {"workers": 3})
        assert code == 401 and "admin_token" in doc
        monkeypatch.setenv("HDFS2KAFKA_TOKEN", "f00d" * 16)
        assert await asyncio.to_thread(admin.call, args, "PUT", "/workers", {"workers": 3}) == (200, {"workers": 3})
    finally:
        await server.stop()
