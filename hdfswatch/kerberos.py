"""Kerberos for Hadoop IPC: the `gssapi` package behind `sasl.GssContext`, and the
authenticator that runs the SASL negotiation on a connection.

`gssapi` is imported only when Kerberos is used, so that a machine without it runs SIMPLE
authentication as before; with Kerberos configured and the package missing, connecting fails
with one line naming it. Credentials come from the ticket cache (`KRB5CCNAME`, kept by `kinit`
or by the operator), or from a client keytab when one is given (MIT krb5 then gets and renews
tickets from it by itself). GSS-API failures become the typed errors of `hdfswatch.errors`,
each a line saying what to fix.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hdfswatch.errors import (
    AuthenticationError,
    AuthenticationRefused,
    ClockSkewError,
    KerberosCredentialsError,
    KerberosUnavailableError,
    ServicePrincipalError,
)
from hdfswatch.framing import AUTH_SASL
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb
from hdfswatch.sasl import (
    QOP_AUTH,
    QOP_PROTECTION,
    SaslClient,
    ServiceTarget,
    replace_host,
    split_principal,
)

if TYPE_CHECKING:
    from hdfswatch.connection import IpcConnection

# MIT krb5 error codes (com_err table "krb5", base -1765328384), as GSS minor codes (unsigned).
_KRB5_BASE = 0x96C73A00
_C_PRINCIPAL_UNKNOWN = _KRB5_BASE + 6
_S_PRINCIPAL_UNKNOWN = _KRB5_BASE + 7
_NAME_EXP = _KRB5_BASE + 2
_KEY_EXP = _KRB5_BASE + 23
_PREAUTH_FAILED = _KRB5_BASE + 24
_BAD_INTEGRITY = _KRB5_BASE + 31  # a key that is not the principal's current one
_TKT_EXPIRED = _KRB5_BASE + 32
_SKEW = _KRB5_BASE + 37
_CC_NOTFOUND = _KRB5_BASE + 141
_KDC_UNREACH = _KRB5_BASE + 156
_FCC_NOFILE = _KRB5_BASE + 195
_GSS_S_NO_CRED = 7 << 16
_GSS_S_CREDENTIALS_EXPIRED = 11 << 16


def _gssapi() -> Any:
    try:
        import gssapi
    except ImportError as exc:
        raise KerberosUnavailableError(
            "Kerberos is configured (hadoop.security.authentication=kerberos) but the Python "
            f"package 'gssapi' cannot be imported ({exc}): pip install gssapi "
            "(it needs the system's Kerberos library, e.g. libkrb5-dev to build)") from None
    return gssapi


def gss_error(exc: Exception, *, client: str, server: str | None = None) -> AuthenticationError:
    """A GSS-API failure as the error that names its fix. `client` is who we tried to be (a
    principal, or a description), `server` the NameNode principal asked for."""
    major = getattr(exc, "maj_code", 0) or 0
    minor = (getattr(exc, "min_code", 0) or 0) & 0xFFFFFFFF
    try:
        detail = exc.gen_message() if hasattr(exc, "gen_message") else str(exc)
    except Exception:  # a status the library cannot display
        detail = str(exc)
    detail = " ".join(str(detail).split())
    lowered = detail.lower()
    ccache = os.environ.get("KRB5CCNAME")
    where = f" (ticket cache {ccache})" if ccache else ""
    if minor == _S_PRINCIPAL_UNKNOWN or "server not found in kerberos database" in lowered:
        if server and _host_is_address(server):
            # _HOST became an address: the reverse lookup failed (a DNS blip, a failover).
            return AuthenticationRefused(
                f"the NameNode principal became {server} because the reverse DNS lookup of its "
                "address failed: check DNS for the NameNode (or write its host name into "
                f"dfs.namenode.kerberos.principal instead of _HOST) [{detail}]")
        return ServicePrincipalError(
            f"the KDC does not know the NameNode principal {server or '(announced by it)'}: "
            "set dfs.namenode.kerberos.principal to the NameNode's principal (e.g. "
            f"nn/_HOST@REALM) [{detail}]")
    if minor == _SKEW or "clock skew" in lowered:
        return ClockSkewError(
            f"Kerberos refused the ticket because of clock skew: sync this host's clock with "
            f"NTP [{detail}]")
    if minor in (_TKT_EXPIRED, _NAME_EXP, _KEY_EXP) or major == _GSS_S_CREDENTIALS_EXPIRED \
            or "expired" in lowered:
        return KerberosCredentialsError(
            f"the Kerberos ticket of {client} has expired{where}: renew it (kinit -R), run "
            f"kinit, or set the keytab [{detail}]")
    if minor == _KDC_UNREACH or "cannot contact any kdc" in lowered:
        return KerberosCredentialsError(f"no KDC answers for {client}: is the KDC up and "
                                        f"krb5.conf (KRB5_CONFIG) right? [{detail}]")
    if minor in (_C_PRINCIPAL_UNKNOWN, _PREAUTH_FAILED, _BAD_INTEGRITY) \
            or "client not found in kerberos database" in lowered:
        return KerberosCredentialsError(
            f"the KDC refuses {client} (unknown principal, or a keytab whose key is not the "
            f"principal's current one): check the principal and the keytab [{detail}]")
    if minor in (_FCC_NOFILE, _CC_NOTFOUND) or major == _GSS_S_NO_CRED \
            or "no credentials" in lowered or "not found" in lowered:
        return KerberosCredentialsError(
            f"no Kerberos ticket for {client}{where}: run kinit or set the keytab [{detail}]")
    return KerberosCredentialsError(f"Kerberos failed for {client}: {detail}")


class GssapiContext:
    """`sasl.GssContext` over python-gssapi (MIT krb5)."""

    def __init__(self, target: ServiceTarget, credentials: Any, client: str) -> None:
        gssapi = _gssapi()
        self._client = client
        self._server = target.principal or target.hostbased
        try:
            if target.principal:
                name = gssapi.Name(target.principal, gssapi.NameType.kerberos_principal)
            else:
                name = gssapi.Name(target.hostbased, gssapi.NameType.hostbased_service)
            flags = (gssapi.RequirementFlag.mutual_authentication
                     | gssapi.RequirementFlag.integrity
                     | gssapi.RequirementFlag.confidentiality
                     | gssapi.RequirementFlag.replay_detection
                     | gssapi.RequirementFlag.out_of_sequence_detection)
            self._ctx = gssapi.SecurityContext(name=name, creds=credentials, usage="initiate",
                                               flags=flags, mech=gssapi.MechType.kerberos)
        except gssapi.exceptions.GSSError as exc:
            raise gss_error(exc, client=client, server=self._server) from None

    @property
    def complete(self) -> bool:
        return bool(self._ctx.complete)

    def step(self, token: bytes | None) -> bytes | None:
        gssapi = _gssapi()
        try:
            out = self._ctx.step(token)
        except gssapi.exceptions.GSSError as exc:
            raise gss_error(exc, client=self._client, server=self._server) from None
        return bytes(out) if out is not None else None

    def wrap(self, data: bytes, encrypt: bool) -> bytes:
        result = self._ctx.wrap(data, encrypt)
        return bytes(result.message)

    def unwrap(self, token: bytes) -> bytes:
        return bytes(self._ctx.unwrap(token).message)

    def wrap_size_limit(self, output_size: int, encrypt: bool) -> int:
        return int(self._ctx.get_wrap_size_limit(output_size, encrypt))

    @property
    def initiator(self) -> str:
        return str(self._ctx.initiator_name)


def _host_is_address(principal: str) -> bool:
    """Whether the host part of `service/host@REALM` is an IP address."""
    import ipaddress

    host = principal.split("@")[0].partition("/")[2]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def canonical_host(host: str) -> str:
    """The host's canonical name, lowercased, as Java's `getCanonicalHostName` gives it for
    Hadoop's `_HOST`: the reverse lookup of its address, else the address itself."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        address = str(infos[0][4][0])
    except (OSError, IndexError):
        return host.lower()
    try:
        name = socket.gethostbyaddr(address)[0]
    except OSError:
        return address.lower()
    return name.lower()


