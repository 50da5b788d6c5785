"""Helpers for daemon tests: sample files with unique row ids (`demo.sample_data`), the daemon as
a real subprocess, and a read_committed consumer that checks what landed in Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# The sample rows and files, re-exported for the tests that take them from here.
from demo.sample_data import AVRO_SCHEMA as AVRO_SCHEMA
from demo.sample_data import ROWS_PER_FILE_ID as ROWS_PER_FILE_ID
from demo.sample_data import avro_bytes as avro_bytes
from demo.sample_data import big_row_parquet as big_row_parquet
from demo.sample_data import parquet_bytes as parquet_bytes
from demo.sample_data import rows_for as rows_for
from demo.sample_data import sample_file as sample_file
from pipeline.config import KafkaConfig
from pipeline.kafka.client import committed_consumer, create_topics
from pipeline.kafka.ledger_io import read_every_shard

ROOT = Path(__file__).resolve().parents[3]


def put(webhdfs: Any, path: str, data: bytes) -> None:
    """Upload as `hdfs dfs -put` does: write `name._COPYING_`, then rename into place."""
    tmp = f"{path}._COPYING_"
    webhdfs.write(tmp, data, overwrite=True)
    webhdfs.rename(tmp, path)


def write_config(tmp: Path, stack: Any, *, instance_id: str, ledger_topic: str,
                 sources: list[dict[str, Any]], http_port: int = 0,
                 hdfs: dict[str, Any] | None = None, **daemon: Any) -> Path:
    lines = ["[daemon]", f'instance_id = "{instance_id}"']
    lines.append(f'http = "127.0.0.1:{http_port or free_port()}"')
    lines.append('log_level = "info"')
    for k, v in daemon.items():
        lines.append(f"{k} = {toml_value(v)}")
    # A secure stack adds its [hdfs], [kafka] and [kerberos] settings (SecureStack.sections).
    sections: dict[str, dict[str, Any]] = getattr(stack, "sections", lambda: {})()
    lines += ["", "[hdfs]", f'namenodes = ["{stack.namenode}"]', f'webhdfs = "{stack.webhdfs_url}"',
              f'user = "{stack.hdfs_user}"']
    lines += [f"{toml_key(k)} = {toml_value(v)}"
              for k, v in {**sections.get("hdfs", {}), **(hdfs or {})}.items()]
    lines += ["", "[kafka]", f'bootstrap = "{stack.kafka_bootstrap}"', f'ledger_topic = "{ledger_topic}"']
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in sections.get("kafka", {}).items()]
    registry = getattr(stack, "schema_registry_url", None)
    if registry:
        lines.append(f'schema_registry = "{registry}"')
    if sections.get("kerberos"):
        lines += ["", "[kerberos]"]
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in sections["kerberos"].items()]
    for src in sources:
        lines += ["", "[[sources]]"]
        errors = src.pop("errors", None)
        for k, v in src.items():
            lines.append(f"{k} = {toml_value(v)}")
        if errors:
            lines.append("[sources.errors]")
            for k, v in errors.items():
                lines.append(f"{k} = {toml_value(v)}")
    path = tmp / f"{instance_id}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_key(k: str) -> str:
    """A TOML key: Kafka's dotted names quoted, so that they stay one key."""
    return k if k.replace("_", "").isalnum() else f'"{k}"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    """`hdfs2kafka run --config FILE` as a real subprocess; logs go to a file."""

    def __init__(self, config: Path, log_dir: Path, root: Path | None = None) -> None:
        self.config = config
        self.log_dir = log_dir
        # Another tree of the code to run (a soak driving an older checkout, say).
        self.root = root or ROOT
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.config.stem}.log"

    def start(self) -> None:
        self.starts += 1
        out = open(self.log_path, "ab")
        out.write(f"\n---- start {self.starts}\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "--config", str(self.config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.root)})

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = 60, after: int = 0, count: int = 1) -> None:
        """Until `needle` is in the log (after character `after`) `count` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text()[after:].count(needle) >= count:
                return
            if not self.alive():
                raise AssertionError(f"daemon exited before logging {needle!r}:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"daemon did not log {needle!r} within {timeout}s:\n{self.log_text()[-4000:]}")

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            if exc[0] is not None:
                # The test failed with the daemon running: its tasks and threads to the log.
                self.signal(signal.SIGUSR1)
                self.signal(signal.SIGUSR2)
                time.sleep(1.0)
            self.kill()


async def create_topic(bootstrap: str, topic: str, partitions: int,
                       settings: dict[str, Any] | None = None) -> None:
    await create_topics(bootstrap, [topic], partitions, settings=settings)


@dataclass
class Landed:
    """What a read_committed consumer found in a topic."""

    records: list[tuple[int, int, dict[str, Any], bytes | None]]  # partition, offset, value, key
    nbytes: int = 0  # bytes of keys and values as they are in Kafka

    @property
    def ids(self) -> list[int]:
        return [v["id"] for _, _, v, _ in self.records]

    def duplicates(self) -> dict[int, int]:
        return {i: c for i, c in Counter(self.ids).items() if c > 1}

    def out_of_order(self) -> list[str]:
        """Rows of one file that appear out of file order within a partition."""
        last: dict[tuple[int, int], int] = {}
        bad = []
        for part, off, v, _ in sorted(self.records, key=lambda r: (r[0], r[1])):
            k = (part, v["file_no"])
            if k in last and v["seq"] <= last[k]:
                bad.append(f"partition {part} offset {off}: file {v['file_no']} seq {v['seq']} after {last[k]}")
            last[k] = v["seq"]
        return bad


async def consume(bootstrap: str, topic: str, expect: int | None = None, timeout: float = 120,  # noqa: ASYNC109
                  settle: float = 3.0, settings: dict[str, Any] | None = None) -> Landed:
    """Everything committed in `topic`: until `expect` rows arrived (then `settle` more seconds
    to catch duplicates), or until nothing new came for `settle` seconds. `settings`: the
    client settings of a secure Kafka (`SecureStack.client_settings`)."""
    consumer = committed_consumer(bootstrap, topic, settings=settings)
    await consumer.start()
    records: list[tuple[int, int, dict[str, Any], bytes | None]] = []
    nbytes = 0
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            got = False
            for tp, msgs in batch.items():
                for m in msgs:
                    records.append((tp.partition, m.offset, orjson.loads(m.value), m.key))
                    nbytes += len(m.value) + len(m.key or b"")
                    got = True
            if got:
                quiet_since = loop.time()
            reached = expect is not None and len(records) >= expect
            if (reached or expect is None) and loop.time() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return Landed(records, nbytes)


def expected_ids(file_rows: dict[int, int]) -> list[int]:
    out: list[int] = []
    for file_no, n in sorted(file_rows.items()):
        out.extend(file_no * ROWS_PER_FILE_ID + i for i in range(n))
    return out


def missing(landed: Landed, file_rows: dict[int, int]) -> dict[int, int]:
    """Per file, how many rows never arrived."""
    seen: dict[int, set[int]] = defaultdict(set)
    for i in landed.ids:
        seen[i // ROWS_PER_FILE_ID].add(i % ROWS_PER_FILE_ID)
    return {f: n - len(seen[f]) for f, n in file_rows.items() if len(seen[f]) != n}


async def metric(url: str, name: str, source: str) -> float:
    """The daemon's `/metrics` value of `name` for `source` (0 when absent)."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and s.labels.get("source") == source)


