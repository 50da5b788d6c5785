"""What tailing the edit stream costs the NameNode when N processes tail it at once.

    eval "$(deploy/devstack/devstack env)"
    python bench/bench_namenode_cost.py [--tailers 1,3,10] [--rate 20] [--window 30] [--share]
                                        [--json]

For each N, N tailer processes run the daemon's detection (`hdfswatch.watch.Watch` with the
tailer's default poll settings, plus the daemon's lag poll, `getCurrentEditLogTxid` every 5 s)
on one watched directory (with `--share`, each runs `Watch(..., poll_share=N)` as the members
of an N-member group do: each polls N times less eagerly, so that together they poll about as
often as one), while a writer puts small files into a staging directory and renames them into
the watched one at a steady rate (hdfs-native from a few threads; `--writer webhdfs`).
After `--warmup` seconds the NameNode is measured over `--window` seconds:

- from its JMX servlet (`/jmx` at the NameNode's HTTP address; `--jmx-url`, default from
  WEBHDFS_URL): RPCs/s on the client port (`RpcActivityForPort<port>`, RpcProcessingTimeNumOps),
  the RPC queue and processing time averages, and per method (`RpcDetailedActivityForPort<port>`)
  getEditsFromTxid, getCurrentEditLogTxid and the detector's getLocatedFileInfo calls/s, the
  getEditsFromTxid average and that of every other call ("other RPCs": what the tailers cost the
  NameNode's other clients);
- the NameNode JVM's CPU time (utime + stime in /proc/<pid>/stat; the pid from the dev stack's
  pid file, or `--namenode-pid`).

The JMX servlet's figures change only when its cache is refreshed (every 10 s at most, on a
read), and each `...AvgTime` is the mean over the calls since the previous refresh. So the
window starts and ends at refreshes (it lasts `--window` seconds rounded up to a refresh), the
rates are the counter deltas between those two, and the averages are the means of each refresh
weighted by its calls (Hadoop times each call in whole milliseconds, rounded down, so averages
under a millisecond are understated). A row with N = 0 (the writer alone; `--no-baseline` skips
it) is what the writer and the DataNode cost the NameNode by themselves: subtract it to get the
tailers'. The tailers also count their own polls and how long they waited for them, and how
many of their polls read new transactions (the costly kind: for those the NameNode reads its
open segment; the others it answers at once); the getEditsFromTxid calls that were not theirs
(other clients of a shared NameNode) are printed.

Afterwards each tailer must have reported every file written in its phase as ready (the "seen"
column); "file write p90" is the writer's (create, write, close, rename). Detection latency is,
for each tailer and each file renamed in during the window, from the writer's rename returning
to the tailer's `Watch` yielding the file as ready (both `time.monotonic()`, CLOCK_MONOTONIC,
which all processes of the machine share); "detect p50/p99" are over every tailer's files
together, and the per-phase line gives the range of each tailer's own p50 and p99. The edit
log is rolled at the start of each phase (`--no-roll` to keep it), because each poll that finds
new edits makes the NameNode read its in-progress segment from the start: without the roll a
later phase would pay for the earlier phases' edits. The files are removed after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE, Popen
from typing import Any

from hdfswatch.namenode import NameNodeClient, parse_address

NAMENODE_CLASS = b"org.apache.hadoop.hdfs.server.namenode.NameNode"
STATUS_EVERY_S = 0.25
LAG_POLL_S = 5.0  # pipeline.service polls the NameNode's txid this often, for the lag


# ------------------------------------------------------------------------- tailer process

async def tailer_process(namenode: str, user: str, start_txid: int, pattern: str,
                         poll_share: int) -> None:
    """One tailer as the daemon runs it; status lines (JSON) on stdout until stdin closes."""
    import logging

    import structlog

    from hdfswatch.watch import Batch, Gap, Listed, Watch

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    seen: dict[str, float] = {}
    """When each file was first yielded as ready (monotonic)."""
    unsent: dict[str, float] = {}
    counts = {"reported": 0, "gaps": 0, "polls_new": 0}

    async with NameNodeClient([namenode], user) as client:
        await client.get_current_txid()  # connected and allowed
        get_edits = client.get_edits_from_txid

        async def counted(txid: int) -> Any:
            reply = await get_edits(txid)
            if reply.last_txid >= txid:  # it read new transactions: the costly kind of poll
                counts["polls_new"] += 1
            return reply

        client.get_edits_from_txid = counted  # type: ignore[method-assign]
        watch = Watch(client, [pattern], start_txid=start_txid, poll_share=poll_share)

        def status(**extra: Any) -> None:
            tailer = watch.tailer
            saw = dict(unsent)
            unsent.clear()
            print(json.dumps({"polls": tailer.polls if tailer else 0,
                              "poll_s": tailer.poll_seconds_total if tailer else 0.0,
                              "seen": len(seen), "saw": saw, **counts, **extra}), flush=True)

        async def consume() -> None:
            async for change in watch:
                files = (change.ready if isinstance(change, Batch)
                         else [change.file] if isinstance(change, Listed) else [])
                now = time.monotonic()
                for ready in files:
                    counts["reported"] += 1
                    if ready.path not in seen:
                        seen[ready.path] = unsent[ready.path] = now
                if isinstance(change, Gap):
                    counts["gaps"] += 1

        async def lag_poll() -> None:
            while True:
                await asyncio.sleep(LAG_POLL_S)
                await client.get_current_txid()

        async def report() -> None:
            while True:
                status()
                await asyncio.sleep(STATUS_EVERY_S)

        print(json.dumps({"up": True}), flush=True)
        tasks = [asyncio.create_task(c) for c in (consume(), lag_poll(), report())]
        done = asyncio.create_task(stop.wait())
        await asyncio.wait([done, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:  # a tailer that died says why
            if t.done() and not t.cancelled() and t.exception() is not None:
                status(final=True, error=repr(t.exception()))
                return
        status(final=True)


@dataclass
class Tailer:
    proc: Popen[str]
    latest: dict[str, Any] = field(default_factory=dict)
    saw: dict[str, float] = field(default_factory=dict)
    """When the tailer first saw each file as ready (monotonic)."""
    up: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("up"):
                self.up.set()
            else:
                self.saw.update(msg.pop("saw", {}))
                self.latest = msg
        self.up.set()
        self.ended.set()


def start_tailers(n: int, namenode: str, user: str, start_txid: int, pattern: str,
                  poll_share: int) -> list[Tailer]:
    tailers = []
    for _ in range(n):
        proc = Popen([sys.executable, __file__, "--tailer-process", namenode, user,
                      str(start_txid), pattern, str(poll_share)],
                     stdin=PIPE, stdout=PIPE, text=True)
        t = Tailer(proc)
        threading.Thread(target=t.read, daemon=True).start()
        tailers.append(t)
    for t in tailers:
        if not t.up.wait(60) or t.ended.is_set():
            raise SystemExit(f"a tailer process did not start (exit {t.proc.poll()})")
    return tailers


def stop_tailers(tailers: list[Tailer]) -> None:
    for t in tailers:
        assert t.proc.stdin is not None
        t.proc.stdin.close()
    for t in tailers:
        t.ended.wait(30)
        try:
            t.proc.wait(10)
        except Exception:
            t.proc.kill()
            t.proc.wait()


# ------------------------------------------------------------------------- writer

class Files:
    """The writer's file system calls, through hdfs-native (the NameNode's RPC and the
    DataNode's data transfer) or WebHDFS."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        if kind == "native":
            import hdfs_native

            from hdfsread.native import use_hdfs_user

            use_hdfs_user(env["HDFS_USER"])  # before any thread starts
            self.native = hdfs_native.Client(f"hdfs://{env['HDFS_NAMENODE']}")
        else:
            from hdfs import InsecureClient

            self.url, self.user = env["WEBHDFS_URL"], env["HDFS_USER"]
            self._local = threading.local()
            self._client = InsecureClient

    def _web(self) -> Any:
        if not hasattr(self._local, "web"):
            self._local.web = self._client(self.url, user=self.user)
        return self._local.web

    def write(self, path: str, data: bytes) -> None:
        if self.kind == "native":
            with self.native.create(path) as out:
                out.write(data)
        else:
            self._web().write(path, data)

    def rename(self, src: str, dst: str) -> None:
        if self.kind == "native":
            self.native.rename(src, dst)
        else:
            self._web().rename(src, dst)

    def makedirs(self, path: str) -> None:
        if self.kind == "native":
            self.native.mkdirs(path, create_parent=True)
        else:
            self._web().makedirs(path)

    def delete(self, path: str) -> None:
        if self.kind == "native":
            self.native.delete(path, recursive=True)
        else:
            self._web().delete(path, recursive=True)


