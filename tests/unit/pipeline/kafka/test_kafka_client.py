"""Kafka settings as the clients take them: the SSL files become a context, and consumers and
admin clients get the connection settings only."""

from __future__ import annotations

from pipeline.kafka.client import client_args, connection_args


def test_ssl_settings_become_a_context_without_host_check_when_asked() -> None:
    settings = {"security_protocol": "SSL", "linger_ms": 7,
                "_ssl": {"ssl.endpoint.identification.algorithm": ""}}
    args = client_args(settings)
    assert "_ssl" not in args
    assert args["ssl_context"].check_hostname is False
    assert args["linger_ms"] == 7
    https = {"_ssl": {"ssl.endpoint.identification.algorithm": "https"}}
    assert client_args(https)["ssl_context"].check_hostname is True


def test_consumers_and_admin_clients_take_the_connection_settings_only() -> None:
    args = client_args({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                        "sasl_plain_username": "u", "sasl_plain_password": "p",
                        "max_batch_size": 1 << 20, "transaction_timeout_ms": 30_000,
                        "compression_type": "zstd", "request_timeout_ms": 5_000})
    conn = connection_args(args)
    # TLS without ssl.* files verifies with the system's CAs, as Kafka's Java client does.
    assert conn.pop("ssl_context").check_hostname is True
    assert conn == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                    "sasl_plain_username": "u", "sasl_plain_password": "p",
                    "request_timeout_ms": 5_000}
    assert client_args(None) == {}
