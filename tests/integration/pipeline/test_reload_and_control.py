"""Control changes on a running daemon, on the real stack: reloads that need a restart are
refused (nothing streamed again), a rotated admin token works at once, a pattern that does not
compile never reaches the flow, and the HTTP surface holds against hostile clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from harness import (
    ROOT,
    DaemonProcess,
    consume,
    create_topic,
    expected_ids,
    free_port,
    put,
    sample_file,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from pipeline.http import IDLE_TIMEOUT_S


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def reloads(text: str) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {s.labels["result"]: s.value for s in families["hdfs2kafka_config_reloads"].samples
            if s.name.endswith("_total")}


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.text()


class Notifications:
    """A stand-in for systemd's notify socket: the datagrams the daemon sends."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def until(self, prefix: bytes, timeout: float) -> list[bytes]:
        """Datagrams up to and including the first one starting with `prefix`."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            got.append(data)
            if data.startswith(prefix):
                return got
        raise AssertionError(f"no {prefix!r} within {timeout}s; got {got}")


@pytest.fixture
def notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[Notifications]:
    with tempfile.TemporaryDirectory(prefix="sdn-") as d:
        n = Notifications(str(Path(d) / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(Path(d) / "notify"))
        try:
            yield n
        finally:
            n.sock.close()


async def test_a_reload_that_needs_a_restart_is_refused_and_nothing_is_streamed_again(
        stack, webhdfs, unique, tmp_path: Path, notify: Notifications):
    base = f"/tests/reload-restart/{unique}"
    topics = {n: f"{n}-{unique}" for n in ("a", "b")}
    for t in topics.values():
        await create_topic(stack.kafka_bootstrap, t, 1)
    port = free_port()

    def config(instance_id: str, names: list[str]) -> Path:
        return write_config(tmp_path, stack, instance_id=instance_id, ledger_topic=f"ledger-{unique}",
                            sources=[{"name": n, "path": f"{base}/{n}/*", "topic": topics[n]} for n in names],
                            http_port=port)

    cfg = config(f"rr-{unique}", ["a"])
    rows = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        notify.until(b"READY=1", 120)
        for f in range(3):
            suffix, data = sample_file(f, 3000)
            put(webhdfs, f"{base}/a/part-{f}{suffix}", data)
            rows[f] = 3000
        assert sorted((await consume(stack.kafka_bootstrap, topics["a"], expect=9000, timeout=90)).ids) == \
            expected_ids(rows)

        # A new instance_id (another ledger: every file again) and a new source, in one reload.
        changed = config(f"rr2-{unique}", ["a", "b"])
        changed.rename(cfg)
        mark = len(daemon.log_text())
        daemon.signal(signal.SIGHUP)
        assert notify.until(b"READY=1", 30)[0].startswith(b"RELOADING=1")  # systemd leaves "reloading"

        # It keeps streaming the running registry: a new file of `a` lands, `b` is not added.
        suffix, data = sample_file(3, 2500)
        put(webhdfs, f"{base}/a/part-3{suffix}", data)
        rows[3] = 2500
        suffix, data = sample_file(4, 1000)
        put(webhdfs, f"{base}/b/part-4{suffix}", data)
        a = await consume(stack.kafka_bootstrap, topics["a"], expect=sum(rows.values()), timeout=90, settle=5)
        metrics = await get_text(f"http://127.0.0.1:{port}/metrics")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/status") as resp:
            status = await resp.json()
        assert daemon.alive()
        log = daemon.log_text()[mark:]
        assert daemon.terminate() == 0

    assert sorted(a.ids) == expected_ids(rows)  # every row once: nothing streamed again
    assert a.duplicates() == {} and a.out_of_order() == []
    # The log names the file and each setting that needs a restart.
    refused = [json.loads(line) for line in log.splitlines() if "reload refused" in line]
    assert len(refused) == 1
    assert refused[0]["config"] == str(cfg)
    assert refused[0]["restart_needed"] == ["daemon.instance_id"]
    assert "need a restart" in refused[0]["event"]
    assert "registry reloaded" not in log
    assert (await consume(stack.kafka_bootstrap, topics["b"], settle=2, timeout=20)).ids == []
    assert reloads(metrics) == {"refused": 1.0}
    assert status["instance_id"] == f"rr-{unique}" and [s["name"] for s in status["sources"]] == ["a"]
    assert any("daemon.instance_id" in e["error"] for e in status["last_errors"])


async def test_a_rotated_admin_token_works_at_once_and_the_old_one_stops(stack, unique, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    source = {"name": "t", "path": f"/tests/token/{unique}/*", "topic": f"t-{unique}"}
    cfg = write_config(tmp_path, stack, instance_id=f"tok-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[dict(source)], http_port=port, admin_token="old-token-1a2b3c4d")
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")

        async def pause(token: str) -> int:
            async with aiohttp.ClientSession() as http, http.post(
                    f"{url}/sources/t/pause", headers={"Authorization": f"Bearer {token}"}) as resp:
                await resp.json()  # errors are JSON too
                return resp.status

        assert await pause("old-token-1a2b3c4d") == 200
        assert await pause("new-token-5e6f7a8b") == 401
        mark = len(daemon.log_text())
        cfg.write_text(cfg.read_text().replace("old-token-1a2b3c4d", "new-token-5e6f7a8b"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("registry reloaded", after=mark)
        assert await pause("old-token-1a2b3c4d") == 401
        assert await pause("new-token-5e6f7a8b") == 200
        # The command line takes the token from the config: the new one.
        ctl = await asyncio.to_thread(cli, "ctl", "--config", str(cfg), "resume", "t")
        assert ctl.returncode == 0, ctl.stderr
        assert daemon.terminate() == 0


async def test_a_reload_with_a_pattern_that_does_not_compile_is_refused_and_sources_keep_streaming(
        stack, webhdfs, unique, tmp_path: Path):
    base = f"/tests/reload-pattern/{unique}"
    topic = f"good-{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 1)
    port = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"rp-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "good", "path": f"{base}/good/*", "topic": topic}], http_port=port)
    good = cfg.read_text()
    rows = {}
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        suffix, data = sample_file(0, 2000)
        put(webhdfs, f"{base}/good/part-0{suffix}", data)
        rows[0] = 2000
        await consume(stack.kafka_bootstrap, topic, expect=2000, timeout=60, settle=0)

        cfg.write_text(good + f'\n[[sources]]\nname = "bad"\npath = "{base}/bad/{{a,b/*"\ntopic = "bad-{unique}"\n')
        check = await asyncio.to_thread(cli, "check-config", str(cfg))
        assert check.returncode == 2
        assert f"{cfg}: sources[bad].path: not a valid path pattern" in check.stderr
        mark = len(daemon.log_text())
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused", after=mark)
        assert "sources[bad].path: not a valid path pattern" in daemon.log_text()[mark:]

        # The good source keeps streaming; the daemon stays ready and never restarts its flow.
        for f in (1, 2):
            suffix, data = sample_file(f, 2000)
            put(webhdfs, f"{base}/good/part-{f}{suffix}", data)
            rows[f] = 2000
        landed = await consume(stack.kafka_bootstrap, topic, expect=6000, timeout=60)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200
        after = daemon.log_text()[mark:]
        assert "flow failed" not in after and "registry reloaded" not in after
        assert reloads(await get_text(f"http://127.0.0.1:{port}/metrics")) == {"refused": 1.0}
        assert daemon.terminate() == 0
    assert sorted(landed.ids) == expected_ids(rows)


def _request(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_admin_bodies_are_checked_and_every_answer_is_json(stack, unique, tmp_path: Path):
    port = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"hb-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "s", "path": f"/tests/http/{unique}/*", "topic": f"s-{unique}"}],
                       http_port=port)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        bad = {
            "infinite rows": b'{"rows_per_second": 1e309}',
            "infinite bytes": b'{"bytes_per_second": -1e309}',
            "NaN": b'{"rows_per_second": NaN}',
            "Infinity": b'{"rows_per_second": Infinity}',
            "a huge integer": b'{"rows_per_second": 1' + b"0" * 400 + b"}",
            "nested": b'{"rows_per_second": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "a list": b"[" * 100_000 + b"]" * 100_000,
            "not JSON": b"rows=5",
        }
        for what, body in bad.items():
            for path in ("/sources/s/rate", "/sources/*/rate", "/workers"):
                code, answer = await asyncio.to_thread(_request, port, "PUT", path, body)
                assert code == 400, (what, path, code, answer[:200])
                assert isinstance(json.loads(answer)["error"], str), what
        code, answer = await asyncio.to_thread(_request, port, "PUT", "/sources/s/rate", b'{"rows_per_second": 1e300}')
        assert code == 200 and json.loads(answer) == {"source": "s", "rows_per_second": 1e300,
                                                      "bytes_per_second": None}
        code, answer = await asyncio.to_thread(_request, port, "PUT", "/sources/nope/rate", b"{}")
        assert code == 404 and "nope" in json.loads(answer)["error"]
        code, answer = await asyncio.to_thread(_request, port, "GET", "/nothing-here", b"")
        assert code == 404 and json.loads(answer)["error"]
        # /status stays JSON with the limits just set.
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/status") as resp:
            assert json.loads(await resp.text())["sources"][0]["rows_per_second_limit"] == 1e300
        assert daemon.terminate() == 0


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b"" or _closed_by_peer(s)
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


async def test_idle_connections_are_closed_and_the_daemon_keeps_streaming(
        stack, webhdfs, unique, tmp_path: Path):
    base = f"/tests/http-idle/{unique}"
    topic = f"idle-{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 1)
    port = free_port()
    cfg = write_config(tmp_path, stack, instance_id=f"hi-{unique}", ledger_topic=f"ledger-{unique}",
                       sources=[{"name": "s", "path": f"{base}/*", "topic": topic}], http_port=port)
    with DaemonProcess(cfg, tmp_path) as daemon:
        daemon.start()
        daemon.wait_for_log("ready: recovery done")
        held: list[socket.socket] = []
        try:
            for i in range(3000):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 3 == 0:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
                elif i % 3 == 1:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # then idle, kept alive
                s.setblocking(False)
                held.append(s)
            opened = time.monotonic()
            # Meanwhile the daemon streams.
            suffix, data = sample_file(0, 3000)
            put(webhdfs, f"{base}/part-0{suffix}", data)
            landed = await consume(stack.kafka_bootstrap, topic, expect=3000, timeout=60, settle=0)
            assert sorted(landed.ids) == expected_ids({0: 3000})
            # Within the idle timeout (and a margin) the daemon has closed every one of them.
            open_ = held
            while open_ and time.monotonic() - opened < IDLE_TIMEOUT_S + 15:
                await asyncio.sleep(1)
                open_ = [s for s in open_ if not _closed_by_peer(s)]
            assert open_ == [], f"{len(open_)} of 3000 idle connections still open after " \
                                f"{time.monotonic() - opened:.0f}s"
        finally:
            for s in held:
                s.close()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"ok": True}
        fds = len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) if daemon.proc else 0
        assert fds < 500, fds
        assert daemon.terminate() == 0


def _watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _truncate(webhdfs_url: str, user: str, path: str, length: int) -> int:
    query = urllib.parse.urlencode({"op": "TRUNCATE", "newlength": length, "user.name": user})
    req = urllib.request.Request(f"{webhdfs_url}/webhdfs/v1{path}?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


async def test_watch_keeps_its_json_output_clean_on_a_truncate(stack, webhdfs, unique):
    base = f"/tests/watch-truncate/{unique}"
    await asyncio.to_thread(webhdfs.write, f"{base}/t.avro", b"x" * 4096)
    proc = _watch("--namenode", stack.namenode, "--user", stack.hdfs_user, "--path", f"{base}/**", "--raw",
                  "--count", "1", "--duration", "60")
    try:
        assert proc.stdout is not None
        assert json.loads(await asyncio.to_thread(proc.stdout.readline))["event"] == "watching"
        assert await asyncio.to_thread(_truncate, stack.webhdfs_url, stack.hdfs_user, f"{base}/t.avro", 1024) == 200
        out, err = await asyncio.to_thread(proc.communicate, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON
    assert events[0]["event"] == "truncate" and events[-1]["event"] == "ready"
    assert events[-1]["path"] == f"{base}/t.avro"
    assert "detector.truncate" in err  # the log line went to stderr
