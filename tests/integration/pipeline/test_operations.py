"""Operating a running daemon: reload, speed limits changed live, pause/resume, workers,
/metrics and /status — with every row still landing exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from harness import (
    DaemonProcess,
    consume,
    create_topic,
    expected_ids,
    free_port,
    missing,
    put,
    sample_file,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=60)


def rows_in_windows(timestamps_ms: list[int], start_ms: int, end_ms: int, width_ms: int) -> list[int]:
    """Rows per sliding window (step 250 ms) between start and end."""
    ts = sorted(t for t in timestamps_ms if start_ms <= t < end_ms)
    out = []
    lo = 0
    hi = 0
    t = start_ms
    while t + width_ms <= end_ms:
        while lo < len(ts) and ts[lo] < t:
            lo += 1
        while hi < len(ts) and ts[hi] < t + width_ms:
            hi += 1
        out.append(hi - lo)
        t += 250
    return out


async def record_times(bootstrap: str, topic: str, expect: int, timeout: float) -> list[tuple[int, int]]:  # noqa: ASYNC109
    """(timestamp_ms, row id) of every committed record, once `expect` have arrived."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, int]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                out.extend((m.timestamp, json.loads(m.value)["id"]) for m in msgs)
    finally:
        await consumer.stop()
    return out


