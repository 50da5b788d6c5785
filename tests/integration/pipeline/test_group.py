"""Daemons in a group (`[daemon] group`) share its shards through Kafka's group protocol: members
killed, added, frozen past their session timeout and restarted while files arrive, and still
every row lands once, in file order, and every member does part of the work."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import (
    DaemonProcess,
    consume,
    create_topic,
    free_port,
    ledger_entries,
    missing,
    put,
    sample_file,
    status,
    write_config,
)

SESSION_TIMEOUT_S = 6.0  # the broker's group.min.session.timeout.ms


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {"dir": f"/tests/group/{unique}", "topic": f"rows-{unique}",
            "ledger": f"ledger-{unique}", "group": f"g-{unique}", "unique": unique}


@dataclass
class Member:
    """One daemon of the group, its status URL and what its /status said."""

    name: str
    proc: DaemonProcess
    url: str
    best_rows: int = 0
    """The largest rows_committed (summed over sources) its /status reported, over all its starts."""
    last: dict[str, Any] = field(default_factory=dict)
    """Its last /status."""


def members(tmp_path: Path, stack: Any, names: dict[str, str], who: list[str], *,
            source: dict[str, Any], **daemon: Any) -> list[Member]:
    out = []
    for name in who:
        port = free_port()
        cfg = write_config(tmp_path, stack, instance_id=f"{name}-{names['unique']}",
                           ledger_topic=names["ledger"], sources=[dict(source)], http_port=port,
                           group=names["group"], group_session_timeout_s=SESSION_TIMEOUT_S, **daemon)
        out.append(Member(name, DaemonProcess(cfg, tmp_path), f"http://127.0.0.1:{port}"))
    return out


async def sample(m: Member) -> dict[str, Any] | None:
    """The member's /status now (None when it does not answer within 2 s: down, or frozen)."""
    if not m.proc.alive():
        return None
    try:
        doc = await asyncio.wait_for(status(m.url), 2.0)
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
        return None
    m.last = doc
    m.best_rows = max(m.best_rows, sum(s["rows_committed"] for s in doc["sources"]))
    return doc


async def keep_sampling(ms: list[Member], interval: float = 0.5) -> None:
    while True:
        await asyncio.gather(*(sample(m) for m in ms))
        await asyncio.sleep(interval)


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], what: str,
                timeout: float, ms: list[Member]) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = check()
        if isinstance(ok, Awaitable):
            ok = await ok
        if ok:
            return
        await asyncio.sleep(0.3)
    tails = "\n".join(f"--- {m.name} (alive={m.proc.alive()}):\n{m.proc.log_text()[-3000:]}" for m in ms)
    raise AssertionError(f"not within {timeout}s: {what}\n{tails}")


def streaming(ms: list[Member]) -> list[list[int]]:
    """The shards each member's last /status said it streams."""
    return [list((m.last.get("group") or {}).get("shards_streaming") or []) for m in ms]


async def fresh(ms: list[Member]) -> None:
    """Every member's /status again (so that `streaming` is current)."""
    for m in ms:
        m.last = {}
    await asyncio.gather(*(sample(m) for m in ms))


def spread(ms: list[Member], shards: int) -> Callable[[], Awaitable[bool]]:
    """A check: every shard streamed by exactly one of `ms`, and each of them streams some."""
    async def check() -> bool:
        await fresh(ms)
        got = streaming(ms)
        return all(got) and sorted(s for g in got for s in g) == list(range(shards))
    return check


