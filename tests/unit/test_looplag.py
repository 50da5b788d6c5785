"""The event loop's lag monitor (pipeline/looplag.py): a stall of the loop shows as a late
wake-up of its length, in the largest lag, the histogram, /metrics and /status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pipeline import config as config_mod
from pipeline import looplag
from pipeline.daemon import Daemon
from pipeline.http import status_document
from pipeline.looplag import LoopLagMonitor
from pipeline.metrics import _loop_lag_metrics


def test_each_wakeup_lands_in_its_bucket_and_the_largest_is_kept() -> None:
    wall = [100.0]
    m = LoopLagMonitor(0.01, buckets=(0.005, 0.1, 1.0), wall=lambda: wall[0])
    for lag in (0.001, 0.005, 0.05, -0.002, 0.3):
        m.record(lag)
    wall[0] = 200.0
    m.record(2.0)
    wall[0] = 300.0
    m.record(0.2)
    snap = m.snapshot()
    assert snap.wakeups == 7
    # Cumulative, as Prometheus has them; a bound is inclusive; an early timer counts as 0.
    assert snap.buckets == ((0.005, 3), (0.1, 4), (1.0, 6))
    assert snap.max_lag_s == 2.0
    assert snap.max_lag_at_unix == 200.0  # when 2.0 was seen
    assert snap.sum_lag_s == pytest.approx(0.001 + 0.005 + 0.05 + 0.3 + 2.0 + 0.2)
    assert m.late_wakeups(0.1) == 3


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoopLagMonitor(0)


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop],
                         ids=["asyncio", "uvloop"])
def test_a_blocking_callback_shows_as_a_stall_of_its_length(loop_factory) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> LoopLagMonitor:
        monitor = looplag.start()
        await asyncio.sleep(0.1)  # a few wake-ups on an idle loop first
        time.sleep(0.25)  # noqa: ASYNC251 - the stall itself: the loop is held: nothing runs for 250 ms
        await asyncio.sleep(0.05)
        monitor.stop()
        assert not monitor.running
        return monitor

    loop = loop_factory()
    try:
        monitor = loop.run_until_complete(scenario())
    finally:
        loop.close()
    # The stall began somewhere within a 10 ms sleep: the wake-up came at least 240 ms late.
    assert monitor.max_lag_s >= 0.24
    assert monitor.late_wakeups(0.1) >= 1
    assert monitor.wakeups >= 5


def test_metrics_and_status_show_the_largest_stall() -> None:
    m = LoopLagMonitor(0.01)
    for lag in (0.0005, 0.002, 0.3):
        m.record(lag)

    registry = CollectorRegistry()
    registry.register(_Collector(m))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    hist = families["hdfs2kafka_event_loop_lag_seconds"]
    assert hist.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in hist.samples}
    assert samples[("hdfs2kafka_event_loop_lag_seconds_bucket", "0.005")] == 2
    assert samples[("hdfs2kafka_event_loop_lag_seconds_bucket", "0.25")] == 2
    assert samples[("hdfs2kafka_event_loop_lag_seconds_bucket", "0.5")] == 3
    assert samples[("hdfs2kafka_event_loop_lag_seconds_bucket", "+Inf")] == 3
    assert samples[("hdfs2kafka_event_loop_lag_seconds_count", None)] == 3
    assert families["hdfs2kafka_event_loop_lag_max_seconds"].samples[0].value == 0.3

    status = looplag.status_document(m)
    assert status is not None
    assert status["lag_max_s"] == 0.3 and status["wakeups"] == 3 and status["wakeups_over_100ms"] == 1
    assert looplag.status_document(None) is None


def test_status_has_an_event_loop_block_once_the_monitor_runs() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "hdfs2kafka.toml"
    daemon = Daemon(config_mod.load(example))
    assert "event_loop" not in status_document(daemon)
    monitor = LoopLagMonitor(0.01)
    monitor.record(0.12)
    daemon.loop_lag = monitor  # type: ignore[attr-defined]  # (set by Daemon.run)
    block = status_document(daemon)["event_loop"]
    assert (block["lag_max_s"], block["wakeups"], block["wakeups_over_100ms"]) == (0.12, 1, 1)


class _Collector:
    def __init__(self, monitor: LoopLagMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return _loop_lag_metrics(self.monitor)


def test_no_monitor_no_series() -> None:
    assert list(_loop_lag_metrics(None)) == []
