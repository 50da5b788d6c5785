"""Hadoop IPC SASL with Kerberos, tested with bytes: the negotiation state machine, the
security-layer choice for each QOP, wrapped calls and replies, and the errors that name a fix.

The GSS library is replaced by `ToyGss`, a context whose tokens and wraps are plain, visible
transformations; the real library against a real KDC is the integration tests' business."""

from __future__ import annotations

import asyncio
import struct
import sys

import pytest

from hdfswatch.connection import IpcConnection, SimpleAuth
from hdfswatch.errors import (
    AuthMethodMismatch,
    ClockSkewError,
    ConfigError,
    FatalError,
    KerberosCredentialsError,
    KerberosUnavailableError,
    ProtocolError,
    ServicePrincipalError,
    TransientError,
    auth_refusal,
)
from hdfswatch.framing import (
    SASL_CALL_ID,
    STATUS_FATAL,
    STATUS_SUCCESS,
    ClientCodec,
    decode_varint,
    delimited,
)
from hdfswatch.kerberos import _gssapi, gss_error
from hdfswatch.proto import IpcConnectionContext_pb2 as ctx_pb
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb
from hdfswatch.sasl import (
    QOP_AUTH,
    QOP_INTEGRITY,
    QOP_PRIVACY,
    SaslClient,
    SecurityLayer,
    ServiceTarget,
    parse_protection,
    replace_host,
)

Sasl = rpc_pb.RpcSaslProto
KERBEROS_AUTH = Sasl.SaslAuth(method="KERBEROS", mechanism="GSSAPI", protocol="nn",
                              serverId="nn1.example.com")
TOKEN_AUTH = Sasl.SaslAuth(method="TOKEN", mechanism="DIGEST-MD5", protocol="",
                           serverId="default", challenge=b"realm=...,nonce=...")


class ToyGss:
    """A GSS initiator context in the open: `rounds` tokens before it is established; wrap
    is a tag (b"C" encrypted, b"I" integrity only) and the bytes reversed."""

    def __init__(self, rounds: int = 2) -> None:
        self.rounds = rounds
        self.sent = 0
        self.received: list[bytes | None] = []
        self.wrapped: list[tuple[bytes, bool]] = []

    @property
    def complete(self) -> bool:
        return len(self.received) > self.rounds

    def step(self, token: bytes | None) -> bytes | None:
        self.received.append(token)
        if self.sent >= self.rounds:
            return None
        self.sent += 1
        return b"gss-token-%d" % self.sent

    def wrap(self, data: bytes, encrypt: bool) -> bytes:
        self.wrapped.append((data, encrypt))
        return (b"C" if encrypt else b"I") + data[::-1]

    def unwrap(self, token: bytes) -> bytes:
        assert token[:1] in (b"C", b"I"), "not a toy-wrapped token"
        return token[1:][::-1]

    def wrap_size_limit(self, output_size: int, encrypt: bool) -> int:
        return output_size - 1


def toy_wrap(data: bytes, encrypt: bool = False) -> bytes:
    return (b"C" if encrypt else b"I") + data[::-1]


class Made:
    """A context factory that remembers what it was asked for."""

    def __init__(self, rounds: int = 1) -> None:
        self.rounds = rounds
        self.targets: list[ServiceTarget] = []
        self.context: ToyGss | None = None

    def __call__(self, target: ServiceTarget) -> ToyGss:
        self.targets.append(target)
        self.context = ToyGss(self.rounds)
        return self.context


def negotiate(*auths: Sasl.SaslAuth) -> Sasl:
    return Sasl(state=Sasl.NEGOTIATE, auths=list(auths))


def offer(mask: int, server_max: int = 65536) -> Sasl:
    return Sasl(state=Sasl.CHALLENGE, token=toy_wrap(bytes([mask]) + server_max.to_bytes(3, "big")))


def through_gss(sasl: SaslClient) -> None:
    """NEGOTIATE, INITIATE and the one GSS round of a one-round context."""
    sasl.start()
    sasl.receive(negotiate(TOKEN_AUTH, KERBEROS_AUTH))
    answer = sasl.receive(Sasl(state=Sasl.CHALLENGE, token=b"ap-rep"))
    assert answer is not None and answer.state == Sasl.RESPONSE and answer.token == b""


# --------------------------------------------------------------------------- the negotiation


