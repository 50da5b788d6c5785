"""deploy/grafana and deploy/prometheus: every metric they name is one the daemon exports,
the dashboard shows every metric, its queries parse, and the alert rules fire when they should
(promtool's unit tests in deploy/prometheus/alerts.test.yml). The tests that run promtool are
marked `tools`: `make test` installs it first, `make unit` leaves those tests out."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import config as config_mod
from pipeline.daemon import Daemon
from pipeline.ledger import LedgerState
from pipeline.metrics import PREFIX, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "hdfs2kafka.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
EXAMPLE = ROOT / "deploy" / "examples" / "hdfs2kafka.toml"
NAME = re.compile(rf"\b{PREFIX}_[a-z0-9_]+")


def families() -> dict[str, str]:
    """Metric family -> type, from the registry of a daemon with a flow (all gauges present)."""
    daemon = Daemon(config_mod.load(EXAMPLE))
    daemon.flow = SimpleNamespace(  # type: ignore[assignment]
        state=LedgerState(daemon.config.daemon.instance_id),
        queues=asyncio.Queue(),
        assignment=SimpleNamespace(shards=(0,)),
        pool=SimpleNamespace(size=2, busy=1),
        work_queue=asyncio.Queue(),
        intake=SimpleNamespace(in_flight=set()),
    )
    return {f.name: f.type for f in Metrics(daemon).registry.collect()}


def series_names() -> set[str]:
    """Every series name a query can use, as Prometheus stores them."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}
    return {name + s for name, kind in families().items() for s in suffixes[kind]}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: `make tools` unpacks it from Debian's prometheus package")
    return path


def test_the_registry_has_the_metrics_the_issue_asks_for() -> None:
    names = series_names()
    for wanted in ("files_detected_total", "files_completed_total", "files_failed_total",
                   "rows_produced_total", "bytes_produced_total", "transactions_committed_total",
                   "transactions_aborted_total", "edit_stream_lag_transactions",
                   "edit_stream_last_batch_age_seconds", "detection_latency_seconds_bucket",
                   "end_to_end_latency_seconds_bucket", "work_queue_depth", "workers_busy",
                   "rate_limit_rows_per_second", "rate_limit_bytes_per_second", "ledger_entries"):
        assert f"{PREFIX}_{wanted}" in names


@pytest.mark.parametrize("path", [DASHBOARD, ALERTS, ALERT_TESTS], ids=lambda p: p.name)
def test_every_metric_named_is_exported(path: Path) -> None:
    named = set(NAME.findall(path.read_text()))
    assert named, f"{path} names no metric"
    assert named - series_names() == set()


def test_the_dashboard_shows_every_metric() -> None:
    text = " ".join(dashboard_exprs())
    shown = {name for name in families() if re.search(rf"\b{name}(_total|_bucket|_sum|_count)?\b", text)}
    assert set(families()) - shown == set()


def test_dashboard_is_importable_into_any_prometheus_datasource() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "source"} <= set(variables)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            if f"{PREFIX}_" in t["expr"] and "instance" in t["expr"]:
                assert 'instance=~"$instance"' in t["expr"]
    # Panels tile the 24-column grid without overlapping.
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


@pytest.mark.tools
def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    # promtool parses a rule's expression: check each panel query as a recording rule, with
    # Grafana's variables replaced by what they expand to.
    def expand(expr: str) -> str:
        return expr.replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$source", ".*")

    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": expand(e)} for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in result.stdout


@pytest.mark.tools
def test_alert_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_the_issue() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.M))
    assert {"Hdfs2kafkaDown", "Hdfs2kafkaNotReady", "Hdfs2kafkaEditStreamLag",
            "Hdfs2kafkaEditStreamStalled", "Hdfs2kafkaStalled", "Hdfs2kafkaTransactionsFailing",
            "Hdfs2kafkaFilesQuarantined"} <= alerts
    # Every alert is exercised by the promtool unit tests.
    tested = set(re.findall(r"^\s*alertname: (\w+)$", ALERT_TESTS.read_text(), re.M))
    assert alerts == tested


@pytest.mark.tools
def test_alert_rules_fire_exactly_when_expected() -> None:
    result = subprocess.run([promtool(), "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
