"""One asyncio connection to a Hadoop IPC server: it reads, writes, times out, and nothing more.

Framing and message codecs live in `hdfswatch.framing`; this module moves their bytes. A
connection is opened in three steps, in this order: preamble, authentication (`Authenticator`:
SIMPLE sends nothing; SASL mechanisms such as Kerberos exchange `RpcSaslProto` messages here),
connection context. Many calls may be in flight at once; each gets its own call id and its
reply is matched by that id. When the connection breaks, every outstanding call fails with
`ConnectionLostError` and the connection is closed for good; reconnecting and failing over are
the NameNode client's business.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from hdfswatch.errors import (
    AUTHORIZATION_FAILED_CALL_ID,
    AuthenticationError,
    CallTimeoutError,
    ConnectionLostError,
    HdfsWatchError,
    NameNodeConnectError,
    ProtocolError,
    RemoteError,
    auth_refusal,
    remote_error,
)
from hdfswatch.framing import (
    AUTH_SASL,
    AUTH_SIMPLE,
    CLIENT_PROTOCOL,
    DEFAULT_MAX_FRAME,
    SASL_CALL_ID,
    ClientCodec,
    RpcReply,
)
from hdfswatch.proto import RpcHeader_pb2 as rpc_pb
from hdfswatch.sasl import QOP_PROTECTION, SecurityLayer

M = TypeVar("M", bound=Message)

_READ_CHUNK = 256 * 1024
_MAX_CALL_ID = 0x7FFFFFFF


class Authenticator(Protocol):
    """How a connection proves who it is.

    `auth_protocol` goes into the preamble (0 = none/SIMPLE, -33 = SASL); `negotiate` runs
    right after it, before the connection context, and may exchange SASL messages through
    `IpcConnection.sasl_exchange`, then tell the connection what protection it negotiated
    (`IpcConnection.authenticated`). `effective_user` is read after `negotiate`.
    """

    auth_protocol: int
    effective_user: str
    real_user: str | None

    async def negotiate(self, connection: IpcConnection) -> None: ...


class SimpleAuth:
    """SIMPLE authentication: the server trusts the user name the client declares."""

    auth_protocol = AUTH_SIMPLE

    def __init__(self, user: str, real_user: str | None = None) -> None:
        self.effective_user = user
        self.real_user = real_user

    async def negotiate(self, connection: IpcConnection) -> None:
        return None


class IpcConnection:
    """A connected, authenticated Hadoop IPC connection to one server."""

    def __init__(self, host: str, port: int, auth: Authenticator, *,
                 protocol: str = CLIENT_PROTOCOL, connect_timeout: float = 5.0,
                 max_frame: int = DEFAULT_MAX_FRAME, client_id: bytes | None = None) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._auth = auth
        self._connect_timeout = connect_timeout
        self._codec = ClientCodec(protocol=protocol, client_id=client_id, max_frame=max_frame)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[asyncio.Future[RpcReply], str]] = {}
        self._next_id = 0
        self._read_task: asyncio.Task[None] | None = None
        self._broken: BaseException | None = None
        self._closed = False
        self.qop: int | None = None
        """The SASL protection negotiated (sasl.QOP_* bit); None with SIMPLE authentication."""

    @property
    def usable(self) -> bool:
        return self._writer is not None and not self._closed and self._broken is None

    @property
    def protection(self) -> str | None:
        """`hadoop.rpc.protection` as negotiated: "authentication", "integrity", "privacy", or
        None with SIMPLE authentication."""
        return None if self.qop is None else QOP_PROTECTION[self.qop]

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def open(self) -> None:
        """Connect, send the preamble, authenticate, send the connection context."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port,
                                                               limit=_READ_CHUNK)
        except TimeoutError:
            raise NameNodeConnectError(
                f"{self.address}: no connection within {self._connect_timeout:g}s") from None
        except OSError as exc:
            raise NameNodeConnectError(f"{self.address}: {exc.strerror or exc}") from None
        self._reader, self._writer = reader, writer
        try:
            writer.write(self._codec.preamble(self._auth.auth_protocol))
            await self._auth.negotiate(self)
            writer.write(self._codec.connection_context(self._auth.effective_user,
                                                        self._auth.real_user))
            await writer.drain()
        except OSError as exc:
            refusal = await self._refusal()
            await self.close()
            if refusal is not None:
                raise refusal from None
            raise ConnectionLostError(f"{self.address}: {exc}") from None
        except BaseException:
            await self.close()
            raise
        self._read_task = asyncio.get_running_loop().create_task(
            self._read_loop(), name=f"hdfswatch-ipc-read-{self.address}")

    async def _refusal(self, wait: float = 1.0) -> AuthenticationError | None:
        """After a write failed: the server's reason, if it refused our authentication and
        closed (its reply may still be unread)."""
        if self._reader is None:
            return None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait):
                data = await self._reader.read(_READ_CHUNK)
            for reply in self._codec.receive(data):
                if reply.fatal and reply.call_id == AUTHORIZATION_FAILED_CALL_ID:
                    return auth_refusal(reply.exception_class, reply.error_message,
                                        kerberos=self._auth.auth_protocol == AUTH_SASL)
        return None

    async def sasl_exchange(self, message: rpc_pb.RpcSaslProto,
                            reply_timeout: float = 30.0) -> rpc_pb.RpcSaslProto:
        """Send one SASL message and read the server's answer (only during `negotiate`)."""
        if self._writer is None or self._reader is None or self._read_task is not None:
            raise ProtocolError("SASL messages are exchanged only while the connection opens")
        self._writer.write(self._codec.sasl(message))
        await self._writer.drain()
        while True:
            async with asyncio.timeout(reply_timeout):
                data = await self._reader.read(_READ_CHUNK)
            if not data:
                self._codec.eof()
                raise ConnectionLostError(f"{self.address}: closed during SASL negotiation")
            for reply in self._codec.receive(data):
                if not reply.ok:
                    raise auth_refusal(reply.exception_class, reply.error_message,
                                       kerberos=self._auth.auth_protocol == AUTH_SASL)
                if reply.call_id != SASL_CALL_ID:
                    raise ProtocolError(f"reply to call {reply.call_id} during SASL negotiation")
                answer = rpc_pb.RpcSaslProto()
                try:
                    answer.ParseFromString(reply.payload)
                except DecodeError as exc:
                    raise ProtocolError(f"undecodable SASL message: {exc}") from None
                return answer

    def authenticated(self, qop: int | None, layer: SecurityLayer | None) -> None:
        """The SASL negotiation ended with protection `qop`; with a `layer` (integrity or
        privacy), everything sent and received from now on is wrapped."""
        self.qop = qop
        if layer is not None:
            self._codec.secure(layer)

    def _allocate_id(self) -> int:
        call_id = self._next_id
        self._next_id = 0 if call_id >= _MAX_CALL_ID else call_id + 1
        return call_id

    async def call_raw(self, method: str, request: bytes, *, reply_timeout: float | None = None,
                       user: str | None = None) -> bytes:
        """Call `method` with a serialized request; return the serialized response.

        Raises a `RemoteError` subclass for an error reply, `CallTimeoutError` when no reply
        comes within `timeout` seconds, `ConnectionLostError` when the connection breaks.
        """
        if isinstance(self._broken, AuthenticationError):
            raise self._broken
        if not self.usable or self._writer is None:
            raise ConnectionLostError(f"{self.address}: connection is closed") from self._broken
        call_id = self._allocate_id()
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = (future, method)
        try:
            self._writer.write(self._codec.call(call_id, method, request))
            # Not `asyncio.wait_for`: on Python 3.11 it returns a reply that came in the same
            # moment as a cancellation and so swallows the cancellation (a tailer that will not
            # stop). `asyncio.timeout` lets a cancellation through.
            async with asyncio.timeout(reply_timeout):
                reply = await future
        except TimeoutError:
            raise CallTimeoutError(
                f"{method} on {self.address}: no reply within {reply_timeout:g}s") from None
        finally:
            self._pending.pop(call_id, None)
        if not reply.ok:
            raise remote_error(reply.exception_class, reply.error_message, method=method,
                               user=user or self._auth.effective_user, fatal=reply.fatal)
        return reply.payload

    async def call(self, method: str, request: Message, response: type[M], *,
                   reply_timeout: float | None = None) -> M:
        """Call `method`; parse the reply as `response`."""
        payload = await self.call_raw(method, request.SerializeToString(),
                                      reply_timeout=reply_timeout)
        return parse_reply(method, payload, response)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reader = self._reader
        try:
            while True:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    self._codec.eof()
                    raise ConnectionLostError(f"{self.address}: connection closed by the server")
                for reply in self._codec.receive(data):
                    if reply.fatal and reply.call_id == AUTHORIZATION_FAILED_CALL_ID:
                        # The server refused who we said we are (e.g. SIMPLE to a Kerberos
                        # NameNode): every call on this connection fails with that reason.
                        raise auth_refusal(reply.exception_class, reply.error_message,
                                           kerberos=self._auth.auth_protocol == AUTH_SASL)
                    self._dispatch(reply)
                    if reply.fatal:
                        raise remote_error(reply.exception_class, reply.error_message,
                                           fatal=True)
        except asyncio.CancelledError:
            self._fail_all(ConnectionLostError(f"{self.address}: connection closed"))
            raise
        except (OSError, HdfsWatchError) as exc:
            if isinstance(exc, OSError):
                exc = ConnectionLostError(f"{self.address}: {exc.strerror or exc}")
            elif isinstance(exc, ProtocolError | RemoteError):
                exc = ConnectionLostError(f"{self.address}: {exc}")
            self._fail_all(exc)
        finally:
            self._close_transport()

    def _dispatch(self, reply: RpcReply) -> None:
        entry = self._pending.get(reply.call_id)
        if entry is None:
            return  # the caller gave up (timeout); its late reply is dropped
        future, _method = entry
        if not future.done():
            future.set_result(reply)

    def _fail_all(self, exc: BaseException) -> None:
        self._broken = exc
        for future, _method in list(self._pending.values()):
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _close_transport(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()

    async def close(self) -> None:
        """Close the connection; outstanding calls fail with ConnectionLostError."""
        if self._closed:
            return
        self._closed = True
        task = self._read_task
        try:
            if task is not None and not task.done():
                task.cancel()
                # `wait`, not `await task`: the read task's end is no error here, while a
                # cancellation of the caller itself must go on through.
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieved: its failure reached the calls already
        finally:
            self._fail_all(ConnectionLostError(f"{self.address}: connection closed"))
            self._close_transport()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()


def parse_reply(method: str, payload: bytes, response: type[M]) -> M:
    """The reply of `method` parsed as `response`; ProtocolError if it does not parse."""
    msg = response()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable {method} reply: {exc}") from None
    return msg
