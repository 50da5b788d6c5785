"""The NameNode client: typed ClientProtocol methods over Hadoop IPC, with HA failover.

`NameNodeClient` holds a list of NameNode addresses and one connection to the one it believes
active. A `StandbyException`, a refused or lost connection or a call timeout moves it to the
next address; after a full round without success it backs off (exponentially, bounded) and
tries again until `retry_for` seconds have passed. Calls are only repeated when that is safe:
every read-only method here is idempotent, and a call that failed before it was sent is always
retried. A call is repeated whole: the reply of a call given up on is never handed out, so a
repeated `getEditsFromTxid` cannot deliver a transaction twice.

During a failover every NameNode answers at once (a standby says so, a killed one refuses the
connection): such rounds back off to at most `failover_backoff_max` (0.5 s), so the new active
is found within that of answering; rounds that cost time (connect or call timeouts) back off to
`backoff_max`. `active` is the NameNode that answered last and `active_changes` counts how
often that changed (a failover as the client saw it; `failovers` counts every move between
addresses, standbys tried on the way included).

Authentication follows `hadoop_conf.RpcSecurity` (by default from `$HADOOP_CONF_DIR`): SIMPLE,
or Kerberos over SASL (`hdfswatch.kerberos`) with the protection `hadoop.rpc.protection` asks.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import structlog
from google.protobuf.message import Message

from hdfswatch.backoff import Backoff
from hdfswatch.connection import Authenticator, IpcConnection, SimpleAuth, parse_reply
from hdfswatch.errors import (
    CallTimeoutError,
    ConfigError,
    ConnectionLostError,
    FileNotFound,
    NameNodeConnectError,
    NameNodeUnavailableError,
    RetriableRemoteError,
    RpcServerError,
    StandbyError,
)
from hdfswatch.events import EventsList, decode_edits_reply
from hdfswatch.framing import CLIENT_PROTOCOL, DEFAULT_MAX_FRAME
from hdfswatch.hadoop_conf import RpcSecurity, load_rpc_security
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp_pb
from hdfswatch.proto import hdfs_pb2

M = TypeVar("M", bound=Message)

log = structlog.get_logger("hdfswatch.namenode")

_IS_DIR = hdfs_pb2.HdfsFileStatusProto.IS_DIR
_IS_SYMLINK = hdfs_pb2.HdfsFileStatusProto.IS_SYMLINK

SAFEMODE_ACTIONS = {
    "leave": cnp_pb.SAFEMODE_LEAVE,
    "enter": cnp_pb.SAFEMODE_ENTER,
    "get": cnp_pb.SAFEMODE_GET,
    "force_exit": cnp_pb.SAFEMODE_FORCE_EXIT,
}


@dataclass(frozen=True, slots=True)
class FileStatus:
    """What the NameNode says about one path.

    `under_construction` is known only for files listed with their block locations
    (`list_dir(..., need_location=True)`): True while a writer holds the file open.
    """

    path: str
    file_id: int
    length: int
    mtime_ms: int
    is_dir: bool
    is_symlink: bool = False
    owner: str = ""
    group: str = ""
    permission: int = 0
    atime_ms: int = 0
    replication: int = 0
    block_size: int = 0
    children: int = -1
    under_construction: bool | None = None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def _join(parent: str, name: str) -> str:
    if not name:
        return parent
    return (parent.rstrip("/") or "") + "/" + name


def file_status(path: str, fs: hdfs_pb2.HdfsFileStatusProto) -> FileStatus:
    under_construction = None
    if fs.HasField("locations"):
        under_construction = fs.locations.underConstruction
    return FileStatus(
        path=path,
        file_id=fs.fileId,
        length=fs.length,
        mtime_ms=fs.modification_time,
        is_dir=fs.fileType == _IS_DIR,
        is_symlink=fs.fileType == _IS_SYMLINK,
        owner=fs.owner,
        group=fs.group,
        permission=fs.permission.perm,
        atime_ms=fs.access_time,
        replication=fs.block_replication,
        block_size=fs.blocksize,
        children=fs.childrenNum,
        under_construction=under_construction,
    )


def parse_address(address: str) -> tuple[str, int]:
    """"host:port" (or "hdfs://host:port", "[v6]:port") -> (host, port)."""
    value = address.strip()
    if "://" in value:
        value = value.split("://", 1)[1].split("/", 1)[0]
    if value.startswith("["):
        host, _, port = value[1:].partition("]:")
    else:
        host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"NameNode address {address!r} is not host:port")
    return host, int(port)


def authenticator(security: RpcSecurity, user: str) -> Authenticator:
    """SIMPLE as `user`, or Kerberos as `security` says (then `user` is only the name for a
    fallback to SIMPLE: with Kerberos the ticket says who the client is)."""
    if not security.kerberos:
        return SimpleAuth(user)
    from hdfswatch.kerberos import KerberosAuth
    from hdfswatch.sasl import parse_protection

    return KerberosAuth(principal=security.namenode_principal,
                        protections=parse_protection(security.protection),
                        client_principal=security.client_principal, keytab=security.keytab,
                        allow_simple=security.fallback_to_simple, simple_user=user)


def default_user() -> str:
    """`$HADOOP_USER_NAME` (as Hadoop's SIMPLE authentication reads it), else the OS user."""
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


class NameNodeClient:
    """Async client of the NameNode's ClientProtocol (the calls hdfswatch needs).

        async with NameNodeClient(["nn1:8020", "nn2:8020"], user="hdfs") as nn:
            txid = await nn.get_current_txid()
            status = await nn.get_file_info("/data/x.parquet")
            async for entry in nn.list_dir("/data"):
                ...

    `security` says how to authenticate (None: as `$HADOOP_CONF_DIR` says, else SIMPLE);
    `auth` replaces it with any `Authenticator`. With Kerberos, `user` names the client only
    until the first connection; then it is the ticket's principal.
    """

    def __init__(self, addresses: Sequence[str], user: str | None = None, *,
                 connect_timeout: float = 5.0, call_timeout: float = 60.0,
                 retry_for: float | None = 120.0, backoff_initial: float = 0.05,
                 backoff_max: float = 5.0, failover_backoff_max: float = 0.5,
                 auth: Authenticator | None = None,
                 security: RpcSecurity | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME,
                 names: Mapping[str, str] | None = None) -> None:
        if isinstance(addresses, str):
            addresses = [a for a in addresses.split(",") if a.strip()]
        if not addresses:
            raise ConfigError("no NameNode address given")
        self.addresses: tuple[str, ...] = tuple(addresses)
        self._endpoints = [parse_address(a) for a in self.addresses]
        self.user = user or (auth.effective_user if auth else default_user())
        if auth is None:
            self.security = security if security is not None else load_rpc_security()
            auth = authenticator(self.security, self.user)
            if self.security.kerberos and self.security.client_principal:
                self.user = self.security.client_principal
        else:
            self.security = security or RpcSecurity()
        self._auth: Authenticator = auth
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.retry_for = retry_for
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.failover_backoff_max = failover_backoff_max
        self.names: dict[str, str] = dict(names or {})
        """HA ids by address ("127.0.0.1:8020" -> "nn1"), when the configuration names them."""
        self._max_frame = max_frame
        self._index = 0
        self._conn: IpcConnection | None = None
        self._conn_index = 0
        """Which address `_conn` goes to: a failure on it moves on from there, whatever
        `_index` became meanwhile."""
        self._connecting: asyncio.Lock | None = None
        self._closed = False
        self.failovers = 0
        """Moves to another NameNode address."""
        self.connects = 0
        """Connections opened (the first one, and every reconnect)."""
        self.active: str | None = None
        """The address of the NameNode that answered the last call (None before any answer)."""
        self.active_since_unix: float | None = None
        """When `active` last changed (Unix time)."""
        self.active_changes = 0
        """Times the NameNode answering calls changed: failovers as this client saw them."""
        self._last_retry_log = 0.0
        self._located_info = True

    @classmethod
    def from_hadoop_conf(cls, conf_dir: str | os.PathLike[str] | None = None,
                         user: str | None = None, *, nameservice: str | None = None,
                         **kwargs: Any) -> NameNodeClient:
        """A client for the NameNodes named by a Hadoop configuration directory
        (`conf_dir`, else `$HADOOP_CONF_DIR`)."""
        from hdfswatch.hadoop_conf import load_hadoop_conf

        conf = load_hadoop_conf(conf_dir, nameservice=nameservice)
        if kwargs.get("auth") is None and kwargs.get("security") is None:
            kwargs["security"] = conf.rpc_security
        kwargs.setdefault("names", {nn.rpc: nn.id for nn in conf.namenodes if nn.id})
        return cls(conf.rpc_addresses, user, **kwargs)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> NameNodeClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    @property
    def protection(self) -> str | None:
        """The protection of the current connection ("authentication", "integrity",
        "privacy"), None with SIMPLE authentication or before the first connection."""
        conn = self._conn
        return conn.protection if conn is not None else None

    @property
    def active_address(self) -> str:
        """The address calls currently go to."""
        return self.addresses[self._index]

    def name_of(self, address: str | None) -> str | None:
        """The HA id of the NameNode at `address` ("nn1"), when the configuration names it."""
        return self.names.get(address) if address is not None else None

    def _answered(self, address: str) -> None:
        if address == self.active:
            return
        previous = self.active
        self.active = address
        self.active_since_unix = time.time()
        if previous is not None:
            self.active_changes += 1
            log.info("namenode.failover", active=address, namenode=self.name_of(address),
                     previous=previous, failovers=self.active_changes)

    # ---------------------------------------------------------------- calls

    async def _connection(self) -> tuple[IpcConnection, int]:
        """The open connection and the index of its address; a new one to the current
        address when there is none (when that fails, `_conn_index` says which refused)."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn, self._conn_index
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and conn.usable:
                return conn, self._conn_index
            if conn is not None:
                self._conn = None
                await conn.close()
            self._conn_index = index = self._index
            host, port = self._endpoints[index]
            conn = IpcConnection(host, port, self._auth, protocol=CLIENT_PROTOCOL,
                                 connect_timeout=self.connect_timeout,
                                 max_frame=self._max_frame)
            await conn.open()
            if self._auth.effective_user:
                self.user = self._auth.effective_user
            self.connects += 1
            self._conn = conn
            return conn, index

    async def _drop(self, conn: IpcConnection | None, index: int, advance: bool) -> None:
        """Forget a failed connection; with `advance`, move to the next address, unless a
        concurrent caller already moved on from `index`. The move comes before the close's
        await, so that neither a cancel there nor other callers meanwhile can undo or repeat it."""
        if advance and len(self.addresses) > 1 and self._index == index:
            self._index = (index + 1) % len(self.addresses)
            self.failovers += 1
        if conn is not None and self._conn is conn:
            self._conn = None
            await conn.close()

    async def call_raw(self, method: str, request: bytes, *, idempotent: bool = True,
                       reply_timeout: float | None = None) -> bytes:
        """Call a ClientProtocol method with failover and retries; the serialized response."""
        if self._closed:
            raise ConnectionLostError("NameNode client is closed")
        deadline = None if self.retry_for is None else time.monotonic() + self.retry_for
        backoff = Backoff(self.backoff_initial, max(self.backoff_initial, self.backoff_max))
        tried_in_round = 0
        quick_round = True  # every NameNode of the round answered at once (a failover)
        attempts: dict[str, str] = {}
        timeout = self.call_timeout if reply_timeout is None else reply_timeout
        while True:
            conn: IpcConnection | None = None
            index = self._index
            address = self.addresses[index]
            sent = False
            started = time.monotonic()
            try:
                # The address tried is the connection's, whatever `_index` became meanwhile.
                try:
                    conn, index = await self._connection()
                except (ConnectionLostError, CallTimeoutError):
                    index = self._conn_index  # the one that refused
                    address = self.addresses[index]
                    raise
                address = self.addresses[index]
                sent = True
                payload = await conn.call_raw(method, request, reply_timeout=timeout,
                                              user=self.user)
                self._answered(address)
                return payload
            except StandbyError as exc:
                attempts[address] = "standby"
                await self._drop(conn, index, advance=True)
                last: Exception = exc
            except RetriableRemoteError as exc:
                attempts[address] = str(exc)
                last = exc
            except (ConnectionLostError, CallTimeoutError) as exc:
                attempts[address] = str(exc)
                await self._drop(conn, index, advance=True)
                last = exc
                if sent and not idempotent and not isinstance(exc, NameNodeConnectError):
                    raise
            if self._closed:
                raise ConnectionLostError("NameNode client is closed") from last
            # A standby's answer or a refused connection costs nothing: the next round may come
            # soon. Anything that took a while (a timeout) backs off fully.
            quick_round = quick_round and time.monotonic() - started < 0.5
            tried_in_round += 1
            if tried_in_round < len(self.addresses) and not isinstance(last, RetriableRemoteError):
                continue  # try the next NameNode right away
            tried_in_round = 0
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                detail = "; ".join(f"{a}: {e}" for a, e in attempts.items())
                raise NameNodeUnavailableError(
                    f"{method}: no active NameNode answered within {self.retry_for:g}s "
                    f"({detail})", attempts) from last
            sleep = backoff.next_delay()
            if quick_round:
                sleep = min(sleep, self.failover_backoff_max)
            quick_round = True
            if deadline is not None:
                sleep = min(sleep, max(0.0, deadline - now))
            if backoff.attempts == 1 or now - self._last_retry_log >= 10.0:
                # Once per call, then every 10 s: a long failover is not a line per round.
                self._last_retry_log = now
                log.info("namenode.retry", method=method, address=address, error=str(last),
                         delay_s=round(sleep, 3), attempts=backoff.attempts)
            await asyncio.sleep(sleep)

    async def call(self, method: str, request: Message, response: type[M], *,
                   idempotent: bool = True, reply_timeout: float | None = None) -> M:
        """Call a ClientProtocol method with a request message; parse its response."""
        payload = await self.call_raw(method, request.SerializeToString(),
                                      idempotent=idempotent, reply_timeout=reply_timeout)
        return parse_reply(method, payload, response)

    # ---------------------------------------------------------------- edit stream

    async def get_current_txid(self) -> int:
        """The last transaction id the active NameNode wrote (-1 while its edit log is not
        open). Needs superuser privilege."""
        resp = await self.call("getCurrentEditLogTxid", cnp_pb.GetCurrentEditLogTxidRequestProto(),
                               cnp_pb.GetCurrentEditLogTxidResponseProto)
        return resp.txid

    async def get_edits_from_txid(self, txid: int) -> EventsList:
        """Edit-stream events from transaction `txid` on (at most
        `dfs.namenode.inotify.max.events.per.rpc` of them). Needs superuser privilege."""
        payload = await self.call_raw(
            "getEditsFromTxid", cnp_pb.GetEditsFromTxidRequestProto(txid=txid).SerializeToString())
        return decode_edits_reply(payload)

    # ---------------------------------------------------------------- namespace

    async def get_file_info(self, path: str, *, need_location: bool = False
                            ) -> FileStatus | None:
        """The status of `path`, or None if it does not exist. With `need_location`, a file's
        `under_construction` is known (getLocatedFileInfo; on NameNodes older than Hadoop 3.1,
        which lack it, it stays None)."""
        resp: cnp_pb.GetFileInfoResponseProto | cnp_pb.GetLocatedFileInfoResponseProto
        if need_location and self._located_info:
            try:
                resp = await self.call("getLocatedFileInfo",
                                       cnp_pb.GetLocatedFileInfoRequestProto(src=path),
                                       cnp_pb.GetLocatedFileInfoResponseProto)
            except RpcServerError:
                self._located_info = False
                return await self.get_file_info(path)
        else:
            resp = await self.call("getFileInfo", cnp_pb.GetFileInfoRequestProto(src=path),
                                   cnp_pb.GetFileInfoResponseProto)
        if not resp.HasField("fs"):
            return None
        return file_status(path, resp.fs)

    async def list_dir(self, path: str, *, need_location: bool = False) -> AsyncIterator[FileStatus]:
        """The entries of directory `path`, page by page (`dfs.ls.limit` entries a call), in
        the NameNode's order. Listing a file yields that file. Raises FileNotFound when `path`
        does not exist. With `need_location`, each file's `under_construction` is known."""
        start_after = b""
        while True:
            resp = await self.call(
                "getListing",
                cnp_pb.GetListingRequestProto(src=path, startAfter=start_after,
                                              needLocation=need_location),
                cnp_pb.GetListingResponseProto)
            if not resp.HasField("dirList"):
                if start_after:
                    return  # the directory went away between pages
                raise FileNotFound("java.io.FileNotFoundException",
                                   f"File {path} does not exist.", method="getListing")
            listing = resp.dirList
            entries = listing.partialListing
            for fs in entries:
                yield file_status(_join(path, fs.path.decode("utf-8", "surrogateescape")), fs)
            if not entries or listing.remainingEntries == 0:
                return
            start_after = entries[-1].path

    # ---------------------------------------------------------------- maintenance (superuser)

    async def roll_edits(self) -> int:
        """Finish the current edit-log segment; returns the first txid of the new one."""
        resp = await self.call("rollEdits", cnp_pb.RollEditsRequestProto(),
                               cnp_pb.RollEditsResponseProto, idempotent=False)
        return resp.newSegmentTxId

    async def set_safe_mode(self, action: str) -> bool:
        """`action` is 'enter', 'leave', 'get' or 'force_exit'; returns whether the NameNode
        is in safe mode afterwards."""
        try:
            code = SAFEMODE_ACTIONS[action]
        except KeyError:
            raise ValueError(f"safe mode action must be one of {sorted(SAFEMODE_ACTIONS)}") from None
        resp = await self.call("setSafeMode", cnp_pb.SetSafeModeRequestProto(action=code),
                               cnp_pb.SetSafeModeResponseProto, idempotent=action == "get")
        return resp.result

    async def save_namespace(self) -> bool:
        """Write a new fsimage (needs safe mode). Old edit segments beyond the retention
        settings are purged afterwards."""
        resp = await self.call("saveNamespace", cnp_pb.SaveNamespaceRequestProto(),
                               cnp_pb.SaveNamespaceResponseProto, idempotent=False)
        return resp.saved
