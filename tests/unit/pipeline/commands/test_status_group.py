"""`hdfs2kafka status --group` without servers: a DescribeGroups answer decoded into members
(their join metadata and shards), the status address of each, their state, and the table and
JSON printed from them."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocol

from pipeline.commands import status_group as sg
from pipeline.kafka.group import ASSIGNOR_NAME

LEDGER = "hdfs2kafka.ledger"


def raw_member(member_id: str, info: dict[str, Any] | None, shards: list[int] | None,
               topic: str = LEDGER) -> tuple[str, str, str, bytes, bytes]:
    """A member as DescribeGroups answers it: the consumer protocol's metadata (user data: the
    member's JSON) and assignment, as `ShardAssignor` writes them."""
    metadata = ConsumerProtocol.METADATA(0, [topic], orjson.dumps(info) if info is not None else b"").encode()
    assignment = ConsumerProtocol.ASSIGNMENT(0, [(topic, shards)], b"").encode() if shards is not None else b""
    return (member_id, f"aiokafka-{member_id}", "/10.0.0.7", metadata, assignment)


def info(instance: str, host: str, pid: int, http: str, tls: bool = False,
         owned: list[int] | None = None) -> dict[str, Any]:
    return {"instance": instance, "host": host, "pid": pid, "http": http, "tls": tls,
            "owned": owned or []}


def raw_group(state: str, members: list[tuple[str, str, str, bytes, bytes]],
              gid: str = "hdfs2kafka-etl") -> tuple[Any, ...]:
    return (0, gid, state, "consumer", ASSIGNOR_NAME, members)


def status_doc(instance: str, *, ready: bool = True, streaming: list[int] | None = None,
               generation: int | None = 7, rows: dict[str, int] | None = None,
               assigned: bool = True) -> dict[str, Any]:
    return {"instance_id": instance, "ready": ready,
            "group": {"group": "etl", "shards": 4, "shards_streaming": streaming or [],
                      "shards_assigned": (streaming or []) if assigned else None,
                      "generation": generation if assigned else None},
            "sources": [{"name": n, "rows_committed": c} for n, c in (rows or {}).items()]}


def test_a_member_decodes_to_its_join_metadata_and_its_ledger_shards() -> None:
    m = sg.decode_member(raw_member("m-1", info("edge-01", "edge-01.example", 4242, "0.0.0.0:9464",
                                                owned=[1]), [3, 1]), LEDGER)
    assert m.member_id == "m-1"
    assert m.instance == "edge-01" and m.host == "edge-01.example"
    assert m.info["pid"] == 4242 and m.info["owned"] == [1]
    assert m.shards == (1, 3)
    assert m.client_host == "/10.0.0.7"


def test_undecodable_metadata_or_no_assignment_leave_the_member_named_by_kafka() -> None:
    m = sg.decode_member(("m-2", "c", "/10.0.0.8", b"\x00\x01garbage", b""), LEDGER)
    assert m.info == {} and m.shards == ()
    assert m.instance == "m-2" and m.host == "10.0.0.8"
    # Partitions of another topic are not shards.
    other = sg.decode_member(raw_member("m-3", info("x", "h", 1, "h:1"), [0], topic="elsewhere"), LEDGER)
    assert other.shards == ()


def test_unowned_shards_only_in_a_stable_group() -> None:
    members = [raw_member("b", info("edge-02", "h2", 2, "h2:9464"), [2]),
               raw_member("a", info("edge-01", "h1", 1, "h1:9464"), [0, 3])]
    desc = sg.decode_group(raw_group("Stable", members), "etl", LEDGER, 4)
    assert [m.instance for m in desc.members] == ["edge-01", "edge-02"]
    assert desc.unowned() == [1]
    # While it rebalances Kafka gives no assignment: nothing is said to be unowned.
    rebalancing = sg.decode_group(raw_group("PreparingRebalance", [raw_member("a", info("edge-01", "h1", 1, "h1:9464"), None)]),
                                  "etl", LEDGER, 4)
    assert rebalancing.unowned() == []
    assert sg.decode_group(raw_group("Empty", []), "etl", LEDGER, 4).unowned() == []


