"""The asyncio connection and the client's failover, against small in-process servers that
speak Hadoop IPC framing (no HDFS: what is tested is our side of the socket)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hdfswatch.connection import IpcConnection, SimpleAuth
from hdfswatch.errors import (
    CallTimeoutError,
    ConnectionLostError,
    FileNotFound,
    NameNodeUnavailableError,
    StandbyError,
)
from hdfswatch.framing import STATUS_ERROR, STATUS_SUCCESS, RpcReply, decode_varint, delimited
from hdfswatch.namenode import NameNodeClient
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp
from hdfswatch.proto import IpcConnectionContext_pb2 as ctx_pb
from hdfswatch.proto import ProtobufRpcEngine2_pb2 as engine_pb
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb

Call = tuple[int, str, bytes]  # call id, method, request bytes


def reply(call_id: int, payload: bytes = b"", exception: str = "", message: str = "") -> bytes:
    header = rpc_pb.RpcResponseHeaderProto(
        callId=call_id & 0xFFFFFFFF, status=STATUS_ERROR if exception else STATUS_SUCCESS)
    if exception:
        header.exceptionClassName, header.errorMsg = exception, message
    body = delimited(header.SerializeToString()) + (b"" if exception else delimited(payload))
    return struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> list[bytes]:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    frame = await reader.readexactly(length)
    parts, pos = [], 0
    while pos < len(frame):
        n, pos = decode_varint(frame, pos)
        parts.append(frame[pos:pos + n])
        pos += n
    return parts


class FakeServer:
    """Checks the handshake, then hands each call to `handler(call, writer)`."""

    def __init__(self, handler: Callable[[Call, asyncio.StreamWriter],
                                         Coroutine[Any, Any, None]]) -> None:
        self.handler = handler
        self.users: list[str] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        assert self.server is not None
        self.server.close()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert await reader.readexactly(7) == b"hrpc\x09\x00\x00"
            header, context = await read_frame(reader)
            assert rpc_pb.RpcRequestHeaderProto.FromString(header).callId == -3
            self.users.append(ctx_pb.IpcConnectionContextProto.FromString(context)
                              .userInfo.effectiveUser)
            while True:
                header, rpc, request = await read_frame(reader)
                call_id = rpc_pb.RpcRequestHeaderProto.FromString(header).callId
                method = engine_pb.RequestHeaderProto.FromString(rpc).methodName
                asyncio.get_running_loop().create_task(
                    self.handler((call_id, method, request), writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def conn_to(server: FakeServer) -> IpcConnection:
    host, port = server.address.split(":")
    return IpcConnection(host, int(port), SimpleAuth("alice"), connect_timeout=2)


async def test_concurrent_calls_get_their_own_replies_in_any_order():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        call_id, _, request = call
        await asyncio.sleep(0.05 * (3 - call_id))  # later calls answered first
        writer.write(reply(call_id, request[::-1]))

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        results = await asyncio.gather(*(conn.call_raw("echo", b"req-%d" % i, reply_timeout=5)
                                         for i in range(4)))
        await conn.close()
    assert results == [(b"req-%d" % i)[::-1] for i in range(4)]
    assert server.users == ["alice"]


async def test_error_replies_become_typed_exceptions():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(reply(call[0], exception="java.io.FileNotFoundException",
                           message="File /x does not exist.\n\tat org.apache..."))

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        with pytest.raises(FileNotFound) as err:
            await conn.call_raw("getListing", b"", reply_timeout=5)
        await conn.close()
    assert err.value.exception_class == "java.io.FileNotFoundException"
    assert err.value.method == "getListing"
    assert str(err.value) == "FileNotFoundException in getListing: File /x does not exist."


async def test_a_call_without_reply_times_out_and_the_connection_stays_usable():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        if call[1] == "slow":
            return
        writer.write(reply(call[0], b"ok"))

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        with pytest.raises(CallTimeoutError):
            await conn.call_raw("slow", b"", reply_timeout=0.1)
        assert await conn.call_raw("fast", b"", reply_timeout=5) == b"ok"
        assert conn.in_flight == 0
        await conn.close()


async def test_a_call_cancelled_as_its_reply_arrives_is_cancelled():
    """A tailer told to stop in the very moment a reply comes in stops: the cancellation is
    not traded for the reply (what `asyncio.wait_for` does on Python 3.11)."""
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        return  # the reply is handed in below, at the moment of the cancellation

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        call = asyncio.create_task(conn.call_raw("m", b"", reply_timeout=5))
        while not conn.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        (call_id,) = conn._pending
        conn._dispatch(RpcReply(call_id=call_id, status=STATUS_SUCCESS, payload=b"ok"))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await conn.close()


async def test_closing_a_connection_does_not_swallow_the_closers_cancellation():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        return

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        closing = asyncio.create_task(conn.close())
        await asyncio.sleep(0)  # it is waiting for its read task to end
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing


async def test_a_server_dying_mid_reply_fails_the_calls_instead_of_hanging():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(reply(call[0], b"x" * 100)[:30])
        await writer.drain()
        writer.close()

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        with pytest.raises(ConnectionLostError, match="middle of a reply"):
            await asyncio.wait_for(conn.call_raw("m", b"", reply_timeout=5), 5)
        assert not conn.usable
        with pytest.raises(ConnectionLostError):
            await conn.call_raw("m", b"")
        await conn.close()


async def test_garbage_from_the_server_fails_the_calls():
    async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with FakeServer(handler) as server:
        conn = conn_to(server)
        await conn.open()
        with pytest.raises(ConnectionLostError, match="HTTP"):
            await asyncio.wait_for(conn.call_raw("m", b"", reply_timeout=5), 5)
        await conn.close()


def txid_reply(call_id: int, txid: int) -> bytes:
    return reply(call_id, cnp.GetCurrentEditLogTxidResponseProto(txid=txid).SerializeToString())


async def test_a_standby_namenode_moves_the_client_to_the_next_one():
    async def standby(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(reply(call[0], exception="org.apache.hadoop.ipc.StandbyException",
                           message="Operation category READ is not supported in state standby"))

    async def active(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(txid_reply(call[0], 42))

    async with FakeServer(standby) as s1, FakeServer(active) as s2:
        async with NameNodeClient([s1.address, s2.address], "etl", retry_for=5) as client:
            assert await client.get_current_txid() == 42
            assert client.active_address == s2.address
            assert client.failovers == 1
            assert await client.get_current_txid() == 42
            assert client.failovers == 1
    assert s2.users == ["etl"]


async def test_no_active_namenode_within_the_budget_is_a_clear_error():
    async def standby(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(reply(call[0], exception="org.apache.hadoop.ipc.StandbyException",
                           message="standby"))

    async with FakeServer(standby) as s1:
        first = s1.address
        async with NameNodeClient([first, "127.0.0.1:9"], "etl", retry_for=0.5,
                                  connect_timeout=0.2) as client:
            with pytest.raises(NameNodeUnavailableError) as err:
                await client.get_current_txid()
    assert set(err.value.attempts) == {first, "127.0.0.1:9"}
    assert err.value.attempts[first] == "standby"
    assert "no active NameNode answered within 0.5s" in str(err.value)
    assert isinstance(err.value.__cause__, StandbyError | ConnectionLostError)


async def test_a_dropped_connection_is_reopened_for_the_next_call():
    calls = 0

    async def flaky(call: Call, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.close()  # connection reset before answering
            return
        writer.write(txid_reply(call[0], 7))

    async with FakeServer(flaky) as server:
        async with NameNodeClient([server.address], "etl", retry_for=5) as client:
            assert await client.get_current_txid() == 7
            assert client.connects == 2


async def test_concurrent_calls_failing_together_fail_over_once():
    async def dying(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def active(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(txid_reply(call[0], 5))

    async with FakeServer(dying) as s1, FakeServer(active) as s2:
        async with NameNodeClient([s1.address, s2.address], "etl", retry_for=5) as client:
            results = await asyncio.gather(*(client.get_current_txid() for _ in range(10)))
            assert results == [5] * 10
            assert client.active_address == s2.address
            assert client.failovers == 1


async def test_a_failover_is_counted_once_and_names_the_new_active():
    """nn1 answers, then turns standby while nn2 takes over: the client follows, counts one
    failover however many standby answers it met on the way, and names the active by its id."""
    state = {"active": "nn1"}

    def namenode(name: str):  # type: ignore[no-untyped-def]
        async def handler(call: Call, writer: asyncio.StreamWriter) -> None:
            if state["active"] == name:
                writer.write(txid_reply(call[0], 100))
            else:
                writer.write(reply(call[0], exception="org.apache.hadoop.ipc.StandbyException",
                                   message="standby"))
        return handler

    async with FakeServer(namenode("nn1")) as s1, FakeServer(namenode("nn2")) as s2:
        names = {s1.address: "nn1", s2.address: "nn2"}
        async with NameNodeClient([s1.address, s2.address], "etl", retry_for=10,
                                  names=names) as client:
            assert client.active is None
            await client.get_current_txid()
            assert (client.active, client.active_changes) == (s1.address, 0)
            state["active"] = "none"  # both standby for a while: rounds of standby answers
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, state.update, {"active": "nn2"})
            await client.get_current_txid()
            assert client.active == s2.address
            assert client.name_of(client.active) == "nn2"
            assert client.active_changes == 1
            assert client.failovers > 1  # moves between addresses, standbys included
            await client.get_current_txid()
            assert client.active_changes == 1


async def test_a_new_active_is_found_soon_after_a_long_failover():
    """While every NameNode answers standby, rounds back off to at most failover_backoff_max,
    not to backoff_max: the new active answers within that of becoming active."""
    state = {"active": False, "since": 0.0}

    async def standby(call: Call, writer: asyncio.StreamWriter) -> None:
        writer.write(reply(call[0], exception="org.apache.hadoop.ipc.StandbyException",
                           message="standby"))

    async def later(call: Call, writer: asyncio.StreamWriter) -> None:
        if state["active"]:
            writer.write(txid_reply(call[0], 7))
        else:
            await standby(call, writer)

    def activate() -> None:
        state.update(active=True, since=asyncio.get_running_loop().time())

    async with FakeServer(standby) as s1, FakeServer(later) as s2:
        async with NameNodeClient([s1.address, s2.address], "etl", retry_for=20,
                                  backoff_max=10, failover_backoff_max=0.3) as client:
            loop = asyncio.get_running_loop()
            loop.call_later(3.0, activate)  # long enough for backoff_max's delays to grow
            assert await client.get_current_txid() == 7
            assert loop.time() - state["since"] < 0.6
