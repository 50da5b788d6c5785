"""What runs around the daemon when it is a service: metrics, the HTTP surface and systemd's
notify protocol (READY, RELOADING, STOPPING, WATCHDOG)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from pipeline.daemon import Daemon
from pipeline.http import HttpServer
from pipeline.metrics import Metrics

log = structlog.get_logger("hdfs2kafka.service")


class _SystemdHook:
    def __init__(self, notifier: Any) -> None:
        self.notifier = notifier

    def on_ready(self) -> None:
        self.notifier.ready()

    def on_reloading(self) -> None:
        self.notifier.reloading()

    def on_stopping(self) -> None:
        self.notifier.stopping()


@contextlib.asynccontextmanager
async def attach(daemon: Daemon) -> AsyncIterator[None]:
    metrics = Metrics(daemon)
    daemon.hooks.append(metrics)
    server = HttpServer(daemon, metrics, daemon.config.daemon.http, daemon.config.daemon.admin_token)
    await server.start()
    log.info("http listening", address=f"http://{server.host}:{server.port}",
             endpoints=["/metrics", "/status", "/healthz", "/readyz"])
    watchdog: asyncio.Task[None] | None = None
    lag_task = asyncio.create_task(_poll_namenode_txid(daemon), name="edit-lag")
    try:
        from pipeline.sdnotify import SystemdNotifier
    except ImportError:
        SystemdNotifier = None  # type: ignore[assignment,misc]
    if SystemdNotifier is not None:
        notifier = SystemdNotifier()
        daemon.hooks.append(_SystemdHook(notifier))
        watchdog = asyncio.create_task(notifier.watchdog_loop(), name="watchdog")
    try:
        yield
    finally:
        for t in (watchdog, lag_task):
            if t is not None:
                t.cancel()
        await server.stop()


async def _poll_namenode_txid(daemon: Daemon, interval: float = 5.0) -> None:
    """Keep the NameNode's current txid fresh for the edit-stream lag."""
    while True:
        await asyncio.sleep(interval)
        client = daemon._namenode
        if client is None or daemon.config.hdfs.detector != "inotify":
            continue
        try:
            daemon.namenode_txid = await client.get_current_txid()
        except Exception as exc:  # lag is informative; the tailer reports real failures
            log.debug("could not read the NameNode txid", error=str(exc))