def test_the_client_opens_with_negotiate():
    sasl = SaslClient(Made())
    assert sasl.start().SerializeToString() == b"\x10\x01"  # state: NEGOTIATE, nothing else
    frame = ClientCodec(client_id=b"\x00" * 16).sasl(Sasl(state=Sasl.NEGOTIATE))
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4 and frame.endswith(delimited(b"\x10\x01"))


def test_initiate_takes_kerberos_among_the_servers_auths_with_the_first_gss_token():
    made = Made(rounds=2)
    sasl = SaslClient(made)
    sasl.start()
    initiate = sasl.receive(negotiate(TOKEN_AUTH, KERBEROS_AUTH))
    assert initiate is not None
    assert initiate.state == Sasl.INITIATE
    assert initiate.token == b"gss-token-1"
    assert list(initiate.auths) == [KERBEROS_AUTH]
    assert made.targets == [ServiceTarget("nn", "nn1.example.com")]
    assert made.targets[0].hostbased == "nn@nn1.example.com"


def test_challenge_rounds_go_on_until_the_gss_context_is_established():
    made = Made(rounds=3)
    sasl = SaslClient(made)
    sasl.start()
    sasl.receive(negotiate(KERBEROS_AUTH))
    tokens = []
    for i in (1, 2, 3):
        answer = sasl.receive(Sasl(state=Sasl.CHALLENGE, token=b"server-%d" % i))
        assert answer is not None and answer.state == Sasl.RESPONSE
        tokens.append(answer.token)
    assert tokens == [b"gss-token-2", b"gss-token-3", b""]
    assert made.context is not None
    assert made.context.received == [None, b"server-1", b"server-2", b"server-3"]
    assert not sasl.done


@pytest.mark.parametrize(("qop", "layer_encrypts"), [
    (QOP_AUTH, None), (QOP_INTEGRITY, False), (QOP_PRIVACY, True)])
def test_each_qop_is_chosen_from_the_offer_and_answered_with_the_4_byte_layer_message(
        qop, layer_encrypts):
    made = Made()
    sasl = SaslClient(made, protections=(qop,))
    through_gss(sasl)
    answer = sasl.receive(offer(QOP_AUTH | QOP_INTEGRITY | QOP_PRIVACY, server_max=0x010000))
    assert answer is not None and answer.state == Sasl.RESPONSE
    plain = made.context.unwrap(answer.token)  # type: ignore[union-attr]
    receive_max = b"\x00\x00\x00" if qop == QOP_AUTH else b"\xff\xff\xff"
    assert plain == bytes([qop]) + receive_max  # layer, max size, empty authorization id
    assert made.context.wrapped[-1] == (plain, False)  # type: ignore[union-attr]
    assert sasl.receive(Sasl(state=Sasl.SUCCESS)) is None
    assert sasl.done and sasl.qop == qop and not sasl.simple
    if layer_encrypts is None:
        assert sasl.layer is None
    else:
        assert sasl.layer is not None
        assert (sasl.layer.qop, sasl.layer.encrypt) == (qop, layer_encrypts)
        assert sasl.layer.max_send == 0x010000 - 1  # what fits the server's buffer


def test_the_client_takes_its_first_preference_that_the_server_offers():
    sasl = SaslClient(Made(), protections=parse_protection("privacy, integrity"))
    through_gss(sasl)
    sasl.receive(offer(QOP_AUTH | QOP_INTEGRITY))
    assert sasl.qop == QOP_INTEGRITY


def test_no_common_protection_is_a_setting_to_fix():
    sasl = SaslClient(Made(), protections=(QOP_AUTH,))
    through_gss(sasl)
    with pytest.raises(AuthMethodMismatch) as err:
        sasl.receive(offer(QOP_PRIVACY))
    assert isinstance(err.value, FatalError)
    assert "hadoop.rpc.protection=privacy" in str(err.value)
    assert "set to authentication" in str(err.value)


def test_a_simple_server_is_refused_unless_the_fallback_is_allowed():
    strict = SaslClient(Made())
    strict.start()
    with pytest.raises(AuthMethodMismatch) as err:
        strict.receive(Sasl(state=Sasl.SUCCESS))
    assert "hadoop.security.authentication=simple" in str(err.value)

    lenient = SaslClient(Made(), allow_simple=True)
    lenient.start()
    assert lenient.receive(Sasl(state=Sasl.SUCCESS)) is None
    assert lenient.done and lenient.simple and lenient.layer is None