async def status(url: str) -> dict[str, Any]:
    """The daemon's `/status` document."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{url}/status") as resp:
        return dict(await resp.json())


async def ledger_entries(bootstrap: str, ledger_topic: str, instance_id: str,
                         settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The committed ledger's file entries (`pipeline.ledger.FileEntry`), by file name, from
    every shard (`instance_id`: the group, when the daemons set none)."""
    states = await read_every_shard(KafkaConfig(bootstrap, ledger_topic, client=settings or {}),
                                    instance_id, compact_done=False)
    return {e.path.rsplit("/", 1)[1]: e for st in states.values() for e in st.files.values()}


# --------------------------------------------------------------------------- the secure stack


@dataclass(frozen=True)
class SecureStack:
    """The Kerberized dev stack as a daemon and a test see it, from `devstack env --secure`.

    `mechanism` is how the daemon logs in to Kafka: "SCRAM-SHA-512" (the password as
    `${file:...}`, never in the config), "GSSAPI" (from the keytab of [kerberos]) or "mTLS"
    (a client certificate on the SSL listener: `kafka_bootstrap` is then that listener's). The test's
    own Kafka clients log in with SCRAM (`client_settings`); its WebHDFS client with the
    daemon's keytab (`webhdfs`).
    """

    env: dict[str, str]
    mechanism: str = "SCRAM-SHA-512"
    kafka_overrides: tuple[tuple[str, str], ...] = ()
    schema_registry_url: str = ""  # the secure registry is not used by these tests

    @property
    def namenode(self) -> str:
        return self.env["HDFS_NAMENODE"]

    @property
    def webhdfs_url(self) -> str:
        return self.env["WEBHDFS_URL"]

    @property
    def hdfs_user(self) -> str:
        return self.env["HDFS_USER"]

    @property
    def kafka_bootstrap(self) -> str:
        return self.env["KAFKA_MTLS_BOOTSTRAP" if self.mechanism == "mTLS" else "KAFKA_BOOTSTRAP"]

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_SSL listener, where the test's own clients (SCRAM) connect."""
        return self.env["KAFKA_BOOTSTRAP"]

    @property
    def ca_file(self) -> str:
        return self.env["HDFS2KAFKA_CA"]

    def with_kafka(self, mechanism: str | None = None, **overrides: str) -> SecureStack:
        """The same stack with another SASL mechanism, or Kafka settings (Kafka's names with
        `_` for `.`) changed: a wrong password, another service name."""
        merged = dict(self.kafka_overrides) | {k.replace("_", "."): v for k, v in overrides.items()}
        return SecureStack(self.env, mechanism or self.mechanism, tuple(merged.items()))

    def with_env(self, **env: str) -> SecureStack:
        """The same stack with some of its `devstack env` values changed (KAFKA_BOOTSTRAP...)."""
        return SecureStack({**self.env, **env}, self.mechanism, self.kafka_overrides)

    def sections(self) -> dict[str, dict[str, Any]]:
        """[hdfs], [kafka] and [kerberos] settings of a daemon on this stack."""
        kafka: dict[str, Any] = {"security.protocol": "SASL_SSL", "sasl.mechanism": self.mechanism,
                                 "ssl.ca.location": self.env["KAFKA_SSL_CAFILE"]}
        if self.mechanism == "mTLS":  # the mutual-TLS listener: the certificate says who
            kafka = {"security.protocol": "SSL", "ssl.ca.location": self.env["KAFKA_SSL_CAFILE"],
                     "ssl.certificate.location": self.env["KAFKA_SSL_CERTFILE"],
                     "ssl.key.location": self.env["KAFKA_SSL_KEYFILE"]}
        elif self.mechanism == "GSSAPI":
            kafka["sasl.kerberos.service.name"] = self.env["KAFKA_SASL_KERBEROS_SERVICE_NAME"]
        else:
            kafka["sasl.username"] = self.env["KAFKA_SASL_USERNAME"]
            kafka["sasl.password"] = "${file:" + self.env["KAFKA_SASL_PASSWORD_FILE"] + "}"
        kafka.update(dict(self.kafka_overrides))
        return {
            "hdfs": {"hadoop_conf_dir": self.env["HADOOP_CONF_DIR"], "ca_file": self.ca_file},
            "kafka": kafka,
            "kerberos": {"principal": self.env["HDFS2KAFKA_PRINCIPAL"],
                         "keytab": self.env["HDFS2KAFKA_KEYTAB"]},
        }

    def client_settings(self) -> dict[str, Any]:
        """`[kafka]` client settings (as `pipeline.config` makes them) for the test's own
        clients: SCRAM as the daemon's user, TLS verified with the stack's CA."""
        password = Path(self.env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip()
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": self.env["KAFKA_SASL_USERNAME"],
                "sasl_plain_password": password,
                "_ssl": {"ssl.ca.location": self.env["KAFKA_SSL_CAFILE"]}}

    def webhdfs(self) -> Any:
        """A WebHDFS client (SPNEGO over https) logged in from the daemon's keytab."""
        from hdfsread.webhdfs import webhdfs_client

        return webhdfs_client(self.webhdfs_url, ca_file=self.ca_file, kerberos=True,
                              principal=self.env["HDFS2KAFKA_PRINCIPAL"],
                              keytab=self.env["HDFS2KAFKA_KEYTAB"])