def test_the_status_address_of_a_member() -> None:
    def member(http: str, host: str = "edge-02", tls: bool = False) -> sg.GroupMember:
        return sg.GroupMember("m", "/10.0.0.7", info("edge-02", host, 1, http, tls), ())

    assert sg.status_url(member("10.0.0.7:9464"), "edge-01") == ("http://10.0.0.7:9464/status", None)
    assert sg.status_url(member("10.0.0.7:9464", tls=True), "edge-01") == ("https://10.0.0.7:9464/status", None)
    # A wildcard address is asked at the member's host name.
    assert sg.status_url(member("0.0.0.0:9464"), "edge-01") == ("http://edge-02:9464/status", None)
    assert sg.status_url(member("[::]:9464"), "edge-01") == ("http://edge-02:9464/status", None)
    assert sg.status_url(member("[fd00::7]:9464"), "edge-01") == ("http://[fd00::7]:9464/status", None)
    # Loopback: only from the member's own host (elsewhere it would be another daemon).
    assert sg.status_url(member("127.0.0.1:9464"), "edge-02") == ("http://127.0.0.1:9464/status", None)
    url, why = sg.status_url(member("127.0.0.1:9464"), "edge-01")
    assert url is None and why == "its HTTP address 127.0.0.1:9464 is on the loopback of edge-02"
    assert sg.status_url(member("localhost:9464"), "edge-01")[0] is None
    assert sg.status_url(member(""), "edge-01") == (None, "it announced no HTTP address")
    assert sg.status_url(member("edge-02"), "edge-01")[0] is None


def test_a_members_state_comes_from_its_status() -> None:
    owner = sg.GroupMember("a", "/h", info("edge-01", "h1", 1, "h1:1"), (0, 1))
    idle = sg.GroupMember("b", "/h", info("edge-02", "h2", 2, "h2:1"), ())
    ready = sg.member_row(owner, sg.MemberStatus("u", status_doc("edge-01", streaming=[0, 1], rows={"clicks": 5})))
    assert (ready.state, ready.generation, dict(ready.rows)) == ("ready", 7, {"clicks": 5})
    assert sg.member_row(owner, sg.MemberStatus("u", status_doc("edge-01", ready=False))).state == "recovering"
    assert sg.member_row(idle, sg.MemberStatus("u", status_doc("edge-02"))).state == "standing by"
    # Between the revoke and the next assignment: neither streaming nor standing by.
    moving = sg.member_row(idle, sg.MemberStatus("u", status_doc("edge-02", assigned=False)))
    assert (moving.state, moving.generation) == ("rebalancing", None)
    gone = sg.member_row(idle, sg.MemberStatus("u", error="u: Connection refused"))
    assert (gone.state, gone.generation, dict(gone.rows)) == ("unreachable", None, {})


