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
    Rule("future of a row batch; metadata of its topic; commit (AddPartitionsToTxn)",
         ("TopicAuthorizationFailedError", "GroupAuthorizationFailedError",
          "ClusterAuthorizationFailedError", "TransactionalIdAuthorizationFailed"),
         Action.REBUILD, "no ACL lets the daemon's principal do it: an ACL added later heals it, "
         "so nothing is quarantined; retried with backoff, one line naming the missing ACL"),
    Rule("future of a row batch; commit (AddPartitionsToTxn)",
         ("InvalidTopicError", "CorruptRecordException",
          "PolicyViolationError", "UnsupportedForMessageFormatError"),
         Action.QUARANTINE_FILE, "the broker refuses this file's records and will again (also "
         "code 87, INVALID_RECORD, which aiokafka raises as UnknownError)"),
    Rule("send/send_batch (metadata wait)", ("UnknownTopicOrPartitionError",),
         Action.QUARANTINE_FILE, "the source's topic does not exist and is not auto-created"),
    Rule("future of a ledger or dead-letter record", ("*",), Action.REBUILD,
         "the ledger must commit with the rows; nothing else can be done for it but retry"),
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
# for, which it raises as UnknownError with the code). Not 29, TOPIC_AUTHORIZATION_FAILED: an
# ACL may be added later.
_REFUSED_CODES = {2, 10, 17, 18, 43, 44, 87}
# Authorization errors (no ACL): never a file's fault.
_AUTHORIZATION = frozenset({"TopicAuthorizationFailedError", "GroupAuthorizationFailedError",
                            "ClusterAuthorizationFailedError", "TransactionalIdAuthorizationFailed"})


class DeliveryTimeout(Exception):
    """A send or a commit did not finish within our bound (the broker is away or stalled)."""


class KafkaUnavailable(TransientError):
    """A Kafka client could not start for a reason aiokafka does not turn into a KafkaError (a
    Kerberos failure from gssapi, a SCRAM exchange that fails): retried like an unreachable
    broker."""


class KafkaSecurityError(KafkaUnavailable):
    """Kafka refused who the daemon is or what it asked, or its certificate could not be
    trusted: the message is one line naming the setting or the ACL to fix. Retried with backoff
    like an unreachable broker, so a credential, certificate or ACL fixed on the broker's side
    heals it without a restart."""


class KafkaLoginRefused(KafkaSecurityError):
    """The SASL login failed: a wrong SCRAM password or user, a mechanism the broker does not
    offer, a Kerberos (GSSAPI) failure."""


class KafkaCertificateError(KafkaSecurityError):
    """The broker's certificate is not signed by a trusted CA, or does not name the host."""


class KafkaAccessDenied(KafkaSecurityError):
    """No ACL lets the daemon's principal do what starting a client needs (its transactional
    id, the cluster)."""


class CommitterError(Exception):
    """A transaction could not be committed; the flow restarts from the ledger."""


class RecordsRefused(CommitterError):
    """The broker refused records for good: `files` maps each file id to (source, reason), to be
    quarantined at its last committed position; the transaction was aborted."""

    def __init__(self, message: str, files: dict[int, tuple[str, str]]) -> None:
        super().__init__(message)
        self.files = files


class AccessDenied(CommitterError):
    """No ACL lets the daemon's principal write a topic (or use a group) of this transaction: the
    transaction was aborted and nothing is quarantined; the flow is rebuilt with backoff until
    an ACL lets it through."""


class Fenced(CommitterError):
    """The producer's epoch was bumped: another member of the group took over the shard, or the
    coordinator aborted a transaction that ran past transaction.timeout.ms. Either way the
    daemon asks its group for a new generation and recovers from the ledger."""


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
    if found & _AUTHORIZATION:
        return Action.REBUILD
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


# --------------------------------------------------------------------------- security failures


@dataclass(frozen=True)
class KafkaIdentity:
    """Who the daemon is to Kafka: `principal` as the broker's ACLs name it (User:NAME), `login`
    how it proves it (for messages)."""

    principal: str
    login: str
    mechanism: str | None = None  # the SASL mechanism; None: TLS or no authentication
    username: str | None = None  # PLAIN/SCRAM user
    service_name: str = "kafka"  # sasl.kerberos.service.name


# aiokafka's authorization error -> (resource as Kafka names it, kafka-acls flag, the operation
# the daemon needs on it).
_ACL_RESOURCES: dict[str, tuple[str, str, str]] = {
    "TopicAuthorizationFailedError": ("topic", "--topic", "Write"),
    "GroupAuthorizationFailedError": ("group", "--group", "Read"),
    "TransactionalIdAuthorizationFailed": ("transactional id", "--transactional-id", "Write"),
    "ClusterAuthorizationFailedError": ("cluster", "--cluster", "IdempotentWrite"),
}


def is_authorization(exc: BaseException) -> bool:
    """A refusal for want of an ACL (topic, group, transactional id, cluster)."""
    return bool(names(exc) & _AUTHORIZATION)