async def test_rate_limits_pause_resume_and_workers_change_live(stack, webhdfs, unique, tmp_path: Path):
    topic, base = f"rows-{unique}", f"/tests/ops/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 2)
    rows = {}
    for f in range(7):  # enough to outlast every phase below
        suffix, data = sample_file(f, 15_000)
        put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
        rows[f] = 15_000
    port = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"ops-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "slow", "path": f"{base}/in/*", "topic": topic,
                                 "rows_per_second": 4000}], http_port=port, workers=2)
    url = f"http://127.0.0.1:{port}"
    marks: dict[str, int] = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(7)
            # /status shows a file's progress while it streams.
            async with http.get(f"{url}/status") as resp:
                status = await resp.json()
            flying = status["files_in_flight"]
            assert flying
            # Parquet knows its row count up front; Avro progress is by bytes of the file.
            assert all(f["rows_total"] == 15_000 for f in flying
                       if f["path"].endswith(".parquet") and f["rows_done"])
            assert all(f["bytes_total"] > 0 for f in flying)
            assert any(0 < f["rows_done"] < 15_000 and f["position"] for f in flying)

            marks["up"] = int(time.time() * 1000)
            ok = cli("ctl", "--url", url, "rate", "slow", "--rows", "8000")
            assert ok.returncode == 0, ok.stderr
            await asyncio.sleep(5)
            marks["down"] = int(time.time() * 1000)
            async with http.put(f"{url}/sources/slow/rate", json={"rows_per_second": 2000}) as resp:
                assert resp.status == 200
            await asyncio.sleep(5)
            marks["pause"] = int(time.time() * 1000)
            assert cli("ctl", "--url", url, "pause", "slow").returncode == 0
            await asyncio.sleep(4)
            marks["resume"] = int(time.time() * 1000)
            async with http.put(f"{url}/workers", json={"workers": 3}) as resp:
                assert resp.status == 200
            async with http.put(f"{url}/sources/slow/rate", json={"rows_per_second": None}) as resp:
                assert resp.status == 200
            assert cli("ctl", "--url", url, "resume", "slow").returncode == 0
            async with http.get(f"{url}/status") as resp:
                assert (await resp.json())["workers"] == 3
            async with http.put(f"{url}/workers", json={"workers": 0}) as resp:
                assert resp.status == 400
            out = cli("status", "--url", url)
            assert out.returncode == 0 and "slow" in out.stdout
        times = await record_times(stack.kafka_bootstrap, topic, sum(rows.values()), timeout=120)
        assert daemon.terminate() == 0
    ids = sorted(i for _, i in times)
    assert ids == expected_ids(rows)  # every row once, across every live change
    ts = [t for t, _ in times]
    t0 = min(ts)
    per_second = {(t - t0) // 1000: 0 for t in ts}
    for t in ts:
        per_second[(t - t0) // 1000] += 1
    timeline = f"rows per second: {per_second}; marks: { {k: (v - t0) / 1000 for k, v in marks.items()} }"
    # Under each limit R, no 5-second window carries more than 1.1 x R x 5 rows; a change takes
    # effect within a second.
    assert max(rows_in_windows(ts, min(ts), marks["up"], 5000), default=0) <= 1.1 * 4000 * 5, timeline
    assert max(rows_in_windows(ts, marks["up"] + 1000, marks["down"], 3000)) > 1.3 * 4000 * 3, timeline
    assert max(rows_in_windows(ts, marks["down"] + 1000, marks["pause"], 3000)) <= 1.1 * 2000 * 3, timeline
    # Paused: nothing new within a second of the pause, until resumed.
    assert rows_in_windows(ts, marks["pause"] + 1000, marks["resume"], 2000) == [0] * len(
        rows_in_windows(ts, marks["pause"] + 1000, marks["resume"], 2000))
    assert any(t >= marks["resume"] for t in ts)


async def test_reload_adds_removes_changes_sources_and_refuses_a_broken_file(stack, webhdfs, unique, tmp_path: Path):
    base = f"/tests/reload/{unique}"
    topics = {n: f"{n}-{unique}" for n in ("a", "b", "c")}
    for t in topics.values():
        await create_topic(stack.kafka_bootstrap, t, 1)
    port = free_port()

    def config(sources: list[str], a_key: bool = False) -> Path:
        srcs = []
        for n in sources:
            s = {"name": n, "path": f"{base}/{n}/*", "topic": topics[n]}
            if n == "a" and a_key:
                s["key"] = ["user"]
            srcs.append(s)
        return write_config(tmp_path, stack, instance_id=f"rl-{unique}", ledger_topic=f"ledger-{unique}",
                            sources=srcs, http_port=port)

    cfg = config(["a", "b"])
    url = f"http://127.0.0.1:{port}"
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        for n, f in (("a", 0), ("b", 1)):
            suffix, data = sample_file(f, 2000)
            put(webhdfs, f"{base}/{n}/part-{f}{suffix}", data)
        assert sorted((await consume(stack.kafka_bootstrap, topics["b"], expect=2000, timeout=60)).ids) == \
            expected_ids({1: 2000})

        # Reload: c added, b removed, a changed (keys from now on).
        mark = len(daemon.log_text())
        assert config(["a", "c"], a_key=True) == cfg
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("registry reloaded", after=mark)
        daemon.wait_for_log("ready: recovery done", after=mark)
        for n, f in (("a", 2), ("b", 3), ("c", 4)):
            suffix, data = sample_file(f, 2000)
            put(webhdfs, f"{base}/{n}/part-{f}{suffix}", data)
        c = await consume(stack.kafka_bootstrap, topics["c"], expect=2000, timeout=60)
        assert sorted(c.ids) == expected_ids({4: 2000})
        a = await consume(stack.kafka_bootstrap, topics["a"], expect=4000, timeout=60)
        assert sorted(a.ids) == expected_ids({0: 2000, 2: 2000})
        assert all(key is not None for _, _, v, key in a.records if v["file_no"] == 2)
        assert all(key is None for _, _, v, key in a.records if v["file_no"] == 0)

        # A broken file is refused; the registry in force stays (c keeps streaming).
        mark = len(daemon.log_text())
        cfg.write_text(cfg.read_text().replace('topic = "c-', 'topic = "not a topic c-'))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused", after=mark)
        assert "sources[c].topic" in daemon.log_text()[mark:]
        suffix, data = sample_file(5, 1500)
        put(webhdfs, f"{base}/c/part-5{suffix}", data)
        c = await consume(stack.kafka_bootstrap, topics["c"], expect=3500, timeout=60)
        assert sorted(c.ids) == expected_ids({4: 2000, 5: 1500})
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        assert daemon.alive()
        assert daemon.terminate() == 0

    # Exactly once across all of it: b got only what came before its removal.
    b = await consume(stack.kafka_bootstrap, topics["b"], settle=2, timeout=30)
    assert sorted(b.ids) == expected_ids({1: 2000})
    assert missing(c, {4: 2000, 5: 1500}) == {} and c.duplicates() == {}
    families = {f.name: f for f in text_string_to_metric_families(text)}
    reloads = {s.labels["result"]: s.value for s in families["hdfs2kafka_config_reloads"].samples
               if s.name.endswith("_total")}
    assert reloads == {"ok": 1.0, "refused": 1.0}


async def test_metrics_counters_match_what_kafka_holds(stack, webhdfs, unique, tmp_path: Path):
    topic, base = f"rows-{unique}", f"/tests/metrics/{unique}"
    port = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"m-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "m", "path": f"{base}/*", "topic": topic}], http_port=port)
    rows = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        for f in range(3):
            suffix, data = sample_file(f, 3000 + f)
            put(webhdfs, f"{base}/part-{f}{suffix}", data)
            rows[f] = 3000 + f
        put(webhdfs, f"{base}/broken.parquet", b"PAR1 not really")
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=60)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
        # A daemon that seems stuck tells where each task waits (SIGUSR1) and each thread is
        # (SIGUSR2), and goes on.
        seen = len(daemon.log_text())
        daemon.signal(signal.SIGUSR1)
        daemon.wait_for_log("task stacks dumped", timeout=10, after=seen)
        daemon.signal(signal.SIGUSR2)
        daemon.wait_for_log("Current thread", timeout=10, after=seen)
        dump = daemon.log_text()[seen:]
        assert '"task": "committer-0"' in dump and "Committer.run" in dump and "Thread 0x" in dump
        assert daemon.terminate() == 0
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("source") in (None, "m"):
                values[s.name] = values.get(s.name, 0) + s.value
    assert values["hdfs2kafka_rows_produced_total"] == len(landed.records) == sum(rows.values())
    assert values["hdfs2kafka_bytes_produced_total"] == landed.nbytes
    assert values["hdfs2kafka_files_completed_total"] == 3
    assert values["hdfs2kafka_files_failed_total"] == 1
    assert values["hdfs2kafka_files_detected_total"] == 4
    assert values["hdfs2kafka_transactions_committed_total"] >= 1
    assert values["hdfs2kafka_end_to_end_latency_seconds_count"] == 3
    assert values["hdfs2kafka_ready"] == 1
