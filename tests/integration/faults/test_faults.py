"""Fault injection: every row exactly once, or its file quarantined with the reason, whatever
the network, the servers and the machine do meanwhile.

The daemon runs as a real process against a private Kafka broker and a private HDFS, and talks
to both through Toxiproxy (the broker advertises the proxy's port on a listener of its own, so
every connection the Kafka client opens stays behind the proxy). While Parquet and Avro files
arrive in the watched directory, a seeded random sequence of faults is applied, one after
another, each healed before the next:

- Kafka connections: added latency, a bandwidth limit, connection resets, connections cut after
  a few bytes (limit_data), cuts whose close reaches the client late (slow_close), the proxy down
  (connection refused), and a blackhole (nothing passes, connections stay open) that lasts
  longer than the producer's transaction.timeout.ms, so the broker aborts the open transaction;
- the broker process frozen (SIGSTOP, then SIGCONT), once briefly and once past the
  transaction timeout;
- the NameNode's RPC port (the edit stream) and its HTTP port (WebHDFS): latency, resets and a
  blackhole; the NameNode and the DataNode processes frozen. DataNode traffic itself cannot be
  proxied on 127.0.0.1 (the NameNode redirects reads to the port the DataNode listens on), hence
  the freeze;
- the daemon SIGKILLed at random moments, also in the middle of another fault, and started again
  (the daemon ending by itself is a failure; it is then started again, as systemd would, to see
  what became of the rows).

Broker-side refusals are scenarios of their own: a record larger than the topic's
max.message.bytes, the row topic deleted while files stream, partitions added while files stream.

After the faults heal, a read_committed consumer reads the row topic directly and the ledger and
the dead-letter topic are read back: each file must be done with every one of its rows, once, in
file order within its partition, or quarantined with a reason in the ledger and the dead-letter
topic; no file may stay unfinished, and the daemon must not have ended by itself. Each scenario
prints one summary line (seed, faults by kind, kills, rows expected and landed, lost, duplicated).

The normal suite runs two short seeded scenarios (every Kafka fault once, every HDFS fault once,
each with SIGKILLs of the daemon in between) and the refusal scenarios. `make soak` (marker `soak`) runs seeds one after
another for SOAK_MINUTES (default 30), seeds SOAK_SEED-0, SOAK_SEED-1...; one of them again:
`make soak SOAK_SEED=42 SOAK_FROM=3 SOAK_MINUTES=0`. FAULTS_SEED runs the short ones with another
seed, e.g. `FAULTS_SEED=7 pytest tests/integration/faults -k seeded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from harness import big_row_parquet
from scenario import (
    FAULT_KINDS,
    HDFS_FAULTS,
    KAFKA_FAULTS,
    FileSpec,
    Outcome,
    Scenario,
)

# The short run: every Kafka fault once in a seeded order, then every HDFS fault once, each
# with SIGKILLs of the daemon at seeded moments.
SHORT = {"kafka": (KAFKA_FAULTS, os.environ.get("FAULTS_SEED", "1")),
         "hdfs": (HDFS_FAULTS, os.environ.get("FAULTS_SEED", "2"))}


def show(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print past pytest's capture: the summary lines are the suite's figures."""
    with capsys.disabled():
        print(f"\n{line}", flush=True)


@contextlib.asynccontextmanager
async def scenario(request: pytest.FixtureRequest, seed: str, name: str, tmp: Path, **kw):  # type: ignore[no-untyped-def]
    kafka = request.getfixturevalue("private_kafka")
    hdfs = request.getfixturevalue("proxied_hdfs")
    toxiproxy = request.getfixturevalue("toxiproxy")
    stack = request.getfixturevalue("stack")
    toxiproxy.reset()
    root = os.environ.get("FAULTS_DAEMON_ROOT")
    sc = Scenario(seed=seed, name=name, kafka=kafka, hdfs=hdfs, toxiproxy=toxiproxy,
                  hdfs_user=stack.hdfs_user, tmp=tmp, daemon_root=Path(root) if root else None, **kw)
    await sc.create_topics()
    try:
        yield sc
    finally:
        sc.heal_all()
        if sc.daemon.alive():
            sc.daemon.kill()


