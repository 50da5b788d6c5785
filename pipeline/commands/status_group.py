"""`hdfs2kafka status --group`: every member of a daemon's group, for a terminal.

The group is the Kafka consumer group `hdfs2kafka-<group>` (`pipeline.kafka.group`). Kafka says
who its members are, what each told the group when it joined (the consumer protocol's user
data: instance, host, pid, HTTP address) and which shards (ledger topic partitions) each was
assigned; each member's GET /status then says whether it is ready and what it committed. A
member whose /status does not answer is shown as unreachable, not as an error.

The decoding and the rendering are plain functions (no I/O), `describe` asks Kafka and
`fetch_statuses` the members.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.kafka.group import group_id, member_info, registries

if TYPE_CHECKING:
    from pipeline.config import Config

STATUS_TIMEOUT_S = 5.0
"""How long a member's /status may take before it is shown as unreachable."""
DESCRIBE_TIMEOUT_S = 30.0
"""How long asking Kafka may take (connecting included)."""


@dataclass(frozen=True)
class GroupMember:
    """One member as Kafka knows it."""

    member_id: str
    client_host: str
    """The address the broker sees the member connect from."""
    info: Mapping[str, Any]
    """What it told the group when it joined: instance, host, pid, http, tls, owned."""
    shards: tuple[int, ...]
    """The shards Kafka assigned it (empty while the group rebalances, or standing by)."""

    @property
    def instance(self) -> str:
        return str(self.info.get("instance") or self.member_id)

    @property
    def host(self) -> str:
        return str(self.info.get("host") or self.client_host.lstrip("/") or "?")


@dataclass(frozen=True)
class GroupDescription:
    group: str
    """The daemons' group ([daemon] group, else instance_id)."""
    group_id: str
    """Its Kafka consumer group."""
    state: str
    """Kafka's word: Stable, PreparingRebalance, CompletingRebalance, Empty, Dead."""
    shards: int | None
    """The ledger topic's partitions (None: the topic does not exist)."""
    members: tuple[GroupMember, ...]

    def registries(self) -> dict[str, list[str]]:
        """Each source-registry digest the members run, with its members: more than one and
        the group is held (no member streams)."""
        return registries(m.info for m in self.members)

    def unowned(self) -> list[int]:
        """The shards no member is assigned. Kafka only tells the assignments of a Stable group
        (a rebalancing one has none yet): for any other state, none is said to be unowned."""
        if self.state != "Stable" or not self.shards:
            return []
        owned = {s for m in self.members for s in m.shards}
        return [s for s in range(self.shards) if s not in owned]


