"""Fixtures shared by the integration tests.

`private_hdfs` is a second HDFS (NameNode + DataNode) started from the dev stack's jars with
its own state directory and ports, for the tests that restart the NameNode or make it purge
edits (an edit-stream gap). The shared `stack` is never restarted or put in safe mode for that.

For fault injection: `toxiproxy` is a Toxiproxy server; `private_kafka` is a second Kafka broker
(same jars, own state and ports) with a FAULTS listener that advertises a Toxiproxy port, so a
client that bootstraps through the proxy stays behind it; `proxied_hdfs` puts proxies in front
of `private_hdfs`'s NameNode RPC and HTTP (WebHDFS) ports. Tests may stall, cut or restart these
freely.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from toxiproxy_api import Proxy, Toxiproxy

ROOT = Path(__file__).resolve().parents[2]
DEVSTACK = ROOT / "deploy" / "devstack" / "devstack"


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

    def pid(self, role: str) -> int:
        """The process id of this stack's `namenode` or `datanode`."""
        return _recorded_pid(self.env, role)


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


def _recorded_pid(env: dict[str, str], role: str) -> int:
    return int((Path(env["DEVSTACK_HOME"]) / "run" / f"{role}.pid").read_text().split()[0])


def _main_home() -> Path:
    return Path(os.environ.get("DEVSTACK_HOME") or Path.home() / ".cache" / "hdfs2kafka" / "devstack")


# --------------------------------------------------------------------------- fault injection


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory) -> Iterator[Toxiproxy]:  # type: ignore[no-untyped-def]
    """A Toxiproxy server on a free port (built once by deploy/tools/install-toxiproxy)."""
    binary = os.environ.get("TOXIPROXY_SERVER") or subprocess.run(
        [str(ROOT / "deploy" / "tools" / "install-toxiproxy")], check=True, capture_output=True,
        text=True, timeout=600).stdout.strip().splitlines()[-1]
    log = tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log"
    for attempt in range(3):
        (port,) = free_ports(1)
        with open(log, "ab") as out:
            proc = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(port)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        api = Toxiproxy(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                api.version()
                break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            proc.kill()
            proc.wait()
            if attempt == 2:
                raise RuntimeError(f"toxiproxy did not start:\n{log.read_text()[-2000:]}")
            continue
        break
    try:
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PrivateKafka:
    """A dedicated Kafka broker that tests may stall, restart or starve of its network.

    `bootstrap` reaches it directly (for the test's own admin and consumers); `proxied_bootstrap`
    goes through `proxy`, and so does every connection a client opened from there (the FAULTS
    listener advertises the proxy's port).
    """

    env: dict[str, str]
    bootstrap: str
    proxied_bootstrap: str
    proxy: Proxy

    def ctl(self, *args: str, timeout: float = 300) -> None:
        subprocess.run([sys.executable, str(DEVSTACK), *args], env=self.env, check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL)

    def pid(self) -> int:
        return _recorded_pid(self.env, "kafka")

    def pause(self) -> None:
        """SIGSTOP the broker: connections stay open, nothing answers (a long GC, a VM stall)."""
        os.kill(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def restart(self) -> None:
        self.resume()  # a stopped JVM never handles the SIGTERM of a clean stop
        self.ctl("restart", "kafka")


@pytest.fixture(scope="session")
def private_kafka(stack, toxiproxy: Toxiproxy, tmp_path_factory) -> Iterator[PrivateKafka]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("private-kafka")
    kafka: PrivateKafka | None = None
    for attempt in range(3):
        port, controller, faults, proxied = free_ports(4)
        env = dict(os.environ)
        env.update({
            "DEVSTACK_HOME": str(home),
            "DEVSTACK_LIB": os.environ.get("DEVSTACK_LIB") or str(_main_home() / "lib"),
            "DEVSTACK_KAFKA_PORT": str(port),
            "DEVSTACK_KAFKA_CONTROLLER_PORT": str(controller),
            "DEVSTACK_KAFKA_FAULTS_PORT": str(faults),
            "DEVSTACK_KAFKA_FAULTS_ADVERTISED_PORT": str(proxied),
            # A transaction left open past its timeout (a stalled client) is aborted within a
            # second instead of ten.
            "DEVSTACK_KAFKA_PROPS": "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
        })
        try:
            proxy = toxiproxy.create("kafka", f"127.0.0.1:{proxied}", f"127.0.0.1:{faults}")
        except Exception:
            if attempt == 2:
                raise
            continue
        candidate = PrivateKafka(env=env, bootstrap=f"127.0.0.1:{port}",
                                 proxied_bootstrap=proxy.listen, proxy=proxy)
        try:
            candidate.ctl("up", "--only", "kafka")
            kafka = candidate
            break
        except subprocess.CalledProcessError:
            _down(env)
            toxiproxy.call("DELETE", "/proxies/kafka")
            if attempt == 2:
                raise
    assert kafka is not None
    try:
        yield kafka
    finally:
        try:
            kafka.resume()
        except (OSError, ValueError):
            pass
        _down(kafka.env)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class ProxiedHdfs:
    """`private_hdfs` behind Toxiproxy: `namenode` and `webhdfs_url` go through `rpc` and `http`.

    WebHDFS reads are redirected by the NameNode to the DataNode's registered address, and a
    DataNode advertises the port it listens on (no separate advertised port, unlike Kafka), so
    on 127.0.0.1 alone DataNode traffic cannot be put behind a proxy: the DataNode is faulted by
    `pause_datanode` (SIGSTOP) and `restart_datanode` instead.
    """

    hdfs: PrivateHdfs
    namenode: str
    webhdfs_url: str
    rpc: Proxy
    http: Proxy

    def pause_datanode(self) -> None:
        os.kill(self.hdfs.pid("datanode"), signal.SIGSTOP)

    def resume_datanode(self) -> None:
        os.kill(self.hdfs.pid("datanode"), signal.SIGCONT)

    def pause_namenode(self) -> None:
        os.kill(self.hdfs.pid("namenode"), signal.SIGSTOP)

    def resume_namenode(self) -> None:
        os.kill(self.hdfs.pid("namenode"), signal.SIGCONT)

    def restart_datanode(self) -> None:
        self.resume_datanode()
        self.hdfs.ctl("restart", "datanode")


@pytest.fixture(scope="session")
def proxied_hdfs(private_hdfs: PrivateHdfs, toxiproxy: Toxiproxy) -> Iterator[ProxiedHdfs]:
    def upstream(address: str) -> str:
        return address.removeprefix("http://")

    for attempt in range(3):
        rpc_port, http_port = free_ports(2)
        try:
            rpc = toxiproxy.create("namenode-rpc", f"127.0.0.1:{rpc_port}", upstream(private_hdfs.namenode))
            http = toxiproxy.create("namenode-http", f"127.0.0.1:{http_port}",
                                    upstream(private_hdfs.webhdfs_url))
            break
        except Exception:
            for name in ("namenode-rpc", "namenode-http"):
                try:
                    toxiproxy.call("DELETE", f"/proxies/{name}")
                except Exception:
                    pass
            if attempt == 2:
                raise
    proxied = ProxiedHdfs(hdfs=private_hdfs, namenode=rpc.listen, webhdfs_url=f"http://{http.listen}",
                          rpc=rpc, http=http)
    try:
        yield proxied
    finally:
        for role in ("namenode", "datanode"):
            try:
                os.kill(private_hdfs.pid(role), signal.SIGCONT)
            except (OSError, ValueError):
                pass
