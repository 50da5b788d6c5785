"""Hadoop IPC framing from bytes alone: what goes on the wire, and what comes back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hdfswatch.errors import FrameTooLargeError, ProtocolError
from hdfswatch.framing import (
    AUTH_SASL,
    CLIENT_PROTOCOL,
    CONNECTION_CONTEXT_CALL_ID,
    STATUS_ERROR,
    STATUS_FATAL,
    STATUS_SUCCESS,
    ClientCodec,
    decode_varint,
    delimited,
    encode_varint,
)
from hdfswatch.proto import IpcConnectionContext_pb2 as ctx_pb
from hdfswatch.proto import ProtobufRpcEngine2_pb2 as engine_pb
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb

CLIENT_ID = bytes(range(16))


def reply_frame(call_id: int, status: int = STATUS_SUCCESS, payload: bytes | None = None,
                exception: str = "", message: str = "") -> bytes:
    """A reply as a NameNode writes it."""
    header = rpc_pb.RpcResponseHeaderProto(callId=call_id & 0xFFFFFFFF, serverIpcVersionNum=9)
    header.status = status  # type: ignore[assignment]
    if exception:
        header.exceptionClassName = exception
        header.errorMsg = message
        header.errorDetail = rpc_pb.RpcResponseHeaderProto.ERROR_APPLICATION
    body = delimited(header.SerializeToString())
    if payload is not None:
        body += delimited(payload)
    return struct.pack(">I", len(body)) + body


def split_request(frame: bytes) -> list[bytes]:
    """A request frame's delimited parts (what a server reads)."""
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    parts, pos = [], 4
    while pos < len(frame):
        n, pos = decode_varint(frame, pos)
        parts.append(frame[pos:pos + n])
        pos += n
    return parts


def test_preamble_is_hrpc_version_9_and_the_auth_byte():
    assert ClientCodec.preamble() == b"hrpc\x09\x00\x00"
    assert ClientCodec.preamble(AUTH_SASL) == b"hrpc\x09\x00\xdf"


def test_connection_context_names_the_user_and_the_protocol():
    codec = ClientCodec(client_id=CLIENT_ID)
    header, context = split_request(codec.connection_context("alice", real_user="etl"))
    h = rpc_pb.RpcRequestHeaderProto.FromString(header)
    assert h.callId == CONNECTION_CONTEXT_CALL_ID == -3
    assert h.rpcKind == rpc_pb.RPC_PROTOCOL_BUFFER
    assert h.clientId == CLIENT_ID
    c = ctx_pb.IpcConnectionContextProto.FromString(context)
    assert (c.userInfo.effectiveUser, c.userInfo.realUser) == ("alice", "etl")
    assert c.protocol == CLIENT_PROTOCOL


def test_call_id_is_zigzag_encoded_as_sint32_on_the_wire():
    codec = ClientCodec(client_id=CLIENT_ID)
    header, _, _ = split_request(codec.call(1, "getFileInfo", b""))
    # field 3, varint: tag 0x18; sint32 1 -> zigzag 2
    assert b"\x18\x02" in header
    header, _, _ = split_request(codec.call(-3, "x", b""))
    assert b"\x18\x05" in header


def test_call_carries_method_protocol_and_request():
    codec = ClientCodec(client_id=CLIENT_ID)
    header, rpc, request = split_request(codec.call(7, "getListing", b"\x0a\x01/", retry_count=2))
    h = rpc_pb.RpcRequestHeaderProto.FromString(header)
    assert (h.callId, h.retryCount, h.clientId) == (7, 2, CLIENT_ID)
    r = engine_pb.RequestHeaderProto.FromString(rpc)
    assert (r.methodName, r.declaringClassProtocolName, r.clientProtocolVersion) == (
        "getListing", CLIENT_PROTOCOL, 1)
    assert request == b"\x0a\x01/"


def test_replies_are_matched_to_call_ids_and_negative_ids_come_back_negative():
    codec = ClientCodec()
    data = (reply_frame(5, payload=b"\x08\x2a") + reply_frame(-33, payload=b"")
            + reply_frame(6, STATUS_ERROR, exception="java.io.FileNotFoundException",
                          message="File /x does not exist."))
    r1, r2, r3 = codec.receive(data)
    assert (r1.call_id, r1.ok, r1.payload) == (5, True, b"\x08\x2a")
    assert r2.call_id == -33
    assert (r3.call_id, r3.ok, r3.exception_class) == (6, False, "java.io.FileNotFoundException")
    assert r3.error_message == "File /x does not exist."
    assert codec.buffered == 0


def test_a_reply_split_at_every_byte_is_put_back_together():
    frames = reply_frame(1, payload=b"a" * 300) + reply_frame(2, payload=b"")
    codec = ClientCodec()
    got = []
    for i in range(len(frames)):
        got += codec.receive(frames[i:i + 1])
    assert [(r.call_id, r.payload) for r in got] == [(1, b"a" * 300), (2, b"")]
    codec.eof()


def test_fatal_replies_are_flagged():
    (reply,) = ClientCodec().receive(reply_frame(-1, STATUS_FATAL, exception="x.Fatal", message="m"))
    assert reply.fatal and not reply.ok and reply.call_id == -1


def test_truncated_stream_is_an_error_at_eof_not_a_hang():
    codec = ClientCodec()
    frame = reply_frame(1, payload=b"abcdef")
    assert codec.receive(frame[:-3]) == []
    with pytest.raises(ProtocolError, match="middle of a reply"):
        codec.eof()


def test_http_on_the_ipc_port_is_named():
    with pytest.raises(FrameTooLargeError, match="HTTP port"):
        ClientCodec().receive(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def test_oversized_frames_are_refused():
    with pytest.raises(FrameTooLargeError):
        ClientCodec(max_frame=1024).receive(struct.pack(">I", 4096) + b"x" * 10)


@pytest.mark.parametrize("frame", [
    b"\x00\x00\x00\x02\xff\xff",                       # varint runs off the frame
    b"\x00\x00\x00\x03\x05\x01\x02",                   # header longer than the frame
    b"\x00\x00\x00\x03\x02\xff\xff",                   # header bytes that are not protobuf
    b"\x00\x00\x00\x01\x00",                           # empty header: no call id, no status
    b"\x00\x00\x00\x0b" + b"\xff" * 11,                # an endless varint
])
def test_garbage_frames_raise_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        ClientCodec().receive(frame)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value):
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"tail") == (value, len(encoded))


@given(st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1]),
                          st.binary(max_size=200)), max_size=20),
       st.integers(min_value=1, max_value=64))
def test_reply_stream_round_trip_in_any_chunking(replies, chunk):
    data = b"".join(reply_frame(cid, status, payload if status == STATUS_SUCCESS else None,
                                exception="" if status == STATUS_SUCCESS else "E", message="m")
                    for cid, status, payload in replies)
    codec = ClientCodec()
    got = []
    for i in range(0, len(data), chunk):
        got += codec.receive(data[i:i + chunk])
    codec.eof()
    assert [(r.call_id, r.status) for r in got] == [(c, s) for c, s, _ in replies]
    assert [r.payload for r in got if r.ok] == [p for _, s, p in replies if s == STATUS_SUCCESS]


@given(st.binary(max_size=300))
def test_random_bytes_never_hang_and_fail_only_with_protocol_errors(data):
    codec = ClientCodec(max_frame=1 << 16)
    try:
        codec.receive(data)
        codec.eof()
    except ProtocolError:
        pass
