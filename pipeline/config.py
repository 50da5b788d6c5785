"""The daemon's configuration: one TOML file, validated once into frozen dataclasses.

Every mistake is collected and reported together, each naming the file, the source and the
field, before anything starts. Kafka client settings are accepted under Kafka's own names
(`security.protocol`, `sasl.mechanism`, `compression.type`, `linger.ms`...) as users copy them
from their client.properties, either inline in `[kafka]` or from `client_properties = FILE`.

Secret settings (`admin_token`, `sasl.password`, the password in `sasl.jaas.config`,
`ssl.key.password`) may name a file or a systemd credential instead of holding the value (see
`pipeline.secret`); their values are `Secret`s, and no problem message quotes them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from hdfswatch.errors import ConfigError as PatternError
from hdfswatch.patterns import PathMatcher, normalize
from pipeline.secret import (
    CREDENTIALS_ENV,
    REFERENCE,
    Secret,
    SecretUnreadable,
    parse_properties,
    resolve,
)

FORMATS = ("parquet", "avro", "auto")
VALUE_FORMATS = ("json", "avro")
START_FROM = ("earliest", "latest")
TOLERANCES = ("none", "all")
DETECTORS = ("inotify", "listing")
READERS = ("native", "webhdfs")  # hdfsread.stack.READERS
DEFAULT_READER = "native"
TIMESTAMP_MODES = ("iso", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
TOKEN_PLACEHOLDER = "change-me"


class ConfigError(Exception):
    """The configuration file is wrong; `problems` lists every mistake found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {path}: {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {path}:\n{lines}")


@dataclass(frozen=True)
class ErrorPolicy:
    """What to do with a file that cannot be read (after Kafka Connect's KIP-298)."""

    retry_timeout_ms: int = 300_000
    retry_max_delay_ms: int = 60_000
    tolerance: str = "all"
    dead_letter_topic: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    name: str
    path: str
    topic: str
    format: str = "auto"
    key: tuple[str, ...] = ()
    value_format: str = "json"
    start_from: str = "earliest"
    headers: bool = False
    timestamps: str = "iso"
    rows_per_second: float | None = None
    bytes_per_second: float | None = None
    paused: bool = False
    errors: ErrorPolicy = field(default_factory=ErrorPolicy)


@dataclass(frozen=True)
class DaemonConfig:
    instance_id: str
    http: str = "127.0.0.1:9464"
    admin_token: Secret | None = None
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    workers: int = 2
    queue_size: int = 64
    unit_rows: int = 20_000
    transaction_max_rows: int = 200_000
    transaction_max_bytes: int = 32 * 1024 * 1024
    transaction_max_ms: int = 200
    ledger_retention_hours: float = 168.0
    shutdown_timeout_s: float = 30.0
    rows_per_second: float | None = None
    group: str | None = None
    """The group this daemon shares the work with (daemons with the same group split its shards);
    None: the group is named by `instance_id` (a daemon alone is a group of one)."""
    shards: int | None = None
    """The shard count of a new group (its ledger topic's partitions); None: the ledger topic's
    count, or DEFAULT_SHARDS when the daemon creates it."""
    group_session_timeout_s: float = 10.0
    """How long a member may go without a heartbeat before its shards move to the others."""

    @property
    def group_name(self) -> str:
        return self.group or self.instance_id


DEFAULT_SHARDS = 1
MAX_SHARDS = 256
"""Shards of a ledger topic the daemon creates when `shards` is not set."""


@dataclass(frozen=True)
class HdfsConfig:
    namenodes: tuple[str, ...]
    webhdfs: str
    user: str
    hadoop_conf_dir: str | None = None
    """Hadoop's client configuration: the NameNodes (when `namenodes` is empty) and how to
    authenticate (`hadoop.security.authentication`, `hadoop.rpc.protection`,
    `dfs.namenode.kerberos.principal`); the three settings below override it."""
    authentication: str | None = None      # simple | kerberos
    rpc_protection: str | None = None      # authentication | integrity | privacy (a list allowed)
    namenode_principal: str | None = None  # e.g. nn/_HOST@EXAMPLE.COM
    ca_file: str | None = None
    """PEM CA certificates trusted for an https:// WebHDFS (None: the system's)."""
    detector: str = "inotify"
    listing_interval_s: float = 10.0
    reader: str = DEFAULT_READER
    """How files are read: native (HDFS's RPC and data-transfer protocols, hdfs-native) or
    webhdfs (HTTP; needs `webhdfs`)."""


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    ledger_topic: str = "hdfs2kafka.ledger"
    ledger_replication: int | None = None
    client: Mapping[str, Any] = field(default_factory=dict)
    """aiokafka keyword arguments derived from the Kafka-named settings."""
    schema_registry: str | None = None


@dataclass(frozen=True)
class KerberosConfig:
    """The daemon's own Kerberos identity, for every connection (NameNode, WebHDFS, Kafka)."""

    principal: str | None = None
    keytab: str | None = None
    """With a keytab the daemon gets and renews its tickets itself; without one it uses the
    ticket cache ($KRB5CCNAME) that the operator keeps fresh."""


@dataclass(frozen=True)
class Config:
    path: str
    daemon: DaemonConfig
    hdfs: HdfsConfig
    kafka: KafkaConfig
    sources: tuple[SourceConfig, ...]
    kerberos: KerberosConfig = field(default_factory=KerberosConfig)
    secrets: tuple[tuple[str, str], ...] = ()
    """(setting, where its value comes from) for every secret setting given."""
    notes: tuple[str, ...] = ()
    """What validation could not check here (a systemd credential outside the service)."""

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)


