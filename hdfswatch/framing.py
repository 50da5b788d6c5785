"""Hadoop IPC framing, sans-IO: requests become bytes, bytes become replies.

No sockets here. `ClientCodec` builds the connection preamble, the connection context, SASL
messages and calls; `ClientCodec.receive` takes whatever bytes arrived and returns the
complete replies found in them, keeping a partial frame for the next chunk. Everything the
connection layer sends or parses goes through this module, and all of it is testable with
byte strings alone.

Wire format (Hadoop IPC version 9):

    preamble   b"hrpc" | version 9 | service class | auth protocol (0 none/SIMPLE, -33 SASL)
    request    u32 length | varint-delimited RpcRequestHeaderProto | delimited payload(s)
    reply      u32 length | varint-delimited RpcResponseHeaderProto | delimited payload (SUCCESS)

With a SASL security layer (integrity or privacy, `hdfswatch.sasl.SecurityLayer`), that byte
stream travels inside SASL messages both ways: every piece of it is wrapped and sent as a
request under the SASL call id whose payload is RpcSaslProto{WRAP, token}; replies arrive as
the same, and the unwrapped tokens, concatenated, are the reply stream above.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError, Message

from hdfswatch.errors import FrameTooLargeError, ProtocolError
from hdfswatch.proto import IpcConnectionContext_pb2 as ctx_pb
from hdfswatch.proto import ProtobufRpcEngine2_pb2 as engine_pb
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb

if TYPE_CHECKING:
    from hdfswatch.sasl import SecurityLayer

IPC_VERSION = 9
AUTH_SIMPLE = 0
AUTH_SASL = -33

CONNECTION_CONTEXT_CALL_ID = -3
PING_CALL_ID = -4
SASL_CALL_ID = -33

CLIENT_PROTOCOL = "org.apache.hadoop.hdfs.protocol.ClientProtocol"
CLIENT_PROTOCOL_VERSION = 1

# Hadoop's own bound on a reply (ipc.maximum.response.length) is 128 MiB.
DEFAULT_MAX_FRAME = 128 * 1024 * 1024

STATUS_SUCCESS = rpc_pb.RpcResponseHeaderProto.SUCCESS
STATUS_ERROR = rpc_pb.RpcResponseHeaderProto.ERROR
STATUS_FATAL = rpc_pb.RpcResponseHeaderProto.FATAL

_LEN = struct.Struct(">I")


# --------------------------------------------------------------------------- varints


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (< 2**64)."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at `pos`: protobuf's, and Avro's
    before zig-zag. Raises IndexError when `buf` ends first, ValueError past 10 bytes.

    The one varint reader of the project: `decode_varint` (Hadoop IPC) and `read_zigzag`
    (Avro block headers) are built on it.
    """
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, position after it). Raises ProtocolError when truncated or longer than 10 bytes."""
    try:
        return read_varint(buf, pos)
    except IndexError:
        raise ProtocolError("truncated varint") from None
    except ValueError:
        raise ProtocolError("malformed varint (more than 10 bytes)") from None


def read_zigzag(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, position after it) of the zig-zag varint at `pos` (an Avro int or long, a
    protobuf sint). Raises IndexError when `buf` ends first, ValueError past 10 bytes."""
    value, pos = read_varint(buf, pos)
    return (value >> 1) ^ -(value & 1), pos


def encode_zigzag(value: int) -> bytes:
    """Zig-zag varint of a signed 64-bit integer (an Avro long)."""
    return encode_varint(((value << 1) ^ (value >> 63)) & 0xFFFF_FFFF_FFFF_FFFF)


def delimited(message: bytes) -> bytes:
    return encode_varint(len(message)) + message


def to_signed32(value: int) -> int:
    """Reply call ids are uint32 on the wire; the special ids (-3, -33...) are negative."""
    return value - (1 << 32) if value >= (1 << 31) else value


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class RpcReply:
    """One reply frame: its header fields and, on success, the response message's bytes."""

    call_id: int
    status: int
    exception_class: str = ""
    error_message: str = ""
    error_detail: int = 0
    payload: bytes = b""
    server_ipc_version: int = 0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_SUCCESS

    @property
    def fatal(self) -> bool:
        return self.status == STATUS_FATAL


def parse_frame(frame: bytes) -> RpcReply:
    """Decode one frame (without its 4-byte length)."""
    view = frame
    header_len, pos = decode_varint(view, 0)
    if pos + header_len > len(view):
        raise ProtocolError(f"reply header of {header_len} bytes overruns its {len(view)}-byte frame")
    header = rpc_pb.RpcResponseHeaderProto()
    try:
        header.ParseFromString(view[pos:pos + header_len])
    except DecodeError as exc:
        raise ProtocolError(f"undecodable reply header: {exc}") from None
    if not header.HasField("callId") or not header.HasField("status"):
        raise ProtocolError("reply header without call id or status")
    pos += header_len
    payload = b""
    if pos < len(view):
        payload_len, pos = decode_varint(view, pos)
        if pos + payload_len > len(view):
            raise ProtocolError(
                f"reply payload of {payload_len} bytes overruns its {len(view)}-byte frame")
        payload = bytes(view[pos:pos + payload_len])
    return RpcReply(
        call_id=to_signed32(header.callId),
        status=header.status,
        exception_class=header.exceptionClassName,
        error_message=header.errorMsg,
        error_detail=header.errorDetail,
        payload=payload,
        server_ipc_version=header.serverIpcVersionNum,
    )


# --------------------------------------------------------------------------- the codec