async def test_a_group_of_three_shares_the_files_and_every_row_lands_once_through_kill_join_freeze_and_restart(
        stack, webhdfs, names, tmp_path: Path):
    """Three members of a six-shard group stream Parquet and Avro files that keep arriving while
    one member is SIGKILLed (its shards move after the session timeout), a fourth joins, one is
    frozen (SIGSTOP) past the session timeout (the others take its shards and fence its
    producers; thawed, it finds itself fenced or revoked and rejoins) and then all of them are
    restarted at once. A read_committed consumer finds every row once and in file order, the
    ledger has every file done, and each of the four members committed rows at some point."""
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 3)
    source = {"name": "rows", "path": f"{base}/in/*", "topic": topic, "start_from": "earliest",
              # The group's rate (each member applies its share of the shards): the files take
              # about a minute to go through, so every step below happens while rows stream.
              "rows_per_second": 2000}
    a, b, c, d = ms = members(tmp_path, stack, names, ["a", "b", "c", "d"], source=source,
                              shards=6, unit_rows=1000)

    def file_rows(f: int) -> int:
        return 1000 + (f * 389) % 2000

    files = 44
    rows: dict[int, int] = {}
    paths: dict[int, str] = {}

    def write(f: int) -> None:
        suffix, data = sample_file(f, file_rows(f))
        paths[f] = f"part-{f:03d}{suffix}"
        put(webhdfs, f"{base}/in/{paths[f]}", data)
        rows[f] = file_rows(f)

    async def writer(first: int) -> None:
        for f in range(first, files):
            await asyncio.to_thread(write, f)
            await asyncio.sleep(0.8)

    for f in range(8):  # there before the group starts: `earliest` lists them
        write(f)
    tasks: list[asyncio.Task[None]] = []
    with a.proc, b.proc, c.proc, d.proc:
        try:
            for m in (a, b, c):
                m.proc.start()
            for m in (a, b, c):
                await asyncio.to_thread(m.proc.wait_for_log, "ready: recovery done", 90)
            tasks = [asyncio.create_task(keep_sampling(ms)), asyncio.create_task(writer(8))]
            await until(spread([a, b, c], 6), "the three members share the six shards", 60, ms)

            # SIGKILL a member that has committed rows: the others take its shards once the
            # coordinator misses its heartbeats.
            await until(lambda: a.best_rows > 0, "member a commits rows", 90, ms)
            a.proc.kill()
            await until(spread([b, c], 6), "b and c take a's shards", 60, ms)

            # A fourth member joins: the shards are spread over three again.
            d.proc.start()
            await until(spread([b, c, d], 6), "d joins and gets shards", 90, ms)
            await until(lambda: d.best_rows > 0, "member d commits rows", 90, ms)

            # Freeze b past its session timeout: c and d take its shards (fencing its producers);
            # thawed, b finds out and rejoins.
            mark = len(b.proc.log_text())
            b.proc.signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(SESSION_TIMEOUT_S + 4)
            finally:
                b.proc.signal(signal.SIGCONT)
            await asyncio.to_thread(b.proc.wait_for_log, '"shards assigned"', 90, mark)
            await until(spread([b, c, d], 6), "b rejoins and gets shards again", 90, ms)
            after = b.proc.log_text()[mark:]
            assert "fenced: another member took over a shard of ours" in after \
                or "shards revoked: stopping them at a unit boundary" in after, after[-4000:]

            # Restart all at once.
            codes = await asyncio.gather(*(asyncio.to_thread(m.proc.terminate, 90) for m in (b, c, d)))
            assert codes == [0, 0, 0], codes
            for m in ms:
                m.proc.start()
            await until(spread(ms, 6), "the four restarted members share the six shards", 120, ms)

            await tasks[1]  # every file written
            landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=150)
            assert len(rows) == files
            assert missing(landed, rows) == {}
            assert landed.duplicates() == {}
            assert landed.out_of_order() == []
            await asyncio.gather(*(sample(m) for m in ms))
            assert {m.name: m.best_rows for m in ms if m.best_rows == 0} == {}, \
                {m.name: m.best_rows for m in ms}

            entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["group"])
            states = {paths[f]: entries[paths[f]].state if paths[f] in entries else None for f in rows}
            assert {p: st for p, st in states.items() if st != "done"} == {}
            codes = await asyncio.gather(*(asyncio.to_thread(m.proc.terminate, 90) for m in ms))
            assert codes == [0, 0, 0, 0], codes
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if b.proc.alive():
                b.proc.signal(signal.SIGCONT)


