"""The NameNode edit stream as typed values, and their decoding from the wire (sans-IO).

`getEditsFromTxid` answers with an `EventsList`: batches of events, one batch per edit-log
transaction that produced events, plus the range of transactions the reply covers. The seven
event types of HDFS inotify are frozen dataclasses here; `decode_events_list` turns the reply's
bytes into them. A `Gap` is not on the wire: the tailer makes one when the NameNode no longer
holds the transactions asked for.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from hdfswatch.errors import ProtocolError
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp_pb
from hdfswatch.proto import inotify_pb2 as ino_pb


class INodeType(enum.IntEnum):
    FILE = 0
    DIRECTORY = 1
    SYMLINK = 2


class MetadataType(enum.IntEnum):
    TIMES = 0
    REPLICATION = 1
    OWNER = 2
    PERMS = 3
    ACLS = 4
    XATTRS = 5


class EventType(enum.IntEnum):
    CREATE = 0
    CLOSE = 1
    APPEND = 2
    RENAME = 3
    METADATA = 4
    UNLINK = 5
    TRUNCATE = 6


@dataclass(frozen=True, slots=True)
class CreateEvent:
    """A file, directory or symlink was created (a file is still open for writing)."""

    path: str
    inode_type: INodeType | int
    ctime: int
    owner: str
    group: str
    perms: int
    replication: int = 0
    symlink_target: str = ""
    overwrite: bool = False
    default_block_size: int = 0
    erasure_coded: bool = False


@dataclass(frozen=True, slots=True)
class CloseEvent:
    """A file was closed: its writer finished. `file_size` is -1 after a concat."""

    path: str
    file_size: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class AppendEvent:
    """A closed file was reopened for appending."""

    path: str
    new_block: bool = False


@dataclass(frozen=True, slots=True)
class RenameEvent:
    """A file or a directory (with everything under it) moved."""

    src_path: str
    dest_path: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class MetadataEvent:
    """Times, replication, owner, permissions, ACLs or xattrs changed."""

    path: str
    metadata_type: MetadataType | int
    mtime: int = 0
    atime: int = 0
    replication: int = 0
    owner: str = ""
    group: str = ""
    perms: int | None = None
    xattrs_removed: bool = False


@dataclass(frozen=True, slots=True)
class UnlinkEvent:
    """A file or a directory (with everything under it) was deleted."""

    path: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class TruncateEvent:
    """A file was truncated to `file_size` bytes."""

    path: str
    file_size: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """An event type this version does not know (a newer NameNode); kept, not dropped."""

    event_type: int
    contents: bytes


Event = (CreateEvent | CloseEvent | AppendEvent | RenameEvent | MetadataEvent | UnlinkEvent
         | TruncateEvent | UnknownEvent)


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events of one edit-log transaction."""

    txid: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Gap:
    """Transactions `requested_txid` .. `first_available_txid - 1` are no longer in the edit log:
    their events are lost, and the sources must be reconciled by a listing."""

    requested_txid: int
    first_available_txid: int

    @property
    def missed(self) -> int:
        return self.first_available_txid - self.requested_txid


@dataclass(frozen=True, slots=True)
class EventsList:
    """One `getEditsFromTxid` reply.

    `first_txid`/`last_txid` bound the transactions the reply read (-1 when it read none; they
    advance even when no transaction produced an event), `sync_txid` is the last transaction
    the NameNode has made durable.
    """

    first_txid: int
    last_txid: int
    sync_txid: int
    batches: tuple[EventBatch, ...]

    @property
    def event_count(self) -> int:
        return sum(len(b.events) for b in self.batches)


# --------------------------------------------------------------------------- decoding


