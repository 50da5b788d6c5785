"""The error table: each aiokafka error the transactional path can raise maps to one action; and
each security failure (a refused login, an untrusted certificate, a missing ACL) is one line
naming what to fix, with no secret in it."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from aiokafka import errors as E

from pipeline.kafka import errors as kafka_errors
from pipeline.kafka.errors import (
    TABLE,
    Action,
    DeliveryTimeout,
    KafkaCertificateError,
    KafkaIdentity,
    KafkaLoginRefused,
    acl_message,
    classify,
    explain_connect_failure,
)


@pytest.mark.parametrize(("exc", "rows", "records", "action"), [
    (E.ProducerFenced(), True, 1, Action.CHECK_OWNER),
    (E.InvalidProducerEpoch(), False, 1, Action.CHECK_OWNER),
    (E.MessageSizeTooLargeError(), True, 40, Action.SMALLER_BATCHES),
    (E.RecordListTooLargeError(), True, 2, Action.SMALLER_BATCHES),
    (E.MessageSizeTooLargeError(), True, 1, Action.QUARANTINE_FILE),
    # No ACL is never a file's fault, and an ACL may be added later: rebuilt, not quarantined.
    (E.TopicAuthorizationFailedError({"t"}), True, 10, Action.REBUILD),
    (E.TopicAuthorizationFailedError("t"), True, 1, Action.REBUILD),
    (E.GroupAuthorizationFailedError("g"), True, 1, Action.REBUILD),
    (E.TransactionalIdAuthorizationFailed("hdfs2kafka-x"), False, 1, Action.REBUILD),
    (E.ClusterAuthorizationFailedError(), False, 1, Action.REBUILD),
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


SCRAM = KafkaIdentity("User:hdfs2kafka", "SCRAM-SHA-512 user hdfs2kafka", "SCRAM-SHA-512",
                      username="hdfs2kafka")
GSSAPI = KafkaIdentity("User:hdfs2kafka", "Kerberos principal hdfs2kafka/localhost@R", "GSSAPI",
                       service_name="kafkax")


@pytest.mark.parametrize(("exc", "expected"), [
    (E.TopicAuthorizationFailedError("secure-x"),
     "no Kafka ACL lets User:analyst (SCRAM-SHA-512 user analyst) Write topic secure-x: "
     "kafka-acls --bootstrap-server b:9 --add --allow-principal User:analyst --operation Write "
     "--topic secure-x"),
    (E.TopicAuthorizationFailedError({"b-topic", "a-topic"}),
     "Write topic a-topic, b-topic: kafka-acls --bootstrap-server b:9 --add --allow-principal "
     "User:analyst --operation Write --topic a-topic --topic b-topic"),
    (E.TransactionalIdAuthorizationFailed("hdfs2kafka-x"),
     "Write transactional id hdfs2kafka-x: kafka-acls --bootstrap-server b:9 --add "
     "--allow-principal User:analyst --operation Write --transactional-id hdfs2kafka-x"),
    (E.GroupAuthorizationFailedError("secure-g"),
     "Read group secure-g: kafka-acls --bootstrap-server b:9 --add --allow-principal "
     "User:analyst --operation Read --group secure-g"),
    (E.ClusterAuthorizationFailedError(),
     "IdempotentWrite cluster: kafka-acls --bootstrap-server b:9 --add --allow-principal "
     "User:analyst --operation IdempotentWrite --cluster"),
])
def test_a_missing_acl_names_principal_operation_resource_and_the_command(
        exc: BaseException, expected: str) -> None:
    analyst = KafkaIdentity("User:analyst", "SCRAM-SHA-512 user analyst", "SCRAM-SHA-512",
                            username="analyst")
    line = acl_message(exc, analyst, bootstrap="b:9")
    assert expected in line
    assert "\n" not in line


def test_a_refused_scram_login_names_the_user_and_the_settings_never_the_password() -> None:
    exc = E.SaslAuthenticationFailed("Authentication failed during authentication due to invalid "
                                     "credentials with SASL mechanism SCRAM-SHA-512")
    err = explain_connect_failure(exc, SCRAM, host="localhost:17092")
    assert isinstance(err, KafkaLoginRefused)
    assert str(err).startswith("Kafka at localhost:17092 refused the SASL login of user hdfs2kafka "
                               "(SCRAM-SHA-512): check kafka sasl.username / sasl.password")
    assert "invalid credentials" in str(err)


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


def test_an_untrusted_certificate_names_the_bootstrap_and_ssl_ca_location() -> None:
    exc = _verify_error(19, "self-signed certificate in certificate chain")
    err = explain_connect_failure(exc, SCRAM, host="localhost:17092", ca_location="/etc/ca.pem")
    assert isinstance(err, KafkaCertificateError)
    assert str(err) == (
        "Kafka's certificate at localhost:17092 is not trusted (self-signed certificate in "
        "certificate chain; ssl.ca.location (/etc/ca.pem) does not hold it): set kafka "
        "ssl.ca.location to the PEM file of the CA that signed the broker's certificate")
    unset = explain_connect_failure(exc, SCRAM, host="localhost:17092")
    assert "ssl.ca.location is not set" in str(unset)


def test_a_certificate_for_another_host_says_to_bootstrap_by_a_name_it_holds() -> None:
    exc = _verify_error(62, "Hostname mismatch, certificate is not valid for 'vm'.")
    err = explain_connect_failure(exc, SCRAM, host="vm:17092", ca_location="/etc/ca.pem")
    assert isinstance(err, KafkaCertificateError)
    assert str(err).startswith("Kafka's certificate at vm:17092 does not name 'vm': bootstrap "
                               "through a host name its certificate names")
    assert "ssl.endpoint.identification.algorithm" in str(err)


def test_an_unknown_kafka_service_principal_names_sasl_kerberos_service_name() -> None:
    class GSSError(Exception):  # gssapi.raw.misc.GSSError's text, without a KDC
        def gen_message(self) -> str:
            return ("Major (851968): Unspecified GSS failure. Minor code may provide more "
                    "information, Minor (2529638919): Server kafkax/localhost@R not found in "
                    "Kerberos database")

    err = explain_connect_failure(GSSError(), GSSAPI, host="localhost:17092")
    assert isinstance(err, KafkaLoginRefused)
    assert str(err).startswith("the KDC does not know kafkax/localhost, the principal Kafka's "
                               "GSSAPI asks for at localhost:17092: set kafka "
                               "sasl.kerberos.service.name")


def test_no_kerberos_ticket_for_kafka_is_one_line_naming_kinit_or_a_keytab() -> None:
    class GSSError(Exception):
        def gen_message(self) -> str:
            return ("Major (458752): No credentials were supplied, or the credentials were "
                    "unavailable or inaccessible, Minor (2529639053): No Kerberos credentials "
                    "available (default cache: MEMORY:x)")

    err = explain_connect_failure(GSSError(), GSSAPI, host="localhost:17092")
    assert isinstance(err, KafkaLoginRefused)
    assert str(err).startswith("Kafka GSSAPI login at localhost:17092: no Kerberos ticket for "
                               "Kerberos principal hdfs2kafka/localhost@R")
    assert "kinit or set the keytab" in str(err)


def test_a_broker_away_is_no_security_failure() -> None:
    assert explain_connect_failure(ConnectionRefusedError(111, "refused"), SCRAM,
                                   host="localhost:17092") is None
    assert explain_connect_failure(E.KafkaConnectionError("Connection at x closed"), SCRAM,
                                   host="localhost:17092", security_protocol="SASL_PLAINTEXT") is None
