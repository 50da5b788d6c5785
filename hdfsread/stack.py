"""The read stack: which backend reads files, built once for a daemon or a command.

`open_read_stack(settings)` gives a `ReadStack`, whose `open(path, expected_size=...,
expected_file_id=...)` returns a `RemoteFile` (windowed, checked, retried; see
`hdfsread.base`) and whose `close()` lets its connections go. Both backends take the same
settings, so `[hdfs] reader` is the only thing that changes between them:

- `native` (the default): HDFS's own RPC and data-transfer protocols through hdfs-native;
  what a hardened cluster leaves open (no HTTP), SASL on data transfer, no redirect per read;
- `webhdfs`: HTTP through WebHDFS, HttpFS or Knox, for clusters where only HTTP reaches the
  edge node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from hdfsread.base import DEFAULT_READ_AHEAD, RemoteFile
from hdfswatch.errors import ConfigError
from hdfswatch.hadoop_conf import RpcSecurity
from hdfswatch.namenode import NameNodeClient

READERS = ("native", "webhdfs")
DEFAULT_READER = "native"


class ReadStack(Protocol):
    """Opens files for reading; one per daemon (or command), closed when it stops."""

    name: str

    def open(self, path: str, *, expected_size: int | None = None,
             expected_file_id: int | None = None) -> RemoteFile: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ReadSettings:
    """Everything either backend needs, from `[hdfs]`/`[kerberos]` or a command's flags."""

    reader: str = DEFAULT_READER
    user: str | None = None
    namenodes: tuple[str, ...] = ()
    hadoop_conf_dir: str | None = None
    security: RpcSecurity = field(default_factory=RpcSecurity)
    webhdfs_url: str | None = None
    ca_file: str | None = None
    keytab: str | None = None
    read_ahead: int = DEFAULT_READ_AHEAD


def open_read_stack(settings: ReadSettings, *,
                    namenode: Callable[[], Awaitable[NameNodeClient]] | None = None,
                    loop: asyncio.AbstractEventLoop | None = None) -> ReadStack:
    """The stack `settings.reader` names. With `namenode` and `loop` (the daemon), the native
    backend checks files with that NameNode client on that loop; without, with a client of its
    own on a loop of its own."""
    s = settings
    if s.reader == "webhdfs":
        if not s.webhdfs_url:
            raise ConfigError('reader "webhdfs" needs a WebHDFS URL ([hdfs] webhdfs, --webhdfs '
                              "or WEBHDFS_URL)")
        from hdfsread.webhdfs import WebHdfsStack

        return WebHdfsStack(s.webhdfs_url, s.user, ca_file=s.ca_file,
                            kerberos=s.security.kerberos, principal=s.security.client_principal,
                            keytab=s.keytab, read_ahead=s.read_ahead)
    if s.reader != "native":
        raise ConfigError(f"unknown reader {s.reader!r}: expected one of {', '.join(READERS)}")
    from hdfsread.native import NameNodeStat, NativeStack, native_target

    if not s.namenodes and not s.hadoop_conf_dir:
        import os

        if not os.environ.get("HADOOP_CONF_DIR"):
            raise ConfigError('reader "native" needs NameNode addresses ([hdfs] namenodes or '
                              "hadoop_conf_dir, --namenode, HDFS_NAMENODE or HADOOP_CONF_DIR)")
    target = native_target(s.namenodes, s.hadoop_conf_dir, s.security)
    if namenode is not None and loop is not None:
        stat = NameNodeStat.shared(namenode, loop)
    else:
        def make() -> NameNodeClient:
            if s.namenodes:
                return NameNodeClient(list(s.namenodes), user=s.user, security=s.security)
            return NameNodeClient.from_hadoop_conf(s.hadoop_conf_dir, user=s.user,
                                                   security=s.security)

        stat = NameNodeStat.own(make)
    return NativeStack(target, stat, user=s.user, principal=s.security.client_principal,
                       keytab=s.keytab, kerberos=s.security.kerberos, read_ahead=s.read_ahead)
