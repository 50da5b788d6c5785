"""HDFS files read with HDFS's own protocols through `hdfs-native` (Rust): block locations from
the NameNode over RPC, bytes from the DataNodes over the data-transfer protocol, with SASL
(Kerberos, block tokens, `dfs.data.transfer.protection`) where the cluster wants it. No HTTP,
no redirect: what hardened clusters leave open to edge nodes.

Who does what:
- the addresses come from `hdfswatch.hadoop_conf`, the one place that turns `[hdfs] namenodes`
  or a Hadoop configuration directory into NameNode addresses for the edit stream too
  (`native_target`); hdfs-native gets them as an `hdfs://` URL and the HA properties, plus the
  same configuration directory for the rest (data-transfer protection, DataNode host names);
- metadata (the file's status and inode id, which hdfs-native does not expose) comes from
  hdfswatch's `NameNodeClient`: in the daemon the same client as the edit stream and the
  listing detector, on the daemon's loop (`NameNodeStat.shared`); in a command, a client on a
  loop of the stack's own (`NameNodeStat.own`);
- bytes come from hdfs-native's synchronous client, which releases the GIL while it waits:
  worker threads call it directly, the event loop never blocks on a read. One client per
  stack, so its NameNode and DataNode connections are pooled for the daemon's life.

A file is read by its inode (`/.reserved/.inodes/<id>`), so the bytes are always those of the
file the detector announced; each read also stats the path (alongside the read, not before
it), so a file deleted, renamed or replaced while it is read raises `FileVanished`,
`FileMoved` or `FileChanged` exactly as over WebHDFS. hdfs-native's errors arrive as Python
built-ins (`FileNotFoundError`, `OSError`, `NotImplementedError`) and `RuntimeError`s carrying
its `HdfsError` variant: `_failure` sorts them into missing, retried and refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from hdfsread.base import (
    DEFAULT_CACHE_WINDOWS,
    DEFAULT_READ_AHEAD,
    Failure,
    FileChanged,
    ReadCredentialsError,
    ReadRefused,
    RemoteFile,
    Stat,
    UnsupportedFile,
    first_line,
    inode_path,
    own_keytab,
)
from hdfswatch.errors import (
    AccessControlError,
    ConfigError,
    FileNotFound,
    ParentNotDirectoryError,
)
from hdfswatch.hadoop_conf import RpcSecurity, conf_dir_from_env, load_hadoop_conf
from hdfswatch.namenode import FileStatus, NameNodeClient, parse_address

NAMESERVICE = "hdfs2kafka"
"""The nameservice that stands for `[hdfs] namenodes` when there are several of them."""

_STAT_TIMEOUT_S = 300.0  # past the NameNode client's own retries (120 s) and call timeout

log = structlog.get_logger("hdfsread.native")


def use_hdfs_user(user: str) -> None:
    """Make `user` the HDFS user of every hdfs-native connection of this process (SIMPLE
    authentication; with Kerberos the principal is the user and this changes nothing).

    hdfs-native 0.14 reads the SIMPLE user from $HADOOP_USER_NAME each time it opens a NameNode
    connection (lazily, and again after one is lost), and its Python API has no other way to
    be told: the variable is set for the whole process, for good. One SIMPLE user per process,
    then. Changing the environment while another thread reads it is unsafe (C's setenv), so
    call this once at start, before any thread runs (hdfs-native's own runtime, a worker pool,
    asyncio's executor): `NativeStack` calls it too, where it changes nothing once it was.
    """
    if os.environ.get("HADOOP_USER_NAME") != user:
        os.environ["HADOOP_USER_NAME"] = user


@dataclass(frozen=True)
class NativeTarget:
    """What hdfs-native is given: the filesystem URL, properties that override the files, and
    the Hadoop configuration directory (None: hdfs-native looks at $HADOOP_CONF_DIR itself)."""

    url: str
    config: dict[str, str] = field(default_factory=dict)
    config_dir: str | None = None


def native_target(namenodes: Sequence[str], hadoop_conf_dir: str | None,
                  security: RpcSecurity) -> NativeTarget:
    """The target of the NameNodes the edit stream uses: `namenodes` when given (several: an
    HA nameservice of their own), else the ones `hadoop_conf_dir` (or $HADOOP_CONF_DIR) names,
    as `hdfswatch.hadoop_conf` reads them; authentication as `security` says."""
    props: dict[str, str] = {
        "hadoop.security.authentication": security.authentication,
        "hadoop.rpc.protection": ",".join(security.protection),
    }
    if security.namenode_principal:
        props["dfs.namenode.kerberos.principal"] = security.namenode_principal
    conf_dir: str | None = None
    if hadoop_conf_dir or os.environ.get("HADOOP_CONF_DIR"):
        directory = conf_dir_from_env(hadoop_conf_dir)
        conf_dir = str(directory) if directory.is_dir() else None
    if namenodes:
        addresses = ["{}:{}".format(*parse_address(a)) for a in namenodes]
        if len(addresses) == 1:
            return NativeTarget(f"hdfs://{addresses[0]}", props, conf_dir)
        ids = [f"nn{i}" for i in range(len(addresses))]
        props[f"dfs.ha.namenodes.{NAMESERVICE}"] = ",".join(ids)
        for nn_id, address in zip(ids, addresses, strict=True):
            props[f"dfs.namenode.rpc-address.{NAMESERVICE}.{nn_id}"] = address
        return NativeTarget(f"hdfs://{NAMESERVICE}", props, conf_dir)
    conf = load_hadoop_conf(hadoop_conf_dir)
    if conf.nameservice is None:
        return NativeTarget(f"hdfs://{conf.rpc_addresses[0]}", props, conf_dir)
    ns = conf.nameservice
    ids = [nn.id or f"nn{i}" for i, nn in enumerate(conf.namenodes)]
    props[f"dfs.ha.namenodes.{ns}"] = ",".join(ids)
    for nn_id, nn in zip(ids, conf.namenodes, strict=True):
        props[f"dfs.namenode.rpc-address.{ns}.{nn_id}"] = nn.rpc
    return NativeTarget(f"hdfs://{ns}", props, conf_dir)


class NameNodeStat:
    """Blocking `getFileInfo` for worker threads, over an async `NameNodeClient` on a loop.

    `shared`: the daemon's client on the daemon's loop (one NameNode connection for the edit
    stream, the listings and the reads' checks). `own`: a client on a loop of this object's
    own, in a thread (commands and tests, which have no loop running).
    """

    def __init__(self, client: Callable[[], Awaitable[NameNodeClient]],
                 loop: asyncio.AbstractEventLoop,
                 on_close: Callable[[], None] | None = None) -> None:
        self._client = client
        self._loop = loop
        self._on_close = on_close

    @classmethod
    def shared(cls, client: Callable[[], Awaitable[NameNodeClient]],
               loop: asyncio.AbstractEventLoop) -> NameNodeStat:
        return cls(client, loop)

    @classmethod
    def own(cls, make: Callable[[], NameNodeClient]) -> NameNodeStat:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="hdfsread-namenode", daemon=True)
        thread.start()
        made: list[NameNodeClient] = []

        async def client() -> NameNodeClient:
            if not made:
                made.append(make())
            return made[0]

        def close() -> None:
            if made:
                asyncio.run_coroutine_threadsafe(made[0].close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        return cls(client, loop, close)

    def later(self, path: str) -> concurrent.futures.Future[FileStatus | None]:
        """Start a stat of `path`; the future's result is its status (None: nothing there)."""
        async def stat() -> FileStatus | None:
            return await (await self._client()).get_file_info(path)

        return asyncio.run_coroutine_threadsafe(stat(), self._loop)

    def __call__(self, path: str) -> Stat | None:
        return self.result(self.later(path))

    def result(self, future: concurrent.futures.Future[FileStatus | None]) -> Stat | None:
        status = future.result(_STAT_TIMEOUT_S)
        if status is None:
            return None
        kind = "DIRECTORY" if status.is_dir else "SYMLINK" if status.is_symlink else "FILE"
        return Stat(kind=kind, length=status.length, file_id=status.file_id)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class NativeFile(RemoteFile):
    """One HDFS file read by ranges with hdfs-native, by its inode; see the module's doc."""

    backend = "native"

    def __init__(self, stack: NativeStack, path: str, expected_size: int | None = None,
                 expected_file_id: int | None = None, *,
                 read_ahead: int = DEFAULT_READ_AHEAD,
                 cache_windows: int = DEFAULT_CACHE_WINDOWS,
                 retries: int = 5, backoff: float = 0.2) -> None:
        self._stack = stack
        self._reader: Any = None
        super().__init__(path, expected_size, expected_file_id, read_ahead=read_ahead,
                         cache_windows=cache_windows, retries=retries, backoff=backoff)
        self._reader = self._retrying("open", self._open_reader)

    def _open_reader(self) -> Any:
        if self._file_id is None or not self._stack.inode_reads:
            reader = self._stack.client.read(self._path)
        else:
            try:
                reader = self._stack.client.read(inode_path(self._file_id))
            except FileNotFoundError:
                if not self._inode_path_unresolved():
                    raise
                reader = self._stack.client.read(self._path)
        if reader.size != self._size:
            raise FileChanged(self._path, f"length is {reader.size} bytes for the DataNodes, "
                                          f"{self._size} for the NameNode's status")
        return reader

    def _inode_path_unresolved(self) -> bool:
        """The inode path named nothing: if the path still names the very file (same inode
        id and length), it is the way HDFS is reached that does not resolve reserved paths
        (a router, a gateway), not the file that went: the stack reads by path from now on."""
        status = self._stack.stat(self._path)
        if (self._file_id is None or status is None or status.kind != "FILE"
                or status.file_id != self._file_id or status.length != self._size):
            return False
        self._stack.read_by_path(f"{inode_path(self._file_id)} is not found while {self._path} "
                                 f"is that file (inode {self._file_id})")
        return True

    def _stat(self, path: str) -> Stat | None:
        return self._stack.stat(path)

    def _read(self, offset: int, length: int) -> bytes:
        # The path's status is asked for while the bytes travel: the read is of the inode,
        # the stat tells whether the path still names it.
        check = self._stack.stat.later(self._path)
        if self._reader is None:
            self._reader = self._open_reader()
        data: bytes = self._reader.read_range(offset, length)
        status = self._stack.stat.result(check)
        if status is None:
            raise self._vanished("deleted while it was being read", self._file_id)
        self._check_status(status)
        return data

    def _reset(self) -> None:
        # Fresh block locations and tokens for the next try (a DataNode restarted elsewhere,
        # a token expired).
        self._reader = None

    def _failure(self, exc: Exception) -> Failure | None:
        return native_failure(exc, self._path, self._stack.who)

    def close(self) -> None:
        super().close()
        self._reader = None


_VARIANT = re.compile(r"^(\w+)(?:\((.*)\))?$", re.S)
_RPC_ERROR = re.compile(r'^"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"$', re.S)
_RETRIABLE_REMOTE = ("StandbyException", "RetriableException", "SafeModeException",
                     "ObserverRetryOnActiveException", "InvalidToken")


def native_failure(exc: Exception, path: str, who: str) -> Failure | None:
    """What an exception raised by hdfs-native (or by the NameNode client's stat) means."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | FileNotFound
                  | ParentNotDirectoryError):
        return Failure(first_line(str(exc)) or "no such file", missing=True)
    if isinstance(exc, NotImplementedError):
        raise UnsupportedFile(path, f"hdfs-native cannot read it ({exc}): read it with "
                                    '[hdfs] reader = "webhdfs"') from None
    if isinstance(exc, AccessControlError):
        raise ReadRefused(path, f"HDFS refused {who} access: {exc}") from None
    if isinstance(exc, concurrent.futures.TimeoutError | TimeoutError):
        return Failure(f"no answer within {_STAT_TIMEOUT_S:g}s", retry=True)
    if isinstance(exc, RuntimeError):
        text = str(exc).strip()
        m = _VARIANT.match(text)
        variant, body = (m.group(1), m.group(2) or "") if m else ("", text)
        if variant in ("RPCError", "FatalRPCError"):
            rpc = _RPC_ERROR.match(body.strip())
            cls, message = (rpc.group(1), _unescape(rpc.group(2))) if rpc else ("", body)
            short = cls.rsplit(".", 1)[-1].rsplit("$", 1)[-1]
            if short == "AccessControlException":
                raise ReadRefused(path, f"HDFS refused {who} access: "
                                        f"{first_line(message)}") from None
            if short == "FileNotFoundException":
                return Failure(first_line(message), missing=True)
            return Failure(f"{short or variant}: {first_line(message)}",
                           retry=short in _RETRIABLE_REMOTE or variant == "RPCError",
                           answered=True)
        if variant in ("GSSAPIError", "SASLError", "NoSASLMechanism"):
            raise ReadCredentialsError(
                path, f"the Kerberos/SASL login of {who} to HDFS failed ({first_line(text)}): "
                      "get a ticket (kinit or [kerberos] keytab) and check that "
                      "hadoop.security.authentication and dfs.data.transfer.protection match "
                      "the cluster's") from None
        if variant == "UnsupportedErasureCodingPolicy":
            raise UnsupportedFile(path, f"hdfs-native cannot read its erasure-coding policy "
                                        f"({first_line(body or text)}): read it with "
                                        '[hdfs] reader = "webhdfs"') from None
        if variant in ("BlocksNotFound", "ChecksumError", "DataTransferError"):
            return Failure(first_line(text), retry=True, answered=True)
        return Failure(first_line(text) or type(exc).__name__, retry=True)
    if isinstance(exc, OSError):  # connections: the NameNode's or a DataNode's
        return Failure(first_line(str(exc)) or type(exc).__name__, retry=True)
    return None


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')


class NativeStack:
    """The hdfs-native read stack of a daemon or a command: one client for every file, and the
    NameNode stat that checks their identity. Close it once, when its owner stops."""

    name = "native"

    def __init__(self, target: NativeTarget, stat: NameNodeStat, *, user: str | None = None,
                 principal: str | None = None, keytab: str | None = None,
                 kerberos: bool = False, read_ahead: int = DEFAULT_READ_AHEAD) -> None:
        import hdfs_native

        self.target = target
        self.stat = stat
        self.who = ((principal or "the ticket cache's principal") if kerberos
                    else f"user {user}")
        self._read_ahead = read_ahead
        self.inode_reads = True
        """False once a file could not be read by its inode path (a router or gateway that
        does not resolve /.reserved/.inodes): files are then read by their path."""
        if user and not kerberos:
            # Read at every connection, not once: see `use_hdfs_user`.
            use_hdfs_user(user)
        credentials: dict[str, str] = {}
        if kerberos and principal:
            # Named, not whatever the default cache holds; with a keytab, hdfs-native logs in
            # from it into a cache of its own. Without one, the process's default credentials
            # (the daemon points them at its keytab: pipeline.kerberos_login).
            credentials["kerberos_principal"] = principal
            keytab = own_keytab(keytab)
            if keytab:
                credentials["kerberos_keytab"] = keytab
        try:
            self.client = hdfs_native.Client(target.url, target.config, target.config_dir,
                                             **credentials)
        except (RuntimeError, ValueError, OSError) as exc:
            stat.close()
            raise ConfigError(f"hdfs-native cannot use {target.url}: {first_line(str(exc))}") from None

    def open(self, path: str, *, expected_size: int | None = None,
             expected_file_id: int | None = None) -> NativeFile:
        return NativeFile(self, path, expected_size, expected_file_id,
                          read_ahead=self._read_ahead)

    def read_by_path(self, why: str) -> None:
        """Read every file by its path from now on (said once)."""
        if self.inode_reads:
            self.inode_reads = False
            log.warning("reading files by path: inode paths are not resolved here (a router "
                        "or gateway between this client and the NameNode?); a file renamed "
                        "while it is read is then told as vanished", reason=why,
                        target=self.target.url)

    def close(self) -> None:
        self.stat.close()
        self.client = None  # type: ignore[assignment]  # drops its connections
