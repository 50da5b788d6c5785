"""The sd_notify client against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import config as config_mod
from pipeline.daemon import Daemon
from pipeline.sdnotify import SystemdHook, SystemdNotifier


class FakeSystemd:
    """A bound notify socket that records every datagram with its arrival time and sender pid."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> tuple[bytes, int]:
        """One datagram and the pid the kernel says sent it (what NotifyAccess=main checks)."""
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("3i", payload[: struct.calcsize("3i")])
        return data, pid

    def datagram(self) -> bytes:
        return self.recv()[0]

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[tuple[FakeSystemd, str]]:
    # A short directory: socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        path = str(Path(d) / "notify")
        fake = FakeSystemd(path)
        try:
            yield fake, path
        finally:
            fake.close()


def test_every_message_is_the_exact_datagram(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready() is True
    data, pid = fake.recv()
    assert data == b"READY=1"
    assert pid == os.getpid()
    n.ready(status="streaming 2 source(s)")
    assert fake.datagram() == b"READY=1\nSTATUS=streaming 2 source(s)"
    n.stopping()
    assert fake.datagram() == b"STOPPING=1"
    n.stopping(status="draining")
    assert fake.datagram() == b"STOPPING=1\nSTATUS=draining"
    n.status("line one\nline two")
    assert fake.datagram() == b"STATUS=line one line two"
    n.watchdog()
    assert fake.datagram() == b"WATCHDOG=1"
    n.extend_timeout(90.5)
    assert fake.datagram() == b"EXTEND_TIMEOUT_USEC=90500000"
    assert fake.nothing_pending()
    n.close()


def test_reloading_carries_the_monotonic_clock(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = fake.datagram().split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after
    n.close()


def test_abstract_socket() -> None:
    name = f"hdfs2kafka-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": f"@{name}"})
        assert n.ready() is True
        assert fake.datagram() == b"READY=1"
        n.close()
    finally:
        fake.close()


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
        n = SystemdNotifier({**env, "WATCHDOG_USEC": "30000000"})
        assert not n.enabled
        assert n.ready() is False
        assert n.reloading() is False
        assert n.stopping() is False
        assert n.status("x") is False
        assert n.watchdog() is False
        assert n.watchdog_interval() is None
        await asyncio.wait_for(n.watchdog_loop(), 1.0)  # returns at once


def test_undeliverable_notification_is_dropped_not_raised() -> None:
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        n = SystemdNotifier({"NOTIFY_SOCKET": str(Path(d) / "nobody-listens")})
        assert n.ready() is False
        assert n.watchdog() is False
        n.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    sock = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    assert SystemdNotifier({**sock, "WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    assert SystemdNotifier({**sock, "WATCHDOG_USEC": "30000000",
                            "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 15.0
    # Inherited from a parent service: meant for another process.
    assert SystemdNotifier({**sock, "WATCHDOG_USEC": "30000000",
                            "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval() is None
    assert SystemdNotifier({**sock, "WATCHDOG_USEC": "0"}).watchdog_interval() is None
    assert SystemdNotifier({**sock, "WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert SystemdNotifier(sock).watchdog_interval() is None


async def test_watchdog_loop_pings_from_the_event_loop_and_stops_when_it_is_stuck(
        systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # ping every 50 ms
    assert n.watchdog_interval() == 0.05
    arrivals: list[float] = []
    done = threading.Event()

    def receive() -> None:
        fake.sock.settimeout(0.05)
        while not done.is_set():
            try:
                data = fake.sock.recv(4096)
            except TimeoutError:
                continue
            assert data == b"WATCHDOG=1"
            arrivals.append(time.monotonic())

    receiver = threading.Thread(target=receive)
    receiver.start()
    task = asyncio.create_task(n.watchdog_loop())
    try:
        await asyncio.sleep(0.5)
        healthy = len(arrivals)
        stuck_from = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 -- the point: a blocked loop runs no task, sends no ping
        stuck_until = time.monotonic()
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        done.set()
        receiver.join()
        n.close()
    assert healthy >= 6
    during = [t for t in arrivals if stuck_from + 0.01 < t < stuck_until]
    assert during == []
    assert any(t > stuck_until for t in arrivals)  # pings resume once the loop runs again


class _Sources:
    def __init__(self, n: int) -> None:
        self.sources = {f"s{i}": object() for i in range(n)}


def test_hook_tells_systemd_about_the_daemon_life(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    hook = SystemdHook(SystemdNotifier({"NOTIFY_SOCKET": path}), _Sources(2))
    hook.on_ready()
    assert fake.datagram() == b"READY=1\nSTATUS=streaming 2 source(s)"
    hook.on_reloading()
    assert fake.datagram().startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    hook.on_reload_result(False)
    hook.on_ready()
    assert fake.datagram() == (b"READY=1\nSTATUS=streaming 2 source(s); last reload refused, "
                               b"previous registry kept (see the log)")
    hook.on_reloading()
    fake.datagram()
    hook.on_reload_result(True)
    hook.on_ready()
    assert fake.datagram() == b"READY=1\nSTATUS=streaming 2 source(s)"
    hook.on_stopping()
    assert fake.datagram() == b"STOPPING=1\nSTATUS=stopping: committing the open transaction"
    assert fake.nothing_pending()


CONFIG = """
[daemon]
instance_id = "edge-01"

[hdfs]
namenodes = ["127.0.0.1:8020"]
webhdfs = "http://127.0.0.1:9870"
user = "hdfs"

[kafka]
bootstrap = "127.0.0.1:9092"

[[sources]]
name = "clicks"
path = "/data/clicks/*.parquet"
topic = "clicks"
"""


async def test_daemon_reload_and_stop_are_bracketed_for_systemd(
        systemd: tuple[FakeSystemd, str], tmp_path: Path) -> None:
    fake, path = systemd
    cfg_file = tmp_path / "hdfs2kafka.toml"
    cfg_file.write_text(CONFIG)
    daemon = Daemon(config_mod.load(cfg_file))
    daemon.hooks.append(SystemdHook(SystemdNotifier({"NOTIFY_SOCKET": path}), daemon))

    cfg_file.write_text(CONFIG.replace('topic = "clicks"', 'topic = "clicks"\nformat = "csv"'))
    await daemon.reload()  # refused: the old registry stays, and systemd leaves "reloading"
    assert fake.datagram().startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert fake.datagram().startswith(b"READY=1\nSTATUS=streaming 1 source(s); last reload refused")

    cfg_file.write_text(CONFIG + CONFIG[CONFIG.index("[[sources]]"):].replace("clicks", "views"))
    await daemon.reload()
    assert fake.datagram().startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert fake.datagram() == b"READY=1\nSTATUS=streaming 2 source(s)"

    daemon.request_stop()
    assert fake.datagram() == b"STOPPING=1\nSTATUS=stopping: committing the open transaction"
    assert fake.nothing_pending()
