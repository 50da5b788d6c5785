"""Shared test wiring.

Tests under tests/unit are pure (no servers); those marked `tools` also run a tool that `make
tools` installs, so they are left out of `make unit` (`-m unit`). Tests under tests/integration
use the real HDFS and Kafka of the dev stack, which the `stack` fixture starts when it is not
already up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVSTACK = ROOT / "deploy" / "devstack" / "devstack"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif parts[0] == "unit" and item.get_closest_marker("tools") is None:
            item.add_marker(pytest.mark.unit)


@dataclass(frozen=True)
class Stack:
    """The running dev stack: addresses as `devstack env` prints them."""

    namenode: str
    webhdfs_url: str
    hdfs_user: str
    kafka_bootstrap: str
    hadoop_conf_dir: str
    devstack: Path
    schema_registry_url: str = ""

    def env(self) -> dict[str, str]:
        return {
            "HDFS_NAMENODE": self.namenode,
            "WEBHDFS_URL": self.webhdfs_url,
            "HDFS_USER": self.hdfs_user,
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "HADOOP_CONF_DIR": self.hadoop_conf_dir,
            "SCHEMA_REGISTRY_URL": self.schema_registry_url,
        }

    def ctl(self, *args: str, timeout: float = 300) -> None:
        """Run a devstack subcommand (e.g. `restart namenode`)."""
        subprocess.run([sys.executable, str(self.devstack), *args], check=True, timeout=timeout)


def _devstack_env() -> dict[str, str]:
    out = subprocess.run([sys.executable, str(DEVSTACK), "env"], check=True,
                         capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        elif line.startswith("unset "):  # what the secure stack's env sets and this one has not
            for key in line.split()[1:]:
                os.environ.pop(key, None)
    return env


@pytest.fixture(scope="session")
def stack() -> Stack:
    status = subprocess.run([sys.executable, str(DEVSTACK), "status"], capture_output=True)
    if status.returncode != 0:
        subprocess.run([sys.executable, str(DEVSTACK), "up"], check=True, timeout=900)
    env = _devstack_env()
    os.environ.update(env)
    return Stack(
        namenode=env["HDFS_NAMENODE"],
        webhdfs_url=env["WEBHDFS_URL"],
        hdfs_user=env["HDFS_USER"],
        kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
        hadoop_conf_dir=env["HADOOP_CONF_DIR"],
        devstack=DEVSTACK,
        schema_registry_url=env.get("SCHEMA_REGISTRY_URL", ""),
    )


@pytest.fixture(scope="session")
def webhdfs(stack: Stack):  # type: ignore[no-untyped-def]
    """An HdfsCLI client acting as the stack's superuser."""
    from hdfs import InsecureClient

    return InsecureClient(stack.webhdfs_url, user=stack.hdfs_user)


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name unique to this test run, for HDFS paths and Kafka topics."""
    import uuid

    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"
