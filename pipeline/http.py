"""The HTTP surface: /metrics, /status, /healthz, /readyz and the admin verbs, on one aiohttp
server bound to loopback by default. Admin verbs need the bearer token when one is set."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from pipeline.daemon import Daemon
    from pipeline.metrics import Metrics

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


def status_document(daemon: Daemon) -> dict[str, Any]:
    flow = daemon.flow
    files = []
    if flow is not None:
        for p in flow.pool.in_flight.values():
            files.append({"source": p.source, "path": p.path, "file_id": p.file_id,
                          "rows_done": p.rows_done, "rows_total": p.rows_total,
                          "bytes_total": p.size,
                          "position": p.position, "worker": p.worker})
    stats = flow.committer.stats if flow is not None else None
    sources = []
    for name, rt in daemon.sources.items():
        c = rt.config
        sources.append({
            "name": name, "path": c.path, "topic": c.topic, "format": c.format,
            "state": "failed" if rt.failed else "paused" if rt.paused else "streaming",
            "failed": rt.failed,
            "rows_per_second_limit": daemon.limiter.rows_rate(name),
            "bytes_per_second_limit": daemon.limiter.bytes_rate(name),
            "rows_committed": stats.rows.get(name, 0) if stats else 0,
            "files_done": stats.files_done.get(name, 0) if stats else 0,
            "files_quarantined": stats.files_quarantined.get(name, 0) if stats else 0,
            "files_detected": rt.files_detected,
        })
    lag = None
    if daemon.namenode_txid is not None and daemon.edit_txid is not None:
        lag = max(0, daemon.namenode_txid - daemon.edit_txid)
    return {
        "instance_id": daemon.config.daemon.instance_id,
        "ready": daemon.ready,
        "uptime_s": round(time.time() - daemon.started_unix, 1),
        "workers": daemon.workers,
        "workers_busy": flow.pool.busy if flow else 0,
        "queue_depth": flow.work_queue.qsize() if flow else 0,
        "edit_stream": {"txid": daemon.edit_txid, "namenode_txid": daemon.namenode_txid, "lag": lag,
                        "last_batch_age_s": round(time.time() - daemon.last_edit_batch_unix, 3)
                        if daemon.last_edit_batch_unix else None},
        "transactions": {"committed": stats.transactions if stats else 0,
                         "last_commit_unix": stats.last_commit_unix if stats else None},
        "sources": sources,
        "files_in_flight": files,
        "last_errors": daemon.last_errors[-10:],
    }


class HttpServer:
    def __init__(self, daemon: Daemon, metrics: Metrics, bind: str, token: str | None = None) -> None:
        self.daemon = daemon
        self.metrics = metrics
        host, _, port = bind.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.token = token
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.add_routes([
            web.get("/metrics", self.get_metrics),
            web.get("/status", self.get_status),
            web.get("/healthz", self.get_healthz),
            web.get("/readyz", self.get_readyz),
            web.put("/sources/{name}/rate", self.put_rate),
            web.post("/sources/{name}/pause", self.post_pause),
            web.post("/sources/{name}/resume", self.post_resume),
            web.put("/workers", self.put_workers),
        ])
        self.app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- read-only

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(status_document(self.daemon))

    async def get_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_readyz(self, request: web.Request) -> web.Response:
        if self.daemon.ready:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "why": "recovering: reading the ledger"}, status=503)

    # ---- admin

    def _authorize(self, request: web.Request) -> None:
        if not self.token:
            return
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode()):
            raise web.HTTPUnauthorized(text="admin verbs need 'Authorization: Bearer <admin_token>'\n")

    def _source(self, request: web.Request, allow_global: bool = False) -> str:
        name = request.match_info["name"]
        if name == "*" and allow_global:
            return name
        if name not in self.daemon.sources:
            raise web.HTTPNotFound(text=f"no source named {name!r}\n")
        return name

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body must be JSON\n") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object\n")
        return body

    async def put_rate(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request, allow_global=True)
        body = await self._json(request)
        limits = {}
        for key in ("rows_per_second", "bytes_per_second"):
            v = body.get(key)
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or v <= 0):
                raise web.HTTPBadRequest(text=f"{key} must be a positive number or null\n")
            limits[key] = v
        self.daemon.set_rate(name, limits["rows_per_second"], limits["bytes_per_second"])
        return web.json_response({"source": name, **limits})

    async def post_pause(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request)
        self.daemon.pause(name, True)
        return web.json_response({"source": name, "paused": True})

    async def post_resume(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request)
        self.daemon.pause(name, False)
        return web.json_response({"source": name, "paused": False})

    async def put_workers(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json(request)
        n = body.get("workers")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
            raise web.HTTPBadRequest(text="workers must be an integer from 1 to 256\n")
        self.daemon.set_workers(n)
        return web.json_response({"workers": n})
