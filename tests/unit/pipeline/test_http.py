"""The HTTP surface of a real `Daemon` built from a config file, served by aiohttp's test
server on loopback: the admin verbs, their token, their refusals, /status and /metrics. No
Kafka or HDFS is contacted (the daemon's `run()` is never called)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from config_files import CLICKS, ORDERS, logging_kept, write_config

from pipeline import config as config_mod
from pipeline.daemon import Daemon
from pipeline.http import CONTENT_TYPE_LATEST, HttpServer
from pipeline.metrics import PREFIX, Metrics

TOKEN = "0123456789abcdef" * 4


class Admin:
    """A client of one daemon's HTTP surface, and the daemon behind it."""

    def __init__(self, client: TestClient, daemon: Daemon, path: Path) -> None:
        self.client = client
        self.daemon = daemon
        self.path = path

    async def call(self, method: str, url: str, body: Any = None, token: str | None = None,
                   data: bytes | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        resp: ClientResponse = await self.client.request(method, url, json=body, data=data,
                                                         headers=headers)
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json()

    async def status(self) -> dict[str, Any]:
        status, doc = await self.call("GET", "/status")
        assert status == 200
        return doc  # type: ignore[no-any-return]

    async def source(self, name: str) -> dict[str, Any]:
        return next(s for s in (await self.status())["sources"] if s["name"] == name)

    async def metrics(self) -> str:
        resp = await self.client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return await resp.text()


async def _serve(tmp_path: Path, **daemon: Any) -> AsyncIterator[Admin]:
    path = write_config(tmp_path / "h.toml", daemon=daemon,
                        sources=[CLICKS | {"rows_per_second": 100}, ORDERS])
    d = Daemon(config_mod.load(path))
    metrics = Metrics(d)
    d.hooks.append(metrics)
    server = HttpServer(d, metrics, d.config.daemon.http)
    async with TestClient(TestServer(server.app, host="127.0.0.1")) as client:
        yield Admin(client, d, path)


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with logging_kept():  # a reload configures the process's logging
        yield


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async for a in _serve(tmp_path):
        yield a


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Admin]:
    async for a in _serve(tmp_path, admin_token=TOKEN):
        yield a


ADMIN_CALLS = [("PUT", "/sources/clicks/rate", {"rows_per_second": 5}),
               ("POST", "/sources/clicks/pause", None),
               ("POST", "/sources/clicks/resume", None),
               ("PUT", "/workers", {"workers": 3})]


async def test_without_a_token_the_admin_verbs_are_open_on_loopback(admin: Admin) -> None:
    for method, url, body in ADMIN_CALLS:
        status, doc = await admin.call(method, url, body)
        assert status == 200, (url, doc)


async def test_with_a_token_the_admin_verbs_need_it_and_change_nothing_without(guarded: Admin) -> None:
    for method, url, body in ADMIN_CALLS:
        for token in (None, "wrong", TOKEN + "x"):
            resp = await guarded.client.request(method, url, json=body, headers=(
                {"Authorization": f"Bearer {token}"} if token else {}))
            assert resp.status == 401, url
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer <admin_token>" in (await resp.json())["error"]
    clicks = await guarded.source("clicks")  # the read-only endpoints need no token
    assert (clicks["state"], clicks["rows_per_second_limit"]) == ("streaming", 100)
    assert (await guarded.status())["workers"] == 2
    for method, url, body in ADMIN_CALLS:
        status, _ = await guarded.call(method, url, body, token=TOKEN)
        assert status == 200, url
    for url in ("/healthz", "/metrics"):
        assert (await guarded.client.get(url)).status == 200


async def test_pause_and_resume_show_in_status_and_metrics(admin: Admin) -> None:
    assert await admin.call("POST", "/sources/orders/pause") == (200, {"source": "orders", "paused": True})
    assert (await admin.source("orders"))["state"] == "paused"
    assert (await admin.source("clicks"))["state"] == "streaming"
    assert f'{PREFIX}_source_paused{{source="orders"}} 1.0' in await admin.metrics()
    assert await admin.call("POST", "/sources/orders/resume") == (200, {"source": "orders", "paused": False})
    assert (await admin.source("orders"))["state"] == "streaming"
    assert f'{PREFIX}_source_paused{{source="orders"}} 0.0' in await admin.metrics()