# --------------------------------------------------------------------------- reload

LIVE = "live"
NEW_FLOW = "new flow"
RESTART = "restart"

RELOAD: dict[str, str] = {
    # What a reload (SIGHUP) does with a changed setting: apply it at once (LIVE), drain the flow
    # and rebuild it from the ledger in the same process (NEW_FLOW), or refuse the whole reload
    # and keep the running registry until a restart (RESTART).
    "daemon.instance_id": RESTART,  # names the transactional id and the ledger keys: a new one
                                    # would read an empty ledger and stream every file again
    "daemon.group": RESTART,        # names the shared ledger keys and transactional ids, as
    "daemon.shards": RESTART,       # instance_id; the shard count is the ledger topic's
    "daemon.group_session_timeout_s": RESTART,  # the group membership's, set when it joins
    "daemon.http": RESTART,         # the listening socket is bound once
    "daemon.http_tls_cert": RESTART,  # read when the socket is bound
    "daemon.http_tls_key": RESTART,
    "daemon.admin_token": LIVE,     # the old token stops working at once
    "daemon.log_level": LIVE,
    "daemon.log_format": LIVE,
    "daemon.workers": LIVE,
    "daemon.rows_per_second": LIVE,
    "daemon.shutdown_timeout_s": LIVE,
    "daemon.queue_size": NEW_FLOW,
    "daemon.unit_rows": NEW_FLOW,
    "daemon.transaction_max_rows": NEW_FLOW,
    "daemon.transaction_max_bytes": NEW_FLOW,
    "daemon.transaction_max_ms": NEW_FLOW,
    "daemon.ledger_retention_hours": NEW_FLOW,
    "hdfs": RESTART,    # another cluster or user: other files behind the same paths
    "kafka": RESTART,   # another cluster or ledger topic: an empty ledger, every file again
    "kerberos": RESTART,  # the identity of every open connection
    "sources": LIVE,    # changed and removed at once; an added source starts in a new flow
}


@dataclass(frozen=True)
class ReloadPlan:
    """How a new config file differs from the running one, by what a reload can do with it."""

    restart_needed: tuple[str, ...]  # refuse the reload: these need a restart
    new_flow: tuple[str, ...]        # apply by rebuilding the flow from the ledger
    added: tuple[str, ...]           # source names
    removed: tuple[str, ...]


def registry_digest(sources: Sequence[SourceConfig]) -> str:
    """What the members of a group must agree on, as a short digest: which files each source
    takes (in the registry's order: a file goes to the first source whose path matches) and
    what it makes of their rows. Speed limits, pauses and error policies may differ.

    "VERSION:HEX": a later version of hdfs2kafka that digests otherwise says so with another
    VERSION, and members compare digests of one version only (a rolling upgrade holds nothing)."""
    shape = [[s.name, s.path, s.topic, s.format, list(s.key), s.value_format, s.start_from,
              s.headers, s.timestamps] for s in sources]
    return f"{REGISTRY_DIGEST_VERSION}:{hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:12]}"


REGISTRY_DIGEST_VERSION = 1


def reload_plan(running: Config, new: Config) -> ReloadPlan:
    """Classify every changed setting with the RELOAD table (pure: the daemon acts on it)."""
    changed = [*_changed("daemon", running.daemon, new.daemon),
               *_changed("hdfs", running.hdfs, new.hdfs),
               *_changed("kafka", running.kafka, new.kafka)]
    old_names = [s.name for s in running.sources]
    new_names = [s.name for s in new.sources]
    added = tuple(n for n in new_names if n not in old_names)
    return ReloadPlan(
        restart_needed=tuple(f for f in changed if _policy(f) == RESTART),
        new_flow=tuple(f for f in changed if _policy(f) == NEW_FLOW) + tuple(f"sources[{n}]" for n in added),
        added=added,
        removed=tuple(n for n in old_names if n not in new_names),
    )


