"""HDFS files read over WebHDFS (or HttpFS, Knox): the backend for clusters where only HTTP
reaches the NameNode, with the `hdfs` package (HdfsCLI).

Each read is two HTTP round trips (the NameNode's redirect, then the DataNode): `RemoteFile`'s
read-ahead windows keep small reads from paying them each. One `webhdfs_client` (one
`requests` session: connections and the NameNode's `hadoop.auth` cookie) serves every file of
a `WebHdfsStack`.

On a secure cluster WebHDFS is https and wants Kerberos: `webhdfs_client` verifies the server
with a CA file and authenticates to the NameNode with SPNEGO (`requests-gssapi`, imported only
then). The NameNode's redirect to a DataNode carries a delegation token it adds itself, so the
DataNode is read with that token, never with SPNEGO. What a secure cluster refuses (no ticket,
an untrusted certificate, HTTP 401 or 403) is one line saying what to fix.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from hdfs import Client
from hdfs.util import HdfsError

from hdfsread.base import (
    DEFAULT_CACHE_WINDOWS,
    DEFAULT_READ_AHEAD,
    Failure,
    RangedReadError,
    ReadCredentialsError,
    ReadRefused,
    RemoteFile,
    Stat,
    inode_path,
)
from hdfswatch.errors import FatalError


class UntrustedCertificate(RangedReadError, FatalError):
    """The https WebHDFS server's certificate is not signed by a trusted CA (or does not name
    the host): the CA file must change, which no retry does."""


class WebHdfsRefused(ReadRefused):
    """WebHDFS answered HTTP 401 or 403 to who this client is (no Kerberos where it is wanted,
    a principal or user it does not accept): retried, since a ticket or a permission granted
    later heals it."""


class SpnegoUnavailable(RangedReadError, FatalError):
    """Kerberos for WebHDFS is configured but the `requests-gssapi` package is missing."""


class WebHdfsPrincipalError(RangedReadError, FatalError):
    """The KDC does not know the HTTP principal SPNEGO asks for (`HTTP/<host of the WebHDFS
    URL>`): the URL must name the host the NameNode's principal names."""


class WebHdfsCredentialsError(ReadCredentialsError):
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
        if res.status_code == 403 and _remote_exception(res) in _NEXT_NAMENODE:
            return res  # a standby NameNode: HdfsCLI asks the next URL of the nameservice
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


# What a NameNode that cannot serve now answers (403): another URL of the list may.
_NEXT_NAMENODE = ("StandbyException", "RetriableException")


def _remote_exception(res: requests.Response) -> str | None:
    try:
        return str(res.json()["RemoteException"]["exception"])
    except (ValueError, KeyError, TypeError):
        return None


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


class WebHdfsFile(RemoteFile):
    """One HDFS file read by byte ranges over WebHDFS.

    A URL gets its own `webhdfs_client` (`ca_file`, `kerberos`, `principal`, `keytab` as
    there); a client passed in is shared. Each read stats the path (one NameNode request) and
    reads the file by its inode, as the native backend does. Transient failures (connection errors, timeouts, 5xx,
    a standby NameNode) are retried (not what a secure cluster refuses: that is raised at once,
    one line); identity checks, windows and errors as in `RemoteFile`.
    """

    backend = "webhdfs"

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
        super().__init__(path, expected_size, expected_file_id, read_ahead=read_ahead,
                         cache_windows=cache_windows, retries=retries, backoff=backoff)

    def _stat(self, path: str) -> Stat | None:
        status = self._client.status(path, strict=False)
        if status is None:
            return None
        return Stat(kind=str(status.get("type")), length=int(status.get("length", 0)),
                    file_id=int(status["fileId"]) if "fileId" in status else None)

    def _read(self, offset: int, length: int) -> bytes:
        # The bytes are read from the inode, so they are the announced file's whatever the path
        # names by then; the path is checked first, so a file renamed, replaced or deleted
        # says so at its next read.
        status = self._stat(self._path)
        if status is None:
            raise self._vanished("deleted while it was being read", self._file_id)
        self._check_status(status)
        source = inode_path(self._file_id) if self._file_id is not None else self._path
        with self._client.read(source, offset=offset, length=length) as reader:
            return bytes(reader.read())

    def _failure(self, exc: Exception) -> Failure | None:
        if isinstance(exc, HdfsError):
            if exc.exception == "FileNotFoundException" or "does not exist" in exc.message:
                return Failure(exc.message, missing=True)
            return Failure(exc.message, retry=_transient(exc), answered=True)
        if isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError)):
            return Failure(str(exc), retry=True)
        return None


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


class WebHdfsStack:
    """The WebHDFS read stack of a daemon or a command: one client (one HTTP session) shared by
    every file it opens."""

    name = "webhdfs"

    def __init__(self, url: str, user: str | None = None, *, ca_file: str | None = None,
                 kerberos: bool = False, principal: str | None = None,
                 keytab: str | None = None, timeout: float = 60.0,
                 read_ahead: int = DEFAULT_READ_AHEAD) -> None:
        self.url = url
        self.client = webhdfs_client(url, user, ca_file=ca_file, kerberos=kerberos,
                                     principal=principal, keytab=keytab, timeout=timeout)
        self._read_ahead = read_ahead

    def open(self, path: str, *, expected_size: int | None = None,
             expected_file_id: int | None = None) -> WebHdfsFile:
        return WebHdfsFile(self.client, path, expected_size=expected_size,
                           expected_file_id=expected_file_id, read_ahead=self._read_ahead)

    def close(self) -> None:
        session = getattr(self.client, "_session", None)
        if session is not None:
            session.close()
