"""Hadoop IPC SASL with Kerberos (GSSAPI), sans-IO: messages in, messages out.

`SaslClient` is the client side of the `RpcSaslProto` negotiation that follows the preamble of
a SASL connection (auth protocol -33):

    client NEGOTIATE                      -> server NEGOTIATE, listing the auths it accepts
    client INITIATE (KERBEROS/GSSAPI, the   -> server CHALLENGE (the GSS reply token)
           server's protocol and serverId,
           the first GSS token)
    client RESPONSE (next GSS token)        -> ... until the GSS context is established
    client RESPONSE (empty)                 -> server CHALLENGE: wrap(4-byte security-layer offer)
    client RESPONSE: wrap(chosen layer)     -> server SUCCESS

The security-layer step is RFC 4752's: the server offers a bit mask of protections (1 auth,
2 auth-int, 4 auth-conf) and the largest wrapped message it accepts (3 bytes, big-endian); the
client answers with the one it takes, the largest message it accepts, and an authorization id
(empty: the authenticated principal itself). The client takes the first level of its own
preference list (`hadoop.rpc.protection`) that the server offers, as Java's GSSAPI client does.

With integrity or privacy, every byte written after SUCCESS (the connection context included)
is cut into pieces no larger than the server accepts, each `gss_wrap`ped and sent as an
RpcSaslProto{WRAP} under the SASL call id; each reply arrives the same way and its unwrapped
bytes are an ordinary reply stream (`SecurityLayer`, used by `framing.ClientCodec`).

The GSS library stays behind `GssContext` (`hdfswatch.kerberos` has the `gssapi` one), so all
of this is tested with bytes and a fake context.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hdfswatch.errors import AuthMethodMismatch, ConfigError, ProtocolError, ServicePrincipalError
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb

QOP_AUTH = 1
QOP_INTEGRITY = 2
QOP_PRIVACY = 4

# hadoop.rpc.protection names -> RFC 4752 security-layer bits, and the SASL names of both.
PROTECTION_QOP = {"authentication": QOP_AUTH, "integrity": QOP_INTEGRITY, "privacy": QOP_PRIVACY}
QOP_PROTECTION = {bit: name for name, bit in PROTECTION_QOP.items()}
QOP_SASL_NAME = {QOP_AUTH: "auth", QOP_INTEGRITY: "auth-int", QOP_PRIVACY: "auth-conf"}

# The largest wrapped message this client accepts (the 3-byte field's maximum).
MAX_RECEIVE = 0xFFFFFF

KERBEROS = "KERBEROS"
GSSAPI = "GSSAPI"
SIMPLE = "SIMPLE"

NEGOTIATE = rpc_pb.RpcSaslProto.NEGOTIATE
INITIATE = rpc_pb.RpcSaslProto.INITIATE
CHALLENGE = rpc_pb.RpcSaslProto.CHALLENGE
RESPONSE = rpc_pb.RpcSaslProto.RESPONSE
SUCCESS = rpc_pb.RpcSaslProto.SUCCESS
WRAP = rpc_pb.RpcSaslProto.WRAP


def parse_protection(value: str | Sequence[str]) -> tuple[int, ...]:
    """`hadoop.rpc.protection` ("privacy", or "privacy,integrity" in order of preference) as
    security-layer bits. ConfigError names an unknown level."""
    names = value.split(",") if isinstance(value, str) else list(value)
    levels: list[int] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in PROTECTION_QOP:
            raise ConfigError(f"hadoop.rpc.protection: {raw.strip()!r} is not one of "
                              "authentication, integrity, privacy")
        if PROTECTION_QOP[name] not in levels:
            levels.append(PROTECTION_QOP[name])
    return tuple(levels) or (QOP_AUTH,)


def protection_names(mask_or_levels: int | Sequence[int]) -> str:
    levels = ([b for b in (QOP_AUTH, QOP_INTEGRITY, QOP_PRIVACY) if mask_or_levels & b]
              if isinstance(mask_or_levels, int) else list(mask_or_levels))
    return ",".join(QOP_PROTECTION[b] for b in levels) or "none"


def split_principal(principal: str) -> tuple[str, str | None, str | None]:
    """"nn/host@REALM" -> ("nn", "host", "REALM"); missing parts are None."""
    name, _, realm = principal.partition("@")
    service, _, host = name.partition("/")
    return service, host or None, realm or None


def replace_host(principal: str, hostname: str) -> str:
    """Hadoop's `_HOST` substitution (SecurityUtil.getServerPrincipal): the host component
    `_HOST` becomes `hostname`, lowercased."""
    service, host, realm = split_principal(principal)
    if host != "_HOST":
        return principal
    return f"{service}/{hostname.lower()}" + (f"@{realm}" if realm else "")


class GssContext(Protocol):
    """One Kerberos GSS-API initiator context (the GSS library's side, behind a seam)."""

    @property
    def complete(self) -> bool: ...

    def step(self, token: bytes | None) -> bytes | None:
        """Feed the acceptor's token (None at first); the token to send, or None."""

    def wrap(self, data: bytes, encrypt: bool) -> bytes: ...

    def unwrap(self, token: bytes) -> bytes: ...

    def wrap_size_limit(self, output_size: int, encrypt: bool) -> int:
        """The largest input whose wrapped token fits in `output_size` bytes."""


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """The server to authenticate to: the `protocol` and `server_id` it announced, and the
    principal to ask the KDC for (the configured one, else `protocol/server_id`)."""

    protocol: str
    server_id: str
    principal: str | None = None

    @property
    def hostbased(self) -> str:
        """The GSS host-based service name, as Java's SASL client builds it."""
        return f"{self.protocol}@{self.server_id}"


ContextFactory = Callable[[ServiceTarget], GssContext]


class SecurityLayer:
    """Integrity or privacy after the handshake: what the codec wraps and unwraps."""

    def __init__(self, context: GssContext, qop: int, max_send: int) -> None:
        if qop not in (QOP_INTEGRITY, QOP_PRIVACY):
            raise ValueError("a security layer is integrity or privacy")
        self.qop = qop
        self.encrypt = qop == QOP_PRIVACY
        self.max_send = max_send
        """Largest piece of the byte stream one wrapped message carries (0: no limit)."""
        self._context = context

    def wrap(self, data: bytes) -> list[bytes]:
        """The wrapped tokens carrying `data`, in order."""
        step = self.max_send if self.max_send > 0 else len(data) or 1
        return [self._context.wrap(data[i:i + step], self.encrypt)
                for i in range(0, len(data), step)]

    def unwrap(self, token: bytes) -> bytes:
        return self._context.unwrap(token)


class _State(enum.Enum):
    START = "start"
    NEGOTIATING = "negotiating"       # NEGOTIATE sent, waiting for the server's auths
    AUTHENTICATING = "authenticating"  # GSS tokens going back and forth
    LAYER = "layer"                   # GSS context established, waiting for the offer
    CONFIRMING = "confirming"         # layer chosen, waiting for SUCCESS
    DONE = "done"


class SaslClient:
    """The client side of Hadoop's SASL negotiation with Kerberos, without I/O.

        sasl = SaslClient(make_context, protections=(QOP_PRIVACY,))
        message = sasl.start()
        while message is not None:
            message = sasl.receive(await exchange(message))
        sasl.layer   # None (authentication only, or SIMPLE), else wrap/unwrap every frame

    `principal` is the NameNode's principal as configured (`_HOST` already replaced): the
    server's announced `protocol/serverId` must match it, as Hadoop's client checks. Without
    it, the announced name is trusted. `allow_simple` is
    `ipc.client.fallback-to-simple-auth-allowed`.
    """

    def __init__(self, make_context: ContextFactory, *,
                 protections: Sequence[int] = (QOP_AUTH,), principal: str | None = None,
                 allow_simple: bool = False, max_receive: int = MAX_RECEIVE) -> None:
        if not protections or any(p not in QOP_SASL_NAME for p in protections):
            raise ValueError(f"protections must be among {sorted(QOP_SASL_NAME)}")
        self._make_context = make_context
        self.protections = tuple(protections)
        self.principal = principal
        self.allow_simple = allow_simple
        self.max_receive = max_receive
        self._state = _State.START
        self._context: GssContext | None = None
        self.target: ServiceTarget | None = None
        self.simple = False
        """The server has only SIMPLE authentication and the client fell back to it."""
        self.qop: int | None = None
        """The negotiated protection (QOP_* bit), once done with Kerberos."""
        self.server_max: int | None = None
        """The largest wrapped message the server accepts, from its offer."""
        self.layer: SecurityLayer | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def start(self) -> rpc_pb.RpcSaslProto:
        """The first message: NEGOTIATE."""
        if self._state is not _State.START:
            raise ProtocolError("the SASL negotiation has already started")
        self._state = _State.NEGOTIATING
        return rpc_pb.RpcSaslProto(state=NEGOTIATE)

    def receive(self, message: rpc_pb.RpcSaslProto) -> rpc_pb.RpcSaslProto | None:
        """Take the server's message; return the answer to send, or None when done."""
        state = self._state
        if message.state == SUCCESS:
            self._success(message)
            return None
        if state is _State.NEGOTIATING and message.state == NEGOTIATE:
            return self._initiate(message)
        if message.state == CHALLENGE and state is _State.AUTHENTICATING:
            return self._authenticate(message)
        if message.state == CHALLENGE and state is _State.LAYER:
            return self._choose_layer(message)
        raise ProtocolError(f"unexpected SASL {rpc_pb.RpcSaslProto.SaslState.Name(message.state)}"
                            f" from the server while {state.value}")

    # ---------------------------------------------------------------- steps

    def _success(self, message: rpc_pb.RpcSaslProto) -> None:
        if self._state is _State.NEGOTIATING:
            # A server with SIMPLE authentication only answers NEGOTIATE with SUCCESS.
            if not self.allow_simple:
                raise AuthMethodMismatch(
                    "the NameNode does not use Kerberos (it accepts SIMPLE authentication "
                    "only): set hadoop.security.authentication=simple, or allow the fallback "
                    "with ipc.client.fallback-to-simple-auth-allowed=true")
            self.simple = True
            self._state = _State.DONE
            return
        if self._state is not _State.CONFIRMING:
            raise ProtocolError(f"the server ended the SASL negotiation while the client was "
                                f"{self._state.value}")
        if message.HasField("token") and message.token:
            raise ProtocolError("the server's SASL SUCCESS carries a token the client has no "
                                "use for")
        self._state = _State.DONE

    def _initiate(self, message: rpc_pb.RpcSaslProto) -> rpc_pb.RpcSaslProto:
        methods = [a.method for a in message.auths]
        chosen = next((a for a in message.auths
                       if a.method == KERBEROS and a.mechanism == GSSAPI), None)
        if chosen is None:
            if SIMPLE in methods and self.allow_simple:
                self.simple = True
                self._state = _State.DONE
                simple = rpc_pb.RpcSaslProto.SaslAuth(method=SIMPLE, mechanism="")
                return rpc_pb.RpcSaslProto(state=INITIATE, auths=[simple])
            if SIMPLE in methods:
                raise AuthMethodMismatch(
                    f"the NameNode does not use Kerberos (it offers {', '.join(methods)}): "
                    "set hadoop.security.authentication=simple")
            raise AuthMethodMismatch(
                f"the NameNode offers {', '.join(methods) or 'no authentication'}, none of "
                "which this client does (it does KERBEROS with GSSAPI)")
        self.target = self._target(chosen)
        self._context = self._make_context(self.target)
        token = self._context.step(None)
        auth = rpc_pb.RpcSaslProto.SaslAuth()
        auth.CopyFrom(chosen)
        auth.ClearField("challenge")
        self._state = _State.LAYER if self._context.complete else _State.AUTHENTICATING
        return rpc_pb.RpcSaslProto(state=INITIATE, token=token or b"", auths=[auth])

    def _target(self, auth: rpc_pb.RpcSaslProto.SaslAuth) -> ServiceTarget:
        announced = f"{auth.protocol}/{auth.serverId}"
        if not auth.protocol or not auth.serverId:
            raise ProtocolError(f"the server's KERBEROS auth names no principal ({announced!r})")
        if self.principal is None:
            return ServiceTarget(auth.protocol, auth.serverId)
        service, host, _realm = split_principal(self.principal)
        if host is None:
            raise ServicePrincipalError(
                f"dfs.namenode.kerberos.principal {self.principal!r} has no host part "
                "(expected service/host@REALM, the host may be _HOST)")
        if f"{service}/{host}" != announced:
            raise ServicePrincipalError(
                f"the NameNode presents itself as {announced}, but "
                f"dfs.namenode.kerberos.principal is {self.principal}: set it to the "
                "NameNode's principal (with _HOST for its host name)")
        return ServiceTarget(auth.protocol, auth.serverId, self.principal)

    def _authenticate(self, message: rpc_pb.RpcSaslProto) -> rpc_pb.RpcSaslProto:
        assert self._context is not None
        if not message.HasField("token"):
            raise ProtocolError("the server's SASL CHALLENGE carries no token")
        token = self._context.step(message.token)
        if self._context.complete:
            self._state = _State.LAYER
        return rpc_pb.RpcSaslProto(state=RESPONSE, token=token or b"")

    def _choose_layer(self, message: rpc_pb.RpcSaslProto) -> rpc_pb.RpcSaslProto:
        assert self._context is not None
        offer = self._context.unwrap(message.token)
        if len(offer) != 4:
            raise ProtocolError(f"the server's security-layer offer is {len(offer)} bytes, "
                                "not 4")
        offered, server_max = offer[0], int.from_bytes(offer[1:4], "big")
        qop = next((q for q in self.protections if q & offered), None)
        if qop is None:
            raise AuthMethodMismatch(
                f"the NameNode accepts hadoop.rpc.protection={protection_names(offered)}, and "
                f"this client is set to {protection_names(self.protections)}: set "
                "hadoop.rpc.protection to include one the NameNode accepts")
        self.qop = qop
        self.server_max = server_max
        if qop != QOP_AUTH:
            encrypt = qop == QOP_PRIVACY
            max_send = self._context.wrap_size_limit(server_max, encrypt) if server_max else 0
            self.layer = SecurityLayer(self._context, qop, max_send)
        receive = self.max_receive if qop != QOP_AUTH else 0
        answer = bytes([qop]) + receive.to_bytes(3, "big")  # empty authorization id
        self._state = _State.CONFIRMING
        return rpc_pb.RpcSaslProto(state=RESPONSE,
                                   token=self._context.wrap(answer, False))