async def test_a_rate_change_applies_at_once_and_null_lifts_it(admin: Admin) -> None:
    status, doc = await admin.call("PUT", "/sources/orders/rate",
                                   {"rows_per_second": 2500, "bytes_per_second": 1e6})
    assert (status, doc) == (200, {"source": "orders", "rows_per_second": 2500.0, "bytes_per_second": 1e6})
    orders = await admin.source("orders")
    assert (orders["rows_per_second_limit"], orders["bytes_per_second_limit"]) == (2500, 1e6)
    text = await admin.metrics()
    assert f'{PREFIX}_rate_limit_rows_per_second{{source="orders"}} 2500.0' in text
    assert f'{PREFIX}_rate_limit_bytes_per_second{{source="orders"}} 1e+06' in text
    # Both limits are set by each call: a missing one is no limit.
    assert await admin.call("PUT", "/sources/orders/rate", {"bytes_per_second": None}) == (
        200, {"source": "orders", "rows_per_second": None, "bytes_per_second": None})
    orders = await admin.source("orders")
    assert (orders["rows_per_second_limit"], orders["bytes_per_second_limit"]) == (None, None)


async def test_the_global_rate_is_set_under_star(admin: Admin) -> None:
    from pipeline.ratelimit import GLOBAL

    status, doc = await admin.call("PUT", "/sources/*/rate", {"rows_per_second": 40_000})
    assert (status, doc["source"], doc["rows_per_second"]) == (200, "*", 40_000)
    assert admin.daemon.limiter.rows_rate(GLOBAL) == 40_000
    assert admin.daemon.limiter.unit_rows_hint("orders", 20_000) == 4_000


async def test_workers_change_shows_in_status(admin: Admin) -> None:
    assert await admin.call("PUT", "/workers", {"workers": 7}) == (200, {"workers": 7})
    assert (await admin.status())["workers"] == 7
    assert admin.daemon.workers == 7


@pytest.mark.parametrize(("method", "url"), [
    ("PUT", "/sources/nope/rate"), ("POST", "/sources/nope/pause"), ("POST", "/sources/nope/resume"),
    ("POST", "/sources/*/pause"),
])
async def test_an_unknown_source_is_404_naming_it(admin: Admin, method: str, url: str) -> None:
    status, doc = await admin.call(method, url, {"rows_per_second": 5})
    name = url.split("/")[2]
    assert (status, doc) == (404, {"error": f"no source named {name!r}"})


@pytest.mark.parametrize("body", [
    {"rows_per_second": 0}, {"rows_per_second": -5}, {"rows_per_second": "fast"},
    {"rows_per_second": True}, {"bytes_per_second": [1]}, {"bytes_per_second": {"per": "s"}},
])
async def test_a_bad_rate_is_400_and_changes_nothing(admin: Admin, body: dict[str, Any]) -> None:
    status, doc = await admin.call("PUT", "/sources/clicks/rate", body)
    assert status == 400
    assert "must be a positive finite number or null" in doc["error"]
    assert (await admin.source("clicks"))["rows_per_second_limit"] == 100


@pytest.mark.parametrize(("data", "error"), [
    (b"rows=5", "body must be JSON"), (b'{"rows_per_second": NaN}', "body must be JSON"),
    (b'{"rows_per_second": 1e400}', "body must be JSON"), (b"[5]", "body must be a JSON object"),
    (b"[" * 2000 + b"]" * 2000, "body must be JSON"),
])
async def test_a_body_that_is_not_a_json_object_is_400(admin: Admin, data: bytes, error: str) -> None:
    for url in ("/sources/clicks/rate", "/workers"):
        status, doc = await admin.call("PUT", url, data=data)
        assert status == 400
        assert doc["error"].startswith(error), doc
    assert (await admin.source("clicks"))["rows_per_second_limit"] == 100


@pytest.mark.parametrize("workers", [0, 257, 2.5, "3", True, None])
async def test_a_bad_worker_count_is_400_and_changes_nothing(admin: Admin, workers: Any) -> None:
    status, doc = await admin.call("PUT", "/workers", {"workers": workers})
    assert (status, doc) == (400, {"error": "workers must be an integer from 1 to 256"})
    assert (await admin.status())["workers"] == 2


async def test_unknown_paths_and_methods_answer_json(admin: Admin) -> None:
    status, doc = await admin.call("GET", "/nowhere")
    assert status == 404 and doc["error"]
    status, doc = await admin.call("GET", "/workers")
    assert status == 405 and doc["error"]


