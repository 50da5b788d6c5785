"""Random-access reads of one HDFS file: the byte layer under the Parquet and Avro readers.

`RandomAccessFile` is the interface the readers need (a path, a size and `read_at`); `WebHdfsFile`
implements it over WebHDFS with the `hdfs` package, `LocalFile` over a local file (tests, `cat`
of a local file). `FileIO` adapts any of them to the seekable file object that pyarrow and fastavro
read from.

Columnar readers ask for many small ranges (footers, page headers, block headers). Each WebHDFS
read is two HTTP round trips (NameNode redirect, then DataNode), so `WebHdfsFile` reads ahead in
windows and serves small reads from the last few windows; large reads (pyarrow coalesces a row
group's column chunks into a few big ranges when `pre_buffer` is on) go straight through without
being copied into the cache.

On a secure cluster WebHDFS is https and wants Kerberos: `webhdfs_client` verifies the server
with a CA file and authenticates to the NameNode with SPNEGO (`requests-gssapi`, imported only
then). The NameNode's redirect to a DataNode carries a delegation token it adds itself, so the
DataNode is read with that token, never with SPNEGO. What a secure cluster refuses (no ticket,
an untrusted certificate, HTTP 401 or 403) is one line saying what to fix.

Every call here blocks: run it in a worker thread (`aread_at`, `aopen_webhdfs` do that for
asyncio callers), never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import requests
from hdfs import Client
from hdfs.util import HdfsError

from hdfswatch.backoff import Backoff
from hdfswatch.errors import FatalError, KerberosCredentialsError, PermanentError, TransientError

DEFAULT_READ_AHEAD = 4 * 1024 * 1024
DEFAULT_CACHE_WINDOWS = 4
_BACKOFF_CAP = 5.0  # seconds between two attempts of one read, at most


class RangedReadError(Exception):
    """Base of the errors raised while reading a remote file by ranges. Each subclass has a kind
    (hdfswatch.errors): a file gone or changed is permanent, a read that kept failing transient."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FileVanished(RangedReadError, PermanentError):
    """The file is gone (deleted, or renamed away and not known to exist) since it was opened.
    Nothing to retry."""


class FileMoved(FileVanished):
    """The path no longer names the file, but the file itself (its inode) still exists: it was
    renamed. `file_id` says which file to look for; reading it from its new path goes on where
    it stopped, since a rename changes nothing in the file."""

    def __init__(self, path: str, reason: str, file_id: int) -> None:
        super().__init__(path, reason)
        self.file_id = file_id


def inode_path(file_id: int) -> str:
    """The path that names a file by its inode id wherever it is (HDFS's reserved namespace,
    served by WebHDFS too)."""
    return f"/.reserved/.inodes/{file_id}"


class FileChanged(RangedReadError, PermanentError):
    """The file is not the one that was announced: its length or inode id changed under us.

    Positions recorded for the old content mean nothing for the new one; the file must be
    treated as a new file (or quarantined), not resumed.
    """


class ReadFailed(RangedReadError, TransientError):
    """A read kept failing after all retries (network, DataNode or NameNode trouble): it may
    work later."""


class UntrustedCertificate(RangedReadError, FatalError):
    """The https WebHDFS server's certificate is not signed by a trusted CA (or does not name
    the host): the CA file must change, which no retry does."""


class WebHdfsRefused(RangedReadError, TransientError):
    """WebHDFS answered HTTP 401 or 403 to who this client is (no Kerberos where it is wanted,
    a principal or user it does not accept): retried, since a ticket or a permission granted
    later heals it."""


class SpnegoUnavailable(RangedReadError, FatalError):
    """Kerberos for WebHDFS is configured but the `requests-gssapi` package is missing."""


class WebHdfsPrincipalError(RangedReadError, FatalError):
    """The KDC does not know the HTTP principal SPNEGO asks for (`HTTP/<host of the WebHDFS
    URL>`): the URL must name the host the NameNode's principal names."""


class WebHdfsCredentialsError(RangedReadError, KerberosCredentialsError):
    """No usable Kerberos ticket for SPNEGO (none, expired, the KDC away, a clock too far
    off): retryable, as for the NameNode's IPC."""


_WEBHDFS_PREFIX = "/webhdfs/v1"
_SPNEGO_PACKAGE = "requests-gssapi"