async def run_seed(request: pytest.FixtureRequest, seed: str, name: str, tmp: Path, *,
                   kinds: tuple[str, ...], rounds: int, seconds: float, files: int,
                   rows: int) -> tuple[Outcome, str]:
    """Files arrive while seeded faults run (`rounds` of `kinds`, at least `seconds`); then
    the verdict. The daemon's rate limit stretches the streaming over the whole fault period,
    so that every fault meets open transactions and files half read; the verdict lifts it, so
    that what the faults held back drains at full speed."""
    span = max(seconds, 5.0 * len(kinds) * rounds)  # about how long the faults take
    rng = random.Random(seed)
    sizes = [rng.randint(rows // 2, rows) for _ in range(files)]
    async with scenario(request, seed, name, tmp, rows_per_second=int(sum(sizes) / span) + 1) as sc:
        specs = sc.add_files(sizes)
        before = len(specs) // 3
        for spec in specs[:before]:  # some are there before the first start
            sc.put(spec)
        sc.daemon.start()
        writer = sc.writer(specs[before:], over_s=span * 0.6)
        await sc.run_faults(kinds, rounds=rounds, seconds=seconds)
        await asyncio.to_thread(writer.join, 180)
        outcome = await sc.verdict(finish_timeout=90)
        return outcome, sc.report(outcome)


async def test_a_kafka_client_bootstrapped_through_the_proxy_stays_behind_it(private_kafka, toxiproxy):
    """The premise of every Kafka fault here: metadata sends the client back to the proxy, so
    the proxy going down cuts the client off (a client routed around it would not notice)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    toxiproxy.reset()
    producer = AIOKafkaProducer(bootstrap_servers=private_kafka.proxied_bootstrap,
                                request_timeout_ms=3000, retry_backoff_ms=100)
    await producer.start()
    try:
        await producer.send_and_wait("proxy-check", b"through the proxy")
        brokers = {(b.host, b.port) for b in producer.client.cluster.brokers()}
        assert brokers == {("127.0.0.1", private_kafka.proxy.port)}
        private_kafka.proxy.disable()
        with pytest.raises((KafkaError, TimeoutError)):
            await asyncio.wait_for(producer.send_and_wait("proxy-check", b"cut off"), 8)
    finally:
        private_kafka.proxy.enable()
        await producer.stop()


@pytest.mark.parametrize("faults", list(SHORT))
async def test_seeded_faults_every_row_once_or_quarantined(request, capsys, unique, tmp_path: Path, faults: str):
    kinds, seed = SHORT[faults]
    outcome, report = await run_seed(request, seed, unique, tmp_path, kinds=(*kinds, "daemon-kill"),
                                     rounds=1, seconds=0, files=9, rows=20_000)
    show(capsys, outcome.summary())
    assert outcome.problems == [], report


async def test_record_too_large_for_the_topic_quarantines_its_file(request, capsys, unique, tmp_path: Path):
    """The topic takes records up to 50 KB; one file has a row of 80 KB (under the client's own
    limit, so only the broker refuses it). That file is quarantined with the reason, the files
    around it, before and after, land whole."""
    async with scenario(request, "too-large", unique, tmp_path,
                        topic_config={"max.message.bytes": "50000"}) as sc:
        normal = sc.add_files([6000] * 4)
        big = sc.add_file(FileSpec(50, f"{sc.base}/dt=0/part-050-big.parquet", 3000,
                                   big_row_parquet(50, 3000, big_at=1500, big_bytes=80_000)))
        later = sc.add_files([6000] * 2, first=60)
        for spec in [*normal[:2], big, *normal[2:]]:
            sc.put(spec)
        sc.daemon.start()
        # Files put after the refusal must not wait behind it.
        await asyncio.sleep(8)
        for spec in later:
            sc.put(spec)
        outcome = await sc.verdict(finish_timeout=90)
        show(capsys, outcome.summary())
        entry = (await sc.ledger()).get(big.path)
        assert entry is not None and entry.state == "quarantined", sc.report(outcome)
        assert "MessageSizeTooLarge" in (entry.reason or "") or "too large" in (entry.reason or ""), \
            entry.reason
        assert outcome.problems == [], sc.report(outcome)


async def test_row_topic_deleted_mid_stream(request, capsys, unique, tmp_path: Path):
    """The row topic is deleted while a file streams. Rows already there are gone with it (the
    operator's doing), but the daemon must go on: the files put afterwards land whole, once, or
    are quarantined with the reason; none is left unfinished, none repeated."""
    async with scenario(request, "topic-deleted", unique, tmp_path,
                        rows_per_second=20_000) as sc:
        first = sc.add_files([20_000] * 3)
        for spec in first:
            sc.put(spec)
        sc.daemon.start()
        await sc.daemon_log_wait("ready: recovery done")
        await asyncio.sleep(2)  # mid-way through the first file (20,000 rows/s)
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=sc.kafka.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([sc.topic])
        finally:
            await admin.close()
        await asyncio.sleep(3)
        later = sc.add_files([10_000] * 3, first=10)
        for spec in later:
            sc.put(spec)
        outcome = await sc.verdict(finish_timeout=90, exempt={s.file_no for s in first})
        show(capsys, outcome.summary())
        assert outcome.problems == [], sc.report(outcome)


async def test_partitions_added_mid_stream(request, capsys, unique, tmp_path: Path):
    """Keyed rows while the row topic grows from 2 to 5 partitions, with a daemon kill after
    the change: every row once, each file's rows in file order within each partition."""
    async with scenario(request, "partitions", unique, tmp_path, partitions=2, key=["user"],
                        rows_per_second=40_000) as sc:
        specs = sc.add_files([20_000] * 6)
        for spec in specs[:3]:
            sc.put(spec)
        sc.daemon.start()
        await sc.daemon_log_wait("ready: recovery done")
        await asyncio.sleep(2)
        from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

        admin = AIOKafkaAdminClient(bootstrap_servers=sc.kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({sc.topic: NewPartitions(total_count=5)})
        finally:
            await admin.close()
        for spec in specs[3:]:
            sc.put(spec)
        await asyncio.sleep(3)
        sc.kill_daemon()
        sc.daemon.start()
        outcome = await sc.verdict(finish_timeout=120)
        show(capsys, outcome.summary())
        assert outcome.problems == [], sc.report(outcome)


@pytest.mark.soak
@pytest.mark.timeout(0)
async def test_soak(request, capsys, unique, tmp_path: Path):
    """Seeded scenarios one after another for SOAK_MINUTES; every problem of every seed is
    reported at the end, with the totals."""
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    base = os.environ.get("SOAK_SEED") or str(int(time.time()))
    first = i = int(os.environ.get("SOAK_FROM") or 0)  # SOAK_MINUTES=0 SOAK_FROM=3: seed 3 alone
    deadline = time.monotonic() + minutes * 60
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    failed: list[str] = []
    while time.monotonic() < deadline or i == first:
        seed = f"{base}-{i}"
        tmp = tmp_path / f"s{i}"
        tmp.mkdir()
        outcome, report = await run_seed(request, seed, f"{unique}-{i}", tmp, kinds=FAULT_KINDS,
                                         rounds=1, seconds=240, files=24, rows=40_000)
        show(capsys, outcome.summary())
        if outcome.problems:
            failed.append(report)
            show(capsys, report)
        faults.update(outcome.faults)
        for k in ("kills", "files", "done", "quarantined", "unfinished", "expected", "landed",
                  "lost", "duplicated", "out_of_order"):
            totals[k] += getattr(outcome, k)
        totals["self_exits"] += len(outcome.exits)
        i += 1
    show(capsys, f"soak seed={base} scenarios={i - first} minutes={minutes:g} faults={sum(faults.values())} "
         f"({', '.join(f'{k}:{v}' for k, v in sorted(faults.items()))}) "
         + " ".join(f"{k}={v}" for k, v in totals.items()) + f" failed_scenarios={len(failed)}")
    assert failed == [], "\n\n".join(failed)

