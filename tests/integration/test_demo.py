"""`hdfs2kafka demo` (the quick start's first command) against the dev stack: it writes files
while the daemon streams them, shows progress for both sources, and at the end every row
written has arrived in Kafka exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "demo", "--workdir", str(tmp_path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _summary(output: str) -> dict:
    last = output.strip().splitlines()[-1]
    summary = orjson.loads(last)
    assert summary["event"] == "demo.summary", output[-3000:]
    return summary


def test_demo_streams_every_row_written_exactly_once(stack, webhdfs, tmp_path: Path):
    proc = _demo(tmp_path, "--duration", "20", "--files-per-minute", "60",
                 "--rows-per-file", "3000", "--sample-every", "1000")
    output, _ = proc.communicate(timeout=300)
    summary = _summary(output)
    assert proc.returncode == 0, output[-3000:]

    assert summary["exactly_once"] is True
    assert summary["drained"] is True
    assert summary["daemon_exit_code"] == 0
    assert summary["rows_consumed"] == summary["rows_written"] > 0
    for name in ("clicks", "orders"):
        s = summary["sources"][name]
        # Two files before the daemon starts, more while it runs.
        assert s["files_written"] > 2
        assert s["rows_written"] == s["files_written"] * 3000
        assert (s["rows_consumed"], s["unique"], s["missing"], s["duplicates"],
                s["unexpected"]) == (s["rows_written"], s["rows_written"], 0, 0, 0)

    # Without a terminal: progress lines for both sources, and sampled rows from both topics.
    lines = output.splitlines()
    for name in ("clicks", "orders"):
        progress = [ln for ln in lines if ln.startswith(f"progress {name}: files ")]
        assert progress, output[-3000:]
        assert any("rows committed 0," not in ln for ln in progress)
        topic = summary["sources"][name]["topic"]
        assert any(ln.startswith(name) and f"{topic}[" in ln for ln in lines)
    assert any(ln.startswith("progress daemon ready") for ln in lines)

    # The files really are in HDFS: Parquet clicks under Hive-style partitions, Avro orders.
    base = summary["hdfs_dir"]
    partitions = webhdfs.list(f"{base}/clicks")
    assert partitions and all(p.startswith("dt=") for p in partitions)
    clicks = [f for p in partitions for f in webhdfs.list(f"{base}/clicks/{p}")]
    assert len(clicks) == summary["sources"]["clicks"]["files_written"]
    assert all(f.endswith(".parquet") for f in clicks)
    orders = webhdfs.list(f"{base}/orders")
    assert len(orders) == summary["sources"]["orders"]["files_written"]
    assert all(f.endswith(".avro") for f in orders)
    assert '"ready: recovery done' in Path(summary["log"]).read_text()


def test_ctrl_c_stops_the_demo_and_the_daemon_cleanly(stack, tmp_path: Path):
    proc = _demo(tmp_path, "--files-per-minute", "60", "--rows-per-file", "2000")
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until rows arrive, then interrupt as Ctrl-C does
        if line.startswith("progress orders:") and "in Kafka 0," not in line:
            break
        assert time.monotonic() < deadline, "no rows arrived"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=180)
    summary = _summary(rest)
    assert proc.returncode == 0, rest[-3000:]
    assert summary["exactly_once"] is True
    assert summary["daemon_exit_code"] == 0
    assert summary["rows_consumed"] == summary["rows_written"] > 0
    config = Path(summary["log"]).parent / "hdfs2kafka.toml"
    assert config.exists()
