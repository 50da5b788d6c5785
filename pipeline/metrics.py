"""Prometheus metrics of one daemon, on a registry of its own (no module-level state).

Counters move when a transaction commits (so they match what read_committed consumers see);
gauges are read from the daemon when Prometheus scrapes. Labels are `source` (never a path).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pipeline.kafka.transaction import Committed
from pipeline.looplag import LoopLagMonitor

if TYPE_CHECKING:
    from pipeline.daemon import Daemon

PREFIX = "hdfs2kafka"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.files_detected = Counter(f"{PREFIX}_files_detected_total",
                                      "Ready files recorded in the ledger to be streamed", ["source"], registry=r)
        self.files_completed = Counter(f"{PREFIX}_files_completed_total",
                                       "Files whose every row is committed", ["source"], registry=r)
        self.files_failed = Counter(f"{PREFIX}_files_failed_total",
                                    "Files quarantined (unreadable, deleted or changed while read)",
                                    ["source"], registry=r)
        self.rows = Counter(f"{PREFIX}_rows_produced_total", "Rows committed to Kafka", ["source"], registry=r)
        self.bytes = Counter(f"{PREFIX}_bytes_produced_total",
                             "Bytes of record keys and values committed to Kafka", ["source"], registry=r)
        self.txn_committed = Counter(f"{PREFIX}_transactions_committed_total",
                                     "Kafka transactions committed", registry=r)
        self.txn_aborted = Counter(f"{PREFIX}_transactions_aborted_total",
                                   "Kafka transactions that failed and were aborted", registry=r)
        self.reloads = Counter(f"{PREFIX}_config_reloads_total", "Registry reloads by result",
                               ["result"], registry=r)
        self.detection_latency = Histogram(
            f"{PREFIX}_detection_latency_seconds",
            "From a file's completion on the NameNode (its mtime) to its detection",
            ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self.e2e_latency = Histogram(
            f"{PREFIX}_end_to_end_latency_seconds",
            "From a file's detection to the commit of its last row", ["source"],
            buckets=LATENCY_BUCKETS, registry=r)
        r.register(_StateCollector(daemon))
        self._aborted_seen = 0

    # ---- daemon hooks

    def on_commit(self, c: Committed) -> None:
        now = time.monotonic()
        self.txn_committed.inc()
        for source, n in c.rows.items():
            self.rows.labels(source).inc(n)
        for source, n in c.bytes.items():
            self.bytes.labels(source).inc(n)
        for source, n in c.files_done.items():
            self.files_completed.labels(source).inc(n)
        for source, n in c.files_quarantined.items():
            self.files_failed.labels(source).inc(n)
        for source, ready_monotonic in c.finished:
            if ready_monotonic is not None:
                self.e2e_latency.labels(source).observe(now - ready_monotonic)
        wall = time.time() * 1000
        for e in c.recorded:
            self.files_detected.labels(e.source).inc()
            if e.ready_txid is not None and e.mtime > 0:
                self.detection_latency.labels(e.source).observe(max(0.0, (e.ready_ms or wall) - e.mtime) / 1000)

    def on_abort(self) -> None:
        self.txn_aborted.inc()

    def on_reload_result(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the daemon at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        flow = d.flow

        def gauge(name: str, doc: str, value: float | None = None, labels: list[str] | None = None,
                  samples: list[tuple[list[str], float]] | None = None) -> Metric:
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            if samples is not None:
                for lv, v in samples:
                    g.add_metric(lv, v)
            elif value is not None:
                g.add_metric([], value)
            return g

        yield gauge("ready", "1 once recovery is done and the daemon streams", 1.0 if d.ready else 0.0)
        yield gauge("up_since_seconds", "Unix time the daemon started", d.started_unix)
        lag = None
        if d.namenode_txid is not None and d.edit_txid is not None:
            lag = max(0, d.namenode_txid - d.edit_txid)
        yield gauge("edit_stream_lag_transactions", "NameNode's current txid minus the last one read",
                    float(lag) if lag is not None else None)
        yield gauge("edit_stream_txid", "Last edit-stream txid read",
                    float(d.edit_txid) if d.edit_txid is not None else None)
        age = time.time() - d.last_edit_batch_unix if d.last_edit_batch_unix else None
        yield gauge("edit_stream_last_batch_age_seconds", "Seconds since the last edit batch was read", age)
        nn = d.namenode
        yield CounterMetricFamily(f"{PREFIX}_namenode_failovers", "Times the NameNode answering "
                                  "the daemon changed (HA failovers as the daemon saw them)",
                                  value=float(nn.active_changes) if nn is not None else 0.0)
        yield CounterMetricFamily(f"{PREFIX}_namenode_connects", "Connections opened to a "
                                  "NameNode (the first, reconnects and failovers)",
                                  value=float(nn.connects) if nn is not None else 0.0)
        if nn is not None and nn.active is not None:
            yield gauge("namenode_active", "1 for the NameNode answering the daemon's calls "
                        "(address and HA id)", labels=["address", "namenode"],
                        samples=[([nn.active, nn.name_of(nn.active) or ""], 1.0)])
        yield gauge("work_queue_depth", "Ready files waiting for a worker",
                    float(flow.work_queue.qsize()) if flow else 0.0)
        yield gauge("commit_queue_depth", "Encoded units waiting for the committer",
                    float(flow.queues.qsize()) if flow else 0.0)
        yield gauge("workers", "Configured workers", float(flow.pool.size) if flow else 0.0)
        yield gauge("workers_busy", "Workers streaming a file", float(flow.pool.busy) if flow else 0.0)
        yield gauge("files_in_flight", "Files detected and not yet done",
                    float(len(flow.intake.in_flight)) if flow else 0.0)
        if flow:
            counts = flow.state.counts()
            yield gauge("ledger_entries", "File entries held in the ledger by state", labels=["state"],
                        samples=[([k], float(v)) for k, v in counts.items()])
        yield from _group_metrics(d)
        limiter: Any = d.limiter
        rows_s, bytes_s, paused = [], [], []
        for name, rt in d.sources.items():
            r = limiter.rows_rate(name) if limiter else rt.config.rows_per_second
            b = limiter.bytes_rate(name) if limiter else rt.config.bytes_per_second
            rows_s.append(([name], float(r) if r else 0.0))
            bytes_s.append(([name], float(b) if b else 0.0))
            paused.append(([name], 1.0 if rt.paused else 0.0))
        yield gauge("rate_limit_rows_per_second", "Current rows/s limit per source (0 = none)",
                    labels=["source"], samples=rows_s)
        yield gauge("rate_limit_bytes_per_second", "Current bytes/s limit per source (0 = none)",
                    labels=["source"], samples=bytes_s)
        yield gauge("source_paused", "1 while a source is paused or stopped by its error policy",
                    labels=["source"], samples=paused)
        yield from _loop_lag_metrics(getattr(d, "loop_lag", None))


def _group_metrics(d: Any) -> Iterator[Metric]:
    """This member's part of its group: shards owned (0 while a rebalance is under way: summed
    over the members, less than the group's shards means a shard nobody streams), the group's
    shard count, the generation, whether the group is held (registries differ), rebalances and
    the last one's duration."""
    m = getattr(d, "membership", None)
    current = m.current if m is not None else None
    streaming = d.flow.assignment.shards if d.flow is not None else ()
    yield GaugeMetricFamily(f"{PREFIX}_group_shards_owned", "Shards this member streams now",
                            value=float(len(streaming)))
    yield GaugeMetricFamily(f"{PREFIX}_group_shards", "The group's shards (its ledger topic's "
                            "partitions)", value=float(d.shards_total or 0))
    yield GaugeMetricFamily(f"{PREFIX}_group_generation", "The group generation of this member's "
                            "assignment (-1: none)",
                            value=float(current.generation) if current is not None else -1.0)
    yield GaugeMetricFamily(f"{PREFIX}_group_held", "1 while the group is held: its members "
                            "run different source registries, and none streams",
                            value=1.0 if current is not None and current.held else 0.0)
    yield CounterMetricFamily(f"{PREFIX}_group_rebalances", "Assignments this member received "
                              "(the first join counts)", value=float(m.rebalances if m else 0))
    yield GaugeMetricFamily(f"{PREFIX}_group_last_rebalance_seconds", "From the shards' revoke "
                            "to the next assignment, last rebalance",
                            value=float(m.last_rebalance_s) if m and m.last_rebalance_s is not None else 0.0)


def _loop_lag_metrics(monitor: LoopLagMonitor | None) -> Iterator[Metric]:
    """The event loop's stalls (pipeline/looplag.py): how late each wake-up of a task sleeping
    a few ms came, and the largest since start. Nothing while no monitor runs."""
    if monitor is None:
        return
    snap = monitor.snapshot()
    hist = HistogramMetricFamily(
        f"{PREFIX}_event_loop_lag_seconds",
        f"How late the event loop woke a task sleeping {snap.interval_s * 1000:g} ms (a stall of the "
        "loop delays every send, commit and answer by as much)")
    hist.add_metric([], [(f"{b:g}", float(n)) for b, n in snap.buckets] + [("+Inf", float(snap.wakeups))],
                    sum_value=snap.sum_lag_s)
    yield hist
    yield GaugeMetricFamily(f"{PREFIX}_event_loop_lag_max_seconds",
                            "The event loop's largest stall since the daemon started", value=snap.max_lag_s)
