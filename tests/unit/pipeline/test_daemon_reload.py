"""`Daemon.reload()` with config files on disk: what a changed file does to the running daemon
(live, in a new flow, or refused so that the running registry stays), without any server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from config_files import CLICKS, ORDERS, logging_kept, self_signed, write_config

from pipeline import config as config_mod
from pipeline.config import RELOAD, DaemonConfig
from pipeline.daemon import Daemon
from pipeline.http import status_document
from pipeline.ratelimit import GLOBAL


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with logging_kept():
        yield


def daemon_from(path: Path) -> Daemon:
    return Daemon(config_mod.load(path))


def errors(daemon: Daemon) -> str:
    """The last errors as /status shows them."""
    return "\n".join(e["error"] for e in status_document(daemon)["last_errors"])


async def test_an_added_source_starts_in_a_new_flow_and_a_removed_one_goes(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml", sources=[CLICKS, ORDERS | {"rows_per_second": 100}])
    daemon = daemon_from(path)
    views = {"name": "views", "path": "/data/views/**", "topic": "views", "rows_per_second": 50}
    write_config(path, sources=[CLICKS, views])
    assert await daemon.reload() is True
    assert list(daemon.sources) == ["clicks", "views"]
    assert daemon.sources["views"].config.topic == "views"
    assert daemon.limiter.rows_rate("views") == 50
    assert daemon.limiter.rows_rate("orders") is None  # a removed source's limits go with it


async def test_reload_says_whether_a_new_flow_is_needed_for_sources(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml")
    daemon = daemon_from(path)
    write_config(path, sources=[CLICKS])  # removed: applied at once
    assert await daemon.reload() is False
    assert list(daemon.sources) == ["clicks"]
    write_config(path, sources=[CLICKS, ORDERS])  # added: its files come in a new flow
    assert await daemon.reload() is True
    assert list(daemon.sources) == ["clicks", "orders"]
    # Changed sources are applied at once, in the file's order (a file goes to the first match).
    write_config(path, sources=[ORDERS, CLICKS | {"topic": "clicks.v2", "key": ["user_id"]}])
    assert await daemon.reload() is False
    assert list(daemon.sources) == ["orders", "clicks"]
    assert daemon.sources["clicks"].config.topic == "clicks.v2"
    assert daemon.sources["clicks"].config.key == ("user_id",)


async def test_limits_from_the_file_apply_live(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml", sources=[CLICKS | {"rows_per_second": 100},
                                                      ORDERS | {"bytes_per_second": 1000}])
    daemon = daemon_from(path)
    daemon.set_rate("orders", 7, None)  # a live change lasts until the file sets the limits again
    write_config(path, daemon={"rows_per_second": 2000},
                 sources=[CLICKS | {"rows_per_second": 500}, ORDERS])
    assert await daemon.reload() is False
    assert daemon.limiter.rows_rate("clicks") == 500
    assert (daemon.limiter.rows_rate("orders"), daemon.limiter.bytes_rate("orders")) == (None, None)
    assert daemon.limiter.rows_rate(GLOBAL) == 2000


async def test_paused_in_the_file_applies_and_a_paused_source_stays_paused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml")
    daemon = daemon_from(path)
    daemon.pause("orders", True)  # by the admin verb
    write_config(path, sources=[CLICKS | {"paused": True}, ORDERS | {"topic": "orders.v2"}])
    assert await daemon.reload() is False
    assert daemon.sources["clicks"].paused
    assert daemon.sources["orders"].paused  # the file did not change `paused`: the verb's stays
    write_config(path, sources=[CLICKS, ORDERS | {"topic": "orders.v2"}])
    assert await daemon.reload() is False
    assert not daemon.sources["clicks"].paused


# A value different from the test config's for every [daemon] setting.
CHANGED: dict[str, Any] = {
    "instance_id": "unit-02", "http": "127.0.0.1:9465", "admin_token": "a" * 32, "log_level": "debug",
    "log_format": "console", "workers": 5, "queue_size": 8, "unit_rows": 100,
    "transaction_max_rows": 1000, "transaction_max_bytes": 1 << 20, "transaction_max_ms": 50,
    "ledger_retention_hours": 24.0, "shutdown_timeout_s": 5.0, "rows_per_second": 1000.0,
    "http_tls_cert": "cert.pem", "http_tls_key": "key.pem",  # written with both (a pair)
    "group": "etl", "shards": 4, "group_session_timeout_s": 20.0,
}


def test_every_daemon_setting_has_a_reload_policy_and_a_case_here() -> None:
    names = {f"daemon.{f}" for f in DaemonConfig.__dataclass_fields__}
    assert names <= set(RELOAD)
    assert {f"daemon.{k}" for k in CHANGED} == names


@pytest.mark.parametrize("setting", sorted(CHANGED))
async def test_each_daemon_setting_reloads_as_the_reload_table_says(tmp_path: Path, setting: str) -> None:
    path = write_config(tmp_path / "h.toml")
    daemon = daemon_from(path)
    change = {setting: CHANGED[setting]}
    if setting.startswith("http_tls_"):
        self_signed(tmp_path)
        change = {"http_tls_cert": "cert.pem", "http_tls_key": "key.pem"}
    write_config(path, daemon=change, sources=[CLICKS, ORDERS | {"topic": "orders.v2"}])
    policy = RELOAD[f"daemon.{setting}"]
    new_flow = await daemon.reload()
    if policy == config_mod.RESTART:
        assert new_flow is False
        assert getattr(daemon.config.daemon, setting) != CHANGED[setting]
        assert daemon.sources["orders"].config.topic == "orders"  # nothing of the file applied
        assert f"daemon.{setting}" in errors(daemon)
    else:
        assert new_flow is (policy == config_mod.NEW_FLOW)
        assert getattr(daemon.config.daemon, setting) == CHANGED[setting]
        assert daemon.sources["orders"].config.topic == "orders.v2"
        assert errors(daemon) == ""
    if setting == "workers":
        assert daemon.workers == 5
    if setting == "rows_per_second":
        assert daemon.limiter.rows_rate(GLOBAL) == 1000


@pytest.mark.parametrize(("section", "change", "named"), [
    ("hdfs", {"user": "etl"}, "hdfs.user"),
    ("hdfs", {"webhdfs": "http://127.0.0.1:2"}, "hdfs.webhdfs"),
    ("kafka", {"bootstrap": "127.0.0.1:2"}, "kafka.bootstrap"),
    ("kafka", {"ledger_topic": "other.ledger"}, "kafka.ledger_topic"),
    ("kafka", {"linger.ms": 50}, "kafka.linger.ms"),
])
async def test_a_change_that_needs_a_restart_refuses_the_whole_reload(
        tmp_path: Path, section: str, change: dict[str, Any], named: str) -> None:
    path = write_config(tmp_path / "h.toml", sources=[CLICKS | {"rows_per_second": 100}, ORDERS])
    daemon = daemon_from(path)
    running = daemon.config
    write_config(path, **{section: change}, daemon={"workers": 7},
                 sources=[CLICKS | {"rows_per_second": 500}, {**ORDERS, "name": "views"}])
    assert await daemon.reload() is False
    assert daemon.config is running
    assert list(daemon.sources) == ["clicks", "orders"]
    assert daemon.limiter.rows_rate("clicks") == 100
    assert daemon.workers == 2
    assert named in errors(daemon)
    assert "restart" in errors(daemon)


@pytest.mark.parametrize(("text", "named"), [
    (None, "daemon.workers: must be greater than 0 (got 0)"),
    ("[daemon\ninstance_id = 1\n", "not valid TOML"),
    ("", "[daemon]: missing section (required)"),
])
async def test_an_invalid_file_is_refused_with_the_problem_named(
        tmp_path: Path, text: str | None, named: str) -> None:
    path = write_config(tmp_path / "h.toml")
    daemon = daemon_from(path)
    running = daemon.config
    if text is None:
        write_config(path, daemon={"workers": 0}, sources=[CLICKS])
    else:
        path.write_text(text)
    assert await daemon.reload() is False
    assert daemon.config is running
    assert list(daemon.sources) == ["clicks", "orders"]
    assert named in errors(daemon)


async def test_a_vanished_file_is_refused_and_a_fixed_one_then_applies(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml")
    daemon = daemon_from(path)
    path.unlink()
    assert await daemon.reload() is False
    assert "file not found" in errors(daemon)
    write_config(path, sources=[CLICKS])
    assert await daemon.reload() is False
    assert list(daemon.sources) == ["clicks"]
