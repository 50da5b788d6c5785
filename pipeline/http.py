"""The HTTP surface: /metrics, /status, /healthz, /readyz and the admin verbs, on one aiohttp
server bound to loopback by default, over TLS when `http_tls_cert` and `http_tls_key` are set.
Admin verbs need the bearer token when one is set (the config refuses a non-loopback address
without one), and no answer carries a secret (`/status` passes through `secret.redact`).

It must never cost the daemon its streaming: idle connections are closed after
IDLE_TIMEOUT_S, at most MAX_CONNECTIONS are open at once (more are answered 503 and closed),
request bodies are parsed with a depth limit and finite numbers only, and every answer,
errors included, is JSON (or the Prometheus text format for /metrics).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web

from pipeline import looplag
from pipeline.secret import redact

if TYPE_CHECKING:
    from pipeline.daemon import Daemon
    from pipeline.metrics import Metrics

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
IDLE_TIMEOUT_S = 15.0  # a connection with no request in progress is closed after this
MAX_CONNECTIONS = 256
_BUSY_BODY = b'{"error": "too many open connections; try again"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))

log = structlog.get_logger("hdfs2kafka.http")

# Responses never carry NaN or Infinity, which are not JSON: a bug shows as a 500, not as a
# document clients cannot parse.
_dumps = functools.partial(json.dumps, allow_nan=False)


class HttpBindError(OSError):
    """The HTTP address cannot be listened on (in use, not an address of this machine)."""


class HttpTlsError(HttpBindError):
    """The TLS certificate or key cannot be loaded (changed or removed since validation)."""


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(doc, status=status, headers=headers, dumps=_dumps)


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return _json({"error": (exc.text or exc.reason).strip()}, exc.status, headers)
    except Exception:
        log.exception("http handler failed", method=request.method, path=request.path)
        return _json({"error": "internal error; see the daemon's log"}, 500)


class _Busy(asyncio.Protocol):
    """Answers a connection over the limit with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


def namenode_document(daemon: Daemon) -> dict[str, Any]:
    """Which NameNode the daemon's calls go to and how often that changed (HA failovers)."""
    nn = daemon.namenode
    if nn is None:  # no NameNode client yet (before the first life)
        return {"active": None, "id": None, "active_since_unix": None, "addresses": [],
                "failovers": 0, "connects": 0}
    return {"active": nn.active, "id": nn.name_of(nn.active),
            "active_since_unix": round(nn.active_since_unix, 3) if nn.active_since_unix else None,
            "addresses": list(nn.addresses), "failovers": nn.active_changes,
            "connects": nn.connects}


def group_document(daemon: Daemon) -> dict[str, Any]:
    """This member's part of its group: the shards it streams, of how many, in which generation."""
    m = getattr(daemon, "membership", None)
    current = m.current if m is not None else None
    flow = daemon.flow
    return {"group": daemon.config.daemon.group_name, "shards": daemon.shards_total,
            "shards_streaming": list(flow.assignment.shards) if flow is not None else [],
            "shards_assigned": list(current.shards) if current is not None else None,
            "generation": current.generation if current is not None else None,
            "held": dict(current.held) if current is not None and current.held else None,
            "registry": m.assignor.info.get("registry") if m is not None else None,
            "rebalances": m.rebalances if m is not None else 0,
            "last_rebalance_s": round(m.last_rebalance_s, 3)
            if m is not None and m.last_rebalance_s is not None else None}


def status_document(daemon: Daemon) -> dict[str, Any]:
    flow = daemon.flow
    files = []
    if flow is not None:
        for p in flow.pool.in_flight.values():
            files.append({"source": p.source, "path": p.path, "file_id": p.file_id,
                          "rows_done": p.rows_done, "rows_total": p.rows_total,
                          "bytes_total": p.size,
                          "position": p.position, "worker": p.worker})
    stats = daemon.stats
    sources = []
    for name, rt in daemon.sources.items():
        c = rt.config
        sources.append({
            "name": name, "path": c.path, "topic": c.topic, "format": c.format,
            "state": "failed" if rt.failed else "paused" if rt.paused else "streaming",
            "failed": rt.failed,
            "rows_per_second_limit": daemon.limiter.rows_rate(name),
            "bytes_per_second_limit": daemon.limiter.bytes_rate(name),
            "rows_committed": stats.rows.get(name, 0),
            "files_done": stats.files_done.get(name, 0),
            "files_quarantined": stats.files_quarantined.get(name, 0),
            "files_detected": rt.files_detected,
        })
    lag = None
    if daemon.namenode_txid is not None and daemon.edit_txid is not None:
        lag = max(0, daemon.namenode_txid - daemon.edit_txid)
    doc: dict[str, Any] = {
        "instance_id": daemon.config.daemon.instance_id,
        "ready": daemon.ready,
        "uptime_s": round(time.time() - daemon.started_unix, 1),
        "workers": daemon.workers,
        "workers_busy": flow.pool.busy if flow else 0,
        "queue_depth": flow.work_queue.qsize() if flow else 0,
        "edit_stream": {"txid": daemon.edit_txid, "namenode_txid": daemon.namenode_txid, "lag": lag,
                        "last_batch_age_s": round(time.time() - daemon.last_edit_batch_unix, 3)
                        if daemon.last_edit_batch_unix else None},
        "namenode": namenode_document(daemon),
        "group": group_document(daemon),
        "transactions": {"committed": stats.transactions,
                         "last_commit_unix": stats.last_commit_unix or None},
        "sources": sources,
        "files_in_flight": files,
        "last_errors": daemon.last_errors[-10:],
    }
    # The event loop's largest stall since start (pipeline/looplag.py), once its monitor runs.
    loop_lag = looplag.status_document(getattr(daemon, "loop_lag", None))
    if loop_lag is not None:
        doc["event_loop"] = loop_lag
    return doc