class Writer:
    """Files of `size` bytes written into `base`/_staging and renamed into `base`, at `rate`
    files/s from `threads` threads (each waits for its turn on the schedule)."""

    def __init__(self, fs: Files, base: str, rate: float, size: int, threads: int) -> None:
        self.fs, self.base, self.rate = fs, base, rate
        self.payload = os.urandom(size)
        self.written: list[str] = []
        self.seconds: list[float] = []
        """How long each file took (write and rename)."""
        self.renamed: dict[str, float] = {}
        """When each file's rename returned (monotonic)."""
        self.errors = 0
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._t0 = 0.0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        fs.makedirs(f"{base}/_staging")

    def start(self) -> None:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join()

    def count(self) -> int:
        with self._lock:
            return len(self.written)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                i = self._next
                self._next += 1
            delay = self._t0 + i / self.rate - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            name = f"part-{i:06d}.parquet"
            started = time.monotonic()
            try:
                self.fs.write(f"{self.base}/_staging/{name}", self.payload)
                self.fs.rename(f"{self.base}/_staging/{name}", f"{self.base}/{name}")
                renamed = time.monotonic()
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                print(f"writer: {name}: {exc}", file=sys.stderr)
                continue
            with self._lock:
                self.written.append(f"{self.base}/{name}")
                self.seconds.append(renamed - started)
                self.renamed[f"{self.base}/{name}"] = renamed