async def test_a_dead_members_half_done_file_resumes_mid_file_on_its_new_owner(
        stack, webhdfs, names, tmp_path: Path):
    """A member streaming a big file is SIGKILLed halfway; after the session timeout the other
    member owns both shards, recovers the dead one's shard from its partition of the ledger and
    finishes the file: every row once, in order.

    What proves that it resumed at the recorded position, not from the start: the ledger read
    right after the kill (before the session timeout, so before anyone else could write the
    shard) says the dead member committed `done` rows of the file, 0 < done < all, the file still
    active; the new owner, which streamed nothing else, then committed exactly `all - done` rows
    (its /status rows_committed). Started from the beginning it would have committed all of them
    (and the consumer would find the first `done` rows twice); started anywhere else, rows would
    be missing or repeated. Its /status also showed the file in flight with rows_done already at
    `done` or more, as a worker handed a file at its recorded position shows it."""
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 2)
    total = 60_000
    source = {"name": "big", "path": f"{base}/in/*", "topic": topic, "start_from": "earliest",
              # The group's rate: the owner of one of the two shards applies half of it, about
              # 20 s for the file.
              "rows_per_second": 6000}
    ms = members(tmp_path, stack, names, ["p", "q"], source=source, shards=2, unit_rows=1000)
    p, q = ms
    with p.proc, q.proc:
        for m in ms:
            m.proc.start()
        for m in ms:
            await asyncio.to_thread(m.proc.wait_for_log, "ready: recovery done", 90)
        await until(spread(ms, 2), "each member streams one shard", 60, ms)

        suffix, data = sample_file(0, total)
        name = f"big{suffix}"
        put(webhdfs, f"{base}/in/{name}", data)

        def in_flight(m: Member) -> dict[str, Any] | None:
            return next((f for f in m.last.get("files_in_flight", []) if f["path"].endswith(name)), None)

        async def someone_streams() -> bool:
            await fresh(ms)
            return any(in_flight(m) for m in ms)

        await until(someone_streams, "a member streams the file", 60, ms)
        owner, heir = (p, q) if in_flight(p) else (q, p)

        async def some_committed() -> bool:
            await sample(owner)
            return owner.best_rows >= 5000
        await until(some_committed, "the owner commits part of the file", 60, ms)
        mark = len(heir.proc.log_text())
        owner.proc.kill()
        killed = time.monotonic()
        entry = (await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["group"]))[name]
        # Read before the heir can own the shard (it waits for the session timeout first).
        assert time.monotonic() - killed < SESSION_TIMEOUT_S - 1
        done = entry.rows
        assert entry.state == "active" and 0 < done < total, entry

        # The heir takes the dead member's shard after the session timeout, and resumes.
        seen_rows_done: list[int] = []

        async def watch_heir() -> None:
            while True:
                await sample(heir)
                f = in_flight(heir)
                if f is not None:
                    seen_rows_done.append(f["rows_done"])
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch_heir())
        try:
            await until(lambda: streaming([heir]) == [[0, 1]], "the heir streams both shards", 60, ms)
            landed = await consume(stack.kafka_bootstrap, topic, expect=total, timeout=120)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert missing(landed, {0: total}) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []

        await sample(heir)
        assert heir.best_rows == total - done, (heir.best_rows, total, done)
        assert seen_rows_done and seen_rows_done[0] >= done, (seen_rows_done[:5], done)
        after = heir.proc.log_text()[mark:]
        assert '"shards assigned"' in after and '"ledger read"' in after, after[-3000:]
        final = (await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["group"]))[name]
        assert final.state == "done" and final.rows == total, final
        assert heir.proc.terminate() == 0