def acl_message(exc: BaseException, identity: KafkaIdentity | None, *, bootstrap: str,
                operation: str | None = None, resources: tuple[str, ...] = ()) -> str:
    """One line naming the missing ACL and the kafka-acls command that adds it, e.g. "no Kafka
    ACL lets User:analyst Write topic secure-x: kafka-acls --bootstrap-server H --add
    --allow-principal User:analyst --operation Write --topic secure-x". `resources`: the names
    refused, when the error does not carry them."""
    name = next((n for n in (c.__name__ for c in type(exc).__mro__) if n in _ACL_RESOURCES),
                "TopicAuthorizationFailedError")
    kind, flag, default_op = _ACL_RESOURCES[name]
    op = operation or default_op
    principal = identity.principal if identity else "User:<the daemon's principal>"
    if kind == "cluster":
        refused: tuple[str, ...] = ()
    else:
        refused = resources or _resource_names(exc) or (f"<the {kind}>",)
    what = kind if kind == "cluster" else f"{kind} {', '.join(refused)}"
    command = (f"kafka-acls --bootstrap-server {bootstrap} --add --allow-principal {principal} "
               f"--operation {op} " + (flag if kind == "cluster"
                                       else " ".join(f"{flag} {r}" for r in refused)))
    who = f"{principal} ({identity.login})" if identity else principal
    return f"no Kafka ACL lets {who} {op} {what}: {command}"


def _resource_names(exc: BaseException) -> tuple[str, ...]:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, str) and arg and " " not in arg:
        return (arg,)
    if isinstance(arg, set | frozenset | list | tuple):
        return tuple(sorted(str(a) for a in arg))
    return ()


def explain_connect_failure(exc: BaseException, identity: KafkaIdentity | None, *, host: str,
                            ca_location: str | None = None, security_protocol: str | None = None
                            ) -> KafkaSecurityError | None:
    """What a failure to connect to the Kafka broker at `host` ("name:port") means for the
    operator, as one line naming what to fix; None when it is no security failure (a broker
    away, a refused connection: retried as it is)."""
    found = names(exc)
    detail = _detail(exc)
    mech = identity.mechanism if identity else None
    if "SaslAuthenticationFailed" in found:
        if mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            user = identity.username if identity else None
            return KafkaLoginRefused(
                f"Kafka at {host} refused the SASL login of user {user} ({mech}): check kafka "
                f"sasl.username / sasl.password (and that the broker holds a {mech} credential "
                f"for {user}) [{detail}]")
        who = identity.login if identity else "the daemon"
        return KafkaLoginRefused(f"Kafka at {host} refused the SASL login of {who}: check the "
                                 f"kafka sasl.* settings [{detail}]")
    if "UnsupportedSaslMechanismError" in found:
        return KafkaLoginRefused(f"Kafka at {host} does not offer SASL mechanism {mech}: set kafka "
                                 f"sasl.mechanism to one it offers [{detail}]")
    if "IllegalSaslStateError" in found:
        return KafkaLoginRefused(f"Kafka at {host} broke off the SASL login ({mech}): does this "
                                 f"listener take security.protocol {security_protocol}? [{detail}]")
    if "GSSError" in found:
        return _gssapi_failure(exc, identity, host, detail)
    if "SSLCertVerificationError" in found:
        code = getattr(exc, "verify_code", None)
        reason = getattr(exc, "verify_message", None) or detail
        name = host.rsplit(":", 1)[0]
        # 62: X509_V_ERR_HOSTNAME_MISMATCH, 64: X509_V_ERR_IP_ADDRESS_MISMATCH
        if code in (62, 64) or "mismatch" in str(reason).lower():
            return KafkaCertificateError(
                f"Kafka's certificate at {host} does not name {name!r}: bootstrap through a host "
                "name its certificate names (the broker's advertised listeners must name one "
                "too), or set kafka ssl.endpoint.identification.algorithm = \"\" to skip the "
                f"check [{reason}]")
        where = (f"ssl.ca.location ({ca_location}) does not hold it" if ca_location
                 else "ssl.ca.location is not set and the system's CAs do not sign it")
        return KafkaCertificateError(
            f"Kafka's certificate at {host} is not trusted ({reason}; {where}): set kafka "
            "ssl.ca.location to the PEM file of the CA that signed the broker's certificate")
    if "KafkaConnectionError" in found and "closed" in detail and \
            str(security_protocol).upper() in ("SSL", "SASL_SSL"):
        # A listener that wants a client certificate ends the handshake so (or a broker
        # going down: retried either way).
        return KafkaCertificateError(
            f"Kafka at {host} closed the connection during the TLS handshake or the login: does "
            f"this listener take security.protocol {security_protocol}, and want a client "
            f"certificate (ssl.certificate.location)? [{detail}]")
    if "SSLError" in found:
        return KafkaCertificateError(
            f"TLS with Kafka at {host} failed: does this listener take security.protocol "
            f"{security_protocol}, and a client certificate (ssl.certificate.location) if it "
            f"wants one? [{detail}]")
    return None


def _gssapi_failure(exc: BaseException, identity: KafkaIdentity | None, host: str,
                    detail: str) -> KafkaLoginRefused:
    lowered = detail.lower()
    service = identity.service_name if identity else "kafka"
    if "not found in kerberos database" in lowered and "server" in lowered:
        name = host.rsplit(":", 1)[0]
        return KafkaLoginRefused(
            f"the KDC does not know {service}/{name}, the principal Kafka's GSSAPI asks for at "
            f"{host}: set kafka sasl.kerberos.service.name to the first part of the broker's "
            f"principal (now {service!r}) and bootstrap by the host name in it [{detail}]")
    from hdfswatch.kerberos import gss_error

    who = identity.login if identity else "the daemon's principal"
    cause = exc if isinstance(exc, Exception) else Exception(detail)
    return KafkaLoginRefused(f"Kafka GSSAPI login at {host}: {gss_error(cause, client=who)}")


def _detail(exc: BaseException) -> str:
    try:
        text = exc.gen_message() if hasattr(exc, "gen_message") else str(exc)  # gssapi's GSSError
    except Exception:
        text = str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
