"""What the daemon does about each error aiokafka (0.14) can raise on the transactional path.

One table, read from aiokafka's producer, sender and transaction manager rather than assumed:
every exception that `init_transactions` (the producer's `start`), `send`, `send_batch`, the
futures they return, `commit_transaction` and `abort_transaction` can raise is mapped to one
action. The committer asks `classify()`; the daemon acts on the answer.

Facts from aiokafka's code that shape the table:
- A produce error that is not retriable fails only the future of its batch; the transaction
  manager is not told, so a `commit_transaction()` issued before every future was awaited
  commits the transaction without the refused batch. Await every send first.
- With idempotence on, a retriable produce error (unknown topic, not leader, timeouts) is
  retried without end: a send future can stay pending for as long as the broker is away, and
  `commit_transaction`, `abort_transaction` and `stop` wait for those batches. Every wait on
  the producer needs a bound of ours.
- A transaction that the coordinator aborted because it outlived `transaction.timeout.ms` (a
  stalled broker, a frozen process) bumps the producer epoch exactly as a second instance's
  `init_transactions` does: both surface as `ProducerFenced` (or `InvalidProducerEpoch`), from
  any call or from the sender in the background. The error alone cannot tell them apart; the
  ledger's owner record can (see pipeline/daemon.py).
- After any failed transaction the producer's sequence numbers may no longer match the
  broker's (a batch refused mid-sequence), so the only safe continuation is a new producer
  (a new epoch) and the committed ledger: the same path as a crash.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hdfswatch.errors import TransientError

T = TypeVar("T")


class Action(enum.Enum):
    REBUILD = "rebuild"
    """Abort, stop the producer, rebuild the flow from the committed ledger (a new producer and
    epoch). Transient or unknown trouble; the daemon backs off when it repeats."""
    QUARANTINE_FILE = "quarantine-file"
    """The broker refused a record of one file and will refuse it again: quarantine that file
    (at its last committed position), rebuild, the other files go on."""
    SMALLER_BATCHES = "smaller-batches"
    """The broker refused a batch of several records as too large: lower the batch bound for
    that topic and rebuild. Only a single record that is too large quarantines its file."""
    CHECK_OWNER = "check-owner"
    """Fenced: another instance took over, or the coordinator aborted a transaction that ran past
    transaction.timeout.ms. The ledger's owner record tells which: exit, or rebuild."""


@dataclass(frozen=True)
class Rule:
    calls: str
    errors: tuple[str, ...]
    action: Action
    why: str


# The table. `calls`: where aiokafka raises it ("future" = the future a send returned).
TABLE: tuple[Rule, ...] = (
    Rule("any call, any future, the sender in the background",
         ("ProducerFenced", "InvalidProducerEpoch"), Action.CHECK_OWNER,
         "epoch bumped: a second instance's init_transactions, or a transaction timed out"),
    Rule("future of a row batch",
         ("MessageSizeTooLargeError", "RecordListTooLargeError"), Action.SMALLER_BATCHES,
         "broker's max.message.bytes below the batch; a batch of one record quarantines its file"),
    Rule("send/send_batch (client-side size check)", ("MessageSizeTooLargeError",),
         Action.QUARANTINE_FILE, "one record larger than max.request.size"),
    Rule("future of a row batch; commit (AddPartitionsToTxn)",
         ("TopicAuthorizationFailedError", "InvalidTopicError", "CorruptRecordException",
          "PolicyViolationError", "UnsupportedForMessageFormatError"),
         Action.QUARANTINE_FILE, "the broker refuses this file's records and will again (also "
         "code 87, INVALID_RECORD, which aiokafka raises as UnknownError)"),
    Rule("send/send_batch (metadata wait)", ("UnknownTopicOrPartitionError",),
         Action.QUARANTINE_FILE, "the source's topic does not exist and is not auto-created"),
    Rule("future of a ledger or dead-letter record", ("*",), Action.REBUILD,
         "the ledger must commit with the rows; nothing else can be done for it but retry"),
    Rule("init_transactions", ("TransactionalIdAuthorizationFailed", "ClusterAuthorizationFailedError"),
         Action.REBUILD, "no ACL for the transactional id: retried with backoff, logged as an error"),
    Rule("send/send_batch", ("IllegalOperation",), Action.REBUILD,
         "not in a transaction: the transaction ended under us (checked for a fence first)"),
    Rule("send/send_batch", ("KafkaTimeoutError",), Action.REBUILD,
         "metadata or buffer space not available within request_timeout_ms"),
    Rule("commit/abort/send", ("OutOfOrderSequenceNumber", "InvalidTxnState",
                               "InvalidProducerIdMapping", "ProducerClosed"),
         Action.REBUILD, "the producer's state is broken: a new producer starts over"),
    Rule("commit/abort/future", ("KafkaConnectionError", "NodeNotReadyError",
                                 "RequestTimedOutError", "NotEnoughReplicasError",
                                 "NotEnoughReplicasAfterAppendError", "KafkaError"),
         Action.REBUILD, "transient: retried by aiokafka until our bound, then rebuilt"),
    Rule("our own bound on a wait (delivery, commit)", ("DeliveryTimeout",), Action.REBUILD,
         "a send or commit did not finish within transaction.timeout.ms"),
)

