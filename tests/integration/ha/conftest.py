"""The HA dev stack for the tests under tests/integration/ha: `ha` brings it up when it is not
(`devstack up --ha`, which brings up the plain stack's Kafka and registry too), makes sure one
NameNode is active and both serve, and hands out its addresses (`devstack env --ha --json`)
with the verbs a test needs: failover, kill the active, restart a NameNode, purge edits.

The tests here switch the active NameNode: they must not run beside other tests that do.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.pipeline.harness import write_config

ROOT = Path(__file__).resolve().parents[3]
DEVSTACK = ROOT / "deploy" / "devstack" / "devstack"


def devstack(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEVSTACK), *args], capture_output=True,
                          text=True, timeout=timeout)


def _checked(*args: str, timeout: float = 300) -> str:
    out = devstack(*args, timeout=timeout)
    assert out.returncode == 0, f"devstack {' '.join(args)}: {out.stderr[-3000:]}"
    return out.stdout


@dataclass
class HaStack:
    """The HA dev stack as a daemon and a test see it."""

    env: dict[str, str]
    events: list[str] = field(default_factory=list)
    """What the test did to the NameNodes, in order (for failure messages)."""

    # The names `tests.integration.pipeline.harness.write_config` reads.
    @property
    def namenode(self) -> str:
        return self.env["HDFS_NAMENODE"]

    @property
    def namenodes(self) -> list[str]:
        return self.env["HDFS_NAMENODE"].split(",")

    @property
    def webhdfs_url(self) -> str:
        return self.env["WEBHDFS_URL"]

    @property
    def hdfs_user(self) -> str:
        return self.env["HDFS_USER"]

    @property
    def kafka_bootstrap(self) -> str:
        return self.env["KAFKA_BOOTSTRAP"]

    @property
    def hadoop_conf_dir(self) -> str:
        return self.env["HADOOP_CONF_DIR"]

    schema_registry_url = ""

    def sections(self) -> dict[str, dict[str, Any]]:
        return {"hdfs": {"hadoop_conf_dir": self.hadoop_conf_dir}}

    # ---- the NameNodes

    def active(self) -> str | None:
        """"nn1" or "nn2" as `devstack status --ha` says, None when neither is active."""
        out = devstack("status", "--ha", timeout=60).stdout
        m = re.search(r"^active\s+(\S+)", out, re.M)
        return m.group(1) if m and m.group(1) in ("nn1", "nn2") else None

    def failover(self, to: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            _checked("failover", "--ha", *(["--to", to] if to else [])).strip().splitlines()[-1])
        self.events.append(f"failover {doc['from']} -> {doc['to']}")
        return doc

    def kill_active(self) -> str:
        doc = json.loads(_checked("kill-active", "--ha").strip().splitlines()[-1])
        self.events.append(f"SIGKILL {doc['killed']}")
        return str(doc["killed"])

    def restart(self, role: str) -> None:
        _checked("restart", "--ha", role, timeout=300)
        self.events.append(f"restart {role}")

    def purge_edits(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(_checked("purge-edits", "--ha").strip().splitlines()[-1])
        self.events.append(f"purge-edits {doc}")
        return doc

    def webhdfs(self) -> Any:
        """An HdfsCLI client of both NameNodes (it tries the next one on a standby's answer)."""
        from hdfs import InsecureClient

        return InsecureClient(self.webhdfs_url, user=self.hdfs_user)

    def daemon_config(self, tmp: Path, *, namenodes_list: bool = False,
                      hdfs: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        """A daemon config for this stack: the NameNodes from `hadoop_conf_dir` (the
        nameservice), or with `namenodes_list` as an `[hdfs] namenodes` list; `webhdfs` is
        both WebHDFS URLs separated by ';'."""
        path = write_config(tmp, self, **kwargs)
        text = path.read_text()
        listed = ", ".join(f'"{a}"' for a in self.namenodes) if namenodes_list else None
        line = f'namenodes = ["{self.namenode}"]\n'
        assert line in text
        text = text.replace(line, f"namenodes = [{listed}]\n" if listed else "")
        if hdfs:
            text = text.replace("[hdfs]\n", "[hdfs]\n" + "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in hdfs.items()), 1)
        path.write_text(text)
        return path


def _env() -> dict[str, str]:
    env: dict[str, str] = json.loads(_checked("env", "--ha", "--json", timeout=60))
    return env


@pytest.fixture(scope="module")
def ha() -> Iterator[HaStack]:
    """The HA stack, its client settings in the environment for the module (then restored:
    the tests of the plain stack that follow read theirs from there)."""
    if devstack("status", "--ha", timeout=60).returncode != 0:
        _checked("up", "--ha", timeout=1200)
    stack = HaStack(_env())
    if stack.active() is None:  # a test that failed half-way may leave no active NameNode
        stack.failover("nn1")
    with pytest.MonkeyPatch.context() as mp:
        # The daemon and the clients started here read the nameservice's client conf.
        for key in ("HADOOP_CONF_DIR", "HDFS_NAMENODE", "WEBHDFS_URL", "HDFS_USER"):
            mp.setenv(key, stack.env[key])
        yield stack


@pytest.fixture
def healthy_pair(ha: HaStack) -> Iterator[HaStack]:
    """Both NameNodes running, one active, before and after the test."""
    _ensure_pair(ha)
    ha.events.clear()
    yield ha
    _ensure_pair(ha)


def _ensure_pair(ha: HaStack) -> None:
    out = devstack("status", "--ha", timeout=60).stdout
    for nn in ("nn1", "nn2"):
        if not re.search(rf"^{nn}\s+running", out, re.M):
            ha.restart(nn)
    if ha.active() is None:
        ha.failover("nn1")


# --------------------------------------------------------------------------- writing files


def put_retrying(client: Any, path: str, data: bytes, timeout: float = 120) -> None:
    """`put` (write `name._COPYING_`, rename into place) that rides out a failover: a failed
    write is written again; a rename whose answer was lost counts when the file is in place."""
    from hdfs.util import HdfsError

    deadline = time.monotonic() + timeout
    tmp = f"{path}._COPYING_"

    def retry(step: str, exc: Exception) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{step} {path} failed for {timeout}s: {exc}") from exc
        time.sleep(0.2)

    while True:
        try:
            client.write(tmp, data, overwrite=True)
            break
        except (HdfsError, requests.RequestException) as exc:
            retry("writing", exc)
    while True:
        try:
            client.rename(tmp, path)
            return
        except (HdfsError, requests.RequestException) as exc:
            try:
                if (client.status(path, strict=False) is not None
                        and client.status(tmp, strict=False) is None):
                    return  # renamed; the answer was lost in the failover
            except (HdfsError, requests.RequestException):
                pass
            retry("renaming", exc)


class Writer(threading.Thread):
    """Writes files `make(n)` -> (name, bytes) one after the other, `pause` apart, until
    stopped; `written` lists their numbers once each is in place."""

    def __init__(self, client: Any, base: str, make: Any, pause: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.client, self.base, self.make, self.pause = client, base, make, pause
        self.written: list[int] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while not self.stopping.is_set():
                name, data = self.make(n)
                put_retrying(self.client, f"{self.base}/{name}", data)
                self.written.append(n)
                n += 1
                self.stopping.wait(self.pause)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> list[int]:
        self.stopping.set()
        self.join(180)
        assert not self.is_alive(), "the writer did not stop"
        if self.error is not None:
            raise self.error
        return self.written