async def test_status_shape_before_the_flow_starts(admin: Admin) -> None:
    doc = await admin.status()
    assert set(doc) == {"instance_id", "ready", "uptime_s", "workers", "workers_busy", "queue_depth",
                        "edit_stream", "namenode", "group", "transactions", "sources",
                        "files_in_flight", "last_errors"}
    assert doc["group"] == {"group": "unit-01", "shards": None, "shards_streaming": [],
                            "shards_assigned": None, "generation": None, "held": None,
                            "registry": None, "rebalances": 0, "last_rebalance_s": None}
    assert doc["namenode"] == {"active": None, "id": None, "active_since_unix": None,
                               "addresses": [], "failovers": 0, "connects": 0}
    assert (doc["instance_id"], doc["ready"], doc["workers"]) == ("unit-01", False, 2)
    assert (doc["workers_busy"], doc["queue_depth"], doc["files_in_flight"]) == (0, 0, [])
    assert doc["edit_stream"] == {"txid": None, "namenode_txid": None, "lag": None, "last_batch_age_s": None}
    assert doc["transactions"] == {"committed": 0, "last_commit_unix": None}
    assert [s["name"] for s in doc["sources"]] == ["clicks", "orders"]  # the file's order
    assert doc["sources"][0] == {
        "name": "clicks", "path": "/data/clicks/**", "topic": "clicks", "format": "parquet",
        "state": "streaming", "failed": None, "rows_per_second_limit": 100, "bytes_per_second_limit": None,
        "rows_committed": 0, "files_done": 0, "files_quarantined": 0, "files_detected": 0}
    assert await admin.call("GET", "/readyz") == (503, {"ready": False, "why": "recovering: reading the ledger"})
    assert await admin.call("GET", "/healthz") == (200, {"ok": True})


async def test_metrics_are_the_prometheus_text_of_every_family(admin: Admin) -> None:
    text = await admin.metrics()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert {f"{PREFIX}_{name}": kind for name, kind in [
        ("rows_produced_total", "counter"), ("files_detected_total", "counter"),
        ("config_reloads_total", "counter"), ("end_to_end_latency_seconds", "histogram"),
        ("ready", "gauge"), ("rate_limit_rows_per_second", "gauge"), ("workers", "gauge"),
    ]}.items() <= types.items()
    assert f"{PREFIX}_ready 0.0" in text.splitlines()
    assert f'{PREFIX}_rate_limit_rows_per_second{{source="clicks"}} 100.0' in text


async def test_the_active_namenode_and_its_failovers_show_in_status_and_metrics(admin: Admin) -> None:
    from hdfswatch.namenode import NameNodeClient

    nn = NameNodeClient(["127.0.0.1:16820", "127.0.0.1:16821"], "etl",
                        names={"127.0.0.1:16820": "nn1", "127.0.0.1:16821": "nn2"})
    admin.daemon.namenode = nn
    assert f"{PREFIX}_namenode_failovers_total 0.0" in (await admin.metrics()).splitlines()
    # What the client notes as calls are answered: nn1, then nn2 after a failover.
    nn._answered("127.0.0.1:16820")
    nn._answered("127.0.0.1:16821")
    doc = (await admin.status())["namenode"]
    assert (doc["active"], doc["id"], doc["failovers"]) == ("127.0.0.1:16821", "nn2", 1)
    assert doc["addresses"] == ["127.0.0.1:16820", "127.0.0.1:16821"]
    assert doc["active_since_unix"] > 0
    lines = (await admin.metrics()).splitlines()
    assert f"{PREFIX}_namenode_failovers_total 1.0" in lines
    assert f'{PREFIX}_namenode_active{{address="127.0.0.1:16821",namenode="nn2"}} 1.0' in lines
    assert not [line for line in lines if "namenode_active{" in line and "16820" in line]


async def test_a_reload_rotates_the_token_and_a_refused_one_keeps_everything(guarded: Admin) -> None:
    new_token = "f" * 64
    write_config(guarded.path, daemon={"admin_token": new_token},
                 sources=[CLICKS | {"rows_per_second": 300}, ORDERS])
    assert await guarded.daemon.reload() is False
    # The old token stops working at once; the new one works; the file's limit applies.
    assert (await guarded.call("POST", "/sources/clicks/pause", token=TOKEN))[0] == 401
    assert (await guarded.call("POST", "/sources/clicks/pause", token=new_token))[0] == 200
    assert (await guarded.source("clicks"))["rows_per_second_limit"] == 300
    assert f'{PREFIX}_config_reloads_total{{result="ok"}} 1.0' in await guarded.metrics()

    # A change that needs a restart: nothing of the file applies, /status names it.
    write_config(guarded.path, daemon={"admin_token": TOKEN}, kafka={"bootstrap": "127.0.0.1:2"},
                 sources=[CLICKS])
    assert await guarded.daemon.reload() is False
    assert (await guarded.call("POST", "/sources/orders/pause", token=new_token))[0] == 200
    doc = await guarded.status()
    assert [s["name"] for s in doc["sources"]] == ["clicks", "orders"]
    assert "kafka.bootstrap" in doc["last_errors"][-1]["error"]
    # An invalid file: the same, with the problem named.
    guarded.path.write_text(guarded.path.read_text().replace('"127.0.0.1:2"', "2"))
    assert await guarded.daemon.reload() is False
    doc = await guarded.status()
    assert "kafka.bootstrap: expected a string, got int 2" in doc["last_errors"][-1]["error"]
    assert f'{PREFIX}_config_reloads_total{{result="refused"}} 2.0' in await guarded.metrics()
    assert (await guarded.call("PUT", "/workers", {"workers": 3}, token=new_token))[0] == 200