class HttpServer:
    """The daemon's HTTP surface. The admin token is read from the daemon's config at each
    request, so a reload that rotates it takes effect at once; the TLS certificate and key are
    read when it starts listening."""

    def __init__(self, daemon: Daemon, metrics: Metrics, bind: str) -> None:
        self.daemon = daemon
        self.metrics = metrics
        host, _, port = bind.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.ssl_context: ssl.SSLContext | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        app = web.Application(middlewares=[_json_errors])
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
        """Listen; raise HttpBindError (one line, no traceback needed) if the address is taken."""
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        cfg = self.daemon.config.daemon
        try:
            self.ssl_context = tls_context(cfg.http_tls_cert, cfg.http_tls_key)
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise HttpTlsError(exc.errno, f"cannot load daemon.http_tls_cert {cfg.http_tls_cert} and "
                                          f"daemon.http_tls_key {cfg.http_tls_key}: {reason}") from None
        try:
            # A TLS handshake that never finishes holds no connection slot yet: bound it too.
            self._listener = await loop.create_server(
                self._protocol, self.host, self.port, reuse_address=True, ssl=self.ssl_context,
                ssl_handshake_timeout=IDLE_TIMEOUT_S if self.ssl_context else None)
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise HttpBindError(exc.errno, f"cannot listen on {self.host}:{self.port}: "
                                           f"{exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        if len(server.connections) >= MAX_CONNECTIONS:
            return _Busy()
        return server()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the open connections too
        if self._listener is not None:
            await self._listener.wait_closed()

    # ---- read-only

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_status(self, request: web.Request) -> web.Response:
        return _json(redact(status_document(self.daemon)))

    async def get_healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def get_readyz(self, request: web.Request) -> web.Response:
        if self.daemon.ready:
            return _json({"ready": True})
        return _json({"ready": False, "why": "recovering: reading the ledger"}, status=503)

    # ---- admin

    def _authorize(self, request: web.Request) -> None:
        token = self.daemon.config.daemon.admin_token
        if not token:
            return
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), b"Bearer " + token.reveal().encode()):
            raise web.HTTPUnauthorized(text="admin verbs need 'Authorization: Bearer <admin_token>'",
                                       headers={"WWW-Authenticate": "Bearer"})

    def _source(self, request: web.Request, allow_global: bool = False) -> str:
        name = request.match_info["name"]
        if name == "*" and allow_global:
            return name
        if name not in self.daemon.sources:
            raise web.HTTPNotFound(text=f"no source named {name!r}")
        return name

    async def _body(self, request: web.Request) -> dict[str, Any]:
        # orjson refuses NaN, Infinity, numbers that overflow a double (1e309) and nesting
        # deeper than 1024, each as a decode error.
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"body must be JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def put_rate(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request, allow_global=True)
        body = await self._body(request)
        limits: dict[str, float | None] = {}
        for key in ("rows_per_second", "bytes_per_second"):
            v = body.get(key)
            if v is not None and not _positive_finite(v):
                raise web.HTTPBadRequest(text=f"{key} must be a positive finite number or null")
            limits[key] = None if v is None else float(v)
        self.daemon.set_rate(name, limits["rows_per_second"], limits["bytes_per_second"])
        return _json({"source": name, **limits})

    async def post_pause(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request)
        self.daemon.pause(name, True)
        return _json({"source": name, "paused": True})

    async def post_resume(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = self._source(request)
        self.daemon.pause(name, False)
        return _json({"source": name, "paused": False})

    async def put_workers(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._body(request)
        n = body.get("workers")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
            raise web.HTTPBadRequest(text="workers must be an integer from 1 to 256")
        self.daemon.set_workers(n)
        return _json({"workers": n})


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from PEM files (None: plain HTTP). The config has checked that
    they load; a file changed since raises ssl.SSLError, an OSError."""
    if not cert or not key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _positive_finite(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(float(v)) and v > 0
    except OverflowError:  # an integer too large for a double
        return False
