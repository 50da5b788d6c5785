"""What runs around the daemon when it is a service: metrics, the HTTP surface and systemd's
notify protocol (READY, RELOADING, STOPPING, WATCHDOG)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from pipeline.daemon import Daemon
from pipeline.http import HttpServer
from pipeline.metrics import Metrics
from pipeline.sdnotify import SystemdHook, SystemdNotifier

log = structlog.get_logger("hdfs2kafka.service")


@contextlib.asynccontextmanager
async def attach(daemon: Daemon) -> AsyncIterator[None]:
    metrics = Metrics(daemon)
    daemon.hooks.append(metrics)
    server = HttpServer(daemon, metrics, daemon.config.daemon.http)
    await server.start()  # HttpBindError when the address is taken: before anything else starts
    log.info("http listening", address=server.url,
             endpoints=["/metrics", "/status", "/healthz", "/readyz"])
    notifier = SystemdNotifier()
    daemon.hooks.append(SystemdHook(notifier, daemon))
    tasks = [asyncio.create_task(notifier.watchdog_loop(), name="watchdog"),
             asyncio.create_task(_poll_namenode_txid(daemon), name="edit-lag")]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


async def _poll_namenode_txid(daemon: Daemon, interval: float = 5.0) -> None:
    """Keep the NameNode's current txid fresh for the edit-stream lag."""
    while True:
        await asyncio.sleep(interval)
        client = daemon.namenode
        if client is None or daemon.config.hdfs.detector != "inotify":
            continue
        try:
            daemon.namenode_txid = await client.get_current_txid()
        except Exception as exc:  # lag is informative; the tailer reports real failures
            log.debug("could not read the NameNode txid", error=str(exc))
