"""HDFS files read over WebHDFS (or HttpFS, Knox): the backend for clusters where only HTTP
reaches the NameNode, with the `hdfs` package (HdfsCLI).

Each read is two HTTP round trips (the NameNode's redirect, then the DataNode): `RemoteFile`'s
read-ahead windows keep small reads from paying them each. One `webhdfs_client` (one
`requests` session: connections and the NameNode's `hadoop.auth` cookie) serves every file of
a `WebHdfsStack`.

On a secure cluster WebHDFS is https and wants Kerberos: `webhdfs_client` verifies the server
with a CA file and authenticates to the NameNode with SPNEGO (`requests-gssapi`, imported only
then). A NameNode asked without a delegation token mints one for every redirect to a DataNode
(an edit-log transaction, kept a day in its memory: hundreds per GB read), so a stack's client
asks for one token with SPNEGO, passes it on every request (`delegation=`), renews it before it
expires, gets another when the NameNode no longer knows it, and cancels it when it closes, as
Hadoop's own WebHdfsFileSystem does. The DataNode is read with that token, never with SPNEGO.
What a secure cluster refuses (no ticket, an untrusted certificate, who we are) is one line
saying what to fix; a URL's query (where the token travels) never goes into a message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import structlog
import urllib3
from hdfs import Client
from hdfs.client import _Request
from hdfs.util import HdfsError

from hdfsread.base import (
    DEFAULT_CACHE_WINDOWS,
    DEFAULT_READ_AHEAD,
    Failure,
    RangedReadError,
    ReadCredentialsError,
    ReadFailed,
    ReadRefused,
    RemoteFile,
    Stat,
    first_line,
    inode_path,
    own_keytab,
)
from hdfswatch.errors import AccessError, AuthMethodMismatch, FatalError

log = structlog.get_logger("hdfsread.webhdfs")


class UntrustedCertificate(RangedReadError, AccessError):
    """The https WebHDFS server's certificate is not signed by a trusted CA (or does not name
    the host). Retried without end, as Kafka's: the CA file is read again at every new
    connection (a CA added to it heals the reads), and so is the server's certificate; a
    file is never quarantined for it."""


class WebHdfsAuthMismatch(RangedReadError, AuthMethodMismatch):
    """WebHDFS wants Kerberos (SPNEGO) and this client is configured for SIMPLE: the
    configuration must change, which no retry does."""


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
                   keytab: str | None = None, timeout: float | None = 60.0,
                   delegation_token: bool = False) -> Client:
    """An HdfsCLI client of the WebHDFS at `url` (several NameNodes: "url1;url2").

    `ca_file` is the PEM file of the CA(s) an https server's certificate must be signed by
    (None: the system's). Without `kerberos` the client is `user` (`user.name`, SIMPLE); with
    it, the NameNode is asked with SPNEGO as `principal` (default: the ticket cache's
    principal) with the process's default credentials (`KRB5CCNAME`, renewed from
    `KRB5_CLIENT_KTNAME` when that is set: the daemon's one login, shared with the NameNode's
    IPC client), or from `keytab` into a cache of this process's own when the defaults do not
    already come from it. One session carries every request, so connections and the
    NameNode's `hadoop.auth` cookie (one SPNEGO exchange, then none) are reused.

    With `delegation_token` (and Kerberos) the client asks for one delegation token and passes
    it on every request (see the module's doc); `close_webhdfs_client` cancels it.
    """
    login = _SpnegoLogin(principal, own_keytab(keytab)) if kerberos else None
    return _WebHdfsClient(url, user=None if kerberos else user, ca_file=ca_file, login=login,
                          timeout=timeout, delegation_token=delegation_token and kerberos)


def close_webhdfs_client(client: Client) -> None:
    """Cancel the client's delegation token (if it has one) and close its connections."""
    if isinstance(client, _WebHdfsClient):
        client.close()
        return
    session = getattr(client, "_session", None)
    if session is not None:
        session.close()


class _SpnegoLogin:
    """The Kerberos side of SPNEGO: credentials, the auth handlers, and what a failure means."""

    def __init__(self, principal: str | None, keytab: str | None) -> None:
        self.principal = principal
        self.keytab = keytab
        self.store: dict[bytes | str, bytes | str] = {}
        if keytab:
            # The same cache hdfswatch.kerberos uses for this principal and keytab: one login
            # for this client and a NameNode client given the same keytab.
            self.store = {"client_keytab": keytab,
                          "ccache": f"MEMORY:hdfswatch-{principal or 'keytab'}"}
        self._creds: Any = None
        self._lock = threading.Lock()
        # requests-gssapi's handler keeps the SPNEGO context of a host between a 401 and the
        # answer that completes it: threads sharing one would overwrite each other's context
        # when the hadoop.auth cookie expires and they all negotiate at once. One per thread.
        self._local = threading.local()

    def who(self) -> str:
        return self.principal or "the ticket cache's principal"

    def auth(self, path: str) -> Any:
        """This thread's `requests` auth handler, with credentials acquired now (the first
        time)."""
        handler = getattr(self._local, "auth", None)
        if handler is not None:
            return handler
        try:
            from requests_gssapi import OPTIONAL, HTTPSPNEGOAuth
        except ImportError as exc:
            raise SpnegoUnavailable(path, f"WebHDFS wants Kerberos (SPNEGO) but the Python "
                                          f"package '{_SPNEGO_PACKAGE}' cannot be imported "
                                          f"({exc}): pip install {_SPNEGO_PACKAGE}") from None
        with self._lock:
            if self._creds is None:
                self._creds = self.credentials(path)
            creds = self._creds
        login = self

        class Spnego(HTTPSPNEGOAuth):  # type: ignore[misc]
            """requests-gssapi's handler, where a Kerberos step that fails is raised as the
            error naming its fix (the library would log it with a traceback and hand back
            the 401)."""

            def generate_request_header(self, response: Any, host: str,
                                        is_preemptive: bool = False) -> str:
                login.check_step(response.url, self.creds, self.mech)
                return str(super().generate_request_header(response, host, is_preemptive))

        # The DataNode's answer carries no SPNEGO token (it is read with a delegation
        # token): mutual authentication is checked where it is offered.
        handler = Spnego(mutual_authentication=OPTIONAL, creds=creds)
        self._local.auth = handler
        return handler

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


# WebHDFS's operations on delegation tokens: asked with SPNEGO, never with a token.
_TOKEN_OPS = ("GETDELEGATIONTOKEN", "RENEWDELEGATIONTOKEN", "CANCELDELEGATIONTOKEN")
_RENEW_AFTER_FAILED_S = 600.0  # a renewal refused: try again then, use the token meanwhile


class _WebHdfsClient(Client):
    """HdfsCLI's client with what a secure cluster needs: the CA file on every request (the
    session's `verify` would lose to `REQUESTS_CA_BUNDLE`), SPNEGO or a delegation token for
    the NameNode, and refusals turned into errors that say what to fix."""

    _get_delegation_token = _Request("GET")
    _renew_delegation_token = _Request("PUT")
    _cancel_delegation_token = _Request("PUT")

    def __init__(self, url: str, *, user: str | None, ca_file: str | None,
                 login: _SpnegoLogin | None, timeout: float | None,
                 delegation_token: bool = False) -> None:
        session = requests.Session()
        if user:
            session.params = {"user.name": user}
        super().__init__(url, timeout=timeout, session=session)
        self._verify: str | bool = ca_file or True
        self._ca_file = ca_file
        self._login = login
        self._user = user
        self._token = _DelegationToken(self) if delegation_token and login else None
        self.inode_reads = True
        """False once a file could not be read by its inode path (a gateway that does not
        resolve /.reserved/.inodes): files are then read by their path."""

    @property
    def tokens_fetched(self) -> int:
        """Delegation tokens this client asked the NameNode for."""
        return self._token.fetched if self._token is not None else 0

    def close(self) -> None:
        if self._token is not None:
            self._token.cancel()
        self._session.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        path = _hdfs_path(url)
        params = dict(kwargs.get("params") or {})
        token = None
        if self._token is not None and params.get("op") not in (None, *_TOKEN_OPS):
            token = self._token.current(path)
            kwargs["params"] = {**params, "delegation": token}
        elif self._login is not None and "delegation=" not in urlsplit(url).query:
            kwargs.setdefault("auth", self._login.auth(path))
        kwargs.setdefault("verify", self._verify)
        res = self._send(method, url, path, **kwargs)
        if token is not None and _invalid_token(res):
            # Cancelled, expired or unknown to this NameNode: a new one, and the request again.
            res.close()
            assert self._token is not None
            self._token.forget(token)
            kwargs["params"] = {**params, "delegation": self._token.current(path)}
            res = self._send(method, url, path, **kwargs)
        return self._check(res, url, path)

    def _send(self, method: str, url: str, path: str, **kwargs: Any) -> requests.Response:
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
        return res

    def _check(self, res: requests.Response, url: str, path: str) -> requests.Response:
        if res.status_code == 401:
            res.close()
            if self._login is None:
                if "negotiate" in res.headers.get("WWW-Authenticate", "").lower():
                    raise WebHdfsAuthMismatch(
                        path, f"WebHDFS at {_base(url)} answered HTTP 401 and wants Kerberos "
                              "(SPNEGO): set hadoop.security.authentication=kerberos in "
                              "HADOOP_CONF_DIR (or [hdfs] authentication) and get a ticket "
                              "(kinit or a keytab)")
                raise WebHdfsRefused(path, f"WebHDFS at {_base(url)} answered HTTP 401 to user "
                                           f"{self._user}")
            raise self._login.refused(url)
        if res.status_code != 403:
            return res
        exception = _remote_exception(res) or ""
        if exception in _NEXT_NAMENODE:
            return res  # a standby NameNode: HdfsCLI asks the next URL of the nameservice
        if exception in _REFUSED or _invalid_token(res):
            message = _remote_message(res)
            who = self._login.who() if self._login is not None else f"user {self._user}"
            res.close()
            raise WebHdfsRefused(path, f"WebHDFS at {_base(url)} refused {who} access to {path} "
                                       f"(HTTP 403: {message})")
        # WebHDFS answers 403 for any IOException (a block missing, a DataNode's trouble, an
        # offset past the end): HdfsCLI raises it as the HdfsError a retry or a stat sorts.
        return res


class _DelegationToken:
    """The client's one delegation token: asked for when first needed, renewed before it
    expires (at three quarters of what is left), replaced when the NameNode no longer knows
    it or will not renew it, cancelled when the client closes."""

    def __init__(self, client: _WebHdfsClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.fetched = 0

    def current(self, path: str) -> str:
        with self._lock:
            if self._token is not None and time.time() >= self._renew_at:
                self._renew(replace=True)
            if self._token is None:
                res = self._client._get_delegation_token("/")
                try:
                    self._token = str(res.json()["Token"]["urlString"])
                except (ValueError, KeyError, TypeError):
                    raise ReadFailed(path, f"WebHDFS at {_base(res.url)} answered "
                                           "GETDELEGATIONTOKEN without a token") from None
                self.fetched += 1
                log.debug("webhdfs: delegation token obtained", url=self._client.url)
                self._renew(replace=False)  # its expiry, which only a renewal tells
            return self._token

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                log.info("webhdfs: the NameNode no longer knows the delegation token; "
                         "getting another", url=self._client.url)
                self._token = None

    def cancel(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        if token is None:
            return
        try:
            self._client._cancel_delegation_token("/", token=token)
        except (HdfsError, RangedReadError, requests.RequestException) as exc:
            log.info("webhdfs: the delegation token was not cancelled (it expires by itself)",
                     error=type(exc).__name__)

    def _renew(self, *, replace: bool) -> None:
        assert self._token is not None
        now = time.time()
        try:
            res = self._client._renew_delegation_token("/", token=self._token)
            expires = int(res.json()["long"]) / 1000
        except (HdfsError, WebHdfsRefused, ValueError, KeyError, TypeError) as exc:
            if replace:
                # Past its maximum lifetime, or unknown: a new one (the old one expires).
                log.info("webhdfs: delegation token not renewed; getting another",
                         error=type(exc).__name__, url=self._client.url)
                self._token = None
            else:
                self._renew_at = now + _RENEW_AFTER_FAILED_S
            return
        self._renew_at = now + max(60.0, 0.75 * (expires - now))


def _invalid_token(res: requests.Response) -> bool:
    """A 401/403 saying the delegation token is not (or no longer) valid."""
    if res.status_code not in (401, 403):
        return False
    return "InvalidToken" in (_remote_exception(res) or "") or "InvalidToken" in _remote_message(res)


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _hdfs_path(url: str) -> str:
    path = unquote(urlsplit(url).path)
    return path.removeprefix(_WEBHDFS_PREFIX) or "/"


def _where(url: str | None) -> str:
    """scheme://host:port and the HDFS path of `url`: never its query, where the delegation
    token travels."""
    if not url:
        return "WebHDFS"
    return f"{_base(url)}{_WEBHDFS_PREFIX}{_hdfs_path(url)}"


def request_failure(exc: BaseException) -> str:
    """One line for a `requests` (or `urllib3`) failure: what failed and where, from the
    exception's type, its innermost system error and scheme://host:port/path of its request;
    never its own text, which holds the whole URL with its query (a delegation token)."""
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    reason = ""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            reason = e.strerror.lower()
            break
        if not reason and isinstance(e, TimeoutError | urllib3.exceptions.TimeoutError):
            reason = "timed out"
        todo.extend([getattr(e, "reason", None), *getattr(e, "args", ()), e.__cause__,
                     e.__context__])
    return (f"{type(exc).__name__}" + (f" ({reason})" if reason else "")
            + f" at {_where(url if isinstance(url, str) else None)}")


# What a NameNode that cannot serve now answers (403): another URL of the list may.
_NEXT_NAMENODE = ("StandbyException", "RetriableException")
# What a 403 means when it refuses who we are; any other 403 is an IOException on the way.
_REFUSED = ("AccessControlException", "AuthorizationException", "SecurityException",
            "InvalidToken")


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
        if self._file_id is None or not getattr(self._client, "inode_reads", True):
            return self._read_from(self._path, offset, length)
        try:
            return self._read_from(inode_path(self._file_id), offset, length)
        except HdfsError as exc:
            if not _not_found(exc) or not self._inode_path_unresolved():
                raise
        return self._read_from(self._path, offset, length)

    def _read_from(self, source: str, offset: int, length: int) -> bytes:
        try:
            with self._client.read(source, offset=offset, length=length) as reader:
                return bytes(reader.read())
        except WebHdfsRefused as exc:
            if exc.path == self._path:
                raise
            # Named by the file's path, which the operator knows, rather than its inode's.
            raise WebHdfsRefused(self._path, exc.reason.replace(exc.path, self._path)) from None

    def _inode_path_unresolved(self) -> bool:
        """The inode path named nothing: if the path still names the very file (same inode id
        and length), it is the gateway that does not resolve reserved paths (HttpFS, Knox, a
        router), not the file that went: the client reads by path from now on, said once."""
        status = self._stat(self._path)
        if (self._file_id is None or status is None or status.kind != "FILE"
                or status.file_id != self._file_id or status.length != self._size):
            return False
        if getattr(self._client, "inode_reads", True):
            self._client.inode_reads = False  # type: ignore[attr-defined]
            log.warning("reading files by path: this WebHDFS does not resolve inode paths "
                        "(a gateway or router?); a file renamed while it is read is then told "
                        "as vanished", reason=f"{inode_path(self._file_id)} is not found "
                                              f"while {self._path} is that file",
                        url=_base(str(getattr(self._client, "url", "")).split(";")[0]))
        return True

    def _failure(self, exc: Exception) -> Failure | None:
        if isinstance(exc, HdfsError):
            message = _error_text(exc)
            if _not_found(exc):
                return Failure(message, missing=True)
            # Answered: a changed file is likely, stat it before trying again.
            return Failure(f"{exc.exception or 'HTTP error'}: {message}", retry=True,
                           answered=True)
        if isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError):
            transport = isinstance(exc, requests.ConnectionError | requests.Timeout
                                   | requests.exceptions.ChunkedEncodingError
                                   | urllib3.exceptions.HTTPError)
            return Failure(request_failure(exc), retry=transport)
        return None


def _error_text(exc: HdfsError) -> str:
    message = exc.message
    if isinstance(message, bytes):  # not WebHDFS's JSON: a proxy's page
        message = message.decode("utf-8", "replace")
    return first_line(" ".join(str(message).split())[:300])


def _not_found(exc: HdfsError) -> bool:
    return exc.exception == "FileNotFoundException" or "does not exist" in _error_text(exc)


async def aopen_webhdfs(client_or_url: Client | str, path: str, user: str | None = None,
                        **kwargs: Any) -> WebHdfsFile:
    """Open a `WebHdfsFile` (which stats the file) in a worker thread."""
    return await asyncio.to_thread(WebHdfsFile, client_or_url, path, user, **kwargs)


class WebHdfsStack:
    """The WebHDFS read stack of a daemon or a command: one client (one HTTP session, and on a
    secure cluster one delegation token) shared by every file it opens."""

    name = "webhdfs"

    def __init__(self, url: str, user: str | None = None, *, ca_file: str | None = None,
                 kerberos: bool = False, principal: str | None = None,
                 keytab: str | None = None, timeout: float = 60.0,
                 read_ahead: int = DEFAULT_READ_AHEAD) -> None:
        self.url = url
        self.client = webhdfs_client(url, user, ca_file=ca_file, kerberos=kerberos,
                                     principal=principal, keytab=keytab, timeout=timeout,
                                     delegation_token=True)
        self._read_ahead = read_ahead

    def open(self, path: str, *, expected_size: int | None = None,
             expected_file_id: int | None = None) -> WebHdfsFile:
        return WebHdfsFile(self.client, path, expected_size=expected_size,
                           expected_file_id=expected_file_id, read_ahead=self._read_ahead)

    def close(self) -> None:
        close_webhdfs_client(self.client)