def test_a_server_offering_only_tokens_names_what_it_offers():
    sasl = SaslClient(Made())
    sasl.start()
    with pytest.raises(AuthMethodMismatch) as err:
        sasl.receive(negotiate(TOKEN_AUTH))
    assert "TOKEN" in str(err.value) and "KERBEROS" in str(err.value)


def test_the_announced_principal_must_be_the_configured_one():
    made = Made()
    sasl = SaslClient(made, principal="nn/nn1.example.com@EXAMPLE.COM")
    sasl.start()
    sasl.receive(negotiate(KERBEROS_AUTH))
    assert made.targets == [ServiceTarget("nn", "nn1.example.com",
                                          "nn/nn1.example.com@EXAMPLE.COM")]

    other = SaslClient(Made(), principal="nn/nn2.example.com@EXAMPLE.COM")
    other.start()
    with pytest.raises(ServicePrincipalError) as err:
        other.receive(negotiate(KERBEROS_AUTH))
    assert "nn/nn1.example.com" in str(err.value)
    assert "dfs.namenode.kerberos.principal" in str(err.value)


def test_host_placeholder_becomes_the_lowercased_host_name():
    assert replace_host("nn/_HOST@EXAMPLE.COM", "NN1.Example.COM") == "nn/nn1.example.com@EXAMPLE.COM"
    assert replace_host("nn/fixed@EXAMPLE.COM", "other") == "nn/fixed@EXAMPLE.COM"


def test_success_before_the_client_is_done_is_a_protocol_error():
    sasl = SaslClient(Made(rounds=2))
    sasl.start()
    sasl.receive(negotiate(KERBEROS_AUTH))
    with pytest.raises(ProtocolError):
        sasl.receive(Sasl(state=Sasl.SUCCESS))


def test_protection_names_are_checked():
    assert parse_protection("privacy,integrity") == (QOP_PRIVACY, QOP_INTEGRITY)
    assert parse_protection("Authentication") == (QOP_AUTH,)
    with pytest.raises(ConfigError, match="'secret'"):
        parse_protection("privacy,secret")


# --------------------------------------------------------------------------- wrapped frames


def unwrap_frames(data: bytes, gss: ToyGss) -> tuple[list[bool], bytes]:
    """The outer frames of `data`, each a SASL WRAP: (encrypted?, ...), unwrapped bytes."""
    pos, flags, inner = 0, [], b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        frame = data[pos + 4:pos + 4 + length]
        pos += 4 + length
        n, p = decode_varint(frame, 0)
        header = rpc_pb.RpcRequestHeaderProto.FromString(frame[p:p + n])
        assert header.callId == SASL_CALL_ID
        m, q = decode_varint(frame, p + n)
        message = Sasl.FromString(frame[q:q + m])
        assert message.state == Sasl.WRAP
        flags.append(message.token[:1] == b"C")
        inner += gss.unwrap(message.token)
    return flags, inner


@pytest.mark.parametrize("qop", [QOP_INTEGRITY, QOP_PRIVACY])
def test_calls_and_the_context_travel_wrapped_in_pieces_the_server_accepts(qop):
    plain = ClientCodec(client_id=b"c" * 16)
    secure = ClientCodec(client_id=b"c" * 16)
    gss = ToyGss()
    secure.secure(SecurityLayer(gss, qop, max_send=50))
    request = bytes(range(200))
    expected = plain.connection_context("alice@EXAMPLE.COM") + plain.call(7, "getListing", request)
    sent = secure.connection_context("alice@EXAMPLE.COM") + secure.call(7, "getListing", request)
    flags, inner = unwrap_frames(sent, gss)
    assert inner == expected
    assert len(flags) > 4 and all(len(d) <= 50 for d, _ in gss.wrapped)
    assert set(flags) == {qop == QOP_PRIVACY}


def reply_frame(call_id: int, payload: bytes, status: int = STATUS_SUCCESS,
                exception: str = "") -> bytes:
    header = rpc_pb.RpcResponseHeaderProto(callId=call_id & 0xFFFFFFFF, status=status)
    if exception:
        header.exceptionClassName, header.errorMsg = exception, "refused"
    body = delimited(header.SerializeToString()) + (delimited(payload) if not exception else b"")
    return struct.pack(">I", len(body)) + body


def wrapped(stream: bytes, encrypt: bool = True) -> bytes:
    message = Sasl(state=Sasl.WRAP, token=toy_wrap(stream, encrypt))
    return reply_frame(SASL_CALL_ID, message.SerializeToString())


