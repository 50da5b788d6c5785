"""Fixtures for hdfswatch against real NameNodes.

`stack` (tests/conftest.py) is the shared dev stack: never restarted or put in safe mode here.
`private_hdfs` is a second HDFS (NameNode + DataNode) started from the same jars with its own
state directory and ports, for the tests that restart the NameNode or make it purge edits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hdfswatch_support import DEVSTACK, Namespace, PrivateHdfs, free_ports

from hdfswatch.namenode import NameNodeClient


@pytest.fixture
async def nn(stack) -> AsyncIterator[NameNodeClient]:  # type: ignore[no-untyped-def]
    """A NameNode client of the shared dev stack, as its superuser."""
    async with NameNodeClient([stack.namenode], stack.hdfs_user, retry_for=30) as client:
        yield client


@pytest.fixture
def ns(nn: NameNodeClient) -> Namespace:
    return Namespace(nn)


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