async def test_members_running_different_registries_hold_the_group_and_lose_no_file(
        stack, webhdfs, names, tmp_path: Path):
    """A member reloads a registry with a second source while the other still runs one source:
    had they gone on, the other would have passed over the new source's files in its shard for
    good. Instead the group is held: no member streams (its /status and /metrics say so, with
    each registry's members), while files of both sources land. Once the other member reloads
    the same registry, the group resumes: every row of every file once, the files that landed
    during the hold included, and every file done in the ledger."""
    topic, base = names["topic"], names["dir"]
    await create_topic(stack.kafka_bootstrap, topic, 2)
    one = {"name": "one", "path": f"{base}/one/*", "topic": topic, "start_from": "earliest"}
    two = {"name": "two", "path": f"{base}/two/*", "topic": topic, "start_from": "earliest"}
    ms = members(tmp_path, stack, names, ["p", "q"], source=one, shards=2, unit_rows=500)
    p, q = ms
    rows: dict[int, int] = {}
    paths: dict[int, str] = {}

    def write(f: int, where: str) -> None:
        suffix, data = sample_file(f, 700 + f * 37)
        paths[f] = f"{where}-{f:03d}{suffix}"
        put(webhdfs, f"{base}/{where}/{paths[f]}", data)
        rows[f] = 700 + f * 37

    def reconfigure(m: Member, sources: list[dict[str, Any]]) -> None:
        """Rewrite the member's config file with `sources`, then SIGHUP it (a reload)."""
        port = int(m.url.rsplit(":", 1)[1])
        write_config(tmp_path, stack, instance_id=f"{m.name}-{names['unique']}",
                     ledger_topic=names["ledger"], sources=[dict(s) for s in sources],
                     http_port=port, group=names["group"],
                     group_session_timeout_s=SESSION_TIMEOUT_S, shards=2, unit_rows=500)
        m.proc.signal(signal.SIGHUP)

    async def held() -> bool:
        await fresh(ms)
        return all((m.last.get("group") or {}).get("held") for m in ms)

    async def held_metric(m: Member) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{m.url}/metrics") as resp:
            text = await resp.text()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("hdfs2kafka_group_held "))

    with p.proc, q.proc:
        for m in ms:
            m.proc.start()
        for m in ms:
            await asyncio.to_thread(m.proc.wait_for_log, "ready: recovery done", 90)
        await until(spread(ms, 2), "each member streams one shard", 60, ms)
        for f in range(6):
            write(f, "one")
        before = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=90)
        assert missing(before, rows) == {}

        # q runs two sources, p one: the group holds.
        mark = {m.name: len(m.proc.log_text()) for m in ms}
        reconfigure(q, [one, two])
        await until(held, "both members say the group is held", 60, ms)
        assert streaming(ms) == [[], []]
        for m in ms:
            assert m.last["group"]["held"] == {p.last["group"]["registry"]: [f"p-{names['unique']}"],
                                               q.last["group"]["registry"]: [f"q-{names['unique']}"]}
            assert await held_metric(m) == 1.0
            assert "the group is held" in m.proc.log_text()[mark[m.name]:]
        for f in range(6, 14):
            write(f, "one" if f % 2 else "two")
        await asyncio.sleep(4)
        during = await consume(stack.kafka_bootstrap, topic, timeout=10, settle=2)
        assert len(during.records) == len(before.records), "rows streamed while the group was held"

        # p reloads the same registry: the group resumes where it stopped.
        reconfigure(p, [one, two])
        await until(spread(ms, 2), "the members share the shards again", 60, ms)
        assert all(not (m.last.get("group") or {}).get("held") for m in ms)
        assert [await held_metric(m) for m in ms] == [0.0, 0.0]
        landed = await consume(stack.kafka_bootstrap, topic, expect=sum(rows.values()), timeout=90)
        assert missing(landed, rows) == {}
        assert landed.duplicates() == {}
        assert landed.out_of_order() == []
        entries = await ledger_entries(stack.kafka_bootstrap, names["ledger"], names["group"])
        states = {paths[f]: entries[paths[f]].state if paths[f] in entries else None for f in rows}
        assert {path: st for path, st in states.items() if st != "done"} == {}
        codes = await asyncio.gather(*(asyncio.to_thread(m.proc.terminate, 90) for m in ms))
        assert codes == [0, 0], codes
