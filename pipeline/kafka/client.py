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
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog

from pipeline.config import KafkaConfig
from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.errors import KafkaAccessDenied, KafkaSecurityError, KafkaUnavailable

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


def batch_settings(settings: Mapping[str, Any] | None) -> tuple[int, str | None]:
    """The producer's record batch size and compression codec (None: none), as the daemon's
    producer gets them from `config.kafka.client`."""
    merged = {**PRODUCER_DEFAULTS, **(settings or {})}
    return int(merged["max_batch_size"]), merged.get("compression_type") or None


def client_args(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """aiokafka keyword arguments from `config.kafka.client` (None: a plain connection).

    The PEM files of `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location` (and
    `ssl.key.password`) become an SSL context; `ssl.endpoint.identification.algorithm = ""`
    turns off the host name check, as it does in Kafka's Java client.
    """
    settings = settings or {}
    args = {k: v for k, v in settings.items() if k != "_ssl"}
    ssl = settings.get("_ssl")
    if not ssl and str(settings.get("security_protocol", "")).upper() in ("SSL", "SASL_SSL"):
        ssl = {}  # TLS with the system's CAs, as Kafka's Java client does with no trust store
    if ssl is not None:
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
        await start_client(producer, "starting the transactional producer", kafka.client)
    except BaseException:
        await stop_producer(producer)
        raise
    return producer


async def stop_within(aw: Awaitable[Any], timeout_s: float) -> None:
    """Await an aiokafka clean-up (`stop`, `close`) in a task of its own, for at most
    `timeout_s` (past it the clean-up is cancelled and TimeoutError raised). Not in the caller's
    task: aiokafka's close paths catch CancelledError, so a cancel of the caller landing there
    would be lost. A cancelled caller leaves the clean-up running to its end."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        raise TimeoutError
    task.result()


async def stop_producer(producer: Any, timeout_s: float = PRODUCER_STOP_TIMEOUT_S) -> None:
    """Stop a producer within a bound: aiokafka's `stop` waits for batches that it retries
    without end while the broker is away; past the bound its connections are closed."""
    try:
        await stop_within(producer.stop(), timeout_s)
    except Exception as exc:
        log.warning("producer did not stop cleanly; closing its connections",
                    error=f"{type(exc).__name__}: {exc}")
        sender = getattr(producer, "_sender", None)
        try:
            if sender is not None:
                await stop_within(sender.close(), 5.0)
            await stop_within(producer.client.close(), 5.0)
        except Exception:
            log.warning("producer connections not closed", exc_info=True)


async def start_client(client: Any, what: str, settings: Mapping[str, Any] | None = None) -> None:
    """Start an aiokafka client; a failure that is the broker refusing us, or its TLS untrusted,
    becomes one line naming what to fix (`KafkaSecurityError`), retried like an unreachable
    broker.

    aiokafka logs why a bootstrap connection failed and raises only "Unable to bootstrap": then
    one connection is opened to a bootstrap server with the same settings to learn the reason.
    Anything else from connecting (gssapi's GSSError when a ticket or the KDC is missing, the
    ValueError of a failed SCRAM exchange) becomes KafkaUnavailable, retried too, instead of
    ending the daemon as a bug would. `settings`: the `[kafka]` client settings, for messages.
    """
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        await client.start()
    except KafkaConnectionError:
        reason = await probe_bootstrap(client)
        explained = _explain(client, reason, settings) if reason is not None else None
        if explained is not None:
            raise explained from None
        raise
    except (KafkaError, OSError, TimeoutError) as exc:
        if kafka_errors.is_authorization(exc):
            inner = kafka_client_of(client)
            raise KafkaAccessDenied(kafka_errors.acl_message(
                exc, kafka_identity(client), bootstrap=_bootstrap_text(inner))) from None
        raise
    except Exception as exc:
        explained = _explain(client, exc, settings)
        if explained is not None:
            raise explained from None
        raise KafkaUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def kafka_client_of(client: Any) -> Any:
    """The AIOKafkaClient inside a producer, consumer or admin client (or `client` itself)."""
    for attr in ("client", "_client"):
        inner = getattr(client, attr, None)
        if inner is not None and hasattr(inner, "hosts"):
            return inner
    return client


def kafka_identity(client: Any) -> kafka_errors.KafkaIdentity:
    """Who `client` (an aiokafka producer, consumer or admin client) is to the broker, as Kafka's
    ACLs name it: the SASL user, the short name of the Kerberos principal (Kafka's DEFAULT
    principal.to.local rule), or the client certificate's subject."""
    inner = kafka_client_of(client)
    protocol = getattr(inner, "_security_protocol", "PLAINTEXT")
    mechanism = getattr(inner, "_sasl_mechanism", None) if protocol.startswith("SASL") else None
    service = getattr(inner, "_sasl_kerberos_service_name", None) or "kafka"
    if mechanism == "GSSAPI":
        principal = _kerberos_principal()
        short = principal.split("@")[0].split("/")[0] if principal else None
        return kafka_errors.KafkaIdentity(
            f"User:{short}" if short else "User:<the short name of the daemon's Kerberos principal>",
            f"Kerberos principal {principal or '(none: no ticket)'}", mechanism, service_name=service)
    if mechanism is not None:
        user = getattr(inner, "_sasl_plain_username", None)
        return kafka_errors.KafkaIdentity(f"User:{user}", f"{mechanism} user {user}", mechanism,
                                          username=user)
    if protocol == "SSL":
        return kafka_errors.KafkaIdentity(
            "User:<the subject of the client certificate>",
            "the TLS client certificate (ssl.certificate.location), as the broker's "
            "ssl.principal.mapping.rules map its subject")
    return kafka_errors.KafkaIdentity("User:ANONYMOUS", "no authentication (PLAINTEXT)")


def _kerberos_principal() -> str | None:
    """The principal of the default Kerberos credentials, which aiokafka's GSSAPI uses: the
    daemon's, as its login found it (no KDC call on the event loop), else asked of gssapi."""
    from pipeline import kerberos_login

    if kerberos_login.logged_in is not None:
        return kerberos_login.logged_in
    try:
        import gssapi

        return str(gssapi.Credentials(usage="initiate").name)
    except Exception:
        return None


async def probe_bootstrap(client: Any, timeout_s: float = 10.0) -> BaseException | None:
    """Why `client` cannot connect: the error of one connection (TLS and SASL included) opened
    to each bootstrap server in turn with the client's own settings, or None when one connects
    (the failure was passing)."""
    from aiokafka.conn import create_conn

    inner = kafka_client_of(client)
    failure: BaseException | None = None
    for host, port, _family in getattr(inner, "hosts", []):
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host, port, client_id=inner._client_id,
                    request_timeout_ms=min(inner._request_timeout_ms, int(timeout_s * 1000)),
                    ssl_context=inner._ssl_context, security_protocol=inner._security_protocol,
                    sasl_mechanism=inner._sasl_mechanism,
                    sasl_plain_username=inner._sasl_plain_username,
                    sasl_plain_password=inner._sasl_plain_password,
                    sasl_kerberos_service_name=inner._sasl_kerberos_service_name,
                    sasl_kerberos_domain_name=inner._sasl_kerberos_domain_name)
        except Exception as exc:
            failure = failure or exc
            continue
        conn.close()
        return None
    return failure


def _explain(client: Any, exc: BaseException, settings: Mapping[str, Any] | None
             ) -> KafkaSecurityError | None:
    inner = kafka_client_of(client)
    hosts = getattr(inner, "hosts", [])
    host = f"{hosts[0][0]}:{hosts[0][1]}" if hosts else "?"
    for h, p, _ in hosts:  # the server the probe reached, when the error names it
        if f"{h}:{p}" in str(exc):
            host = f"{h}:{p}"
    ssl = (settings or {}).get("_ssl") or {}
    return kafka_errors.explain_connect_failure(
        exc, kafka_identity(client), host=host, ca_location=ssl.get("ssl.ca.location"),
        security_protocol=getattr(inner, "_security_protocol", None))


def bootstrap_of(client: Any) -> str:
    """The bootstrap servers of an aiokafka client, as `host:port,...`."""
    return _bootstrap_text(kafka_client_of(client))


def _bootstrap_text(inner: Any) -> str:
    return ",".join(f"{h}:{p}" for h, p, _ in getattr(inner, "hosts", [])) or "HOST:PORT"


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
        await start_client(admin, "starting an admin client", settings)
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