def webhdfs_client(url: str, user: str | None = None, *, ca_file: str | None = None,
                   kerberos: bool = False, principal: str | None = None,
                   keytab: str | None = None, timeout: float | None = 60.0) -> Client:
    """An HdfsCLI client of the WebHDFS at `url` (several NameNodes: "url1;url2").

    `ca_file` is the PEM file of the CA(s) an https server's certificate must be signed by
    (None: the system's). Without `kerberos` the client is `user` (`user.name`, SIMPLE); with
    it, the NameNode is asked with SPNEGO as `principal` (default: the ticket cache's
    principal, `KRB5CCNAME`, renewed from `KRB5_CLIENT_KTNAME` when that is set) and `keytab`
    (tickets from it go to a cache of this process's own, shared with the NameNode's IPC
    client). One session carries every request, so connections and the NameNode's
    `hadoop.auth` cookie (one SPNEGO exchange, then none) are reused.
    """
    login = _SpnegoLogin(principal, keytab) if kerberos else None
    return _WebHdfsClient(url, user=None if kerberos else user, ca_file=ca_file, login=login,
                          timeout=timeout)


class _SpnegoLogin:
    """The Kerberos side of SPNEGO: credentials, the auth handler, and what a failure means."""

    def __init__(self, principal: str | None, keytab: str | None) -> None:
        self.principal = principal
        self.keytab = keytab
        self.store: dict[bytes | str, bytes | str] = {}
        if keytab:
            # The same cache hdfswatch.kerberos uses for this principal and keytab: one login.
            self.store = {"client_keytab": keytab,
                          "ccache": f"MEMORY:hdfswatch-{principal or 'keytab'}"}
        self._auth: Any = None

    def who(self) -> str:
        return self.principal or "the ticket cache's principal"

    def auth(self, path: str) -> Any:
        """The `requests` auth handler, with credentials acquired now (the first time)."""
        if self._auth is None:
            try:
                from requests_gssapi import OPTIONAL, HTTPSPNEGOAuth
            except ImportError as exc:
                raise SpnegoUnavailable(path, f"WebHDFS wants Kerberos (SPNEGO) but the Python "
                                              f"package '{_SPNEGO_PACKAGE}' cannot be imported "
                                              f"({exc}): pip install {_SPNEGO_PACKAGE}") from None
            login = self

            class Spnego(HTTPSPNEGOAuth):  # type: ignore[misc]
                """requests-gssapi's handler, where a Kerberos step that fails is raised as the
                error naming its fix (the library would log it with a traceback and hand back
                the 401)."""

                def generate_request_header(self, response: Any, host: str,
                                            is_preemptive: bool = False) -> str:
                    login.check_step(response.url, self.creds, self.mech)
                    return str(super().generate_request_header(response, host, is_preemptive))

            # The DataNode's answer carries no SPNEGO token (it is read with the delegation
            # token of the redirect): mutual authentication is checked where it is offered.
            self._auth = Spnego(mutual_authentication=OPTIONAL, creds=self.credentials(path))
        return self._auth

    def credentials(self, path: str) -> Any:
        """Initiator credentials; a missing or expired ticket is a `WebHdfsCredentialsError`."""
        import gssapi  # there: requests-gssapi, imported first, needs it

        from hdfswatch.kerberos import gss_error

        try:
            name = (gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
                    if self.principal else None)
            # For every mechanism (no `mechs`): credentials of Kerberos alone are not usable by
            # SPNEGO, which would then look for the default ones.
            creds = gssapi.Credentials(name=name, usage="initiate", store=self.store or None)
            if creds.lifetime is not None and creds.lifetime <= 0:
                raise WebHdfsCredentialsError(
                    path, f"the Kerberos ticket of {creds.name} has expired: renew it "
                          "(kinit -R), run kinit, or set the keytab")
            return creds
        except gssapi.exceptions.GSSError as exc:
            raise WebHdfsCredentialsError(path, str(gss_error(exc, client=self.who()))) from None

    def check_step(self, url: str, creds: Any, mech: Any) -> None:
        """Take the first SPNEGO step for the server of `url` (HTTP/host); raise the error
        naming what to fix when Kerberos refuses it."""
        import gssapi

        from hdfswatch.kerberos import gss_error

        path = _hdfs_path(url)
        host = urlsplit(url).hostname or ""
        try:
            gssapi.SecurityContext(
                name=gssapi.Name(f"HTTP@{host}", gssapi.NameType.hostbased_service),
                creds=creds, usage="initiate", mech=mech).step()
        except gssapi.exceptions.GSSError as exc:
            detail = " ".join(str(exc.gen_message()).split())
            if "not found in kerberos database" in detail.lower() and "server" in detail.lower():
                raise WebHdfsPrincipalError(path, f"the KDC does not know HTTP/{host}, the "
                                                  f"principal SPNEGO asks for at {_base(url)}: "
                                                  "use the host name the NameNode's HTTP "
                                                  "principal names in the WebHDFS URL "
                                                  f"[{detail}]") from None
            client = str(creds.name) if creds is not None else self.who()
            raise WebHdfsCredentialsError(path, str(gss_error(exc, client=client))) from None

    def refused(self, url: str) -> RangedReadError:
        """The NameNode still answers 401 after a SPNEGO step Kerberos allowed: it does not
        accept who we are."""
        path = _hdfs_path(url)
        creds = self.credentials(path)
        return WebHdfsRefused(path, f"WebHDFS at {_base(url)} refused the Kerberos login of "
                                    f"{creds.name} (HTTP 401)")


