"""What the daemon's life loop does with each kind of error a life ends with: recover from the
ledger (Kafka, HDFS or the network away), or stop with a clear exit code (a bug, a fatal error)
instead of looping on it."""

from __future__ import annotations

import asyncio

import pytest

from hdfswatch.errors import FatalError, NameNodeUnavailableError
from pipeline.config import Config, DaemonConfig, HdfsConfig, KafkaConfig, SourceConfig
from pipeline.daemon import EXIT_FATAL, EXIT_INTERNAL, EXIT_OK, Daemon
from pipeline.kafka.errors import CommitterError

pytestmark = pytest.mark.unit


def daemon(errors: list[BaseException]) -> tuple[Daemon, list[int]]:
    config = Config(
        daemon=DaemonConfig(instance_id="edge"),
        hdfs=HdfsConfig(namenodes=("127.0.0.1:1",), webhdfs="http://127.0.0.1:1", user="u"),
        kafka=KafkaConfig(bootstrap="127.0.0.1:1"),
        sources=(SourceConfig(name="s", path="/d/*", topic="t"),), path="x.toml")
    d = Daemon(config)
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
                       CommitterError("transaction send failed")])
    assert await run(d) == EXIT_OK
    assert len(lives) == 4
    assert [e["error"].split(":")[0] for e in d.last_errors] == [
        "NameNodeUnavailableError", "ConnectionRefusedError", "CommitterError"]
