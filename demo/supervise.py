"""The daemon as a subprocess of the demo: `hdfs2kafka run` in a session of its own, its output
in a log file, stopped in order (SIGTERM, then a bounded wait, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


class DaemonProcess:
    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        # Its own session: Ctrl-C reaches the demo only, which then stops the daemon in order.
        # Should the demo itself die, the daemon gets SIGTERM rather than run on alone.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_term_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    def exit_code(self) -> int | None:
        """The daemon's exit code, None while it runs (or before it started)."""
        return self.proc.poll() if self.proc is not None else None

    def exited(self) -> bool:
        return self.exit_code() is not None

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM), if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL if it still runs; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def stop_now(self, timeout: float = 30) -> None:
        """SIGTERM, and SIGKILL after `timeout` seconds: whatever else happened."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []


def _term_with_parent() -> None:
    """In the daemon's process, before exec: SIGTERM when the demo's process goes (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