def test_wrapped_replies_are_unwrapped_whatever_the_cuts():
    codec = ClientCodec()
    codec.secure(SecurityLayer(ToyGss(), QOP_PRIVACY, max_send=0))
    stream = reply_frame(1, b"first" * 10) + reply_frame(2, b"second" * 7)
    # The reply stream cut across two wrapped messages, and those cut across reads.
    on_the_wire = wrapped(stream[:13]) + wrapped(stream[13:])
    replies = []
    for i in range(0, len(on_the_wire), 9):
        replies += codec.receive(on_the_wire[i:i + 9])
    assert [(r.call_id, r.payload) for r in replies] == [(1, b"first" * 10), (2, b"second" * 7)]
    assert codec.buffered == 0


def test_a_plain_reply_on_a_protected_connection_is_refused_but_a_fatal_error_passes():
    codec = ClientCodec()
    codec.secure(SecurityLayer(ToyGss(), QOP_INTEGRITY, max_send=0))
    with pytest.raises(ProtocolError):
        codec.receive(reply_frame(3, b"not wrapped"))
    codec = ClientCodec()
    codec.secure(SecurityLayer(ToyGss(), QOP_INTEGRITY, max_send=0))
    [fatal] = codec.receive(reply_frame(-1, b"", STATUS_FATAL,
                                        "org.apache.hadoop.security.AccessControlException"))
    assert fatal.fatal and fatal.exception_class.endswith("AccessControlException")


# --------------------------------------------------------------------------- over a socket


class ToySaslAuth:
    """An Authenticator running SaslClient with ToyGss, as KerberosAuth runs it with gssapi."""

    auth_protocol = -33
    effective_user = "alice@EXAMPLE.COM"
    real_user = None

    def __init__(self, protection: int) -> None:
        self.protection = protection
        self.gss = ToyGss(rounds=1)

    async def negotiate(self, connection: IpcConnection) -> None:
        sasl = SaslClient(lambda target: self.gss, protections=(self.protection,))
        message: Sasl | None = sasl.start()
        while message is not None:
            message = sasl.receive(await connection.sasl_exchange(message))
        connection.authenticated(sasl.qop, sasl.layer)


def parts_of(stream: bytes) -> list[list[bytes]]:
    """The complete request frames at the start of `stream`, each as its delimited parts."""
    frames, pos = [], 0
    while len(stream) - pos >= 4:
        (length,) = struct.unpack_from(">I", stream, pos)
        if len(stream) - pos - 4 < length:
            break
        frame, pos = stream[pos + 4:pos + 4 + length], pos + 4 + length
        parts, p = [], 0
        while p < len(frame):
            n, p = decode_varint(frame, p)
            parts.append(frame[p:p + n])
            p += n
        frames.append(parts)
    return frames


async def toy_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     seen: dict[str, object]) -> None:
    """The server's side of the toy negotiation, then one echo call, wrapped or not."""
    from tests.unit.hdfswatch.test_hdfswatch_connection import read_frame

    assert await reader.readexactly(7) == b"hrpc\x09\x00\xdf"

    async def sasl_message() -> Sasl:
        _header, body = await read_frame(reader)
        return Sasl.FromString(body)

    def send(message: Sasl) -> None:
        writer.write(reply_frame(SASL_CALL_ID, message.SerializeToString()))

    assert (await sasl_message()).state == Sasl.NEGOTIATE
    send(negotiate(TOKEN_AUTH, KERBEROS_AUTH))
    assert (await sasl_message()).token == b"gss-token-1"
    send(Sasl(state=Sasl.CHALLENGE, token=b"ap-rep"))
    assert (await sasl_message()).token == b""
    send(offer(QOP_AUTH | QOP_INTEGRITY | QOP_PRIVACY))
    choice = (await sasl_message()).token[1:][::-1]
    send(Sasl(state=Sasl.SUCCESS))
    qop = choice[0]
    if qop == QOP_AUTH:
        (_h, context), (_h, _rpc, request) = [await read_frame(reader) for _ in range(2)]
    else:
        stream = b""
        while len(frames := parts_of(stream)) < 2:
            _h, body = await read_frame(reader)
            stream += ToyGss().unwrap(Sasl.FromString(body).token)
        (_h, context), (_h, _rpc, request) = frames
    seen["qop"], seen["context"] = qop, context
    answer = reply_frame(0, request[::-1])
    writer.write(answer if qop == QOP_AUTH else wrapped(answer, qop == QOP_PRIVACY))
    await writer.drain()
    await reader.read()


