"""NameNode addresses from a Hadoop configuration directory (`HADOOP_CONF_DIR`).

Edge nodes already carry `core-site.xml` and `hdfs-site.xml`; this module reads them the way
HDFS clients do: `fs.defaultFS` names either a NameNode (`hdfs://host:port`) or a nameservice
(`hdfs://ns`), whose HA NameNodes are listed by `dfs.ha.namenodes.<ns>` with their RPC and HTTP
addresses under `dfs.namenode.rpc-address.<ns>.<id>` and `dfs.namenode.http-address.<ns>.<id>`.

`RpcSecurity` is how to authenticate to the NameNode, from `hadoop.security.authentication`,
`hadoop.rpc.protection`, `dfs.namenode.kerberos.principal` and
`ipc.client.fallback-to-simple-auth-allowed`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from hdfswatch.errors import ConfigError

DEFAULT_RPC_PORT = 8020
DEFAULT_HTTP_PORT = 9870
DEFAULT_HTTPS_PORT = 9871

_VAR = re.compile(r"\$\{([^}$\s]+)\}")


@dataclass(frozen=True)
class NameNodeAddress:
    """One NameNode: its HA id (None without HA) and its addresses as "host:port"."""

    rpc: str
    http: str | None = None
    https: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class RpcSecurity:
    """How the NameNode client authenticates (Hadoop's names in the comments).

    `protection` lists the acceptable levels, most wanted first, as `hadoop.rpc.protection`
    does ("privacy,integrity"). `client_principal` and `keytab` are this client's own
    credentials (no Hadoop setting: None means the ticket cache's principal).
    """

    authentication: str = "simple"            # hadoop.security.authentication
    protection: tuple[str, ...] = ("authentication",)  # hadoop.rpc.protection
    namenode_principal: str | None = None     # dfs.namenode.kerberos.principal
    fallback_to_simple: bool = False          # ipc.client.fallback-to-simple-auth-allowed
    client_principal: str | None = None
    keytab: str | None = None

    def __post_init__(self) -> None:
        if self.authentication not in ("simple", "kerberos"):
            raise ConfigError(f"hadoop.security.authentication is {self.authentication!r}: "
                              "this client does simple or kerberos")
        from hdfswatch.sasl import parse_protection

        parse_protection(self.protection)  # a ConfigError names an unknown level

    @property
    def kerberos(self) -> bool:
        return self.authentication == "kerberos"

    def with_overrides(self, **changes: object) -> RpcSecurity:
        """A copy with the given fields changed (None leaves a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def rpc_security(props: Mapping[str, str]) -> RpcSecurity:
    """The `RpcSecurity` that Hadoop properties describe."""
    auth = (props.get("hadoop.security.authentication") or "simple").strip().lower()
    protection = tuple(p.strip().lower() for p in
                       (props.get("hadoop.rpc.protection") or "authentication").split(",")
                       if p.strip()) or ("authentication",)
    principal = (props.get("dfs.namenode.kerberos.principal") or "").strip() or None
    fallback = (props.get("ipc.client.fallback-to-simple-auth-allowed") or "false"
                ).strip().lower() == "true"
    return RpcSecurity(authentication=auth, protection=protection,
                       namenode_principal=principal, fallback_to_simple=fallback)


def load_rpc_security(conf_dir: str | os.PathLike[str] | None = None) -> RpcSecurity:
    """The NameNode client's security from `conf_dir`, else from `$HADOOP_CONF_DIR` when it
    is set; SIMPLE authentication when neither names a directory with the files."""
    if conf_dir is None and not os.environ.get("HADOOP_CONF_DIR"):
        return RpcSecurity()
    directory = conf_dir_from_env(conf_dir)
    raw: dict[str, str] = {}
    for name in ("core-site.xml", "hdfs-site.xml"):
        raw.update(read_properties(directory / name))
    return rpc_security({k: _expand(v, raw) for k, v in raw.items()})


@dataclass(frozen=True)
class HadoopConf:
    """What hdfswatch needs from a Hadoop configuration."""

    default_fs: str
    nameservice: str | None
    namenodes: tuple[NameNodeAddress, ...]
    properties: dict[str, str]

    @property
    def rpc_addresses(self) -> tuple[str, ...]:
        return tuple(nn.rpc for nn in self.namenodes)

    @property
    def http_addresses(self) -> tuple[str, ...]:
        return tuple(nn.http for nn in self.namenodes if nn.http)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.properties.get(key, default)

    @property
    def rpc_security(self) -> RpcSecurity:
        return rpc_security(self.properties)


def conf_dir_from_env(conf_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory given, else `$HADOOP_CONF_DIR`, else `$HADOOP_HOME/etc/hadoop`, else
    `/etc/hadoop/conf`."""
    if conf_dir:
        return Path(conf_dir)
    if os.environ.get("HADOOP_CONF_DIR"):
        return Path(os.environ["HADOOP_CONF_DIR"])
    if os.environ.get("HADOOP_HOME"):
        return Path(os.environ["HADOOP_HOME"]) / "etc" / "hadoop"
    return Path("/etc/hadoop/conf")


def read_properties(path: Path) -> dict[str, str]:
    """The name/value pairs of one Hadoop XML configuration file."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        return {}
    except ET.ParseError as exc:
        raise ConfigError(f"{path}: not valid XML ({exc})") from None
    props: dict[str, str] = {}
    for prop in root.iter("property"):
        name = prop.findtext("name")
        value = prop.findtext("value")
        if name is not None and value is not None:
            props[name.strip()] = value.strip()
    return props


def _expand(value: str, props: dict[str, str], depth: int = 0) -> str:
    """Hadoop's `${name}` and `${env.NAME}` substitution."""
    if depth > 20 or "${" not in value:
        return value

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.startswith("env."):
            found = os.environ.get(key[4:])
        else:
            found = props.get(key, os.environ.get(key) if key.startswith("user.") else None)
            if found is None and key == "user.name":
                import getpass

                found = getpass.getuser()
        return m.group(0) if found is None else _expand(found, props, depth + 1)

    return _VAR.sub(repl, value)


def _host_port(value: str, default_port: int) -> str:
    value = value.strip()
    if "://" in value:
        value = urlsplit(value).netloc
    if not value:
        raise ConfigError("empty address")
    if value.startswith("["):  # [ipv6]:port
        host, _, port = value.rpartition(":")
        return value if host.endswith("]") else f"{value}:{default_port}"
    host, sep, port = value.partition(":")
    if not sep:
        return f"{host}:{default_port}"
    if not port.isdigit():
        raise ConfigError(f"bad port in address {value!r}")
    return f"{host}:{port}"


def load_hadoop_conf(conf_dir: str | os.PathLike[str] | None = None,
                     nameservice: str | None = None) -> HadoopConf:
    """Read core-site.xml and hdfs-site.xml from `conf_dir` (see `conf_dir_from_env`)."""
    directory = conf_dir_from_env(conf_dir)
    if not directory.is_dir():
        raise ConfigError(f"Hadoop configuration directory {directory} does not exist "
                          "(set HADOOP_CONF_DIR or give NameNode addresses)")
    raw: dict[str, str] = {}
    for name in ("core-site.xml", "hdfs-site.xml"):
        raw.update(read_properties(directory / name))
    props = {k: _expand(v, raw) for k, v in raw.items()}

    default_fs = props.get("fs.defaultFS") or props.get("fs.default.name") or ""
    nameservices = [s.strip() for s in (props.get("dfs.internal.nameservices")
                                        or props.get("dfs.nameservices") or "").split(",")
                    if s.strip()]
    authority = ""
    if default_fs:
        parts = urlsplit(default_fs)
        if parts.scheme and parts.scheme != "hdfs":
            raise ConfigError(f"{directory}: fs.defaultFS is {default_fs!r}, not an hdfs:// URI")
        authority = parts.netloc
    ns = nameservice
    if ns is None:
        host = authority.split(":")[0] if authority else ""
        if host and host in nameservices:
            ns = host
        elif not authority and len(nameservices) == 1:
            ns = nameservices[0]

    if ns is not None:
        ids = [i.strip() for i in (props.get(f"dfs.ha.namenodes.{ns}") or "").split(",")
               if i.strip()]
        namenodes = []
        if ids:
            for nn_id in ids:
                rpc = props.get(f"dfs.namenode.rpc-address.{ns}.{nn_id}")
                if not rpc:
                    raise ConfigError(f"{directory}: dfs.namenode.rpc-address.{ns}.{nn_id} is "
                                      f"not set (NameNode {nn_id} of nameservice {ns})")
                http = props.get(f"dfs.namenode.http-address.{ns}.{nn_id}")
                https = props.get(f"dfs.namenode.https-address.{ns}.{nn_id}")
                namenodes.append(NameNodeAddress(
                    rpc=_host_port(rpc, DEFAULT_RPC_PORT),
                    http=_host_port(http, DEFAULT_HTTP_PORT) if http else None,
                    https=_host_port(https, DEFAULT_HTTPS_PORT) if https else None,
                    id=nn_id))
        else:
            rpc = props.get(f"dfs.namenode.rpc-address.{ns}")
            if not rpc:
                raise ConfigError(f"{directory}: nameservice {ns} has neither "
                                  f"dfs.ha.namenodes.{ns} nor dfs.namenode.rpc-address.{ns}")
            http = props.get(f"dfs.namenode.http-address.{ns}")
            namenodes.append(NameNodeAddress(
                rpc=_host_port(rpc, DEFAULT_RPC_PORT),
                http=_host_port(http, DEFAULT_HTTP_PORT) if http else None))
        return HadoopConf(default_fs or f"hdfs://{ns}", ns, tuple(namenodes), props)

    rpc = props.get("dfs.namenode.rpc-address") or authority
    if not rpc:
        raise ConfigError(f"{directory}: neither fs.defaultFS nor dfs.namenode.rpc-address "
                          "names a NameNode")
    http = props.get("dfs.namenode.http-address")
    https = props.get("dfs.namenode.https-address")
    nn = NameNodeAddress(
        rpc=_host_port(authority or rpc, DEFAULT_RPC_PORT),
        http=_host_port(http, DEFAULT_HTTP_PORT) if http else None,
        https=_host_port(https, DEFAULT_HTTPS_PORT) if https else None)
    return HadoopConf(default_fs or f"hdfs://{nn.rpc}", None, (nn,), props)
