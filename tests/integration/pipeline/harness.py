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
from pipeline.kafka.ledger_io import read_ledger

ROOT = Path(__file__).resolve().parents[3]


def put(webhdfs: Any, path: str, data: bytes) -> None:
    """Upload as `hdfs dfs -put` does: write `name._COPYING_`, then rename into place."""
    tmp = f"{path}._COPYING_"
    webhdfs.write(tmp, data, overwrite=True)
    webhdfs.rename(tmp, path)


def write_config(tmp: Path, stack: Any, *, instance_id: str, ledger_topic: str,
                 sources: list[dict[str, Any]], http_port: int = 0, **daemon: Any) -> Path:
    lines = ["[daemon]", f'instance_id = "{instance_id}"']
    lines.append(f'http = "127.0.0.1:{http_port or free_port()}"')
    lines.append('log_level = "info"')
    for k, v in daemon.items():
        lines.append(f"{k} = {toml_value(v)}")
    lines += ["", "[hdfs]", f'namenodes = ["{stack.namenode}"]', f'webhdfs = "{stack.webhdfs_url}"',
              f'user = "{stack.hdfs_user}"', "", "[kafka]", f'bootstrap = "{stack.kafka_bootstrap}"',
              f'ledger_topic = "{ledger_topic}"']
    registry = getattr(stack, "schema_registry_url", None)
    if registry:
        lines.append(f'schema_registry = "{registry}"')
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

    def wait_for_log(self, needle: str, timeout: float = 60, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text()[after:]:
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


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    await create_topics(bootstrap, [topic], partitions)


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
                  settle: float = 3.0) -> Landed:
    """Everything committed in `topic`: until `expect` rows arrived (then `settle` more seconds
    to catch duplicates), or until nothing new came for `settle` seconds."""
    consumer = committed_consumer(bootstrap, topic)
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
    out = []
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


async def ledger_entries(bootstrap: str, ledger_topic: str, instance_id: str) -> dict[str, Any]:
    """The committed ledger's file entries (`pipeline.ledger.FileEntry`), by file name."""
    from pipeline.ledger import LedgerState

    state = await read_ledger(KafkaConfig(bootstrap, ledger_topic), LedgerState(instance_id))
    return {e.path.rsplit("/", 1)[1]: e for e in state.files.values()}