def _policy(setting: str) -> str:
    return RELOAD.get(setting) or RELOAD[setting.split(".")[0]]


def _changed(section: str, old: Any, new: Any) -> list[str]:
    out = []
    for name in old.__dataclass_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if section == "kafka" and name == "client":
            out += [f"kafka.{_KAFKA_NAMES.get(k, k)}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)]
        else:
            out.append(f"{section}.{name}")
    return out


# --------------------------------------------------------------------------- loading


def load(path: str | Path, env: Mapping[str, str] | None = None,
         unread_credentials: bool = False) -> Config:
    """Read and validate a configuration file; raise ConfigError naming every mistake.

    Secret references are read now (a reload calls this again, so a rotated file is read
    anew); `env` is where $CREDENTIALS_DIRECTORY is looked up (the process's environment by
    default). With `unread_credentials`, a credential reference while $CREDENTIALS_DIRECTORY is
    unset (outside the service: `check-config` run by hand) becomes a note instead of a problem.
    """
    return parse(read(path), str(path), env=env, unread_credentials=unread_credentials)


def read(path: str | Path) -> dict[str, Any]:
    """The TOML of a configuration file, not yet validated; ConfigError if it cannot be read."""
    path = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None


def load_connection(path: str | Path) -> tuple[HdfsConfig, KafkaConfig]:
    """The [hdfs] and [kafka] sections of a configuration file, validated as `load` validates
    them, for commands that only connect (`cat`): the other sections and required fields may
    be missing (such a command takes them from its flags or the environment; they come back
    empty), but every setting that is there must be one the daemon accepts."""
    path = str(path)
    raw = read(path)
    v = _Validator(path, partial=True)
    hdfs = _hdfs(v, _table(v, raw, "hdfs", required=False))
    kafka = _kafka(v, _table(v, raw, "kafka", required=False), Path(path).parent)
    if v.problems:
        raise ConfigError(path, v.problems)
    assert hdfs and kafka
    return hdfs, kafka


def load_kerberos(path: str | Path) -> KerberosConfig:
    """The [kerberos] section of a configuration file (with a Krb5LoginModule of
    kafka.sasl.jaas.config), validated as `load` validates it, for commands that connect."""
    path = str(path)
    raw = read(path)
    v = _Validator(path, partial=True)
    _kafka(v, _table(v, raw, "kafka", required=False), Path(path).parent)
    kerberos = _kerberos(v, _table(v, raw, "kerberos", required=False))
    if v.problems:
        raise ConfigError(path, v.problems)
    return kerberos


def parse(raw: Mapping[str, Any], path: str = "<config>", env: Mapping[str, str] | None = None,
          unread_credentials: bool = False) -> Config:
    v = _Validator(path, env=env, unread_credentials=unread_credentials)
    known = {"daemon", "hdfs", "kafka", "kerberos", "sources"}
    for key in raw:
        if key not in known:
            v.problem(key, f"unknown section (expected one of {', '.join(sorted(known))})")
    daemon = _daemon(v, _table(v, raw, "daemon", required=True))
    hdfs = _hdfs(v, _table(v, raw, "hdfs", required=True))
    kafka = _kafka(v, _table(v, raw, "kafka", required=True), Path(path).parent)
    sources = _sources(v, raw.get("sources", []))
    kerberos = _kerberos(v, _table(v, raw, "kerberos", required=False))
    if kafka is not None and not kafka.schema_registry:
        for s in sources:
            if s.value_format == "avro":
                v.problem(f"sources[{s.name}].value_format",
                          "avro needs kafka.schema_registry (the Schema Registry URL)")
    if v.problems:
        raise ConfigError(path, v.problems)
    assert daemon and hdfs and kafka
    return Config(path=path, daemon=daemon, hdfs=hdfs, kafka=kafka, sources=tuple(sources),
                  kerberos=kerberos, secrets=tuple(v.secrets), notes=tuple(v.notes))


class _Validator:
    def __init__(self, path: str, partial: bool = False, env: Mapping[str, str] | None = None,
                 unread_credentials: bool = False) -> None:
        self.path = path
        self.base = Path(path).parent  # relative file names are relative to the config file
        self.partial = partial  # required settings may be missing (see load_connection)
        self.env = os.environ if env is None else env
        self.unread_credentials = unread_credentials
        self.jaas_kerberos: dict[str, str] = {}
        """keyTab and principal of a Krb5LoginModule in kafka.sasl.jaas.config."""
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.secrets: list[tuple[str, str]] = []

    def problem(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def get(self, table: Mapping[str, Any], where: str, key: str, kind: type | tuple[type, ...],
            default: Any = None, required: bool = False, secret: bool = False) -> Any:
        if key not in table:
            if required and not self.partial:
                self.problem(f"{where}.{key}", "missing (required)")
            return default
        value = table[key]
        if secret and not isinstance(value, str):
            self.problem(f"{where}.{key}", f"expected {_kind_name(kind)}, got {_kind_of(value)} "
                                           "(its value is not shown: a secret setting)")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and float in _as_tuple(kind) and not math.isfinite(value):
            self.problem(f"{where}.{key}", f"expected a finite number, got {value!r}")
            return default
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            self.problem(f"{where}.{key}", f"expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problem(f"{where}.{key}", f"expected {_kind_name(kind)}, got {type(value).__name__} {value!r}")
            return default
        return value

    def secret(self, setting: str, text: str) -> Secret | None:
        """The Secret that a secret setting's text stands for (read from its file or credential
        now), or None after a problem naming the setting and the path, never the value."""
        m = REFERENCE.match(text)
        if m and m.group(1) == "credential" and self.unread_credentials and not self.env.get(CREDENTIALS_ENV):
            self.notes.append(f"{setting}: the systemd credential {m.group(2)!r} is not read here "
                              f"(${CREDENTIALS_ENV} is set inside the service only)")
            self.secrets.append((setting, f"systemd credential {m.group(2)} (not read here)"))
            return Secret("unread systemd credential", f"credential {m.group(2)}")
        try:
            value = resolve(text, self.base, self.env)
        except SecretUnreadable as exc:
            self.problem(setting, str(exc))
            return None
        self.secrets.append((setting, value.origin))
        return value

    def path_setting(self, setting: str, text: str | None) -> str | None:
        """A file name setting: relative to the config file; `${credential:NAME}` names the file
        systemd delivers under $CREDENTIALS_DIRECTORY (a TLS key loaded with LoadCredential=)."""
        if text is None:
            return None
        m = REFERENCE.match(text)
        if m and m.group(1) == "credential":
            directory = self.env.get(CREDENTIALS_ENV)
            if not directory:
                if self.unread_credentials:
                    self.notes.append(f"{setting}: the systemd credential {m.group(2)!r} is not read "
                                      f"here (${CREDENTIALS_ENV} is set inside the service only)")
                    return None
                self.problem(setting, f"names the systemd credential {m.group(2)!r}, but "
                                      f"${CREDENTIALS_ENV} is not set: systemd sets it for a unit with "
                                      f"LoadCredential={m.group(2)}:/path/to/file")
                return None
            return str(Path(directory) / m.group(2))
        if m:
            self.problem(setting, "expected a file name (or ${credential:NAME})")
            return None
        return str(Path(text) if Path(text).is_absolute() else self.base / text)

    def choice(self, table: Mapping[str, Any], where: str, key: str, choices: tuple[str, ...],
               default: str) -> str:
        value = self.get(table, where, key, str, default)
        if value not in choices:
            self.problem(f"{where}.{key}", f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return str(value)

    def positive(self, table: Mapping[str, Any], where: str, key: str, kind: type, default: Any,
                 optional: bool = False) -> Any:
        value = self.get(table, where, key, kind, default)
        if value is None and optional:
            return None
        if value is not None and value <= 0:
            self.problem(f"{where}.{key}", f"must be greater than 0 (got {value!r})")
            return default
        return value

    def unknown(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.problem(f"{where}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_of(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


class _Section:
    """One table of the file read into the fields of a config dataclass: a setting the table
    leaves out takes the field's default, so every default is written once, in the dataclass."""

    def __init__(self, v: _Validator, table: Mapping[str, Any], where: str, cls: type,
                 only_fields: bool = True) -> None:
        self.v = v
        self.table = table
        self.where = where
        self.defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        if only_fields:
            v.unknown(table, where, {f.name for f in fields(cls)})

    def get(self, key: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
        return self.v.get(self.table, self.where, key, kind, self.defaults.get(key), required)

    def secret(self, key: str) -> Secret | None:
        text = self.v.get(self.table, self.where, key, str, secret=True)
        return None if text is None else self.v.secret(f"{self.where}.{key}", text)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        return self.v.choice(self.table, self.where, key, choices, self.defaults[key])

    def positive(self, key: str, kind: type) -> Any:
        """A number above 0; None allowed where it is the default (no limit, say)."""
        default = self.defaults[key]
        return self.v.positive(self.table, self.where, key, kind, default, optional=default is None)


def _table(v: _Validator, raw: Mapping[str, Any], key: str, required: bool) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            v.problem(f"[{key}]", "missing section (required)")
        return {}
    if not isinstance(value, dict):
        v.problem(f"[{key}]", "must be a table")
        return {}
    return value


def _daemon(v: _Validator, t: Mapping[str, Any]) -> DaemonConfig | None:
    w = "daemon"
    d = _Section(v, t, w, DaemonConfig)
    instance_id = d.get("instance_id", str, required=True)
    if instance_id and not NAME_RE.match(instance_id):
        v.problem(f"{w}.instance_id", "use letters, digits, '.', '_' or '-' (max 100)")
    group = d.get("group", str)
    if group is not None and not NAME_RE.match(group):
        v.problem(f"{w}.group", "use letters, digits, '.', '_' or '-' (max 100)")
    shards = d.positive("shards", int)
    if shards is not None and shards > MAX_SHARDS:
        v.problem(f"{w}.shards", f"at most {MAX_SHARDS} (got {shards})")
        shards = None
    session = d.positive("group_session_timeout_s", float)
    if session is not None and not 6 <= session <= 1800:
        # Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms (defaults).
        v.problem(f"{w}.group_session_timeout_s", f"between 6 and 1800 seconds (got {session})")
    http = d.get("http", str)
    if http and not _host_port(http):
        v.problem(f"{w}.http", f"expected HOST:PORT (got {http!r})")
    token = d.secret("admin_token")
    _check_token(v, f"{w}.admin_token", token, http, given="admin_token" in t)
    tls_cert, tls_key = _http_tls(v, d)
    level = d.choice("log_level", ("debug", "info", "warning", "error"))
    fmt = d.choice("log_format", ("json", "console"))
    return DaemonConfig(
        instance_id=instance_id or "",
        http=http,
        admin_token=token,
        http_tls_cert=tls_cert,
        http_tls_key=tls_key,
        log_level=level,
        log_format=fmt,
        workers=d.positive("workers", int),
        queue_size=d.positive("queue_size", int),
        unit_rows=d.positive("unit_rows", int),
        transaction_max_rows=d.positive("transaction_max_rows", int),
        transaction_max_bytes=d.positive("transaction_max_bytes", int),
        transaction_max_ms=d.positive("transaction_max_ms", int),
        ledger_retention_hours=d.positive("ledger_retention_hours", float),
        shutdown_timeout_s=d.positive("shutdown_timeout_s", float),
        rows_per_second=d.positive("rows_per_second", float),
        group=group,
        shards=shards,
        group_session_timeout_s=session if session is not None else 10.0,
    )


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def is_loopback(http: str) -> bool:
    """Whether a HOST:PORT address is reachable from this machine only."""
    host = http.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a routable address


_MAKE_TOKEN = "set a long random one, e.g. the output of `openssl rand -hex 32`"


def _check_token(v: _Validator, where: str, token: str | None, http: str | None,
                 given: bool = False) -> None:
    """The admin verbs pause sources and change speeds: on an address other machines reach,
    they need a real token (the HTTP surface refuses to start without one)."""
    if token is None and given:
        return  # given, but its file or credential could not be read: that problem is reported
    if token is not None and not token.strip():
        v.problem(where, f"empty: {_MAKE_TOKEN} (or remove the line to leave the admin verbs "
                         "open on a loopback daemon.http address)")
        return
    if not http or not _host_port(http) or is_loopback(http):
        return
    if token is None:
        v.problem(where, f"missing while daemon.http ({http}) is reachable from other machines: "
                         f"{_MAKE_TOKEN}, or bind daemon.http to 127.0.0.1")
    elif token.strip() == TOKEN_PLACEHOLDER:
        v.problem(where, f"still the placeholder {TOKEN_PLACEHOLDER!r} while daemon.http ({http}) is "
                         f"reachable from other machines: {_MAKE_TOKEN}")


def _http_tls(v: _Validator, d: _Section) -> tuple[str | None, str | None]:
    """`http_tls_cert` and `http_tls_key`: both or neither, PEM files that load together."""
    w = d.where
    cert = v.path_setting(f"{w}.http_tls_cert", d.get("http_tls_cert", str))
    key = v.path_setting(f"{w}.http_tls_key", d.get("http_tls_key", str))
    given = [k for k in ("http_tls_cert", "http_tls_key") if k in d.table]
    if len(given) == 1:
        missing = ({"http_tls_cert", "http_tls_key"} - set(given)).pop()
        v.problem(f"{w}.{missing}", f"missing: {w}.{given[0]} is set, and TLS needs both the "
                                    "certificate chain and its private key (PEM files)")
        return None, None
    if cert and key:
        for name, p in (("http_tls_cert", cert), ("http_tls_key", key)):
            try:
                with open(p, "rb"):
                    pass
            except OSError as exc:
                v.problem(f"{w}.{name}", f"cannot read {p}: {exc.strerror}"
                          + (" (readable by the daemon's user?)" if isinstance(exc, PermissionError) else ""))
                return None, None
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            v.problem(f"{w}.http_tls_cert", f"{cert} and {key} are not a PEM certificate chain and "
                                            f"its unencrypted private key ({getattr(exc, 'reason', None) or exc})")
            return None, None
    return cert, key


def _hdfs(v: _Validator, t: Mapping[str, Any]) -> HdfsConfig | None:
    w = "hdfs"
    h = _Section(v, t, w, HdfsConfig)
    namenodes = h.get("namenodes", list) or []
    conf_dir = h.get("hadoop_conf_dir", str)
    if not namenodes and not conf_dir and not v.partial:
        v.problem(f"{w}.namenodes", "missing: give NameNode RPC addresses or hadoop_conf_dir")
    for i, nn in enumerate(namenodes):
        if not isinstance(nn, str) or not _host_port(nn):
            v.problem(f"{w}.namenodes[{i}]", f"expected HOST:PORT (got {nn!r})")
    reader = h.choice("reader", READERS)
    webhdfs = h.get("webhdfs", str, required=reader == "webhdfs")
    if webhdfs and not webhdfs.startswith(("http://", "https://")):
        v.problem(f"{w}.webhdfs", f"expected an http(s):// URL (got {webhdfs!r})")
    user = h.get("user", str, required=True)
    authentication = h.get("authentication", str)
    if authentication is not None and authentication not in ("simple", "kerberos"):
        v.problem(f"{w}.authentication", f"must be simple or kerberos (got {authentication!r})")
    protection = h.get("rpc_protection", str)
    if protection is not None:
        levels = [p.strip() for p in protection.split(",") if p.strip()]
        if not levels or any(p not in ("authentication", "integrity", "privacy") for p in levels):
            v.problem(f"{w}.rpc_protection", "must be authentication, integrity or privacy "
                                             f"(or a comma list of them, most wanted first; got {protection!r})")
    ca_file = v.path_setting(f"{w}.ca_file", h.get("ca_file", str))
    if ca_file:
        _readable(v, f"{w}.ca_file", ca_file)
    return HdfsConfig(
        namenodes=tuple(n for n in namenodes if isinstance(n, str)),
        webhdfs=(webhdfs or "").rstrip("/"),
        user=user or "",
        hadoop_conf_dir=conf_dir,
        authentication=authentication,
        rpc_protection=protection,
        namenode_principal=h.get("namenode_principal", str),
        ca_file=ca_file,
        detector=h.choice("detector", DETECTORS),
        listing_interval_s=h.positive("listing_interval_s", float),
        reader=reader,
    )


# Kafka's own names -> aiokafka keyword arguments (value converter).
_KAFKA_SETTINGS: dict[str, tuple[str, Any]] = {
    "security.protocol": ("security_protocol", str),
    "sasl.mechanism": ("sasl_mechanism", str),
    "sasl.kerberos.service.name": ("sasl_kerberos_service_name", str),
    "sasl.kerberos.domain.name": ("sasl_kerberos_domain_name", str),
    "sasl.username": ("sasl_plain_username", str),
    "sasl.password": ("sasl_plain_password", str),
    "compression.type": ("compression_type", str),
    "batch.size": ("max_batch_size", int),
    "linger.ms": ("linger_ms", int),
    "request.timeout.ms": ("request_timeout_ms", int),
    "transaction.timeout.ms": ("transaction_timeout_ms", int),
    "max.request.size": ("max_request_size", int),
    "client.id": ("client_id", str),
    "metadata.max.age.ms": ("metadata_max_age_ms", int),
    "retry.backoff.ms": ("retry_backoff_ms", int),
    "connections.max.idle.ms": ("connections_max_idle_ms", int),
}
# aiokafka keyword -> the Kafka name a user wrote (for messages).
_KAFKA_NAMES = {arg: name for name, (arg, _) in _KAFKA_SETTINGS.items()} | {"_ssl": "ssl.*"}
_SSL_SETTINGS = {"ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
                 "ssl.endpoint.identification.algorithm"}
_COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
_KAFKA_OWN = {"bootstrap", "ledger_topic", "ledger_replication", "client_properties", "schema_registry"}
# Kafka settings whose values are secrets (values never quoted, may name a file or credential).
KAFKA_SECRETS = frozenset({"sasl.password", "ssl.key.password", "sasl.jaas.config"})


def _flatten(t: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, val in t.items():
        name = f"{prefix}{k}"
        if isinstance(val, dict):
            out.update(_flatten(val, f"{name}."))
        else:
            out[name] = val
    return out


def read_properties(path: Path) -> dict[str, str]:
    """Java .properties (the subset client.properties files use: key=value, # comments)."""
    return parse_properties(path.read_text())


_JAAS_FIELD = re.compile(r'(username|password)\s*=\s*"([^"]*)"')
_JAAS_KERBEROS = re.compile(r'(keyTab|principal)\s*=\s*"([^"]*)"')


def _readable(v: _Validator, setting: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        v.problem(setting, f"cannot read {path}: {exc.strerror}"
                  + (" (readable by the daemon's user?)" if isinstance(exc, PermissionError) else ""))


def _kerberos(v: _Validator, t: Mapping[str, Any]) -> KerberosConfig:
    """[kerberos], or the Krb5LoginModule of kafka's sasl.jaas.config (one identity for all)."""
    w = "kerberos"
    k = _Section(v, t, w, KerberosConfig)
    principal = k.get("principal", str)
    keytab = v.path_setting(f"{w}.keytab", k.get("keytab", str))
    jaas = v.jaas_kerberos
    if jaas:
        for name, value, mine in (("principal", jaas.get("principal"), principal),
                                  ("keytab", jaas.get("keyTab"), keytab)):
            if value and mine and value != mine:
                v.problem(f"{w}.{name}", f"differs from the {name} in kafka.sasl.jaas.config "
                                         f"({value!r}): the daemon has one Kerberos identity")
        principal = principal or jaas.get("principal")
        keytab = keytab or v.path_setting("kafka.sasl.jaas.config keyTab", jaas.get("keyTab"))
    if keytab:
        _readable(v, f"{w}.keytab", keytab)
    if principal is not None and not principal.strip():
        v.problem(f"{w}.principal", "empty: give the daemon's principal, e.g. hdfs2kafka/HOST@REALM")
    return KerberosConfig(principal=principal, keytab=keytab)


def _kafka(v: _Validator, t: Mapping[str, Any], base: Path) -> KafkaConfig | None:
    w = "kafka"
    own = _Section(v, t, w, KafkaConfig, only_fields=False)  # the rest are Kafka's own settings
    bootstrap = own.get("bootstrap", str, required=True)
    ledger_topic = own.get("ledger_topic", str)
    if ledger_topic and not TOPIC_RE.match(ledger_topic):
        v.problem(f"{w}.ledger_topic", f"not a valid Kafka topic name: {ledger_topic!r}")
    settings: dict[str, Any] = {}
    props_file = v.get(t, w, "client_properties", str, None)
    if props_file:
        p = Path(props_file) if Path(props_file).is_absolute() else base / props_file
        try:
            settings.update(read_properties(p))
        except OSError as exc:
            v.problem(f"{w}.client_properties", f"cannot read {p}: {exc.strerror}")
    settings.update(_flatten({k: val for k, val in t.items() if k not in _KAFKA_OWN}))
    client: dict[str, Any] = {}
    ssl_files: dict[str, str] = {}
    for name, value in settings.items():
        where = f"{w}.{name}"
        if name in KAFKA_SECRETS and not isinstance(value, str):
            v.problem(where, f"expected a string, got {_kind_of(value)} (its value is not shown: "
                             "a secret setting)")
        elif name == "sasl.password":
            client["sasl_plain_password"] = v.secret(where, value)
        elif name == "ssl.key.password":
            key_password = v.secret(where, value)
            if key_password is not None:
                ssl_files[name] = key_password
        elif name in ("bootstrap.servers",):
            bootstrap = bootstrap or str(value)
        elif name == "acks":
            if str(value) not in ("all", "-1"):
                v.problem(where, "must be 'all': exactly-once delivery needs acks=all")
        elif name in ("enable.idempotence", "transactional.id", "isolation.level"):
            v.problem(where, "set by hdfs2kafka itself (transactions need it); remove it")
        elif name == "sasl.jaas.config":
            if "Krb5LoginModule" in value:  # GSSAPI: the identity becomes [kerberos]'s
                v.jaas_kerberos = dict(_JAAS_KERBEROS.findall(value))
            for fname, fval in _JAAS_FIELD.findall(value):
                if fname == "username":
                    client["sasl_plain_username"] = fval
                else:
                    client["sasl_plain_password"] = v.secret(f"{where} password", fval)
        elif name in _SSL_SETTINGS:
            ssl_files[name] = str(value)
        elif name.startswith("ssl.truststore") or name.startswith("ssl.keystore"):
            v.problem(where, "Java key stores are not readable here; give PEM files with "
                             "ssl.ca.location, ssl.certificate.location and ssl.key.location")
        elif name in _KAFKA_SETTINGS:
            arg, conv = _KAFKA_SETTINGS[name]
            try:
                client[arg] = conv(value)
            except (TypeError, ValueError):
                v.problem(where, f"expected {_kind_name(conv)} (got {value!r})")
        else:
            v.problem(where, "unknown Kafka setting (supported: "
                             f"{', '.join(sorted([*_KAFKA_SETTINGS, *_SSL_SETTINGS, 'sasl.jaas.config', 'acks']))})")
    if client.get("compression_type") == "none":
        client.pop("compression_type")
    elif "compression_type" in client and client["compression_type"] not in _COMPRESSION:
        v.problem(f"{w}.compression.type", f"must be one of {', '.join(_COMPRESSION)}")
    if ssl_files:
        client["_ssl"] = ssl_files
    return KafkaConfig(bootstrap=bootstrap or "", ledger_topic=ledger_topic,
                       ledger_replication=own.positive("ledger_replication", int),
                       client=client, schema_registry=own.get("schema_registry", str))


def _sources(v: _Validator, raw: Any) -> list[SourceConfig]:
    if not isinstance(raw, list):
        v.problem("sources", "must be an array of tables ([[sources]])")
        return []
    out: list[SourceConfig] = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            v.problem(f"sources[{i}]", "must be a table")
            continue
        name = t.get("name")
        w = f"sources[{name}]" if isinstance(name, str) and name else f"sources[{i}]"
        s = _Section(v, t, w, SourceConfig)
        name = s.get("name", str, required=True)
        if name and not NAME_RE.match(name):
            v.problem(f"{w}.name", "use letters, digits, '.', '_' or '-' (max 100)")
        if name in seen:
            v.problem(f"{w}.name", "another source has the same name")
        seen.add(name)
        path = s.get("path", str, required=True)
        if path and not path.startswith("/"):
            v.problem(f"{w}.path", f"must be an absolute HDFS path or glob (got {path!r})")
        elif path:
            _check_path(v, f"{w}.path", path, out)
        topic = s.get("topic", str, required=True)
        if topic and not TOPIC_RE.match(topic):
            v.problem(f"{w}.topic", f"not a valid Kafka topic name: {topic!r}")
        key = s.get("key", (list, str))
        keys = (key,) if isinstance(key, str) else tuple(key)
        for j, k in enumerate(keys):
            if not isinstance(k, str) or not k:
                v.problem(f"{w}.key[{j}]", "expected a column name")
        errors = _error_policy(v, t.get("errors", {}), f"{w}.errors")
        value_format = s.choice("value_format", VALUE_FORMATS)
        out.append(SourceConfig(
            name=name or "",
            path=path or "",
            topic=topic or "",
            format=s.choice("format", FORMATS),
            key=tuple(k for k in keys if isinstance(k, str)),
            value_format=value_format,
            start_from=s.choice("start_from", START_FROM),
            headers=s.get("headers", bool),
            timestamps=s.choice("timestamps", TIMESTAMP_MODES),
            rows_per_second=s.positive("rows_per_second", float),
            bytes_per_second=s.positive("bytes_per_second", float),
            paused=s.get("paused", bool),
            errors=errors,
        ))
    return out


def _check_path(v: _Validator, where: str, path: str, earlier: list[SourceConfig]) -> None:
    """The pattern compiles, and no earlier source takes every file it would match (a file
    goes to the first source, in file order, whose pattern matches it)."""
    try:
        PathMatcher([path])
    except PatternError as exc:
        v.problem(where, f"not a valid path pattern: {exc}")
        return
    for other in earlier:
        if other.path and _shadows(other.path, path):
            same = normalize(other.path) == normalize(path)
            v.problem(where, ("the same path as" if same else "every file it matches is also matched by")
                      + f" source {other.name!r} ({other.path}), which comes first and takes them: "
                      "this source would never get a file; give it a distinct path")
            return


def _shadows(first: str, second: str) -> bool:
    """Whether every file `second` matches is also matched by `first`: the two are the same
    pattern, or `first` is `DIR/**` and `second` lies under DIR without naming a hidden
    directory (which `**` does not enter). Other overlaps are allowed."""
    a, b = normalize(first), normalize(second)
    if a == b:
        return True
    if not a.endswith("/**"):
        return False
    root = a[:-3]
    if any(c in root for c in "*?[{\\"):
        return False
    if not b.startswith(root.rstrip("/") + "/"):
        return False
    rest = b[len(root.rstrip("/")) + 1:].split("/")
    return not any(seg.startswith((".", "_")) for seg in rest)


def _error_policy(v: _Validator, t: Any, w: str) -> ErrorPolicy:
    if not isinstance(t, dict):
        v.problem(w, "must be a table")
        return ErrorPolicy()
    e = _Section(v, t, w, ErrorPolicy)
    dlq = e.get("dead_letter_topic", str)
    if dlq and not TOPIC_RE.match(dlq):
        v.problem(f"{w}.dead_letter_topic", f"not a valid Kafka topic name: {dlq!r}")
    return ErrorPolicy(
        retry_timeout_ms=e.positive("retry_timeout_ms", int),
        retry_max_delay_ms=e.positive("retry_max_delay_ms", int),
        tolerance=e.choice("tolerance", TOLERANCES),
        dead_letter_topic=dlq,
    )
