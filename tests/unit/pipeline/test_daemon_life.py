"""What the daemon's life loop does with each kind of error a life ends with: recover from the
ledger (Kafka, HDFS or the network away), or stop with a clear exit code (a bug, a fatal error)
instead of looping on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hdfswatch.backoff import Backoff
from hdfswatch.errors import EditLogNotOpen, FatalError, NameNodeUnavailableError
from pipeline.config import Config, DaemonConfig, HdfsConfig, KafkaConfig, SourceConfig
from pipeline.daemon import EXIT_FATAL, EXIT_INTERNAL, EXIT_OK, Daemon
from pipeline.intake import Intake
from pipeline.kafka.client import start_client
from pipeline.kafka.errors import CommitterError, KafkaUnavailable
from pipeline.ledger import LedgerState

pytestmark = pytest.mark.unit


def daemon(errors: list[BaseException]) -> tuple[Daemon, list[int]]:
    config = Config(
        daemon=DaemonConfig(instance_id="edge"),
        hdfs=HdfsConfig(namenodes=("127.0.0.1:1",), webhdfs="http://127.0.0.1:1", user="u"),
        kafka=KafkaConfig(bootstrap="127.0.0.1:1"),
        sources=(SourceConfig(name="s", path="/d/*", topic="t"),), path="x.toml")
    d = Daemon(config)
    d.backoff = Backoff(initial=0.01, cap=0.05)
    lives: list[int] = []

    async def life() -> None:
        lives.append(1)
        if errors:
            raise errors.pop(0)
        d.request_stop()

    d._life = life  # type: ignore[method-assign]
    return d, lives


async def run(d: Daemon) -> int:
    return await asyncio.wait_for(d.run(), 20)


async def test_a_programming_error_ends_the_daemon_with_exit_70_instead_of_looping() -> None:
    d, lives = daemon([TypeError("unsupported operand")])
    assert await run(d) == EXIT_INTERNAL
    assert len(lives) == 1


async def test_a_fatal_error_ends_the_daemon_with_exit_1() -> None:
    d, lives = daemon([FatalError("no keytab")])
    assert await run(d) == EXIT_FATAL
    assert len(lives) == 1


async def test_unreachable_servers_and_failed_transactions_are_recovered_from() -> None:
    d, lives = daemon([NameNodeUnavailableError("no NameNode answered"), ConnectionRefusedError(),
                       CommitterError("transaction send failed"), EditLogNotOpen("txid -1"),
                       KafkaUnavailable("starting the transactional producer: GSSError")])
    assert await run(d) == EXIT_OK
    assert len(lives) == 6
    assert [e["error"].split(":")[0] for e in d.last_errors] == [
        "NameNodeUnavailableError", "ConnectionRefusedError", "CommitterError", "EditLogNotOpen",
        "KafkaUnavailable"]


async def test_a_kafka_client_that_fails_to_start_outside_aiokafka_errors_is_unavailable() -> None:
    class Client:
        async def start(self) -> None:
            raise ValueError("Server sent wrong signature!")  # aiokafka's failed SCRAM exchange

    with pytest.raises(KafkaUnavailable, match="starting the ledger reader: ValueError"):
        await start_client(Client(), "starting the ledger reader")


async def test_an_edit_log_not_open_yet_is_retried_and_records_no_start() -> None:
    class NameNode:
        async def get_current_txid(self) -> int:
            return -1  # a NameNode starting, or becoming active

    committer: asyncio.Queue[Any] = asyncio.Queue()
    intake = Intake(LedgerState("edge"), to_committer=committer, to_workers=asyncio.Queue(),
                    sources=lambda: [SourceConfig(name="s", path="/d/*", topic="t")], refused={})
    with pytest.raises(EditLogNotOpen):
        await intake.run(NameNode())
    assert committer.empty()  # no anchor at txid -1 that every later life would start from