@dataclass(frozen=True)
class MemberStatus:
    """A member's /status, or why it could not be had."""

    url: str | None
    doc: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class MemberRow:
    """One line of the table."""

    member: GroupMember
    status: MemberStatus
    state: str
    generation: int | None
    rows: Mapping[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------- decoding (pure)


def decode_member(raw: Sequence[Any], ledger_topic: str) -> GroupMember:
    """A member of a DescribeGroups answer, (member_id, client_id, client_host, metadata,
    assignment): its user data (JSON) and the ledger topic's partitions in its assignment.
    Bytes that do not decode (a member of another kind) leave `info` or `shards` empty."""
    from aiokafka.coordinator.protocol import ConsumerProtocol

    member_id, _client_id, client_host, metadata, assignment = raw[:5]
    info: dict[str, Any] = {}
    if metadata:
        try:
            info = member_info(ConsumerProtocol.METADATA.decode(metadata).user_data)
        except Exception:
            info = {}
    shards: list[int] = []
    if assignment:
        try:
            decoded = ConsumerProtocol.ASSIGNMENT.decode(assignment)
            shards = [p for topic, parts in decoded.assignment if topic == ledger_topic for p in parts]
        except Exception:
            shards = []
    return GroupMember(str(member_id), str(client_host or ""), info, tuple(sorted(shards)))


def decode_group(raw: Sequence[Any], group: str, ledger_topic: str, shards: int | None) -> GroupDescription:
    """A group of a DescribeGroups answer, (error_code, group, state, protocol_type, protocol,
    members, ...), the error code already checked."""
    members = sorted((decode_member(m, ledger_topic) for m in raw[5]),
                     key=lambda m: (m.instance, m.member_id))
    return GroupDescription(group, str(raw[1]), str(raw[2]), shards, tuple(members))


def status_url(member: GroupMember, local_host: str | None = None) -> tuple[str | None, str | None]:
    """(URL of the member's /status, None) or (None, why it cannot be asked from here).

    A wildcard address (0.0.0.0, ::) is asked at the member's host name. A loopback address is
    asked only when the member runs on this host: elsewhere it would reach another daemon."""
    http = str(member.info.get("http") or "")
    if not http:
        return None, "it announced no HTTP address"
    host, sep, port = http.rpartition(":")
    if not sep or not port.isdigit():
        return None, f"HTTP address {http!r} is not HOST:PORT"
    bare = host.strip("[]")
    local_host = socket.gethostname() if local_host is None else local_host
    if bare in ("", "0.0.0.0", "::"):
        host = member.host
    elif _loopback(bare) and member.host != local_host:
        return None, f"its HTTP address {http} is on the loopback of {member.host}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if member.info.get("tls") else "http"
    return f"{scheme}://{host}:{port}/status", None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def member_row(member: GroupMember, status: MemberStatus) -> MemberRow:
    """What the table says of a member: its state (ready, standing by, held, recovering,
    rebalancing or unreachable), its generation and the rows committed per source, from its /status."""
    doc = status.doc
    if doc is None:
        return MemberRow(member, status, "unreachable", None)
    group = doc.get("group") or {}
    generation = group.get("generation")
    rows = {str(s.get("name")): int(s.get("rows_committed") or 0) for s in doc.get("sources") or []}
    assigned = group.get("shards_assigned")
    if assigned is None:
        state = "rebalancing"  # no assignment in this generation yet
    elif group.get("held"):
        state = "held"  # the members' registries differ
    elif not doc.get("ready"):
        state = "recovering"
    elif not assigned:
        state = "standing by"  # more members than shards
    else:
        state = "ready"
    return MemberRow(member, status, state, generation if isinstance(generation, int) else None, rows)


# --------------------------------------------------------------------- rendering (pure)


def _shards_text(shards: Iterable[int]) -> str:
    return ",".join(str(s) for s in shards) or "-"


def render(desc: GroupDescription, rows: Sequence[MemberRow]) -> str:
    n = len(desc.members)
    shards = f"{desc.shards} shard{'s' if desc.shards != 1 else ''}" if desc.shards is not None \
        else "no ledger topic"
    lines = [f"group {desc.group} (Kafka group {desc.group_id}): {desc.state}, {shards}, "
             f"{n} member{'s' if n != 1 else ''}"]
    differ = desc.registries()
    if len(differ) > 1:
        told = "; ".join(f"{', '.join(names)}: {digest}" for digest, names in differ.items())
        lines.append(f"HELD: the members run different source registries ({told}); no member "
                     "streams until they run the same one: deploy the group's config file to "
                     "each and reload it")
    unowned = desc.unowned()
    if unowned:
        many = len(unowned) > 1
        lines.append(f"WARNING: shard{'s' if many else ''} {_shards_text(unowned)} "
                     f"{'have' if many else 'has'} no owner: {'their' if many else 'its'} files "
                     "are not streamed")
    if desc.state not in ("Stable", "Empty", "Dead"):
        lines.append("the group is rebalancing: shards are assigned when it is Stable again")
    if not desc.members:
        lines.append("no member is running")
        return "\n".join(lines)
    width = max([8, *(len(r.member.instance) for r in rows)])
    hwidth = max([4, *(len(r.member.host) for r in rows)])
    lines += ["", f"{'INSTANCE':{width}} {'HOST':{hwidth}} {'PID':>7} {'SHARDS':10} {'STATE':12} "
              f"{'GEN':>5}  ROWS COMMITTED"]
    for r in rows:
        m = r.member
        if r.status.doc is None:
            detail = f"({r.status.error})" if r.status.error else ""
        else:
            detail = ", ".join(f"{name} {count}" for name, count in r.rows.items()) or "-"
        gen = "-" if r.generation is None else str(r.generation)
        lines.append(f"{m.instance:{width}} {m.host:{hwidth}} {m.info.get('pid') or '-'!s:>7} "
                     f"{_shards_text(m.shards):10} {r.state:12} {gen:>5}  {detail}")
    return "\n".join(lines)


def document(desc: GroupDescription, rows: Sequence[MemberRow]) -> dict[str, Any]:
    """The `--json` output: the group, then each member with its /status as it answered."""
    return {
        "group": desc.group, "group_id": desc.group_id, "state": desc.state,
        "shards": desc.shards, "unowned": desc.unowned(), "registries": desc.registries(),
        "members": [{
            "member_id": r.member.member_id, "client_host": r.member.client_host,
            "instance": r.member.instance, "host": r.member.host, "pid": r.member.info.get("pid"),
            "http": r.member.info.get("http"), "tls": bool(r.member.info.get("tls")),
            "shards": list(r.member.shards), "state": r.state, "generation": r.generation,
            "rows_committed": dict(r.rows), "status_url": r.status.url, "error": r.status.error,
            "status": r.status.doc,
        } for r in rows],
    }


# --------------------------------------------------------------------- I/O


class GroupError(Exception):
    """The group could not be described (one line for the terminal)."""


async def describe(cfg: Config) -> GroupDescription:
    """The daemon group of `cfg`, as Kafka's group coordinator knows it, with the ledger topic's
    partition count; raises GroupError."""
    from aiokafka.errors import for_code

    from pipeline.kafka import errors as kafka_errors
    from pipeline.kafka.client import admin_client, kafka_identity

    group = cfg.daemon.group_name
    gid = group_id(group)
    topic = cfg.kafka.ledger_topic
    async with admin_client(cfg.kafka.bootstrap, cfg.kafka.client) as admin:
        # Every topic's metadata, not the ledger topic's by name: asking a broker with
        # auto.create.topics.enable for a missing topic creates it, with the wrong cleanup policy.
        topics = await admin.describe_topics()
        meta = next((t for t in topics if t.get("topic") == topic), None)
        shards = len(meta.get("partitions") or []) if meta and not meta.get("error_code") else None
        answers = await admin.describe_consumer_groups([gid])
        for answer in answers:
            for raw in answer.groups:
                if raw[1] != gid:
                    continue
                if raw[0]:
                    exc = for_code(raw[0])(gid)
                    if kafka_errors.is_authorization(exc):
                        raise GroupError(kafka_errors.acl_message(
                            exc, kafka_identity(admin), bootstrap=cfg.kafka.bootstrap,
                            operation="Describe", resources=(gid,)))
                    raise GroupError(f"describing Kafka group {gid}: {type(exc).__name__}")
                return decode_group(raw, group, topic, shards)
    raise GroupError(f"Kafka did not describe group {gid}")


def _fetch(url: str, context: ssl.SSLContext | None, timeout_s: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
        doc = json.loads(resp.read() or b"null")
    if not isinstance(doc, dict):
        raise ValueError("not a status document")
    return doc


async def fetch_status(member: GroupMember, context: ssl.SSLContext | None,
                       timeout_s: float = STATUS_TIMEOUT_S) -> MemberStatus:
    """The member's /status. No token is sent: /status needs none, and the address comes from
    the group, which any client allowed to join it could have filled in."""
    url, why = status_url(member)
    if url is None:
        return MemberStatus(None, error=why)
    try:
        doc = await asyncio.to_thread(_fetch, url, context if url.startswith("https") else None, timeout_s)
    except urllib.error.HTTPError as exc:
        return MemberStatus(url, error=f"{url}: HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return MemberStatus(url, error=f"{url}: {reason}")
    instance = member.info.get("instance")
    if instance and doc.get("instance_id") != instance:
        return MemberStatus(url, error=f"{url} answers as instance {doc.get('instance_id')!r}")
    return MemberStatus(url, doc=doc)


def tls_context(cfg: Config) -> ssl.SSLContext:
    """For members' https addresses: the system's CAs, and this config's own HTTP certificate
    (a group's members often share one, or its CA)."""
    context = ssl.create_default_context()
    if cfg.daemon.http_tls_cert:
        try:
            context.load_verify_locations(cfg.daemon.http_tls_cert)
        except (OSError, ssl.SSLError):
            pass
    return context


async def gather(cfg: Config) -> tuple[GroupDescription, list[MemberRow]]:
    """The group and a row for each member (their /status asked at once)."""
    try:
        async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
            desc = await describe(cfg)
    except TimeoutError:
        raise GroupError(f"Kafka did not answer within {DESCRIBE_TIMEOUT_S:g} s") from None
    context = tls_context(cfg)
    statuses = await asyncio.gather(*(fetch_status(m, context) for m in desc.members))
    return desc, [member_row(m, s) for m, s in zip(desc.members, statuses, strict=True)]


def kafka_credentials(cfg: Config) -> None:
    """With Kafka over GSSAPI and a keytab this user can read, the process takes its tickets
    from it, as the daemon does; otherwise from the environment's ticket cache."""
    if str(cfg.kafka.client.get("sasl_mechanism", "")).upper() != "GSSAPI":
        return
    keytab = cfg.kerberos.keytab
    if keytab and os.access(keytab.split(":", 1)[-1], os.R_OK):
        from pipeline.kerberos_login import configure

        configure(cfg.kerberos)
