"""Connection settings shared by the commands: flags first, then `--config FILE`, then the
environment that `deploy/devstack/devstack env` (or `env --secure`) prints.

On a secure cluster the environment says everything a client needs, so that the commands need
no other flag: `HADOOP_CONF_DIR` (Kerberos or not, `hadoop.rpc.protection`, the NameNode's
principal), `HDFS2KAFKA_PRINCIPAL`/`HDFS2KAFKA_KEYTAB` (who to be; else the ticket cache,
`KRB5CCNAME`), `HDFS2KAFKA_CA` (the CA of an https WebHDFS) and the Kafka settings below, which
become Kafka's own setting names as a daemon config would carry them.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hdfs import Client

    from hdfswatch.hadoop_conf import RpcSecurity
    from hdfswatch.namenode import NameNodeClient

# Environment variable -> Kafka's setting name; a password comes as a file reference, which the
# config loader reads (pipeline.secret), so that the value itself is never written anywhere.
KAFKA_ENV: Mapping[str, str] = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_KERBEROS_SERVICE_NAME": "sasl.kerberos.service.name",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD_FILE": "sasl.password",
    "KAFKA_SSL_CAFILE": "ssl.ca.location",
}
# A client certificate is for mutual TLS (security.protocol SSL) only.
KAFKA_MTLS_ENV: Mapping[str, str] = {
    "KAFKA_SSL_CERTFILE": "ssl.certificate.location",
    "KAFKA_SSL_KEYFILE": "ssl.key.location",
}


@dataclass(frozen=True)
class Connection:
    namenodes: tuple[str, ...]
    webhdfs_url: str | None
    hdfs_user: str
    kafka_bootstrap: str | None
    hadoop_conf_dir: str | None = None
    ca_file: str | None = None
    """PEM CA certificates for an https WebHDFS (None: the system's)."""
    principal: str | None = None
    keytab: str | None = None
    authentication: str | None = None
    """Overrides of the Hadoop configuration ([hdfs] of a daemon config): simple | kerberos,"""
    rpc_protection: tuple[str, ...] | None = None
    """hadoop.rpc.protection,"""
    namenode_principal: str | None = None
    """and dfs.namenode.kerberos.principal."""
    kafka_settings: Mapping[str, str] = field(default_factory=dict)
    """Kafka's own setting names (security.protocol, sasl.mechanism, ...), as in [kafka]."""

    def rpc_security(self) -> RpcSecurity:
        """How to authenticate to the NameNode: the Hadoop configuration (SIMPLE without one),
        as `principal` with `keytab` when they are given."""
        from hdfswatch.hadoop_conf import load_rpc_security

        return load_rpc_security(self.hadoop_conf_dir).with_overrides(
            authentication=self.authentication, protection=self.rpc_protection,
            namenode_principal=self.namenode_principal, client_principal=self.principal,
            keytab=self.keytab)

    @property
    def kerberos(self) -> bool:
        return self.rpc_security().kerberos

    def namenode_client(self, **kwargs: Any) -> NameNodeClient:
        """The NameNode client: the addresses given, else those of the Hadoop configuration."""
        from hdfswatch.namenode import NameNodeClient

        security = self.rpc_security()
        if self.namenodes:
            return NameNodeClient(self.namenodes, self.hdfs_user, security=security, **kwargs)
        return NameNodeClient.from_hadoop_conf(self.hadoop_conf_dir, self.hdfs_user,
                                               security=security, **kwargs)

    def webhdfs_options(self) -> dict[str, Any]:
        """`WebHdfsFile`'s and `webhdfs_client`'s security arguments."""
        kerberos = self.kerberos
        return {"ca_file": self.ca_file, "kerberos": kerberos,
                "principal": self.principal if kerberos else None,
                "keytab": self.keytab if kerberos else None}

    def webhdfs_client(self, **kwargs: Any) -> Client:
        from hdfsread.webhdfs import webhdfs_client

        return webhdfs_client(self.webhdfs_url or "", self.hdfs_user, **self.webhdfs_options(),
                              **kwargs)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection (defaults from the environment)")
    g.add_argument("--namenode", action="append", metavar="HOST:PORT",
                   help="NameNode RPC address; repeat for HA (env HDFS_NAMENODE, comma separated)")
    g.add_argument("--webhdfs", metavar="URL", help="WebHDFS base URL (env WEBHDFS_URL)")
    g.add_argument("--user", metavar="NAME", help="HDFS user (env HDFS_USER)")
    g.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP)")


def kafka_settings_from(env: Mapping[str, str]) -> dict[str, str]:
    """Kafka's setting names from the environment's KAFKA_* variables (see `KAFKA_ENV`)."""
    settings = {name: env[var] for var, name in KAFKA_ENV.items() if env.get(var)}
    if "sasl.password" in settings:
        settings["sasl.password"] = "${file:" + settings["sasl.password"] + "}"
    if settings.get("security.protocol", "").upper() == "SSL":
        settings.update({name: env[var] for var, name in KAFKA_MTLS_ENV.items() if env.get(var)})
    return settings


def connection_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connection:
    env = os.environ if env is None else env
    namenodes: list[str] = list(getattr(args, "namenode", None) or [])
    if not namenodes and env.get("HDFS_NAMENODE"):
        namenodes = [n.strip() for n in env["HDFS_NAMENODE"].split(",") if n.strip()]
    return Connection(
        namenodes=tuple(namenodes),
        webhdfs_url=getattr(args, "webhdfs", None) or env.get("WEBHDFS_URL"),
        hdfs_user=getattr(args, "user", None) or env.get("HDFS_USER") or getpass.getuser(),
        kafka_bootstrap=getattr(args, "bootstrap", None) or env.get("KAFKA_BOOTSTRAP"),
        hadoop_conf_dir=getattr(args, "hadoop_conf", None) or env.get("HADOOP_CONF_DIR") or None,
        ca_file=env.get("HDFS2KAFKA_CA") or None,
        principal=env.get("HDFS2KAFKA_PRINCIPAL") or None,
        keytab=env.get("HDFS2KAFKA_KEYTAB") or None,
        kafka_settings=kafka_settings_from(env),
    )