class _WebHdfsClient(Client):
    """HdfsCLI's client with what a secure cluster needs: the CA file on every request (the
    session's `verify` would lose to `REQUESTS_CA_BUNDLE`), SPNEGO for the NameNode, and
    refusals turned into errors that say what to fix."""

    def __init__(self, url: str, *, user: str | None, ca_file: str | None,
                 login: _SpnegoLogin | None, timeout: float | None) -> None:
        session = requests.Session()
        if user:
            session.params = {"user.name": user}
        super().__init__(url, timeout=timeout, session=session)
        self._verify: str | bool = ca_file or True
        self._ca_file = ca_file
        self._login = login
        self._user = user

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        path = _hdfs_path(url)
        if self._login is not None:
            kwargs.setdefault("auth", self._login.auth(path))
        kwargs.setdefault("verify", self._verify)
        try:
            res: requests.Response = super()._request(method, url, **kwargs)
        except requests.exceptions.SSLError as exc:
            reason = _verify_failure(exc)
            if reason is None:
                raise  # not a certificate refused: a connection failure like any other
            where = (f"the CA file {self._ca_file} does not sign it" if self._ca_file
                     else "no CA file is set, the system's CAs do not sign it")
            raise UntrustedCertificate(
                path, f"the certificate of {_base(url)} is not trusted ({reason}; {where}): set "
                      "the CA file (hdfs.ca_file, HDFS2KAFKA_CA) to the PEM of the CA that "
                      "signed it") from None
        if res.status_code == 401:
            res.close()
            if self._login is None:
                raise WebHdfsRefused(
                    path, f"WebHDFS at {_base(url)} answered HTTP 401"
                          + (" and wants Kerberos (SPNEGO): set hadoop.security.authentication"
                             "=kerberos in HADOOP_CONF_DIR and get a ticket (kinit or a keytab)"
                             if "negotiate" in res.headers.get("WWW-Authenticate", "").lower()
                             else f" to user {self._user}"))
            raise self._login.refused(url)
        if res.status_code == 403:
            message = _remote_message(res)
            who = self._login.who() if self._login is not None else f"user {self._user}"
            res.close()
            raise WebHdfsRefused(path, f"WebHDFS at {_base(url)} refused {who} access to {path} "
                                       f"(HTTP 403: {message})")
        return res


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _hdfs_path(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return path.removeprefix(_WEBHDFS_PREFIX) or "/"


def _remote_message(res: requests.Response) -> str:
    try:
        return str(res.json()["RemoteException"]["message"])
    except (ValueError, KeyError, TypeError):
        return " ".join(res.text.split())[:200] or res.reason


def _verify_failure(exc: BaseException) -> str | None:
    """The certificate check's complaint somewhere in a `requests` SSL error, None when the
    TLS failure is something else."""
    import ssl

    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or "certificate verify failed")
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__,
                     *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]])
    return None


@runtime_checkable
class RandomAccessFile(Protocol):
    """A file of known size that can be read at any offset."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Return `length` bytes from `offset` (fewer only at end of file)."""
        ...

    def close(self) -> None: ...


