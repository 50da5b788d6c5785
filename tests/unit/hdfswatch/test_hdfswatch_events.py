"""Edit-stream decoding from bytes: a reply recorded from a real NameNode, round trips of every
event type, and broken input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hdfswatch.errors import ProtocolError
from hdfswatch.events import (
    AppendEvent,
    CloseEvent,
    CreateEvent,
    EventBatch,
    EventType,
    INodeType,
    MetadataEvent,
    MetadataType,
    RenameEvent,
    TruncateEvent,
    UnknownEvent,
    UnlinkEvent,
    decode_edits_reply,
    decode_event,
    decode_events_list,
)
from hdfswatch.proto import ClientNamenodeProtocol_pb2 as cnp
from hdfswatch.proto import inotify_pb2 as ino

FIXTURES = Path(__file__).parent / "fixtures"


def recorded_replies() -> list[bytes]:
    """Replies saved by bench/record_edit_stream.py: 4-byte length + response message."""
    data = (FIXTURES / "edits-replies.bin").read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def test_a_recorded_real_reply_decodes_to_all_seven_event_types():
    (reply,) = recorded_replies()
    events = decode_edits_reply(reply)
    assert (events.first_txid, events.last_txid, events.sync_txid) == (2522, 2538, 2538)
    base = "/bench/edit-stream/c4a1db6b"
    tail = [(b.txid, e) for b in events.batches[3:] for e in b.events]
    assert tail == [
        (2525, CreateEvent(f"{base}/a.parquet._COPYING_", INodeType.FILE, 1795636369550, "root",
                           "supergroup", 0o644, 1, "", True, 134217728, False)),
        (2529, CloseEvent(f"{base}/a.parquet._COPYING_", 10, 1795636369584)),
        (2530, RenameEvent(f"{base}/a.parquet._COPYING_", f"{base}/a.parquet", 1795636369600)),
        (2531, MetadataEvent(f"{base}/a.parquet", MetadataType.PERMS, perms=0o600)),
        (2532, AppendEvent(f"{base}/a.parquet", False)),
        (2535, CloseEvent(f"{base}/a.parquet", 13, 1795636370109)),
        (2537, TruncateEvent(f"{base}/a.parquet", 4, 1795636370121)),
        (2538, UnlinkEvent(f"{base}/a.parquet", 1795636370130)),
    ]
    assert events.batches[0].events[0].inode_type == INodeType.DIRECTORY
    # Transactions without events (block allocations...) leave holes in the txids.
    assert [b.txid for b in events.batches][3:5] == [2525, 2529]


def test_decoded_events_are_frozen_and_hashable():
    (reply,) = recorded_replies()
    for batch in decode_edits_reply(reply).batches:
        for event in batch.events:
            fields = list(event.__dataclass_fields__)
            with pytest.raises(AttributeError):
                setattr(event, fields[0], "/y")
            rebuilt = type(event)(*(getattr(event, f) for f in fields))
            assert rebuilt == event and hash(rebuilt) == hash(event)


def test_every_truncation_of_a_reply_fails_cleanly_or_yields_a_prefix():
    (reply,) = recorded_replies()
    full = [(b.txid, b.events) for b in decode_edits_reply(reply).batches]
    for cut in range(len(reply)):
        try:
            got = decode_edits_reply(reply[:cut])
        except ProtocolError:
            continue
        # Protobuf has no end marker: a cut between two fields parses, with fewer batches.
        pairs = [(b.txid, b.events) for b in got.batches]
        assert pairs == full[:len(pairs)] or (pairs and pairs[:-1] == full[:len(pairs) - 1])


@pytest.mark.parametrize("garbage", [b"\xff" * 20, b"\x0a\xff\xff\xff\xff\x0f", b"\x2a\x05ab",
                                     bytes(range(256))])
def test_garbage_is_a_protocol_error(garbage):
    with pytest.raises(ProtocolError):
        decode_edits_reply(garbage)


def test_an_undecodable_event_body_is_a_protocol_error_naming_the_type():
    with pytest.raises(ProtocolError, match="CLOSE"):
        decode_event(EventType.CLOSE, b"\x0a\xff")


def test_an_event_type_from_a_newer_namenode_is_kept_as_unknown():
    msg = ino.EventsListProto(firstTxid=1, lastTxid=1, syncTxid=1, batch=[
        ino.EventBatchProto(txid=1, events=[ino.EventProto(type=9, contents=b"\x08\x01")])])
    (batch,) = decode_events_list(msg.SerializeToString()).batches
    assert batch.events == (UnknownEvent(9, b"\x08\x01"),)


# --------------------------------------------------------------------------- round trips

paths = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40).map(lambda s: "/" + s)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
i32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
names = st.text(max_size=10)
perm = st.integers(min_value=0, max_value=0o7777)

events = st.one_of(
    st.builds(CreateEvent, paths, st.sampled_from(list(INodeType)), i64, names, names, perm,
              i32, names, st.booleans(), i64, st.booleans()),
    st.builds(CloseEvent, paths, i64, i64),
    st.builds(AppendEvent, paths, st.booleans()),
    st.builds(RenameEvent, paths, paths, i64),
    st.builds(MetadataEvent, paths, st.sampled_from(list(MetadataType)), i64, i64, i32, names,
              names, st.none() | perm, st.booleans()),
    st.builds(UnlinkEvent, paths, i64),
    st.builds(TruncateEvent, paths, i64, i64),
)


def encode(event) -> ino.EventProto:  # type: ignore[no-untyped-def]
    """The NameNode side: an event as it travels."""
    if isinstance(event, CreateEvent):
        m = ino.CreateEventProto(type=event.inode_type, path=event.path, ctime=event.ctime,
                                 ownerName=event.owner, groupName=event.group,
                                 replication=event.replication,
                                 symlinkTarget=event.symlink_target, overwrite=event.overwrite,
                                 defaultBlockSize=event.default_block_size,
                                 erasureCoded=event.erasure_coded)
        m.perms.perm = event.perms
        kind = EventType.CREATE
    elif isinstance(event, CloseEvent):
        m = ino.CloseEventProto(path=event.path, fileSize=event.file_size,
                                timestamp=event.timestamp)
        kind = EventType.CLOSE
    elif isinstance(event, AppendEvent):
        m = ino.AppendEventProto(path=event.path, newBlock=event.new_block)
        kind = EventType.APPEND
    elif isinstance(event, RenameEvent):
        m = ino.RenameEventProto(srcPath=event.src_path, destPath=event.dest_path,
                                 timestamp=event.timestamp)
        kind = EventType.RENAME
    elif isinstance(event, MetadataEvent):
        m = ino.MetadataUpdateEventProto(path=event.path, type=event.metadata_type,
                                         mtime=event.mtime, atime=event.atime,
                                         replication=event.replication, ownerName=event.owner,
                                         groupName=event.group,
                                         xAttrsRemoved=event.xattrs_removed)
        if event.perms is not None:
            m.perms.perm = event.perms
        kind = EventType.METADATA
    elif isinstance(event, UnlinkEvent):
        m = ino.UnlinkEventProto(path=event.path, timestamp=event.timestamp)
        kind = EventType.UNLINK
    else:
        m = ino.TruncateEventProto(path=event.path, fileSize=event.file_size,
                                   timestamp=event.timestamp)
        kind = EventType.TRUNCATE
    return ino.EventProto(type=kind, contents=m.SerializeToString())


@given(st.lists(st.tuples(st.integers(min_value=1, max_value=2**62),
                          st.lists(events, min_size=1, max_size=4)), max_size=8),
       i64, i64)
def test_events_list_round_trip(batches, last_txid, sync_txid):
    first = batches[0][0] if batches else -1
    reply = cnp.GetEditsFromTxidResponseProto(eventsList=ino.EventsListProto(
        firstTxid=first, lastTxid=last_txid, syncTxid=sync_txid,
        batch=[ino.EventBatchProto(txid=txid, events=[encode(e) for e in evs])
               for txid, evs in batches]))
    decoded = decode_edits_reply(reply.SerializeToString())
    assert decoded.batches == tuple(EventBatch(txid, tuple(evs)) for txid, evs in batches)
    assert (decoded.first_txid, decoded.last_txid, decoded.sync_txid) == (first, last_txid,
                                                                          sync_txid)
    assert decoded.event_count == sum(len(evs) for _, evs in batches)