def _constructor(cls: type) -> Any:
    """A function building instances of the frozen, slotted dataclass `cls` from all its fields
    in order, the same objects its `__init__` builds.

    Decoding is the tailer's hot path, and a frozen dataclass's generated `__init__` sets each
    field through `object.__setattr__`, which costs several times more than storing into the
    slot directly. Generated like dataclasses generates `__init__`, with the slot setters bound.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    obj = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = getattr(cls, name).__set__
        lines.append(f"    _set{i}(obj, {name})")
    lines.append("    return obj")
    exec("\n".join(lines), env)
    return env["make"]


_new_create = _constructor(CreateEvent)
_new_close = _constructor(CloseEvent)
_new_append = _constructor(AppendEvent)
_new_rename = _constructor(RenameEvent)
_new_metadata = _constructor(MetadataEvent)
_new_unlink = _constructor(UnlinkEvent)
_new_truncate = _constructor(TruncateEvent)
_new_batch = _constructor(EventBatch)

_INODE_TYPES = {m.value: m for m in INodeType}
_META_TYPES = {m.value: m for m in MetadataType}

_CreateP = ino_pb.CreateEventProto.FromString
_CloseP = ino_pb.CloseEventProto.FromString
_AppendP = ino_pb.AppendEventProto.FromString
_RenameP = ino_pb.RenameEventProto.FromString
_MetaP = ino_pb.MetadataUpdateEventProto.FromString
_UnlinkP = ino_pb.UnlinkEventProto.FromString
_TruncateP = ino_pb.TruncateEventProto.FromString


def _create(data: bytes) -> CreateEvent:
    m = _CreateP(data)
    t = m.type
    return _new_create(m.path, _INODE_TYPES.get(t, t), m.ctime, m.ownerName, m.groupName,
                       m.perms.perm, m.replication, m.symlinkTarget, m.overwrite,
                       m.defaultBlockSize, m.erasureCoded)


def _close(data: bytes) -> CloseEvent:
    m = _CloseP(data)
    return _new_close(m.path, m.fileSize, m.timestamp)


def _append(data: bytes) -> AppendEvent:
    m = _AppendP(data)
    return _new_append(m.path, m.newBlock)


def _rename(data: bytes) -> RenameEvent:
    m = _RenameP(data)
    return _new_rename(m.srcPath, m.destPath, m.timestamp)


def _metadata(data: bytes) -> MetadataEvent:
    m = _MetaP(data)
    t = m.type
    return _new_metadata(m.path, _META_TYPES.get(t, t), m.mtime, m.atime, m.replication,
                         m.ownerName, m.groupName,
                         m.perms.perm if m.HasField("perms") else None, m.xAttrsRemoved)


def _unlink(data: bytes) -> UnlinkEvent:
    m = _UnlinkP(data)
    return _new_unlink(m.path, m.timestamp)


def _truncate(data: bytes) -> TruncateEvent:
    m = _TruncateP(data)
    return _new_truncate(m.path, m.fileSize, m.timestamp)


_DECODERS: dict[int, Any] = {
    EventType.CREATE: _create,
    EventType.CLOSE: _close,
    EventType.APPEND: _append,
    EventType.RENAME: _rename,
    EventType.METADATA: _metadata,
    EventType.UNLINK: _unlink,
    EventType.TRUNCATE: _truncate,
}


def decode_event(event_type: int, contents: bytes) -> Event:
    """One event from its type and serialized contents."""
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return UnknownEvent(event_type, contents)
    try:
        event: Event = decoder(contents)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable {EventType(event_type).name} event: {exc}") from None
    return event


def events_list_from_proto(msg: ino_pb.EventsListProto) -> EventsList:
    decoders = _DECODERS
    batches = []
    try:
        for b in msg.batch:
            events: list[Event] = []
            for e in b.events:
                t = e.type
                decoder = decoders.get(t)
                events.append(decoder(e.contents) if decoder is not None
                              else UnknownEvent(t, e.contents))
            batches.append(_new_batch(b.txid, tuple(events)))
    except DecodeError as exc:
        raise ProtocolError(f"undecodable event in the edit stream: {exc}") from None
    return EventsList(msg.firstTxid, msg.lastTxid, msg.syncTxid, tuple(batches))


def decode_events_list(data: bytes) -> EventsList:
    """Decode a serialized `EventsListProto`."""
    msg = ino_pb.EventsListProto()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable edit-stream reply: {exc}") from None
    return events_list_from_proto(msg)


def decode_edits_reply(data: bytes) -> EventsList:
    """Decode the response message of `getEditsFromTxid` (GetEditsFromTxidResponseProto)."""
    msg = cnp_pb.GetEditsFromTxidResponseProto()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable getEditsFromTxid reply: {exc}") from None
    if not msg.HasField("eventsList"):
        raise ProtocolError("getEditsFromTxid reply without an events list")
    return events_list_from_proto(msg.eventsList)


def event_name(event: Event) -> str:
    """Lower-case event type name ('create', 'close', ...), as printed by `hdfs2kafka watch`."""
    return _NAMES.get(type(event), "unknown")


_NAMES: dict[type, str] = {
    CreateEvent: "create", CloseEvent: "close", AppendEvent: "append", RenameEvent: "rename",
    MetadataEvent: "metadata", UnlinkEvent: "unlink", TruncateEvent: "truncate",
    UnknownEvent: "unknown",
}