@pytest.mark.parametrize("protection", [QOP_AUTH, QOP_INTEGRITY, QOP_PRIVACY])
async def test_a_connection_negotiates_then_calls_with_the_layer_it_chose(protection):
    seen: dict[str, object] = {}
    server = await asyncio.start_server(lambda r, w: toy_server(r, w, seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = IpcConnection("127.0.0.1", port, ToySaslAuth(protection), connect_timeout=2)
    await conn.open()
    try:
        assert await conn.call_raw("echo", b"ping", reply_timeout=5) == b"gnip"
    finally:
        await conn.close()
        server.close()
    assert seen["qop"] == protection == conn.qop
    assert conn.protection == {1: "authentication", 2: "integrity", 4: "privacy"}[protection]
    context = ctx_pb.IpcConnectionContextProto.FromString(seen["context"])  # type: ignore[arg-type]
    assert context.userInfo.effectiveUser == "alice@EXAMPLE.COM"


async def test_simple_to_a_kerberos_namenode_says_to_set_kerberos():
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(7)
        header = rpc_pb.RpcResponseHeaderProto(
            callId=0xFFFFFFFF, status=STATUS_FATAL,
            exceptionClassName="org.apache.hadoop.security.AccessControlException",
            errorMsg="SIMPLE authentication is not enabled.  Available:[TOKEN, KERBEROS]")
        body = delimited(header.SerializeToString())
        writer.write(struct.pack(">I", len(body)) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = IpcConnection("127.0.0.1", port, SimpleAuth("alice"), connect_timeout=2)
    try:
        with pytest.raises(AuthMethodMismatch) as err:
            await conn.open()
            await conn.call_raw("getListing", b"", reply_timeout=5)
    finally:
        await conn.close()
        server.close()
    assert "hadoop.security.authentication=kerberos" in str(err.value)
    assert isinstance(err.value, FatalError)


# --------------------------------------------------------------------------- errors


class FakeGssError(Exception):
    def __init__(self, major: int, minor: int, text: str) -> None:
        super().__init__(text)
        self.maj_code, self.min_code, self.text = major, minor, text

    def gen_message(self) -> str:
        return self.text


KRB5 = -1765328384  # MIT krb5's error table base


@pytest.mark.parametrize(("minor", "text", "kind", "says"), [
    (KRB5 + 7, "Server not found in Kerberos database", ServicePrincipalError,
     "dfs.namenode.kerberos.principal"),
    (KRB5 + 37, "Clock skew too great", ClockSkewError, "NTP"),
    (KRB5 + 32, "Ticket expired", KerberosCredentialsError, "kinit -R"),
    (KRB5 + 195, "No credentials cache found", KerberosCredentialsError,
     "no Kerberos ticket for etl@EXAMPLE.COM"),
])
def test_gss_failures_name_their_fix_and_whether_retrying_helps(minor, text, kind, says):
    err = gss_error(FakeGssError(13 << 16, minor, text), client="etl@EXAMPLE.COM",
                    server="nn/nn1@EXAMPLE.COM")
    assert type(err) is kind and says in str(err)
    assert "\n" not in str(err)
    assert isinstance(err, TransientError) == (kind is not ServicePrincipalError)


def test_a_host_that_fell_back_to_its_address_is_a_dns_problem_and_retried():
    """_HOST becomes the NameNode's address when its reverse lookup fails (a DNS blip): the
    KDC knows no nn/10.0.0.5, which is no reason to end the daemon."""
    err = gss_error(FakeGssError(13 << 16, KRB5 + 7, "Server not found in Kerberos database"),
                    client="etl@EXAMPLE.COM", server="nn/10.0.0.5@EXAMPLE.COM")
    assert isinstance(err, TransientError) and not isinstance(err, FatalError)
    assert "reverse DNS lookup" in str(err) and "nn/10.0.0.5@EXAMPLE.COM" in str(err)


def test_a_server_side_refusal_for_clock_skew_is_retried():
    err = auth_refusal("javax.security.sasl.SaslException",
                       "GSS initiate failed [Caused by GSSException: Failure unspecified at "
                       "GSS-API level (Mechanism level: Clock skew too great (37))]",
                       kerberos=True)
    assert isinstance(err, ClockSkewError) and isinstance(err, TransientError)


def test_kerberos_without_the_gssapi_package_says_which_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gssapi", None)
    with pytest.raises(KerberosUnavailableError, match="'gssapi'") as err:
        _gssapi()
    assert "\n" not in str(err.value) and isinstance(err.value, FatalError)
