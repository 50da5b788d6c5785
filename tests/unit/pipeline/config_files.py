"""Daemon config files for unit tests. A `Daemon` built from one contacts no server until its
`run()`: the addresses below are closed ports on loopback."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

DAEMON: dict[str, Any] = {"instance_id": "unit-01", "http": "127.0.0.1:9464"}
HDFS: dict[str, Any] = {"namenodes": ["127.0.0.1:1"], "webhdfs": "http://127.0.0.1:1", "user": "hdfs"}
KAFKA: dict[str, Any] = {"bootstrap": "127.0.0.1:1"}
CLICKS: dict[str, Any] = {"name": "clicks", "path": "/data/clicks/**", "topic": "clicks", "format": "parquet"}
ORDERS: dict[str, Any] = {"name": "orders", "path": "/data/orders/*.avro", "topic": "orders"}


def _value(v: Any) -> str:
    return json.dumps(v)  # strings, numbers, booleans and lists of them are the same in TOML


def _table(header: str, settings: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{k} = {_value(v)}" for k, v in settings.items()), ""])


def write_config(path: Path, daemon: dict[str, Any] | None = None, hdfs: dict[str, Any] | None = None,
                 kafka: dict[str, Any] | None = None,
                 sources: list[dict[str, Any]] | None = None) -> Path:
    """Write a valid config: the defaults above, each section updated with what is given."""
    parts = [_table("[daemon]", DAEMON | (daemon or {})),
             _table("[hdfs]", HDFS | (hdfs or {})),
             _table("[kafka]", KAFKA | (kafka or {}))]
    parts += [_table("[[sources]]", s) for s in (sources if sources is not None else [CLICKS, ORDERS])]
    path.write_text("\n".join(parts))
    return path


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """Undo what a reload's `logs.configure` does to the process's logging."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` and 127.0.0.1 and its unencrypted key, as PEM
    files made by the openssl command (cert.pem, key.pem in `directory`)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key
