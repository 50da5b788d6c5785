"""`hdfs2kafka status --group` against a running group: two daemons sharing two shards, each
listed with its shards, state and rows; a member that stops answering is shown as unreachable
while the group still counts it, and the command still succeeds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import DaemonProcess, create_topic, free_port, put, sample_file, write_config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=90)


def group_json(config: Path) -> dict[str, Any]:
    out = cli("status", "--group", "--config", str(config), "--json")
    assert out.returncode in (0, 1), out.stderr
    return dict(json.loads(out.stdout))


async def test_status_group_lists_every_member_with_its_shards_and_an_unreachable_one(
        stack, webhdfs, unique, tmp_path: Path):
    topic, base = f"rows-{unique}", f"/tests/status-group/{unique}"
    await create_topic(stack.kafka_bootstrap, topic, 1)
    rows = 0
    for f in range(4):
        suffix, data = sample_file(f, 500)
        put(webhdfs, f"{base}/in/part-{f}{suffix}", data)
        rows += 500
    source = {"name": "rows", "path": f"{base}/in/*", "topic": topic, "start_from": "earliest"}
    configs = {name: write_config(tmp_path, stack, instance_id=f"{name}-{unique}",
                                  ledger_topic=f"ledger-{unique}", sources=[dict(source)],
                                  http_port=free_port(), group=f"g-{unique}", shards=2,
                                  # The group keeps a killed member for this long: long enough to
                                  # see it listed and unreachable.
                                  group_session_timeout_s=30)
               for name in ("a", "b")}
    a, b = (DaemonProcess(configs[n], tmp_path) for n in ("a", "b"))
    with a, b:
        a.start()
        a.wait_for_log("ready: recovery done", 90)
        b.start()
        b.wait_for_log("ready: recovery done", 90)

        # Until the group is Stable with both members streaming a shard each, and every row of
        # the four files committed by one or the other.
        deadline = time.monotonic() + 120
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = await asyncio.to_thread(group_json, configs["a"])
            members = doc.get("members") or []
            if (doc.get("state") == "Stable" and len(members) == 2
                    and sorted(s for m in members for s in m["shards"]) == [0, 1]
                    and all(m["state"] == "ready" and m["shards"] for m in members)
                    and sum(sum(m["rows_committed"].values()) for m in members) == rows):
                break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError(f"the group did not settle: {json.dumps(doc, indent=2)[-4000:]}\n"
                                 f"{a.log_text()[-2000:]}\n{b.log_text()[-2000:]}")
        assert doc["group"] == f"g-{unique}" and doc["group_id"] == f"hdfs2kafka-g-{unique}"
        assert doc["shards"] == 2 and doc["unowned"] == []
        assert sorted(m["instance"] for m in doc["members"]) == [f"a-{unique}", f"b-{unique}"]
        assert {m["pid"] for m in doc["members"]} == {a.proc.pid, b.proc.pid}  # type: ignore[union-attr]
        generations = {m["generation"] for m in doc["members"]}
        assert len(generations) == 1 and generations != {None}, generations

        # The table: a header naming the group, one line per member with its shard.
        out = cli("status", "--group", "--config", str(configs["b"]))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == f"group g-{unique} (Kafka group hdfs2kafka-g-{unique}): Stable, 2 shards, 2 members"
        assert not any(line.startswith("WARNING") for line in lines), out.stdout
        by_instance = {line.split()[0]: line for line in lines if line.endswith(tuple("0123456789"))
                       and line.split()[0].endswith(unique)}
        assert set(by_instance) == {f"a-{unique}", f"b-{unique}"}, out.stdout
        shown = sorted(by_instance[i].split()[3] for i in by_instance)
        assert shown == ["0", "1"], out.stdout
        assert all(" ready " in line and "rows " in line for line in by_instance.values()), out.stdout

        # b is killed: the group still counts it (its session has not run out), its /status does
        # not answer, and the command says so without failing.
        b.kill()
        out = cli("status", "--group", "--config", str(configs["a"]))
        assert out.returncode == 0, out.stderr
        gone = next(line for line in out.stdout.splitlines() if line.startswith(f"b-{unique}"))
        assert " unreachable " in gone and "refused" in gone, out.stdout
        kept = next(line for line in out.stdout.splitlines() if line.startswith(f"a-{unique}"))
        assert " ready " in kept, out.stdout