class LocalFile:
    """A local file as a `RandomAccessFile` (tests, `hdfs2kafka cat file:///...`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        try:
            self._fd = os.open(self._path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileVanished(self._path, "no such file") from None
        self._size = os.fstat(self._fd).st_size

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        _check_range(self._path, offset, length)
        return os.pread(self._fd, min(length, max(0, self._size - offset)), offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WebHdfsFile:
    """One HDFS file read by byte ranges over WebHDFS.

    Opening stats the file (one NameNode call) and checks it against what the caller expects:
    `expected_size` and `expected_file_id` (from the file detector's `getFileInfo`) raise
    `FileChanged` when they differ. A URL gets its own `webhdfs_client` (`ca_file`,
    `kerberos`, `principal`, `keytab` as there); a client passed in is shared. Reads retry
    transient failures (connection errors, timeouts, 5xx, standby NameNode) with exponential
    backoff (not what a secure cluster refuses: that is raised at once, one line); a file that disappears raises
    `FileVanished`, or `FileMoved` when its inode id still names a file (it was renamed: open it
    again at its new path), one that became shorter raises `FileChanged`.
    """

    def __init__(
        self,
        client_or_url: Client | str,
        path: str,
        user: str | None = None,
        expected_size: int | None = None,
        expected_file_id: int | None = None,
        *,
        read_ahead: int = DEFAULT_READ_AHEAD,
        cache_windows: int = DEFAULT_CACHE_WINDOWS,
        retries: int = 5,
        backoff: float = 0.2,
        timeout: float = 60.0,
        ca_file: str | None = None,
        kerberos: bool = False,
        principal: str | None = None,
        keytab: str | None = None,
    ) -> None:
        if isinstance(client_or_url, str):
            self._client: Client = webhdfs_client(client_or_url, user, ca_file=ca_file,
                                                  kerberos=kerberos, principal=principal,
                                                  keytab=keytab, timeout=timeout)
        else:
            self._client = client_or_url
        self._path = path
        self._read_ahead = max(0, read_ahead)
        self._cache_windows = max(1, cache_windows)
        self._retries = retries
        self._backoff = backoff
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.requests = 0  # HTTP reads issued; tests and benchmarks look at it
        self._file_id: int | None = None
        status = self._retrying("stat", lambda: self._client.status(path, strict=False))
        if status is None:
            raise self._vanished("no such file in HDFS", expected_file_id)
        if status.get("type") != "FILE":
            raise self._vanished(f"not a file (type {status.get('type')})", expected_file_id)
        self._size = int(status["length"])
        self._file_id = int(status["fileId"]) if "fileId" in status else None
        if (expected_file_id is not None and self._file_id is not None
                and expected_file_id != self._file_id):
            # The name belongs to another file now: the one expected was renamed away (it is
            # still there) or replaced (it is gone).
            gone = self._vanished(f"the path names another file now (fileId {self._file_id})",
                                  expected_file_id)
            if isinstance(gone, FileMoved):
                raise gone
            raise FileChanged(path, f"fileId is {self._file_id}, expected {expected_file_id} "
                                    "(the file was replaced)")
        if expected_size is not None and expected_size != self._size:
            raise FileChanged(path, f"length is {self._size} bytes, expected {expected_size}")

    @property
    def path(self) -> str:
        return self._path

    @property
    def size(self) -> int:
        return self._size

    @property
    def file_id(self) -> int | None:
        return self._file_id

    def read_at(self, offset: int, length: int) -> bytes:
        _check_range(self._path, offset, length)
        length = min(length, max(0, self._size - offset))
        if length == 0:
            return b""
        with self._lock:
            hit = self._from_cache(offset, length)
            if hit is not None:
                return hit
            if length >= self._read_ahead:
                return self._fetch(offset, length)
            window_len = min(self._read_ahead, self._size - offset)
            window = self._fetch(offset, window_len)
            self._cache[offset] = window
            while len(self._cache) > self._cache_windows:
                self._cache.popitem(last=False)
            return window[:length]

    def verify(self) -> None:
        """Stat the file again: raise `FileVanished` or `FileChanged` if it is not as opened.

        Call before marking a file done, so that a file rewritten with the same length while it
        was read is not recorded as streamed.
        """
        status = self._retrying("stat", lambda: self._client.status(self._path, strict=False))
        if status is None:
            raise self._vanished("deleted while it was being read", self._file_id)
        self._check_status(status)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def __enter__(self) -> WebHdfsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def aread_at(self, offset: int, length: int) -> bytes:
        """`read_at` in a worker thread, for code running on the event loop."""
        return await asyncio.to_thread(self.read_at, offset, length)

    def _from_cache(self, offset: int, length: int) -> bytes | None:
        for start, data in reversed(self._cache.items()):
            if start <= offset and offset + length <= start + len(data):
                self._cache.move_to_end(start)
                return data[offset - start:offset - start + length]
        return None

    def _fetch(self, offset: int, length: int) -> bytes:
        def once() -> bytes:
            self.requests += 1
            with self._client.read(self._path, offset=offset, length=length) as reader:
                return bytes(reader.read())

        try:
            data = self._retrying(f"read {length} bytes at offset {offset}", once,
                                  check_file=True)
        except ReadFailed:
            # "Offset out of range" and the like: say so if the file changed under us.
            self.verify()
            raise
        if len(data) != length:
            # Within the size we were told: the file is shorter than when we opened it.
            self.verify()
            raise FileChanged(self._path, f"read {len(data)} of {length} bytes at offset "
                                          f"{offset}: the file changed while it was read")
        return data

    def _check_status(self, status: dict[str, Any]) -> None:
        size = int(status["length"])
        file_id = int(status["fileId"]) if "fileId" in status else None
        if size != self._size:
            raise FileChanged(self._path, f"length changed from {self._size} to {size} bytes "
                                          "while it was read")
        if file_id is not None and self._file_id is not None and file_id != self._file_id:
            gone = self._vanished(f"the path names another file now (fileId {file_id})",
                                  self._file_id)
            if isinstance(gone, FileMoved):
                raise gone
            raise FileChanged(self._path, f"fileId changed from {self._file_id} to {file_id}: "
                                          "the file was replaced while it was read")

    def _vanished(self, reason: str, file_id: int | None) -> FileVanished:
        """`FileMoved` if inode `file_id` is still a file (renamed away), else `FileVanished`."""
        if file_id is not None:
            status = self._retrying(f"stat inode {file_id}",
                                    lambda: self._client.status(inode_path(file_id), strict=False),
                                    by_inode=True)
            if (status is not None and status.get("type") == "FILE"
                    and int(status.get("fileId", file_id)) == file_id):
                return FileMoved(self._path, f"{reason}: the file was moved (its inode {file_id} "
                                             "is still there)", file_id)
        return FileVanished(self._path, reason)

    def _retrying(self, what: str, call: Callable[[], Any], check_file: bool = False,
                  by_inode: bool = False) -> Any:
        backoff = Backoff(self._backoff, max(self._backoff, _BACKOFF_CAP))
        for attempt in range(self._retries + 1):
            try:
                return call()
            except HdfsError as exc:
                if exc.exception == "FileNotFoundException" or "does not exist" in exc.message:
                    if by_inode:
                        return None
                    raise self._vanished(f"{what}: {exc.message}", self._file_id) from None
                if not _transient(exc) or attempt == self._retries:
                    raise ReadFailed(self._path, f"{what}: {exc.message}") from exc
                if check_file:
                    # A read refused by HDFS ("offset out of range"...) is often a file that
                    # changed: find out now rather than after every retry.
                    self.verify()
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == self._retries:
                    raise ReadFailed(self._path, f"{what}: {exc} (after {attempt + 1} "
                                                 "attempts)") from exc
            time.sleep(backoff.next_delay())
        raise AssertionError("unreachable")


async def aopen_webhdfs(client_or_url: Client | str, path: str, user: str | None = None,
                        **kwargs: Any) -> WebHdfsFile:
    """Open a `WebHdfsFile` (which stats the file) in a worker thread."""
    return await asyncio.to_thread(WebHdfsFile, client_or_url, path, user, **kwargs)


def _transient(exc: HdfsError) -> bool:
    if exc.exception in ("RetriableException", "StandbyException", "SafeModeException",
                         "IOException", "ConnectException", "SocketTimeoutException"):
        return True
    # HdfsCLI reports bodies that are not WebHDFS JSON (proxies, 5xx pages) with no exception.
    return exc.exception is None


def _check_range(path: str, offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"{path}: bad range offset={offset} length={length}")


class FileIO(io.RawIOBase):
    """A seekable, read-only file object over a `RandomAccessFile`, for pyarrow and fastavro.

    Wrap it in `pyarrow.PythonFile(FileIO(f), mode="r")` for pyarrow. Closing it does not close
    the underlying file.
    """

    def __init__(self, file: RandomAccessFile) -> None:
        super().__init__()
        self._file = file
        self._pos = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._file.path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._file.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._file.size - self._pos)
        data = self._file.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def size(self) -> int:
        return self._file.size
