"""The error table: each aiokafka error the transactional path can raise maps to one action."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import errors as E

from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.errors import TABLE, Action, DeliveryTimeout, classify


@pytest.mark.parametrize(("exc", "rows", "records", "action"), [
    (E.ProducerFenced(), True, 1, Action.CHECK_OWNER),
    (E.InvalidProducerEpoch(), False, 1, Action.CHECK_OWNER),
    (E.MessageSizeTooLargeError(), True, 40, Action.SMALLER_BATCHES),
    (E.RecordListTooLargeError(), True, 2, Action.SMALLER_BATCHES),
    (E.MessageSizeTooLargeError(), True, 1, Action.QUARANTINE_FILE),
    (E.TopicAuthorizationFailedError({"t"}), True, 10, Action.QUARANTINE_FILE),
    (E.InvalidTopicError(), True, 10, Action.QUARANTINE_FILE),
    (E.CorruptRecordException(), True, 10, Action.QUARANTINE_FILE),
    (E.PolicyViolationError(), True, 10, Action.QUARANTINE_FILE),
    (E.UnknownTopicOrPartitionError(), True, 10, Action.QUARANTINE_FILE),
    # The ledger and the dead-letter topic are never quarantined: only retried.
    (E.MessageSizeTooLargeError(), False, 1, Action.REBUILD),
    (E.TopicAuthorizationFailedError({"ledger"}), False, 1, Action.REBUILD),
    (E.OutOfOrderSequenceNumber(), True, 1, Action.REBUILD),
    (E.KafkaTimeoutError(), True, 1, Action.REBUILD),
    (E.KafkaConnectionError(), True, 1, Action.REBUILD),
    (E.RequestTimedOutError(), True, 1, Action.REBUILD),
    (E.NotEnoughReplicasError(), True, 1, Action.REBUILD),
    (E.IllegalOperation("not in transaction"), True, 1, Action.REBUILD),
    (DeliveryTimeout("3 batches"), True, 1, Action.REBUILD),
    (RuntimeError("a bug"), True, 1, Action.REBUILD),
])
def test_each_error_maps_to_its_action(exc: BaseException, rows: bool, records: int, action: Action) -> None:
    assert classify(exc, rows=rows, records=records) is action


def test_every_error_named_by_the_table_exists_in_aiokafka_or_here() -> None:
    for rule in TABLE:
        for name in rule.errors:
            assert name == "*" or hasattr(E, name) or hasattr(kafka_errors, name), name


async def test_bounded_raises_timeout_without_cancelling_and_drops_a_late_outcome() -> None:
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        raise E.ProducerFenced()

    task = asyncio.ensure_future(slow())
    with pytest.raises(TimeoutError):
        await kafka_errors.bounded(task, 0.05)
    assert not task.cancelled()
    gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done() and isinstance(task.exception(), E.ProducerFenced)
    assert await kafka_errors.bounded(asyncio.sleep(0, result=7), 1.0) == 7