_BY_NAME: dict[str, Action] = {}
for _rule in TABLE:
    for _name in _rule.errors:
        _BY_NAME.setdefault(_name, _rule.action)

# Broker error codes of records the broker refuses for good (for errors aiokafka has no class
# for, which it raises as UnknownError with the code).
_REFUSED_CODES = {2, 10, 17, 18, 29, 43, 44, 87}


class DeliveryTimeout(Exception):
    """A send or a commit did not finish within our bound (the broker is away or stalled)."""


class KafkaUnavailable(TransientError):
    """A Kafka client could not start for a reason aiokafka does not turn into a KafkaError (a
    Kerberos failure from gssapi, a SCRAM exchange that fails): retried like an unreachable
    broker."""


class CommitterError(Exception):
    """A transaction could not be committed; the flow restarts from the ledger."""


class RecordsRefused(CommitterError):
    """The broker refused records for good: `files` maps each file id to (source, reason), to be
    quarantined at its last committed position; the transaction was aborted."""

    def __init__(self, message: str, files: dict[int, tuple[str, str]]) -> None:
        super().__init__(message)
        self.files = files


class Fenced(CommitterError):
    """The producer's epoch was bumped: another instance with the same instance_id started, or
    the coordinator aborted a transaction that ran past transaction.timeout.ms. The daemon reads
    the ledger's owner record to tell which."""


def names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def is_fenced(exc: BaseException) -> bool:
    return bool(names(exc) & {"ProducerFenced", "InvalidProducerEpoch"})


def classify(exc: BaseException, *, rows: bool, records: int = 1) -> Action:
    """The action for `exc`. `rows`: it concerns a batch of one file's rows (not the ledger or
    the dead-letter topic); `records`: how many records that batch held."""
    if is_fenced(exc):
        return Action.CHECK_OWNER
    if not rows:
        return Action.REBUILD
    found = names(exc)
    if found & {"MessageSizeTooLargeError", "RecordListTooLargeError"}:
        return Action.SMALLER_BATCHES if records > 1 else Action.QUARANTINE_FILE
    if getattr(exc, "errno", None) in _REFUSED_CODES:
        return Action.QUARANTINE_FILE
    for name in type(exc).__mro__:
        action = _BY_NAME.get(name.__name__)
        if action is not None:
            return action
    return Action.REBUILD


def background_failure(producer: Any) -> BaseException | None:
    """The error that ended the producer's transaction in the background (the sender task hit
    ProducerFenced, or AddPartitionsToTxn was refused), or None.

    aiokafka keeps it only on its transaction manager; this is the one place that reads it.
    """
    txn = getattr(producer, "_txn_manager", None)
    waiter = getattr(txn, "_transaction_waiter", None)
    if waiter is None or not waiter.done() or waiter.cancelled():
        return None
    exc: BaseException | None = waiter.exception()
    return exc


def transaction_timeout_ms(settings: Mapping[str, Any]) -> int:
    """The producer's transaction.timeout.ms from the `[kafka]` client settings (aiokafka's
    default is 60000)."""
    return int(settings.get("transaction_timeout_ms", 60_000))


async def bounded(aw: Awaitable[T], timeout_s: float) -> T:
    """Await `aw` for at most `timeout_s` (TimeoutError past it) without cancelling it: aiokafka's
    transaction calls must not be cancelled half-way, and an outcome that comes later is
    retrieved and dropped instead of being logged as never retrieved."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise TimeoutError
    return task.result()
