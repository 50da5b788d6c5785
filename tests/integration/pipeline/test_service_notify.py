"""`hdfs2kafka run` under a stand-in for systemd: the notify protocol of Type=notify, end to end.

The daemon runs as a real process against the dev stack with NOTIFY_SOCKET pointing at a socket
this test holds; every datagram must come from the daemon's own pid (NotifyAccess=main).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ROOT, write_config

CREDS = struct.calcsize("3i")


class NotifySocket:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        self.received: list[tuple[float, int, bytes]] = []  # arrival, sender pid, datagram

    def next(self, timeout: float) -> tuple[int, bytes] | None:
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDS))
        except TimeoutError:
            return None
        pid = next(struct.unpack("3i", d[:CREDS])[0] for lvl, kind, d in anc
                   if lvl == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        self.received.append((time.monotonic(), pid, data))
        return pid, data

    def wait_for(self, prefix: bytes, timeout: float, proc: subprocess.Popen[bytes]) -> bytes:
        """The first datagram other than WATCHDOG=1, which must start with `prefix`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.next(min(1.0, max(0.01, deadline - time.monotonic())))
            if got is None:
                assert proc.poll() is None, f"daemon exited with {proc.returncode}"
                continue
            if got[1] == b"WATCHDOG=1":
                continue
            assert got[1].startswith(prefix), f"expected {prefix!r}, got {got[1]!r}"
            return got[1]
        raise AssertionError(f"no {prefix!r} within {timeout}s; got {self.received}")


@pytest.fixture
def notify() -> Iterator[tuple[NotifySocket, str]]:
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        path = str(Path(d) / "notify")
        ns = NotifySocket(path)
        try:
            yield ns, path
        finally:
            ns.sock.close()


def test_ready_after_recovery_reload_bracketed_stopping_and_a_fed_watchdog(
        stack, unique: str, tmp_path: Path, notify: tuple[NotifySocket, str]) -> None:
    ns, path = notify
    source = {"name": "rows", "path": f"/tests/notify/{unique}/*", "topic": f"rows-{unique}",
              "start_from": "latest"}
    cfg = write_config(tmp_path, stack, instance_id=f"it-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[dict(source)])
    good = cfg.read_text()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        ns.wait_for(b"READY=1", 120, proc)
        assert "ready: recovery done" in log.read_text()  # READY=1 only once recovered

        proc.send_signal(signal.SIGHUP)
        reloading = ns.wait_for(b"RELOADING=1\nMONOTONIC_USEC=", 30, proc)
        assert int(reloading.split(b"=")[-1]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        ns.wait_for(b"READY=1", 30, proc)

        # A config that does not validate: refused, and systemd still leaves "reloading".
        cfg.write_text(good.replace('start_from = "latest"', 'start_from = "yesterday"'))
        proc.send_signal(signal.SIGHUP)
        ns.wait_for(b"RELOADING=1", 30, proc)
        ns.wait_for(b"READY=1", 30, proc)
        assert proc.poll() is None
        cfg.write_text(good)

        # The watchdog is fed every half interval while the loop runs.
        start = time.monotonic()
        while time.monotonic() - start < 3:
            ns.next(0.5)
        pings = [t for t, _, d in ns.received if d == b"WATCHDOG=1" and t >= start]
        assert len(pings) >= 4

        proc.send_signal(signal.SIGTERM)
        ns.wait_for(b"STOPPING=1", 30, proc)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert {pid for _, pid, _ in ns.received} == {proc.pid}, "NotifyAccess=main would drop these"