class KerberosAuth:
    """SASL with Kerberos (GSSAPI) for IPC connections: an `connection.Authenticator`.

    `principal` is the NameNode's (`dfs.namenode.kerberos.principal`, `_HOST` allowed); None
    trusts the one the server announces. `protections` is `hadoop.rpc.protection` as QOP bits,
    most wanted first. `client_principal` and `keytab` choose the credentials (default: the
    ticket cache's principal); `store` passes a GSS credential store as is (e.g. `ccache`).
    """

    auth_protocol = AUTH_SASL

    def __init__(self, *, principal: str | None = None, protections: tuple[int, ...] = (QOP_AUTH,),
                 client_principal: str | None = None, keytab: str | None = None,
                 store: Mapping[str, str] | None = None, allow_simple: bool = False,
                 simple_user: str | None = None) -> None:
        self.principal = principal
        self.protections = protections
        self.client_principal = client_principal
        self.keytab = keytab
        self.store = dict(store or {})
        if keytab:
            # Tickets from the keytab go to a cache of this process's own, never mixed with
            # (or refused because of) the principal in the user's default cache.
            self.store.setdefault("client_keytab", keytab)
            self.store.setdefault("ccache", f"MEMORY:hdfswatch-{client_principal or 'keytab'}")
        self.allow_simple = allow_simple
        self._simple_user = simple_user
        self.effective_user = client_principal or simple_user or ""
        self.real_user: str | None = None

    def _who(self) -> str:
        return self.client_principal or "the ticket cache's principal"

    def credentials(self) -> Any:
        """The initiator credentials (blocking: may read a keytab and ask the KDC)."""
        gssapi = _gssapi()
        try:
            name = (gssapi.Name(self.client_principal, gssapi.NameType.kerberos_principal)
                    if self.client_principal else None)
            creds = gssapi.Credentials(name=name, usage="initiate", store=self.store or None,
                                       mechs=[gssapi.MechType.kerberos])
            # A cache whose TGT has expired still yields credentials: ask for what is left.
            if creds.lifetime is not None and creds.lifetime <= 0:
                raise KerberosCredentialsError(
                    f"the Kerberos ticket of {creds.name} has expired: renew it (kinit -R), "
                    "run kinit, or set the keytab")
            return creds
        except gssapi.exceptions.GSSError as exc:
            raise gss_error(exc, client=self._who()) from None

    def _client(self, host: str) -> tuple[SaslClient, Any]:
        """The state machine for one connection to `host`, with fresh credentials (blocking)."""
        credentials = self.credentials()
        principal = self.principal
        if principal and split_principal(principal)[1] == "_HOST":
            principal = replace_host(principal, canonical_host(host))
        client = str(credentials.name)

        def make_context(target: ServiceTarget) -> GssapiContext:
            return GssapiContext(target, credentials, client)

        sasl = SaslClient(make_context, protections=self.protections, principal=principal,
                          allow_simple=self.allow_simple)
        return sasl, credentials

    async def negotiate(self, connection: IpcConnection) -> None:
        sasl, credentials = await asyncio.to_thread(self._client, connection.host)
        message: rpc_pb.RpcSaslProto | None = sasl.start()
        while message is not None:
            answer = await connection.sasl_exchange(message)
            message = await asyncio.to_thread(sasl.receive, answer)
        if sasl.simple:
            self.effective_user = self._simple_user or str(credentials.name).split("@")[0]
            connection.authenticated(None, None)
            return
        self.effective_user = str(credentials.name)
        connection.authenticated(sasl.qop, sasl.layer)


def protection_name(qop: int | None) -> str | None:
    """"authentication", "integrity" or "privacy" for a negotiated QOP bit (None: SIMPLE)."""
    return None if qop is None else QOP_PROTECTION[qop]