class ClientCodec:
    """Client side of one Hadoop IPC connection, without I/O.

    Outgoing: `preamble()`, `sasl(...)`, `connection_context(...)`, `call(...)` return the bytes
    to write. Incoming: `receive(data)` returns the complete replies; `eof()` says whether the
    stream ended cleanly.
    """

    def __init__(self, *, protocol: str = CLIENT_PROTOCOL, client_id: bytes | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.protocol = protocol
        self.client_id = client_id or uuid.uuid4().bytes
        if len(self.client_id) != 16:
            raise ValueError("client id must be 16 bytes")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._layer: SecurityLayer | None = None
        self._inner = bytearray()  # unwrapped reply bytes not yet a whole frame

    @property
    def layer(self) -> SecurityLayer | None:
        return self._layer

    def secure(self, layer: SecurityLayer) -> None:
        """From now on, wrap what is sent and unwrap what is received (after SASL SUCCESS)."""
        self._layer = layer

    # ---- outgoing

    @staticmethod
    def preamble(auth_protocol: int = AUTH_SIMPLE, service_class: int = 0) -> bytes:
        return b"hrpc" + bytes([IPC_VERSION, service_class & 0xFF, auth_protocol & 0xFF])

    def _header(self, call_id: int, retry_count: int = -1) -> bytes:
        header = rpc_pb.RpcRequestHeaderProto(
            rpcKind=rpc_pb.RPC_PROTOCOL_BUFFER,
            rpcOp=rpc_pb.RpcRequestHeaderProto.RPC_FINAL_PACKET,
            callId=call_id,
            clientId=self.client_id,
            retryCount=retry_count,
        )
        return delimited(header.SerializeToString())

    @staticmethod
    def _frame(*parts: bytes) -> bytes:
        body = b"".join(parts)
        return _LEN.pack(len(body)) + body

    def _packet(self, *parts: bytes) -> bytes:
        frame = self._frame(*parts)
        if self._layer is None:
            return frame
        header = self._header(SASL_CALL_ID)
        return b"".join(
            self._frame(header, delimited(
                rpc_pb.RpcSaslProto(state=rpc_pb.RpcSaslProto.WRAP, token=token)
                .SerializeToString()))
            for token in self._layer.wrap(frame))

    def connection_context(self, effective_user: str, real_user: str | None = None) -> bytes:
        user = ctx_pb.UserInformationProto(effectiveUser=effective_user)
        if real_user:
            user.realUser = real_user
        context = ctx_pb.IpcConnectionContextProto(userInfo=user, protocol=self.protocol)
        return self._packet(self._header(CONNECTION_CONTEXT_CALL_ID),
                            delimited(context.SerializeToString()))

    def sasl(self, message: Message) -> bytes:
        """A SASL negotiation message (RpcSaslProto) under the SASL call id."""
        return self._frame(self._header(SASL_CALL_ID), delimited(message.SerializeToString()))

    def call(self, call_id: int, method: str, request: bytes, retry_count: int = -1) -> bytes:
        """A call of `method` whose request message is already serialized."""
        rpc_header = engine_pb.RequestHeaderProto(
            methodName=method,
            declaringClassProtocolName=self.protocol,
            clientProtocolVersion=CLIENT_PROTOCOL_VERSION,
        )
        return self._packet(self._header(call_id, retry_count),
                            delimited(rpc_header.SerializeToString()), delimited(request))

    # ---- incoming

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf) + len(self._inner)

    def receive(self, data: bytes) -> list[RpcReply]:
        """Feed received bytes; return every reply completed by them, in order."""
        if data:
            self._buf += data
        frames = self._take_frames(self._buf)
        if self._layer is None:
            return [parse_frame(frame) for frame in frames]
        replies: list[RpcReply] = []
        for frame in frames:
            outer = parse_frame(frame)
            if outer.call_id != SASL_CALL_ID or not outer.ok:
                if outer.ok:
                    raise ProtocolError(f"reply to call {outer.call_id} not wrapped on a "
                                        "connection with SASL protection")
                replies.append(outer)  # an error the server did not wrap: pass it on
                continue
            message = rpc_pb.RpcSaslProto()
            try:
                message.ParseFromString(outer.payload)
            except DecodeError as exc:
                raise ProtocolError(f"undecodable SASL message: {exc}") from None
            if message.state != rpc_pb.RpcSaslProto.WRAP:
                raise ProtocolError("SASL message other than WRAP after the negotiation")
            self._inner += self._layer.unwrap(message.token)
            replies.extend(parse_frame(inner) for inner in self._take_frames(self._inner))
        return replies

    def _take_frames(self, buf: bytearray) -> list[bytes]:
        """Remove and return the complete length-prefixed frames at the start of `buf`."""
        frames = []
        pos = 0
        while len(buf) - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self.max_frame:
                hint = " (that looks like HTTP: is this the NameNode's HTTP port?)" \
                    if bytes(buf[pos:pos + 4]) == b"HTTP" else ""
                raise FrameTooLargeError(
                    f"reply frame of {length} bytes exceeds the {self.max_frame}-byte limit: "
                    f"not a Hadoop IPC stream{hint}")
            if len(buf) - pos - 4 < length:
                break
            start = pos + 4
            frames.append(bytes(buf[start:start + length]))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames

    def eof(self) -> None:
        """The peer closed the stream. Raises ProtocolError if it cut a reply short."""
        if self._buf or self._inner:
            n = len(self._buf) + len(self._inner)
            self._buf.clear()
            self._inner.clear()
            raise ProtocolError(f"connection closed in the middle of a reply ({n} bytes of it received)")