def test_the_table_and_the_json() -> None:
    members = [raw_member("a", info("edge-01", "edge-01.example", 4242, "10.0.0.7:9464"), [0, 2]),
               raw_member("b", info("edge-02", "edge-02.example", 977, "10.0.0.8:9464"), [3]),
               raw_member("c", info("edge-03", "edge-03.example", 31, "10.0.0.9:9464"), [])]
    desc = sg.decode_group(raw_group("Stable", members), "etl", LEDGER, 4)
    a, b, c = desc.members
    rows = [sg.member_row(a, sg.MemberStatus("http://10.0.0.7:9464/status", status_doc(
                "edge-01", streaming=[0, 2], rows={"clicks": 1200, "orders": 30}))),
            sg.member_row(b, sg.MemberStatus("http://10.0.0.8:9464/status",
                                             error="http://10.0.0.8:9464/status: timed out")),
            sg.member_row(c, sg.MemberStatus("http://10.0.0.9:9464/status", status_doc("edge-03")))]
    text = sg.render(desc, rows)
    assert text.splitlines() == [
        "group etl (Kafka group hdfs2kafka-etl): Stable, 4 shards, 3 members",
        "WARNING: shard 1 has no owner: its files are not streamed",
        "",
        "INSTANCE HOST                PID SHARDS     STATE          GEN  ROWS COMMITTED",
        "edge-01  edge-01.example    4242 0,2        ready            7  clicks 1200, orders 30",
        "edge-02  edge-02.example     977 3          unreachable      -  (http://10.0.0.8:9464/status: timed out)",
        "edge-03  edge-03.example      31 -          standing by      7  -",
    ]
    doc = json.loads(json.dumps(sg.document(desc, rows)))
    assert doc["state"] == "Stable" and doc["shards"] == 4 and doc["unowned"] == [1]
    assert [(m["instance"], m["shards"], m["state"]) for m in doc["members"]] == [
        ("edge-01", [0, 2], "ready"), ("edge-02", [3], "unreachable"), ("edge-03", [], "standing by")]
    assert doc["members"][0]["rows_committed"] == {"clicks": 1200, "orders": 30}
    assert doc["members"][1]["error"] == "http://10.0.0.8:9464/status: timed out"
    assert doc["members"][1]["status"] is None and doc["members"][0]["pid"] == 4242


def test_a_group_whose_members_run_different_registries_says_it_is_held() -> None:
    members = [raw_member("a", {**info("edge-01", "h1", 1, "h1:1"), "registry": "1:aaaa"}, []),
               raw_member("b", {**info("edge-02", "h2", 2, "h2:1"), "registry": "1:bbbb"}, []),
               raw_member("c", {**info("edge-03", "h3", 3, "h3:1"), "registry": "1:aaaa"}, []),
               raw_member("d", info("edge-04", "h4", 4, "h4:1"), [])]  # another version: not said
    desc = sg.decode_group(raw_group("Stable", members), "etl", LEDGER, 2)
    held = {**status_doc("edge-01", streaming=[]),
            "group": {"shards_assigned": [], "generation": 9, "held": {"1:aaaa": ["edge-01"]}}}
    rows = [sg.member_row(m, sg.MemberStatus(None, held)) for m in desc.members]
    lines = sg.render(desc, rows).splitlines()
    assert lines[1] == ("HELD: the members run different source registries (edge-01, edge-03: "
                        "1:aaaa; edge-02: 1:bbbb); no member streams until they run the same one: "
                        "deploy the group's config file to each and reload it")
    assert lines[2] == "WARNING: shards 0,1 have no owner: their files are not streamed"
    assert {r.state for r in rows} == {"held"}
    assert sg.document(desc, rows)["registries"] == {"1:aaaa": ["edge-01", "edge-03"], "1:bbbb": ["edge-02"]}
    same = sg.decode_group(raw_group("Stable", members[:1] + members[2:]), "etl", LEDGER, 2)
    assert not sg.render(same, []).startswith("HELD") and len(same.registries()) == 1


def test_a_group_with_no_member_and_a_rebalancing_one() -> None:
    empty = sg.decode_group(raw_group("Empty", []), "etl", LEDGER, 2)
    assert sg.render(empty, []).splitlines() == [
        "group etl (Kafka group hdfs2kafka-etl): Empty, 2 shards, 0 members", "no member is running"]
    moving = sg.decode_group(raw_group("CompletingRebalance", [raw_member("a", info("edge-01", "h", 1, "h:1"), None)]),
                             "etl", LEDGER, None)
    lines = sg.render(moving, [sg.member_row(moving.members[0], sg.MemberStatus(None, error="x"))]).splitlines()
    assert lines[0] == "group etl (Kafka group hdfs2kafka-etl): CompletingRebalance, no ledger topic, 1 member"
    assert lines[1] == "the group is rebalancing: shards are assigned when it is Stable again"
