"""The tailer's position bookkeeping, against a scripted NameNode (pure logic, no server)."""

from __future__ import annotations

import pytest

from hdfswatch.errors import ConnectionLostError, NotSuperuserError
from hdfswatch.events import CloseEvent, EventBatch, EventsList, Gap
from hdfswatch.tailer import EditTailer, PollSchedule


class ScriptedNameNode:
    """Answers getEditsFromTxid from a script; records what was asked."""

    def __init__(self, replies, current_txid: int = 100) -> None:  # type: ignore[no-untyped-def]
        self.replies = list(replies)
        self.asked: list[int] = []
        self.current_txid = current_txid

    async def get_current_txid(self) -> int:
        return self.current_txid

    async def get_edits_from_txid(self, txid: int) -> EventsList:
        self.asked.append(txid)
        reply = self.replies.pop(0) if self.replies else EventsList(-1, -1, txid - 1, ())
        if isinstance(reply, Exception):
            raise reply
        return reply


def batch(txid: int) -> EventBatch:
    return EventBatch(txid, (CloseEvent(f"/f{txid}", 1, 0),))


def fast(client, start):  # type: ignore[no-untyped-def]
    return EditTailer(client, start, min_interval=0, max_interval=0.001)


async def test_batches_come_in_order_and_last_txid_follows_what_was_handed_out():
    nn = ScriptedNameNode([EventsList(10, 15, 20, (batch(10), batch(12))),
                           EventsList(16, 20, 20, (batch(18),))])
    t = fast(nn, 10)
    assert t.last_txid == 9
    assert await anext(t) == batch(10)
    assert t.last_txid == 10
    assert await anext(t) == batch(12)
    # Transactions 13..15 carried no events: handing out 12 covers them.
    assert t.last_txid == 15 and t.next_txid == 16
    assert await anext(t) == batch(18)
    assert t.last_txid == 20
    assert nn.asked == [10, 16]


async def test_replies_without_events_still_move_the_position():
    nn = ScriptedNameNode([EventsList(10, 30, 30, ()), EventsList(31, 31, 31, (batch(31),))])
    t = fast(nn, 10)
    assert await anext(t) == batch(31)
    assert nn.asked == [10, 31]


async def test_a_purged_range_comes_as_a_gap_before_what_follows():
    nn = ScriptedNameNode([EventsList(50, 52, 52, (batch(51),))])
    t = fast(nn, 10)
    gap = await anext(t)
    assert gap == Gap(10, 50) and gap.missed == 40
    assert t.last_txid == 49
    assert await anext(t) == batch(51)
    assert t.last_txid == 52
    assert t.gaps == 1


async def test_a_failed_poll_is_repeated_from_the_same_txid():
    nn = ScriptedNameNode([ConnectionLostError("reset"), ConnectionLostError("refused"),
                           EventsList(7, 7, 7, (batch(7),))])
    t = EditTailer(nn, 7, min_interval=0)
    assert await anext(t) == batch(7)
    assert nn.asked == [7, 7, 7]


async def test_a_batch_before_the_requested_txid_is_never_handed_out_again():
    nn = ScriptedNameNode([EventsList(5, 9, 9, (batch(5), batch(9)))])
    t = fast(nn, 6)
    assert await anext(t) == batch(9)


async def test_from_now_starts_after_the_current_txid():
    nn = ScriptedNameNode([EventsList(101, 101, 101, (batch(101),))], current_txid=100)
    t = fast(nn, None)
    assert t.last_txid is None
    assert await anext(t) == batch(101)
    assert nn.asked == [101]


async def test_permission_errors_are_not_retried():
    nn = ScriptedNameNode([NotSuperuserError("org.apache.hadoop.security.AccessControlException",
                                             "Superuser privilege is required",
                                             method="getEditsFromTxid")])
    with pytest.raises(NotSuperuserError):
        await anext(fast(nn, 1))


async def test_close_ends_the_iteration():
    t = fast(ScriptedNameNode([]), 1)
    t.close()
    assert [item async for item in t] == []


def test_start_txid_must_be_positive():
    with pytest.raises(ValueError):
        EditTailer(ScriptedNameNode([]), 0)  # type: ignore[arg-type]


def test_poll_schedule_is_fast_while_events_flow_and_bounded_when_idle():
    s = PollSchedule(min_interval=0.002, max_interval=0.5, idle_factor=0.1)
    assert s.next_delay(0.0, got_events=True, more_pending=False) == 0.002
    assert s.next_delay(0.0, got_events=False, more_pending=True) == 0.0
    assert s.next_delay(0.1, got_events=False, more_pending=False) == pytest.approx(0.01)
    assert s.next_delay(2.0, got_events=False, more_pending=False) == pytest.approx(0.2)
    assert s.next_delay(60.0, got_events=False, more_pending=False) == 0.5
    assert s.next_delay(61.0, got_events=True, more_pending=False) == 0.002


def test_poll_schedule_leaves_the_namenode_time_between_expensive_polls():
    s = PollSchedule(min_interval=0.002, max_interval=0.5, cost_factor=0.5)
    assert s.next_delay(0.0, got_events=True, more_pending=False, poll_seconds=0.2) == 0.1
    assert s.next_delay(0.0, got_events=True, more_pending=True, poll_seconds=0.2) == 0.0
    assert s.next_delay(0.0, got_events=True, more_pending=False, poll_seconds=5) == 0.5
