"""systemd's notify protocol (sd_notify), spoken directly: no libsystemd, no dependency.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a datagram socket: a path, or an abstract
name written with a leading '@') and, with `WatchdogSec=`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
The daemon tells it READY=1 once recovery is done, RELOADING=1 / READY=1 around a SIGHUP
reload, STOPPING=1 when it begins to drain, and WATCHDOG=1 at half the watchdog interval.

The watchdog is fed by a task on the daemon's own event loop (`watchdog_loop`), not by a
thread: a loop that is blocked or starved stops pinging, and systemd restarts the service.

Outside systemd (NOTIFY_SOCKET unset) every method is a no-op, so callers never branch on it.
A notification that cannot be delivered is dropped with a warning: telling systemd is never
worth stalling or crashing the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import structlog

log = structlog.get_logger("hdfs2kafka.sdnotify")


class SystemdNotifier:
    """A client of systemd's notify socket, configured from the environment it is given."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self.address is not None

    # ---- the protocol's messages

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete; optionally with a STATUS= line."""
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """A reload begins. MONOTONIC_USEC is what systemd >= 253 requires with
        Type=notify-reload; older versions and Type=notify ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """The daemon begins its graceful stop (drain, commit, close)."""
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status that `systemctl status` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start (or stop) timeout fires (systemd >= 236)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> bool:
        """Keep-alive ping; systemd restarts the service when pings stop for WatchdogSec."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked for."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the running event loop until cancelled.

        Start it as soon as the loop runs, before recovery: systemd's watchdog counts from the
        start of the service. Returns at once when no watchdog is asked for.
        """
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    # ---- transport

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=value` lines; True when it was handed to the socket."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(fields).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue must not block the event loop: drop the message instead.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self.address)
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("systemd notification not delivered", socket=self._printable(),
                            message=payload.decode(errors="replace"), error=str(exc))
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _printable(self) -> str:
        addr = self.address
        if isinstance(addr, bytes):
            return "@" + addr[1:].decode(errors="replace")
        return str(addr)


class SystemdHook:
    """Tells systemd about the daemon's life: append to `Daemon.hooks`.

    The daemon calls `on_ready` after recovery and after every reload (accepted or refused),
    `on_reloading` before re-reading its config, `on_reload_result(ok)` once the new file is
    applied or refused, and `on_stopping` when a stop is requested.
    """

    def __init__(self, notifier: SystemdNotifier, daemon: Any = None) -> None:
        self.notifier = notifier
        self.daemon = daemon
        self._reload_refused = False

    def on_ready(self) -> None:
        sources = getattr(self.daemon, "sources", None)
        status = f"streaming {len(sources)} source(s)" if sources is not None else "streaming"
        if self._reload_refused:
            status += "; last reload refused, previous registry kept (see the log)"
        self.notifier.ready(status=status)

    def on_reloading(self) -> None:
        self._reload_refused = False
        self.notifier.reloading()

    def on_reload_result(self, ok: bool) -> None:
        self._reload_refused = not ok

    def on_stopping(self) -> None:
        self.notifier.stopping(status="stopping: committing the open transaction")


def _address(value: str) -> str | bytes | None:
    """NOTIFY_SOCKET as a socket address: '/path' or '@abstract' (Linux abstract namespace)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    # Unset, empty, or a transport this client does not speak (systemd >= 254's vsock:).
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (sd_watchdog_enabled's rules)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec


def _one_line(text: str) -> str:
    return " ".join(text.split())
