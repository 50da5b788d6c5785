"""Every aiokafka client hdfs2kafka opens is built here: the daemon's transactional producer,
read_committed consumers, the admin client, from the `[kafka]` settings of the config.

`config.kafka.client` holds aiokafka keyword arguments already translated from Kafka's own names
(see `pipeline.config`), plus the `ssl.*` file settings under `_ssl`; `client_args` turns those
into an `ssl_context`. Producers take every argument; consumers and admin clients only the
connection ones (security, timeouts, client id), since the batching and transaction settings
are the producer's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog

from pipeline.config import KafkaConfig
from pipeline.kafka.errors import KafkaUnavailable

log = structlog.get_logger("hdfs2kafka.kafka")

# What the daemon's producer batches by default (overridden by batch.size and linger.ms).
PRODUCER_DEFAULTS: Mapping[str, Any] = {"max_batch_size": 512 * 1024, "linger_ms": 5}
# The keyword arguments that every aiokafka client (producer, consumer, admin) accepts.
CONNECTION_ARGS = frozenset({
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "sasl_kerberos_service_name", "sasl_kerberos_domain_name", "ssl_context",
    "request_timeout_ms", "client_id", "metadata_max_age_ms", "connections_max_idle_ms",
    "retry_backoff_ms",
})
# A stop that outlasts this has given up on batches the broker will not take: close instead.
PRODUCER_STOP_TIMEOUT_S = 10.0


def client_args(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """aiokafka keyword arguments from `config.kafka.client` (None: a plain connection).

    The PEM files of `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location` (and
    `ssl.key.password`) become an SSL context; `ssl.endpoint.identification.algorithm = ""`
    turns off the host name check, as it does in Kafka's Java client.
    """
    settings = settings or {}
    args = {k: v for k, v in settings.items() if k != "_ssl"}
    ssl = settings.get("_ssl")
    if ssl:
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(cafile=ssl.get("ssl.ca.location"),
                                 certfile=ssl.get("ssl.certificate.location"),
                                 keyfile=ssl.get("ssl.key.location"),
                                 password=ssl.get("ssl.key.password"))
        if ssl.get("ssl.endpoint.identification.algorithm", "https") == "":
            ctx.check_hostname = False
        args["ssl_context"] = ctx
    return args


def connection_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `client_args` that consumers and admin clients take."""
    return {k: v for k, v in args.items() if k in CONNECTION_ARGS}


def transactional_id(instance_id: str) -> str:
    """The daemon's transactional id: one per instance_id, so a second life fences the first."""
    return f"hdfs2kafka-{instance_id}"


# --------------------------------------------------------------------------- producers


async def start_transactional_producer(kafka: KafkaConfig, instance_id: str) -> Any:
    """The daemon's producer, started: transactional (`hdfs2kafka-<instance_id>`), idempotent,
    acks=all, batches of 512 KiB and 5 ms unless the settings say otherwise.

    Starting it fences any earlier producer with the same id and aborts that one's open
    transaction, so the ledger can be read to its end afterwards.
    """
    from aiokafka import AIOKafkaProducer

    args = {**PRODUCER_DEFAULTS, **client_args(kafka.client)}
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, transactional_id=transactional_id(instance_id),
        enable_idempotence=True, acks="all", **args)
    try:
        await start_client(producer, "starting the transactional producer")
    except BaseException:
        await producer.stop()
        raise
    return producer


async def stop_producer(producer: Any, timeout_s: float = PRODUCER_STOP_TIMEOUT_S) -> None:
    """Stop a producer within a bound: aiokafka's `stop` waits for batches that it retries
    without end while the broker is away; past the bound its connections are closed."""
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
    except Exception as exc:
        log.warning("producer did not stop cleanly; closing its connections",
                    error=f"{type(exc).__name__}: {exc}")
        sender = getattr(producer, "_sender", None)
        try:
            if sender is not None:
                await asyncio.wait_for(sender.close(), 5.0)
            await asyncio.wait_for(producer.client.close(), 5.0)
        except Exception:
            log.warning("producer connections not closed", exc_info=True)


async def start_client(client: Any, what: str) -> None:
    """Start an aiokafka client. aiokafka raises its own errors, the network's and timeouts;
    anything else from connecting (gssapi's GSSError when a ticket or the KDC is missing, the
    ValueError of a failed SCRAM exchange) becomes KafkaUnavailable, retried like an
    unreachable broker instead of ending the daemon as a bug would."""
    from aiokafka.errors import KafkaError

    try:
        await client.start()
    except (KafkaError, OSError, TimeoutError):
        raise
    except Exception as exc:
        raise KafkaUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def plain_producer(bootstrap: str, settings: Mapping[str, Any] | None = None, **overrides: Any) -> Any:
    """A producer (not started) without transactions, acks=all: for tools, not for rows."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap,
                            **{"acks": "all", **client_args(settings), **overrides})


# --------------------------------------------------------------------------- consumers


def committed_consumer(bootstrap: str, *topics: str, settings: Mapping[str, Any] | None = None,
                       **overrides: Any) -> Any:
    """A consumer (not started) that sees committed records only, from the earliest offset,
    in no group and committing nothing; `overrides` are aiokafka keyword arguments."""
    from aiokafka import AIOKafkaConsumer

    kwargs: dict[str, Any] = {
        "isolation_level": "read_committed", "auto_offset_reset": "earliest",
        "enable_auto_commit": False, "max_partition_fetch_bytes": 4 * 1024 * 1024,
        **connection_args(client_args(settings)), **overrides,
    }
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **kwargs)


# --------------------------------------------------------------------------- topics


@asynccontextmanager
async def admin_client(bootstrap: str, settings: Mapping[str, Any] | None = None) -> AsyncIterator[Any]:
    """A started admin client, closed on leaving."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **connection_args(client_args(settings)))
    try:
        await start_client(admin, "starting an admin client")
        yield admin
    finally:
        await admin.close()


async def create_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1,
                        replication: int = 1, settings: Mapping[str, Any] | None = None,
                        configs: Mapping[str, str] | None = None) -> None:
    """Create `topics` with `partitions` each. aiokafka returns the broker's per-topic errors
    (a topic that exists already) rather than raising them: they are not looked at here."""
    from aiokafka.admin import NewTopic

    async with admin_client(bootstrap, settings) as admin:
        await admin.create_topics([
            NewTopic(t, partitions, replication, topic_configs=dict(configs or {})) for t in topics])


async def delete_topics(bootstrap: str, topics: Iterable[str],
                        settings: Mapping[str, Any] | None = None) -> None:
    async with admin_client(bootstrap, settings) as admin:
        await admin.delete_topics(list(topics))