# ------------------------------------------------------------------------- measuring

def namenode_pid(given: int | None) -> int:
    """The dev stack's NameNode JVM: `given`, its pid file, or the one NameNode running."""
    if given:
        return given
    home = Path(os.environ.get("DEVSTACK_HOME", Path.home() / ".cache" / "hdfs2kafka" / "devstack"))
    try:
        pid = int((home / "run" / "namenode.pid").read_text().split()[0])
        if NAMENODE_CLASS in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if NAMENODE_CLASS in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    if len(found) != 1:
        raise SystemExit(f"NameNode processes found: {found or 'none'}; give --namenode-pid")
    return found[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Refresh:
    """One JMX cache refresh as seen by the sampler."""
    t: float
    bean: dict[str, Any]
    cpu: float
    tailers_cpu: float
    files: int
    tailers: list[dict[str, Any]]


class JmxSampler:
    """Reads the two RPC beans every `every` seconds and keeps each refresh of them."""

    def __init__(self, jmx_url: str, rpc_port: int, pid: int, every: float = 0.5) -> None:
        self.urls = {
            kind: f"{jmx_url}?qry=" + urllib.parse.quote(
                f"Hadoop:service=NameNode,name={kind}ForPort{rpc_port}", safe=":=,")
            for kind in ("RpcActivity", "RpcDetailedActivity")}
        self.pid, self.every = pid, every
        self.refreshes: dict[str, list[Refresh]] = {k: [] for k in self.urls}
        self._last: dict[str, dict[str, Any]] = {}

    def bean(self, kind: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.urls[kind], timeout=10) as resp:
            beans = json.load(resp)["beans"]
        if not beans:
            raise SystemExit(f"no such JMX bean: {self.urls[kind]}")
        return {k: v for k, v in beans[0].items() if isinstance(v, int | float)}

    def sample(self, files: int, tailers: list[Tailer]) -> list[str]:
        """Read the beans; the kinds that were refreshed since the last read."""
        changed = []
        for kind in self.urls:
            bean, t = self.bean(kind), time.monotonic()
            if bean != self._last.get(kind):
                self._last[kind] = bean
                self.refreshes[kind].append(Refresh(
                    t, bean, cpu_seconds(self.pid), sum(cpu_seconds(x.proc.pid) for x in tailers),
                    files, [dict(x.latest) for x in tailers]))
                changed.append(kind)
        return changed

    def until_refresh(self, files: Any, tailers: list[Tailer], after: float = 0.0) -> Refresh:
        """Sample until the RPC bean is refreshed at or after monotonic time `after`."""
        self.sample(files(), tailers)  # whatever was cached before does not count
        while True:
            time.sleep(self.every)
            if "RpcActivity" in self.sample(files(), tailers) and time.monotonic() >= after:
                return self.refreshes["RpcActivity"][-1]


def window_figures(sampler: JmxSampler, start: Refresh, end: Refresh) -> dict[str, Any]:
    """Rates and averages between two refreshes of the RPC bean."""
    seconds = end.t - start.t
    rpc = [r for r in sampler.refreshes["RpcActivity"] if start.t <= r.t <= end.t]

    def summed(refreshes: list[Refresh], name: str) -> tuple[float, float]:
        """Milliseconds and calls of metric `name` over the refreshes."""
        total = ops = 0.0
        for prev, cur in itertools.pairwise(refreshes):
            n = cur.bean.get(f"{name}NumOps", 0) - prev.bean.get(f"{name}NumOps", 0)
            total += n * cur.bean.get(f"{name}AvgTime", 0.0)
            ops += n
        return total, ops

    def weighted(refreshes: list[Refresh], name: str) -> float | None:
        total, ops = summed(refreshes, name)
        return total / ops if ops else None

    # The detailed bean is refreshed on its own, within a read of the RPC bean's refreshes.
    det_all = sampler.refreshes["RpcDetailedActivity"]
    d0 = min(det_all, key=lambda r: abs(r.t - start.t))
    d1 = min(det_all, key=lambda r: abs(r.t - end.t))
    det = [r for r in det_all if d0.t <= r.t <= d1.t]
    det_seconds = max(d1.t - d0.t, 1e-9)

    def rate(a: Refresh, b: Refresh, name: str, secs: float) -> float:
        return (b.bean.get(name, 0) - a.bean.get(name, 0)) / secs

    # What every other call (the writer's, the DataNode's, the detector's stats) took.
    all_ms, all_ops = summed(rpc, "RpcProcessingTime")
    edits_ms, edits_ops = summed(det, "GetEditsFromTxid")
    others_ms = (all_ms - edits_ms) / (all_ops - edits_ops) if all_ops > edits_ops else None

    pairs = list(zip(start.tailers, end.tailers, strict=True))
    polls = [b.get("polls", 0) - a.get("polls", 0) for a, b in pairs]
    polls_new = [b.get("polls_new", 0) - a.get("polls_new", 0) for a, b in pairs]
    poll_s = [b.get("poll_s", 0.0) - a.get("poll_s", 0.0) for a, b in pairs]
    return {
        "window_s": round(seconds, 2),
        "files_per_s": (end.files - start.files) / seconds,
        "rpc_per_s": rate(start, end, "RpcProcessingTimeNumOps", seconds),
        "get_edits_per_s": rate(d0, d1, "GetEditsFromTxidNumOps", det_seconds),
        "get_txid_per_s": rate(d0, d1, "GetCurrentEditLogTxidNumOps", det_seconds),
        "stat_per_s": (rate(d0, d1, "GetLocatedFileInfoNumOps", det_seconds)
                       + rate(d0, d1, "GetFileInfoNumOps", det_seconds)),
        "queue_ms": weighted(rpc, "RpcQueueTime"),
        "processing_ms": weighted(rpc, "RpcProcessingTime"),
        "get_edits_ms": weighted(det, "GetEditsFromTxid"),
        "other_rpc_ms": others_ms,
        "namenode_cpu_s": end.cpu - start.cpu,
        "namenode_cores": (end.cpu - start.cpu) / seconds,
        "tailers_cores": (end.tailers_cpu - start.tailers_cpu) / seconds,
        "tailer_polls_per_s": sum(polls) / seconds / len(polls) if polls else None,
        "tailer_new_polls_per_s": sum(polls_new) / seconds / len(polls) if polls else None,
        "tailer_poll_ms": sum(poll_s) / sum(polls) * 1000 if sum(polls) else None,
    }


# ------------------------------------------------------------------------- one phase

def run_phase(n: int, args: argparse.Namespace, env: dict[str, str], sampler: JmxSampler,
              fs: Files, root: str) -> dict[str, Any]:
    base = f"{root}/n{n}"
    writer = Writer(fs, base, args.rate, args.size, args.writer_threads)

    async def prepare() -> tuple[int, int]:
        async with NameNodeClient([env["HDFS_NAMENODE"]], env["HDFS_USER"]) as nn:
            segment = await nn.roll_edits() if args.roll else None
            txid = await nn.get_current_txid()
            return (segment if segment is not None else txid + 1), txid + 1

    segment_start, start_txid = asyncio.run(prepare())
    poll_share = n if args.share else 1
    tailers = start_tailers(n, env["HDFS_NAMENODE"], env["HDFS_USER"], start_txid,
                            f"{base}/*.parquet", poll_share)
    try:
        writer.start()
        time.sleep(args.warmup)
        begin = sampler.until_refresh(writer.count, tailers)
        end = sampler.until_refresh(writer.count, tailers, after=begin.t + args.window - 1)
        figures = window_figures(sampler, begin, end)
        writer.stop()
        wanted = set(writer.written)
        deadline = time.monotonic() + args.drain
        while (time.monotonic() < deadline
               and any(t.latest.get("seen", 0) < len(wanted) and not t.ended.is_set()
                       for t in tailers)):
            time.sleep(0.2)
    finally:
        writer.stop()
        stop_tailers(tailers)

    async def txid_now() -> int:
        async with NameNodeClient([env["HDFS_NAMENODE"]], env["HDFS_USER"]) as nn:
            return await nn.get_current_txid()

    end_txid = asyncio.run(txid_now())
    fs.delete(base)
    seen = [t.latest.get("seen", 0) for t in tailers]
    errors = [t.latest["error"] for t in tailers if "error" in t.latest]
    # Detection latency of the files renamed in during the window, per tailer.
    in_window = {p: r for p, r in writer.renamed.items() if begin.t <= r <= end.t}
    latencies = [[(t.saw[p] - r) * 1000 for p, r in in_window.items() if p in t.saw]
                 for t in tailers]
    every = [x for each in latencies for x in each]
    return {
        "tailers": n, "poll_share": poll_share, **figures,
        "detect_files": len(in_window),
        "detect_ms_p50": percentile(every, 50) if every else None,
        "detect_ms_p99": percentile(every, 99) if every else None,
        "detect_ms_max": max(every) if every else None,
        "detect_ms_p50_each": [percentile(x, 50) if x else None for x in latencies],
        "detect_ms_p99_each": [percentile(x, 99) if x else None for x in latencies],
        "files_written": len(wanted), "writer_errors": writer.errors,
        "write_ms_p50": percentile(writer.seconds, 50) * 1000,
        "write_ms_p90": percentile(writer.seconds, 90) * 1000,
        "seen_by_each": seen, "reported_by_each": [t.latest.get("reported", 0) for t in tailers],
        "all_seen": all(s == len(wanted) for s in seen) and not errors,
        "gaps": sum(t.latest.get("gaps", 0) for t in tailers), "tailer_errors": errors,
        "segment_txns_at_end": end_txid - segment_start + 1,
        "phase_txns": end_txid - start_txid + 1,
    }


# ------------------------------------------------------------------------- report

def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def span(values: list[float | None]) -> str:
    """The range of per-tailer figures: '4.1' or '3.9-4.8'."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    lo, hi = min(known), max(known)
    return f"{lo:.1f}" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}-{hi:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| N tailers | files/s | RPC/s | getEditsFromTxid/s | getCurrentEditLogTxid/s | "
            "getLocatedFileInfo/s | RPC queue ms | RPC processing ms | getEdits ms | "
            "other RPCs ms | NameNode CPU (cores) | polls/s per tailer | of them with new edits | "
            "poll ms (tailer) | "
            "tailers' CPU (cores) | file write p90 ms | detect p50 ms | detect p99 ms | seen |")
    lines = [head, "| " + " | ".join("-" * len(c) for c in head.strip("| ").split(" | ")) + " |"]
    for r in rows:
        n = r["tailers"]
        seen = ("writer only" if n == 0 else f"{'all' if r['all_seen'] else 'MISSING'} "
                f"{min(r['seen_by_each'])}/{r['files_written']}")
        cells = [str(n), fmt(r["files_per_s"], ".1f"), fmt(r["rpc_per_s"], ".0f"),
                 fmt(r["get_edits_per_s"], ".1f"), fmt(r["get_txid_per_s"], ".2f"),
                 fmt(r["stat_per_s"], ".1f"), fmt(r["queue_ms"], ".2f"),
                 fmt(r["processing_ms"], ".2f"), fmt(r["get_edits_ms"], ".2f"),
                 fmt(r["other_rpc_ms"], ".2f"),
                 fmt(r["namenode_cores"], ".3f"), fmt(r["tailer_polls_per_s"], ".1f"),
                 fmt(r.get("tailer_new_polls_per_s"), ".1f"), fmt(r["tailer_poll_ms"], ".2f"),
                 fmt(r["tailers_cores"], ".2f"),
                 fmt(r["write_ms_p90"], ".0f"), fmt(r.get("detect_ms_p50"), ".1f"),
                 fmt(r.get("detect_ms_p99"), ".1f"), seen]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conclusion(rows: list[dict[str, Any]]) -> str:
    by_n = {r["tailers"]: r for r in rows}
    ns = sorted(n for n in by_n if n > 0)
    if not ns:
        return "no tailers measured"
    lo, hi = ns[0], ns[-1]
    base = by_n.get(0)

    def per_tailer(key: str) -> float | None:
        # Between the two smallest counts: the larger ones may have saturated the NameNode.
        if len(ns) > 1:
            return (by_n[ns[1]][key] - by_n[lo][key]) / (ns[1] - lo)
        if base is not None:
            return (by_n[lo][key] - base[key]) / lo
        return None

    def figures(n: int) -> str:
        r = by_n[n]
        text = f"{r['rpc_per_s']:.0f} RPC/s, {r['namenode_cores']:.2f} cores"
        if base is not None:
            text += (f" ({r['rpc_per_s'] - base['rpc_per_s']:+.0f} RPC/s, "
                     f"{r['namenode_cores'] - base['namenode_cores']:+.2f} cores on the writer's)")
        return text

    shared = any(r.get("poll_share", 1) > 1 for r in rows)
    rpc, cpu = per_tailer("rpc_per_s"), per_tailer("namenode_cores")
    parts = []
    if shared:
        parts.append("each tailer polling N times less eagerly (poll_share=N)")
    if rpc is not None and cpu is not None:
        parts.append(f"each added tailer costs the NameNode about {rpc:.0f} RPC/s and "
                     f"{cpu * 100:.0f}% of a core ("
                     + (f"N={lo} to {ns[1]}" if len(ns) > 1 else f"N={lo} against the writer alone")
                     + ")")
    if 1 in by_n:
        parts.append(f"one tailer (design B, any group size): {figures(1)}")
    if hi > 1:
        parts.append(f"{hi} tailers (design A with {hi} members): {figures(hi)}")
    latency = [f"N={n} p50 {fmt(by_n[n].get('detect_ms_p50'), '.0f')} ms, "
               f"p99 {fmt(by_n[n].get('detect_ms_p99'), '.0f')} ms" for n in ns]
    parts.append("detection latency (rename to ready): " + ", ".join(latency))
    first, last = by_n[lo], by_n[hi]
    if shared and hi > lo and last["tailer_polls_per_s"]:
        # A shared budget slows each tailer on purpose (its pauses grow with N and with how
        # long a poll takes): say how far, rather than guess at saturation.
        parts.append(f"at N={hi} each tailer polls {last['tailer_polls_per_s']:.1f}/s "
                     f"({fmt(last.get('tailer_new_polls_per_s'), '.1f')}/s with new edits), "
                     f"{last['tailer_poll_ms']:.0f} ms a poll, instead of "
                     f"{first['tailer_polls_per_s']:.0f}/s at {first['tailer_poll_ms']:.0f} ms at "
                     f"N={lo}; RPCs wait {last['queue_ms']:.1f} ms in the queue instead of "
                     f"{first['queue_ms']:.1f}")
    elif (hi > lo and first["tailer_polls_per_s"] and last["tailer_polls_per_s"]
            and last["tailer_polls_per_s"] < first["tailer_polls_per_s"] / 2):
        parts.append(f"at N={hi} the NameNode is saturated: each tailer polls "
                     f"{last['tailer_polls_per_s']:.0f}/s instead of "
                     f"{first['tailer_polls_per_s']:.0f}/s, {last['tailer_poll_ms']:.0f} ms a poll "
                     f"instead of {first['tailer_poll_ms']:.0f}; RPCs wait "
                     f"{last['queue_ms']:.1f} ms in the queue instead of {first['queue_ms']:.1f}, "
                     f"and the others than getEditsFromTxid take {fmt(last['other_rpc_ms'], '.1f')}"
                     f" ms instead of {fmt(first['other_rpc_ms'], '.1f')}")
    missing = [r["tailers"] for r in rows if r["tailers"] and not r["all_seen"]]
    parts.append("every tailer saw every file" if not missing else f"files MISSED at N={missing}")
    return "; ".join(parts)


# ------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> int:
    try:
        env = {k: os.environ[k] for k in ("HDFS_NAMENODE", "WEBHDFS_URL", "HDFS_USER")}
    except KeyError as exc:
        raise SystemExit(f"{exc.args[0]} is not set: "
                         'eval "$(deploy/devstack/devstack env)"') from None
    web = urllib.parse.urlsplit(env["WEBHDFS_URL"].split(";")[0])
    jmx_url = args.jmx_url or f"{web.scheme}://{web.netloc}/jmx"
    rpc_port = parse_address(env["HDFS_NAMENODE"])[1]
    pid = namenode_pid(args.namenode_pid)
    fs = Files(args.writer, env)
    sampler = JmxSampler(jmx_url, rpc_port, pid)
    counts = [int(x) for x in args.tailers.split(",") if x.strip()]
    phases = ([0] if args.baseline and 0 not in counts else []) + counts
    root = f"/bench/namenode-cost/{uuid.uuid4().hex[:8]}"
    out = sys.stderr if args.json else sys.stdout
    print(f"NameNode {env['HDFS_NAMENODE']} (pid {pid}, JMX {jmx_url}); writer {args.rate:g} "
          f"files/s of {args.size} bytes (write + rename, {args.writer}); warm-up "
          f"{args.warmup:g} s, window {args.window:g} s; edit log rolled per phase: {args.roll}; "
          + ("each of N tailers polls with poll_share=N" if args.share
             else "each tailer polls as one daemon does"),
          file=out)
    rows = []
    try:
        for n in phases:
            load = os.getloadavg()[0]
            row = run_phase(n, args, env, sampler, fs, root)
            row["load_at_start"] = load
            row["others_get_edits_per_s"] = (row["get_edits_per_s"]
                                             - (row["tailer_polls_per_s"] or 0.0) * n)
            rows.append(row)
            print(f"  N={n}: {row['rpc_per_s']:.0f} RPC/s, {row['namenode_cores']:.3f} NameNode "
                  f"cores over {row['window_s']:.1f} s; {row['files_written']} files, seen by "
                  f"each: {row['seen_by_each'] or '-'}; a file's write + rename p50 "
                  f"{row['write_ms_p50']:.0f} ms, p90 {row['write_ms_p90']:.0f} ms; "
                  f"getEditsFromTxid from other clients {row['others_get_edits_per_s']:.0f}/s; "
                  f"open segment {row['segment_txns_at_end']} txns at the end; load {load:.1f}"
                  + (f"; detection (rename to ready, {row['detect_files']} files x {n} tailers) "
                     f"p50 {span(row['detect_ms_p50_each'])} ms, "
                     f"p99 {span(row['detect_ms_p99_each'])} ms per tailer"
                     if n else "")
                  + (f"; tailer errors {row['tailer_errors']}" if row["tailer_errors"] else ""),
                  file=out, flush=True)
            time.sleep(args.settle)
    finally:
        fs.delete(root)
    print(file=out)
    print(table(rows), file=out)
    print(file=out)
    print(conclusion(rows), file=out)
    if args.json:
        print(json.dumps({"namenode": env["HDFS_NAMENODE"], "writer": args.writer,
                          "rate": args.rate, "size": args.size,
                          "warmup_s": args.warmup, "window_s": args.window, "roll": args.roll,
                          "share": args.share,
                          "cores": os.cpu_count(), "rows": rows,
                          "conclusion": conclusion(rows)}, indent=2))
    return 0 if all(r["all_seen"] for r in rows if r["tailers"]) else 1


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--tailer-process":
        namenode, user, start, pattern, share = sys.argv[2:]
        tailer = tailer_process(namenode, user, int(start), pattern, int(share))
        try:
            import uvloop
        except ImportError:
            asyncio.run(tailer)
        else:
            uvloop.run(tailer)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tailers", default="1,3,10",
                        help="comma-separated numbers of concurrent tailer processes")
    parser.add_argument("--share", action="store_true",
                        help="each of N tailers runs Watch(..., poll_share=N), as the members "
                             "of an N-member group do (default: each polls as one daemon does)")
    parser.add_argument("--rate", type=float, default=20.0, help="files written per second")
    parser.add_argument("--size", type=int, default=4096, help="bytes per file")
    parser.add_argument("--writer", choices=["native", "webhdfs"], default="native",
                        help="how files are written: hdfs-native, or WebHDFS (whose DataNode "
                             "side holds fewer files/s here: it waits out each close)")
    parser.add_argument("--writer-threads", type=int, default=16,
                        help="threads writing (a close often waits 0.4-0.5 s for the DataNode's "
                             "block report to reach the NameNode)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds measured (rounded up to the JMX servlet's 10 s refreshes)")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds the tailers get after the writer stops to see every file")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between phases")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the writer-only phase (N = 0)")
    parser.add_argument("--no-roll", dest="roll", action="store_false",
                        help="do not roll the edit log at the start of each phase")
    parser.add_argument("--jmx-url", help="the NameNode's /jmx (default: from WEBHDFS_URL)")
    parser.add_argument("--namenode-pid", type=int,
                        help="the NameNode JVM's pid (default: the dev stack's pid file)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table goes to stderr)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
