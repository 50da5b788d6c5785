"""The exceptions of hdfswatch, one hierarchy under `HdfsWatchError`.

Errors from the NameNode arrive as a Java exception class name and a message; `remote_error`
maps them to the typed subclasses below so that callers can catch what they mean
(`StandbyError`, `AccessControlError`, `FileNotFound`...) while the Java class name and the
server's message stay available on every instance.

Every error also has a *kind*, one of three bases that the whole project decides retries by
(`isinstance`, never class names): `PermanentError` (this file will not get better: quarantine
it now), `TransientError` (something is away for now: retry with backoff; its `AccessError`
kind, who we are or what we may do, is retried without end) and `FatalError` (the
daemon cannot go on: exit non-zero and let systemd restart it). The kinds live here, in the
lowest layer, so that hdfswatch and pipeline errors share them. An error with no kind is
unknown: callers treat it as they always have (the worker pool retries it until its timeout).
"""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying will not help this file: it is corrupt, gone, changed, refused or cannot be
    encoded. Quarantine it now (or stop its source, as the source's error policy says)."""


class TransientError(Exception):
    """Something is away for now (a connection, a NameNode, a DataNode, a registry): retry with
    backoff, from the last position handed over, until the retry budget is spent."""


class AccessError(TransientError):
    """Who this process is, or what it may do, is not right yet: no Kerberos ticket, a clock
    off, a permission or ACL missing, a certificate not trusted. Retried without end and never
    held against a file (no quarantine): the operator fixes it and everything resumes."""


class FatalError(Exception):
    """The daemon cannot go on (its configuration or its environment is wrong): end it with a
    clear log line and a non-zero exit, so that systemd restarts it once the cause is fixed."""


class HdfsWatchError(Exception):
    """Base of every error raised by hdfswatch."""


# --------------------------------------------------------------------------- wire and transport


class ProtocolError(HdfsWatchError):
    """Bytes that do not follow Hadoop IPC framing, or a message that cannot be decoded."""


class FrameTooLargeError(ProtocolError):
    """A length prefix larger than the configured maximum: garbage on the wire, or a reply too
    large to buffer."""


class ConnectionLostError(HdfsWatchError, TransientError):
    """The connection to a NameNode failed or closed while calls were outstanding."""


class NameNodeConnectError(ConnectionLostError):
    """A NameNode could not be reached (refused, unresolvable, timed out while connecting)."""


class CallTimeoutError(HdfsWatchError, TransientError):
    """A call got no reply within its timeout."""


class EditLogNotOpen(HdfsWatchError, TransientError):
    """The NameNode answered txid -1: its edit log is not open yet (it is starting, or becoming
    active after a failover). There is no position to read the edit stream from yet."""


class NameNodeUnavailableError(HdfsWatchError, TransientError):
    """No NameNode in the list answered as active within the retry budget.

    `attempts` holds the last error seen for each address.
    """

    def __init__(self, message: str, attempts: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.attempts = dict(attempts or {})


class ConfigError(HdfsWatchError, FatalError):
    """A Hadoop configuration directory, an address or a pattern that cannot be used."""


# --------------------------------------------------------------------------- authentication


class AuthenticationError(HdfsWatchError):
    """The connection could not prove who it is to the NameNode, or the NameNode to it."""


class KerberosCredentialsError(AuthenticationError, AccessError):
    """No usable Kerberos ticket (none, expired, or the KDC away): retryable, since a `kinit`,
    a renewal or a keytab login later heals it."""


class ClockSkewError(AuthenticationError, AccessError):
    """This host's clock is too far from the KDC's or the NameNode's (Kerberos allows 5 minutes
    by default): retryable, since NTP catching up heals it."""


class AuthenticationRefused(AuthenticationError, AccessError):
    """The NameNode refused the SASL negotiation for a reason it did not name more precisely
    (its own keytab or KDC may be at fault): retried, since the server side may heal."""


class ServicePrincipalError(AuthenticationError, FatalError):
    """The NameNode's Kerberos principal is not the one configured, or the KDC does not know
    it: `dfs.namenode.kerberos.principal` must change."""


class AuthMethodMismatch(AuthenticationError, FatalError):
    """The NameNode and this client share no authentication method or protection level (one
    is Kerberos and the other SIMPLE, or `hadoop.rpc.protection` differs)."""


class KerberosUnavailableError(AuthenticationError, FatalError):
    """Kerberos is configured but the `gssapi` package (or the system's Kerberos library) is
    missing."""


# --------------------------------------------------------------------------- remote (NameNode) errors


class RemoteError(HdfsWatchError):
    """An error reply from the NameNode: the Java exception class and its message."""

    def __init__(self, exception_class: str, message: str, *, method: str | None = None,
                 fatal: bool = False) -> None:
        self.exception_class = exception_class
        self.message = message
        self.method = method
        self.fatal = fatal
        short = exception_class.rsplit(".", 1)[-1] or "RemoteException"
        first_line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
        where = f" in {method}" if method else ""
        super().__init__(f"{short}{where}: {first_line}" if first_line else f"{short}{where}")


class StandbyError(RemoteError, TransientError):
    """The NameNode is a standby (HA): ask the next one."""


class RetriableRemoteError(RemoteError, TransientError):
    """The NameNode asks to retry the call later (it is starting, or busy)."""


class SafeModeError(RemoteError, TransientError):
    """The NameNode is in safe mode and refuses changes."""


class AccessControlError(RemoteError, PermanentError):
    """Permission denied for the declared user."""


class NotSuperuserError(AccessControlError):
    """The edit stream (HDFS inotify) needs HDFS superuser privilege.

    Raised by `getEditsFromTxid` and `getCurrentEditLogTxid` when the user is neither the user
    that runs the NameNode nor a member of `dfs.permissions.superusergroup`. The message says
    so, and names the way out: the listing detector (`hdfswatch.listing.ListingDetector`).
    """

    def __init__(self, exception_class: str, message: str, *, method: str | None = None,
                 user: str | None = None) -> None:
        self.user = user
        super().__init__(exception_class, message, method=method)
        who = f"user {user!r}" if user else "this user"
        self.args = (
            f"{method or 'the edit stream'}: HDFS superuser privilege is required to read the "
            f"NameNode edit stream (inotify), and {who} does not have it (it must be the user "
            "running the NameNode or a member of dfs.permissions.superusergroup). Either run as "
            "such a user, or detect files by listing instead: hdfswatch.listing.ListingDetector "
            "(`hdfs2kafka watch --listing`). NameNode said: "
            f"{(message or '').strip().splitlines()[0] if (message or '').strip() else exception_class}",
        )


class FileNotFound(RemoteError, PermanentError):
    """The path does not exist."""


class ParentNotDirectoryError(RemoteError, PermanentError):
    """A component of the path is a file, not a directory."""


class RpcServerError(RemoteError, FatalError):
    """The RPC layer refused the call (no such method or protocol, version mismatch...): this
    client and that NameNode do not speak the same protocol."""


class UnknownRemoteError(RemoteError):
    """Any other exception class."""


_BY_CLASS: dict[str, type[RemoteError]] = {
    "org.apache.hadoop.ipc.StandbyException": StandbyError,
    "org.apache.hadoop.ipc.RetriableException": RetriableRemoteError,
    "org.apache.hadoop.hdfs.server.namenode.SafeModeException": SafeModeError,
    "org.apache.hadoop.security.AccessControlException": AccessControlError,
    "org.apache.hadoop.hdfs.protocol.AclException": AccessControlError,
    "java.io.FileNotFoundException": FileNotFound,
    "org.apache.hadoop.fs.ParentNotDirectoryException": ParentNotDirectoryError,
    "org.apache.hadoop.ipc.RpcNoSuchMethodException": RpcServerError,
    "org.apache.hadoop.ipc.RpcNoSuchProtocolException": RpcServerError,
    "org.apache.hadoop.ipc.RPC$VersionMismatch": RpcServerError,
    "org.apache.hadoop.ipc.RpcServerException": RpcServerError,
}

# Methods whose AccessControlException means "not a superuser".
SUPERUSER_METHODS = frozenset({"getEditsFromTxid", "getCurrentEditLogTxid", "rollEdits",
                               "setSafeMode", "saveNamespace"})


def remote_error(exception_class: str, message: str, *, method: str | None = None,
                 user: str | None = None, fatal: bool = False) -> RemoteError:
    """The typed exception for an error reply."""
    cls = _BY_CLASS.get(exception_class)
    if cls is AccessControlError and method in SUPERUSER_METHODS and "uperuser" in (message or ""):
        return NotSuperuserError(exception_class, message, method=method, user=user)
    if cls is None:
        if exception_class.endswith("AccessControlException"):
            cls = AccessControlError
        elif exception_class.endswith("FileNotFoundException"):
            cls = FileNotFound
        else:
            cls = UnknownRemoteError
    return cls(exception_class, message, method=method, fatal=fatal)


# The IPC server answers a failed authentication on this call id (Server.AUTHORIZATION_FAILED_CALL_ID).
AUTHORIZATION_FAILED_CALL_ID = -1
_SIMPLE_REFUSED = "SIMPLE authentication is not enabled"


def auth_refusal(exception_class: str, message: str, *, kerberos: bool) -> AuthenticationError:
    """The typed error for a NameNode refusing the connection during authentication.

    `kerberos` says what this client tried (SASL/GSSAPI, else SIMPLE), to name the fix.
    """
    text = (message or "").strip()
    first = text.splitlines()[0] if text else exception_class.rsplit(".", 1)[-1]
    if _SIMPLE_REFUSED in text and not kerberos:
        return AuthMethodMismatch(
            "the NameNode wants Kerberos (it refuses SIMPLE authentication): set "
            "hadoop.security.authentication=kerberos in core-site.xml of HADOOP_CONF_DIR "
            f"(NameNode said: {first})")
    lowered = text.lower()
    if "clock skew" in lowered:
        return ClockSkewError(
            f"the NameNode refused the Kerberos ticket because of clock skew: sync this host's "
            f"clock with NTP (NameNode said: {first})")
    if "ticket expired" in lowered or "tkt_expired" in lowered:
        return KerberosCredentialsError(
            f"the NameNode refused an expired Kerberos ticket: renew it (kinit -R) or log in "
            f"again from the keytab (NameNode said: {first})")
    return AuthenticationRefused(
        f"the NameNode refused the {'Kerberos' if kerberos else 'SIMPLE'} authentication: "
        f"{first}")
