"""Fixtures shared by the integration tests.

`private_hdfs` is a second HDFS (NameNode + DataNode) started from the dev stack's jars with
its own state directory and ports, for the tests that restart the NameNode or make it purge
edits (an edit-stream gap). The shared `stack` is never restarted or put in safe mode for that.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DEVSTACK = Path(__file__).resolve().parents[2] / "deploy" / "devstack" / "devstack"


def free_ports(n: int) -> list[int]:
    """`n` ports that are free now, below the ephemeral range (32768+) so that no outgoing
    connection takes one before the server binds it."""
    rng = random.Random()
    while True:
        base = rng.randrange(20000, 32000 - n)
        ports = list(range(base, base + n))
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return ports
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


@dataclass
class PrivateHdfs:
    """A dedicated single-node HDFS that tests may restart and checkpoint."""

    env: dict[str, str]
    namenode: str
    webhdfs_url: str
    user: str

    def ctl(self, *args: str, timeout: float = 300) -> None:
        subprocess.run([sys.executable, str(DEVSTACK), *args], env=self.env, check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL)

    def restart_namenode(self) -> None:
        self.ctl("restart", "namenode")


def _private_env(home: Path, main_home: Path) -> dict[str, str]:
    rpc, http, dn, dn_http, dn_ipc = free_ports(5)
    env = dict(os.environ)
    env.update({
        "DEVSTACK_HOME": str(home),
        "DEVSTACK_LIB": os.environ.get("DEVSTACK_LIB") or str(main_home / "lib"),
        "DEVSTACK_NN_RPC_PORT": str(rpc),
        "DEVSTACK_NN_HTTP_PORT": str(http),
        "DEVSTACK_DN_PORT": str(dn),
        "DEVSTACK_DN_HTTP_PORT": str(dn_http),
        "DEVSTACK_DN_IPC_PORT": str(dn_ipc),
        # One checkpoint kept, old segments purged at the next saveNamespace: lets a test make
        # the edit log forget transactions (a gap).
        "DEVSTACK_HDFS_SITE": "dfs.namenode.num.checkpoints.retained=1,"
                              "dfs.namenode.num.extra.edits.retained=2,"
                              "dfs.namenode.max.extra.edits.segments.retained=1",
    })
    return env


def _down(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(DEVSTACK), "down"], env=env, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def private_hdfs(stack, tmp_path_factory) -> Iterator[PrivateHdfs]:  # type: ignore[no-untyped-def]
    main_home = Path(os.environ.get("DEVSTACK_HOME")
                     or Path.home() / ".cache" / "hdfs2kafka" / "devstack")
    home = tmp_path_factory.mktemp("private-hdfs")
    hdfs: PrivateHdfs | None = None
    for attempt in range(3):
        env = _private_env(home, main_home)
        candidate = PrivateHdfs(env=env, namenode=f"127.0.0.1:{env['DEVSTACK_NN_RPC_PORT']}",
                                webhdfs_url=f"http://127.0.0.1:{env['DEVSTACK_NN_HTTP_PORT']}",
                                user=stack.hdfs_user)
        try:
            candidate.ctl("up", "--only", "hdfs")
            hdfs = candidate
            break
        except subprocess.CalledProcessError:
            _down(env)  # e.g. a port taken meanwhile: try again with other ports
            if attempt == 2:
                raise
    assert hdfs is not None
    try:
        yield hdfs
    finally:
        _down(hdfs.env)
        shutil.rmtree(home, ignore_errors=True)
