"""The dev stack with NameNode HA: `devstack <command> --ha`.

A nameservice, hdfs2kafka-ha, of two NameNodes (nn1 and nn2: one active, one standby, manual
failover, no ZooKeeper), a JournalNode quorum holding the shared edit log, and one DataNode, from
the plain stack's cached jars, in a state directory and on ports of its own, beside the plain and
the secure stacks:

    devstack up --ha           JournalNode(s), format nn1 (which formats the journal too),
                               bootstrapStandby nn2 (first time), the servers, one NameNode made
                               active; then the plain stack's Kafka and registry (see below);
                               idempotent
    devstack env --ha [--json] `export` lines a client needs (see env_lines), or a JSON object
    devstack status --ha       each process, its memory, which NameNode is active, each one's
                               last transaction id
    devstack logs --ha [nn1|nn2|jn1|jn2|jn3|datanode] [-n LINES]
    devstack restart --ha nn1|nn2|jn1|...|datanode   a restarted NameNode comes back standby (if
                               no NameNode is active then, the one that last was is made active)
    devstack failover [--ha] [--to nn1|nn2]   make the other NameNode (or the one named) active:
                               `hdfs haadmin -failover FROM TO`, fenced with shell(/bin/true), so
                               it works whether FROM is active, standby or dead (SIGKILLed)
    devstack kill-active [--ha]   SIGKILL the active NameNode's process (prints its id); the
                               standby stays standby until `failover`
    devstack purge-edits [--ha]   roll the active's edit log, save the namespace (in safe mode)
                               so the active purges the segments before the new checkpoint from
                               the JournalNodes and its own directory; the standby's old copies
                               go too: whichever NameNode is active, a client asking for a
                               transaction from before gets a gap (a reply starting later)
    devstack hdfs --ha dfs|dfsadmin|haadmin|getconf ARGS...   Hadoop's client on the nameservice
    devstack check --ha        try what the stack promises, one line per check
    devstack down --ha         stop only what the HA stack started
    devstack reset --ha        down, then delete its state

Why it is built this way:

- Manual failover (dfs.ha.automatic-failover.enabled=false): no ZooKeeper and no ZKFC to run,
  and a failover happens exactly when a test asks for it. A NameNode always starts standby, so
  `up` and `restart` make one active when none is (the one recorded in `active`, else nn1).
- One JournalNode by default: the NameNodes speak the same quorum journal protocol to one as to
  three (epochs, recovery of the unfinished segment at a failover), which is what a client of
  the NameNodes can observe; three cost two more JVMs (about 130 MiB each) and start-up time on
  a small machine for nothing a client sees. DEVSTACK_HA_JOURNALNODES=3
  gives three (a quorum of two), e.g. to stop one JournalNode in a test.
- The standby looks for new segments in the journal every 500 ms and reads finalized ones only
  (Hadoop's default, dfs.ha.tail-edits.in-progress=false): with in-progress tailing the
  JournalNodes serve recent transactions from a memory cache, purged or not, so `purge-edits`
  would make no gap. Segments roll every 2 minutes (dfs.ha.log-roll.period, Hadoop's default)
  and at every failover; made active, a NameNode first reads what it lacks from the journal.
- No checkpoints by the standby (dfs.ha.standby.checkpoints=false): edits are purged only when
  `purge-edits` asks, as on the plain stack, which has no checkpointer either.
- The plain stack's settings for clients: inotify batches (1000 events per RPC), permissions on
  with the current user as superuser (it runs the NameNodes), SIMPLE authentication, WebHDFS on
  both NameNodes, small blocks allowed, and few old edits kept (2 extra transactions, 1 extra
  segment, 1 checkpoint), so that `purge-edits` can make a real gap.
- No Kafka of its own: the HA stack is about HDFS. `up --ha` brings up the plain stack
  (`devstack up`, idempotent; nothing happens when its Kafka and registry already answer) and
  `env --ha` hands out the plain stack's KAFKA_BOOTSTRAP and SCHEMA_REGISTRY_URL. `down --ha`
  never stops the plain stack.

Settings (environment), besides the plain stack's DEVSTACK_HOME, DEVSTACK_LIB and versions:
    DEVSTACK_HA_HOME         state (default $DEVSTACK_HOME/ha)
    DEVSTACK_HA_JOURNALNODES 1 (default) or 3; fixed when the stack is formatted (`reset --ha`
                             to change it)
    DEVSTACK_HA_HDFS_SITE    extra hdfs-site.xml properties of the servers, "name=value,..."
    These two stick: an `up` whose environment does not set one keeps what the stack has
    (settings.json in the state directory); `up` restarts the servers when they changed.
    DEVSTACK_HA_NN1_RPC_PORT (16820) DEVSTACK_HA_NN2_RPC_PORT (16821)
    DEVSTACK_HA_NN1_HTTP_PORT (16870) DEVSTACK_HA_NN2_HTTP_PORT (16871)
    DEVSTACK_HA_JN_RPC_PORT (16485, then +1, +2) DEVSTACK_HA_JN_HTTP_PORT (16480, then +1, +2)
    DEVSTACK_HA_DN_PORT (16866) DEVSTACK_HA_DN_HTTP_PORT (16864) DEVSTACK_HA_DN_IPC_PORT (16867)
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
NAMESERVICE = "hdfs2kafka-ha"
NAMENODES = ("nn1", "nn2")


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


NN_RPC = {"nn1": _port("DEVSTACK_HA_NN1_RPC_PORT", 16820), "nn2": _port("DEVSTACK_HA_NN2_RPC_PORT", 16821)}
NN_HTTP = {"nn1": _port("DEVSTACK_HA_NN1_HTTP_PORT", 16870), "nn2": _port("DEVSTACK_HA_NN2_HTTP_PORT", 16871)}
JN_RPC = _port("DEVSTACK_HA_JN_RPC_PORT", 16485)
JN_HTTP = _port("DEVSTACK_HA_JN_HTTP_PORT", 16480)
DN_PORT = _port("DEVSTACK_HA_DN_PORT", 16866)
DN_HTTP = _port("DEVSTACK_HA_DN_HTTP_PORT", 16864)
DN_IPC = _port("DEVSTACK_HA_DN_IPC_PORT", 16867)

HEAP = {"nn": "256m", "jn": "96m", "datanode": "192m"}

# Set by main(): from the environment, else kept from the stack's last `up`.
JOURNALNODES = 1
HDFS_SITE: dict[str, str] = {}

ds: ModuleType  # the devstack script, its helpers pointed at this stack's state directory
HOME: Path
RUN: Path


def log(msg: str) -> None:
    ds.log(msg)


def journalnodes() -> list[str]:
    return [f"jn{i + 1}" for i in range(JOURNALNODES)]


def roles() -> list[str]:
    """Every server, in start order."""
    return [*journalnodes(), *NAMENODES, "datanode"]


def all_roles() -> list[str]:
    """Every server this stack may have started (three JournalNodes at most)."""
    return ["jn1", "jn2", "jn3", *NAMENODES, "datanode"]


def _parse_site(text: str) -> dict[str, str]:
    props = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            props[name.strip()] = value.strip()
    return props


def _settings() -> None:
    """Each setting from the environment when set there, else what the last `up` applied."""
    global JOURNALNODES, HDFS_SITE
    prev = applied()
    env = os.environ.get
    JOURNALNODES = int(env("DEVSTACK_HA_JOURNALNODES") or prev.get("journalnodes") or JOURNALNODES)
    if JOURNALNODES not in (1, 3):
        raise SystemExit("devstack: DEVSTACK_HA_JOURNALNODES is 1 or 3")
    site = env("DEVSTACK_HA_HDFS_SITE")
    HDFS_SITE = _parse_site(site) if site is not None else dict(prev.get("hdfs_site") or {})


def applied() -> dict[str, Any]:
    try:
        return dict(json.loads((RUN / "settings.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {}


# --------------------------------------------------------------------------- configuration


def conf_dir(role: str) -> Path:
    """Each server's own directory (a NameNode's id, a JournalNode's ports); `tools` is the
    servers' common one, for haadmin and dfsadmin; `client` is what `env --ha` hands out."""
    return RUN / "conf" / role


def shared_edits() -> str:
    hosts = ";".join(f"{HOST}:{JN_RPC + i}" for i in range(JOURNALNODES))
    return f"qjournal://{hosts}/{NAMESERVICE}"


def _nameservice_props() -> dict[str, object]:
    props: dict[str, object] = {
        "dfs.nameservices": NAMESERVICE,
        f"dfs.ha.namenodes.{NAMESERVICE}": ",".join(NAMENODES),
        f"dfs.client.failover.proxy.provider.{NAMESERVICE}":
            "org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider",
    }
    for nn in NAMENODES:
        props[f"dfs.namenode.rpc-address.{NAMESERVICE}.{nn}"] = f"{HOST}:{NN_RPC[nn]}"
        props[f"dfs.namenode.http-address.{NAMESERVICE}.{nn}"] = f"{HOST}:{NN_HTTP[nn]}"
    return props


# For HDFS's own Java clients, among them the DataNode's WebHDFS writer: a file's close waits
# for the block's report to reach the active (a 400 ms first retry by default, which most small
# writes here hit), and a call that met the standby retries sooner.
CLIENT_RETRIES = {"dfs.client.block.write.locateFollowingBlock.initial.delay.ms": 50,
                  "dfs.client.failover.sleep.base.millis": 100,
                  "dfs.client.failover.sleep.max.millis": 2000}


def _sites() -> tuple[dict[str, object], dict[str, object]]:
    """(core-site, hdfs-site) common to the servers."""
    data = RUN / "hdfs"
    core: dict[str, object] = {
        "fs.defaultFS": f"hdfs://{NAMESERVICE}",
        "hadoop.tmp.dir": data / "tmp",
        "hadoop.security.authentication": "simple",
        "hadoop.http.staticuser.user": ds.USER,
    }
    hdfs: dict[str, object] = {
        **_nameservice_props(),
        "dfs.namenode.rpc-bind-host": HOST,
        "dfs.namenode.http-bind-host": HOST,
        "dfs.namenode.shared.edits.dir": shared_edits(),
        "dfs.ha.automatic-failover.enabled": "false",
        # A failover fences the old active by the journal's epochs alone; a dead one needs no
        # more, a live one is asked to step down first.
        "dfs.ha.fencing.methods": "shell(/bin/true)",
        # ...and a dead one is not called again a second later before it is fenced.
        "ha.failover-controller.graceful-fence.connection.retries": 0,
        # The standby looks for new segments twice a second (it reads finalized ones only,
        # Hadoop's default: with dfs.ha.tail-edits.in-progress the JournalNodes serve recent
        # transactions from a memory cache, purged or not, and a purge would make no gap).
        "dfs.ha.tail-edits.period": "500ms",
        # Edits are purged only when asked (`purge-edits`), as on the plain stack, which has no
        # checkpointer: no hourly checkpoint of the standby's, after which the active would purge.
        "dfs.ha.standby.checkpoints": "false",
        "dfs.datanode.data.dir": data / "data",
        "dfs.datanode.address": f"{HOST}:{DN_PORT}",
        "dfs.datanode.http.address": f"{HOST}:{DN_HTTP}",
        "dfs.datanode.ipc.address": f"{HOST}:{DN_IPC}",
        "dfs.datanode.hostname": HOST,
        "dfs.replication": 1,
        "dfs.permissions.enabled": "true",
        "dfs.permissions.superusergroup": "supergroup",
        "dfs.webhdfs.enabled": "true",
        "dfs.namenode.resource.du.reserved": 1048576,
        "dfs.datanode.du.reserved": 0,
        "dfs.namenode.safemode.extension": 0,
        "dfs.namenode.safemode.min.datanodes": 0,
        "dfs.namenode.fs-limits.min-block-size": 4096,
        # `purge-edits` makes a gap: few old edits are kept (see the plain stack).
        "dfs.namenode.num.checkpoints.retained": 1,
        "dfs.namenode.num.extra.edits.retained": 2,
        "dfs.namenode.max.extra.edits.segments.retained": 1,
        "dfs.namenode.inotify.max.events.per.rpc": 1000,
        "dfs.heartbeat.interval": 1,
        "dfs.namenode.heartbeat.recheck-interval": 5000,
        "dfs.client.use.datanode.hostname": "false",
        **CLIENT_RETRIES,
    }
    hdfs.update(HDFS_SITE)
    return core, hdfs


SERVER_LOG4J = (
    "log4j.rootLogger=INFO,console\n"
    "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
    "log4j.appender.console.target=System.out\n"
    "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
    "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
    "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
    "log4j.logger.BlockStateChange=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN\n"
    # The standby logs every tail of the journal at INFO (twice a second).
    "log4j.logger.org.apache.hadoop.hdfs.server.namenode.ha.EditLogTailer=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSImage=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.namenode.RedundantEditLogInputStream=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSEditLogLoader=WARN\n"
    "log4j.logger.org.apache.hadoop.hdfs.qjournal.client.QuorumJournalManager=WARN\n"
)
CLIENT_LOG4J = (
    "log4j.rootLogger=WARN,console\n"
    "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
    "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
    "log4j.appender.console.target=System.err\n"
    "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
    "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
)


def write_hadoop_conf() -> str:
    """Every role's configuration and the client's; returns a digest of the servers' settings,
    to tell whether running servers need a restart."""
    core, hdfs = _sites()
    data = RUN / "hdfs"
    per_role: dict[str, dict[str, object]] = {"tools": {}, "datanode": {}}
    for nn in NAMENODES:
        per_role[nn] = {"dfs.ha.namenode.id": nn, "dfs.namenode.name.dir": data / nn / "name"}
    for i, jn in enumerate(journalnodes()):
        per_role[jn] = {"dfs.journalnode.rpc-address": f"{HOST}:{JN_RPC + i}",
                        "dfs.journalnode.http-address": f"{HOST}:{JN_HTTP + i}",
                        "dfs.journalnode.edits.dir": data / jn}
    texts = []
    for role, extra in per_role.items():
        d = conf_dir(role)
        d.mkdir(parents=True, exist_ok=True)
        site = ds._xml({**hdfs, **extra})
        (d / "core-site.xml").write_text(ds._xml(core))
        (d / "hdfs-site.xml").write_text(site)
        (d / "log4j.properties").write_text(CLIENT_LOG4J if role == "tools" else SERVER_LOG4J)
        texts.append(ds._xml(core) + site)
    client = conf_dir("client")
    client.mkdir(parents=True, exist_ok=True)
    (client / "core-site.xml").write_text(ds._xml({"fs.defaultFS": f"hdfs://{NAMESERVICE}",
                                                   "hadoop.security.authentication": "simple"}))
    (client / "hdfs-site.xml").write_text(ds._xml({
        **_nameservice_props(), "dfs.replication": 1, "dfs.client.use.datanode.hostname": "false",
        **CLIENT_RETRIES}))
    (client / "log4j.properties").write_text(CLIENT_LOG4J)
    return hashlib.sha256("".join(texts).encode()).hexdigest()


def classpath(role: str) -> str:
    return f"{conf_dir(role)}:{ds.lib_dir('hadoop')}/*"


def server_opts(role: str) -> list[str]:
    return [f"-Dhadoop.log.dir={RUN / 'logs'}", "-Dhadoop.root.logger=INFO,console",
            f"-Dlog4j.configuration=file:{conf_dir(role) / 'log4j.properties'}", f"-Dproc_{role}"]


# --------------------------------------------------------------------------- servers and tools


def hadoop_tool(main: str, args: list[str], conf: str = "tools", capture: bool = True,
                stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A Hadoop command-line class (`main`) with the configuration of `conf`."""
    cmd = [ds.java(), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
           "-Djava.net.preferIPv4Stack=true", *ds.JAVA_OPENS,
           f"-Dlog4j.configuration=file:{conf_dir(conf) / 'log4j.properties'}",
           "-cp", classpath(conf), main, *args]
    return subprocess.run(cmd, text=True, input=stdin, capture_output=capture, timeout=timeout, cwd=RUN)


def _checked(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        sys.stderr.write((proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:])
        raise SystemExit(f"devstack: {what} failed (exit {proc.returncode})")
    return proc.stdout or ""


NAMENODE_MAIN = "org.apache.hadoop.hdfs.server.namenode.NameNode"
HAADMIN = "org.apache.hadoop.hdfs.tools.DFSHAAdmin"


def _run_logged(role: str, what: str, args: list[str]) -> None:
    """A NameNode one-off (format, bootstrapStandby) with `role`'s configuration, logged."""
    (RUN / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [ds.java(), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
           "-Djava.net.preferIPv4Stack=true", *ds.JAVA_OPENS, *server_opts(role),
           "-cp", classpath(role), NAMENODE_MAIN, *args]
    with open(ds.log_file(f"{role}-{what}"), "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=RUN).returncode
    if rc != 0:
        raise SystemExit(f"devstack: {role} {what} failed, see {ds.log_file(f'{role}-{what}')}\n"
                         f"{ds._tail(ds.log_file(f'{role}-{what}'), 20)}")


def formatted(nn: str) -> bool:
    return (RUN / "hdfs" / nn / "name" / "current" / "VERSION").exists()


def start_journalnode(jn: str) -> None:
    if ds.running_pid(jn):
        return
    pid = ds.start_java(jn, classpath(jn), "org.apache.hadoop.hdfs.qjournal.server.JournalNode", [],
                        HEAP["jn"], server_opts(jn))
    i = int(jn[2:]) - 1
    log(f"started JournalNode {jn} (pid {pid}) rpc {HOST}:{JN_RPC + i} http {HOST}:{JN_HTTP + i}")


def start_namenode(nn: str) -> None:
    if ds.running_pid(nn):
        return
    if nn == "nn1" and not formatted("nn1"):
        # With a shared edits directory, -format formats the JournalNodes' journal as well (what
        # -initializeSharedEdits would do for a NameNode that had been running without HA).
        log(f"formatting nn1 and the journal on {JOURNALNODES} JournalNode(s)")
        _run_logged("nn1", "format", ["-format", "-force", "-nonInteractive", "-clusterId",
                                      f"CID-{NAMESERVICE}"])
        (RUN / "formatted.json").write_text(json.dumps({"journalnodes": JOURNALNODES}) + "\n")
    if nn == "nn2" and not formatted("nn2"):
        # bootstrapStandby copies nn1's namespace (nn1 must be answering) and checks the journal
        # holds every transaction since it.
        other = "nn1"
        wait_for(lambda: (nn_jmx(other, "NameNodeStatus") is not None, f"{other} http not answering"),
                 other, 180)
        log("bootstrapping nn2 from nn1 (bootstrapStandby)")
        _run_logged("nn2", "bootstrap", ["-bootstrapStandby", "-force", "-nonInteractive"])
    pid = ds.start_java(nn, classpath(nn), NAMENODE_MAIN, [], HEAP["nn"], server_opts(nn))
    log(f"started NameNode {nn} (pid {pid}) rpc {HOST}:{NN_RPC[nn]} http {HOST}:{NN_HTTP[nn]}")


def start_datanode() -> None:
    if ds.running_pid("datanode"):
        return
    pid = ds.start_java("datanode", classpath("datanode"), "org.apache.hadoop.hdfs.server.datanode.DataNode",
                        [], HEAP["datanode"], server_opts("datanode"))
    log(f"started DataNode (pid {pid})")


def start(role: str) -> None:
    if role.startswith("jn"):
        start_journalnode(role)
    elif role in NAMENODES:
        start_namenode(role)
    else:
        start_datanode()


def stop(role: str, timeout: float = 30.0) -> bool:
    pid = ds.running_pid(role)
    if pid is None:
        ds.pid_file(role).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ds.running_pid(role):
        time.sleep(0.2)
    if ds.running_pid(role):
        os.kill(pid, signal.SIGKILL)
        while ds.running_pid(role):
            time.sleep(0.1)
    ds.pid_file(role).unlink(missing_ok=True)
    log(f"stopped {role} (pid {pid})")
    return True


# --------------------------------------------------------------------------- state


def _jmx(port: int, query: str, timeout: float = 2.0) -> dict[str, object] | None:
    url = f"http://{HOST}:{port}/jmx?qry={query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            beans = json.load(resp)["beans"]
    except (OSError, ValueError, KeyError):
        return None
    return dict(beans[0]) if beans else None


def nn_jmx(nn: str, bean: str) -> dict[str, object] | None:
    return _jmx(NN_HTTP[nn], f"Hadoop:service=NameNode,name={bean}")


def ha_state(nn: str) -> str:
    """"active", "standby", "starting" (a process, no answer yet) or "down" (no process)."""
    if not ds.running_pid(nn):
        return "down"
    status = nn_jmx(nn, "NameNodeStatus")
    if status is None:
        return "starting"
    return str(status.get("State") or "starting").lower()


def states() -> dict[str, str]:
    return {nn: ha_state(nn) for nn in NAMENODES}


def active() -> str | None:
    for nn, state in states().items():
        if state == "active":
            return nn
    return None


def last_txid(nn: str) -> int | None:
    """The last transaction the NameNode wrote (active) or applied from the journal (standby)."""
    info = nn_jmx(nn, "NameNodeInfo")
    try:
        return int(json.loads(str(info["JournalTransactionInfo"]))["LastAppliedOrWrittenTxId"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def namenode_ready(nn: str) -> tuple[bool, str]:
    """(ready, why): active and serving = out of safe mode with a live DataNode; a standby is
    ready once it answers as standby."""
    state = ha_state(nn)
    if state in ("down", "starting"):
        return False, f"{nn} {state}"
    if state == "standby":
        return True, f"{nn} standby"
    info = nn_jmx(nn, "NameNodeInfo")
    if not info:
        return False, f"{nn} starting"
    if info.get("Safemode"):
        return False, f"{nn} active, in safe mode"
    if not json.loads(str(info.get("LiveNodes") or "{}")):
        return False, f"{nn} active, no live DataNode yet"
    return True, f"{nn} active, serving"


def journalnode_ready(jn: str) -> tuple[bool, str]:
    i = int(jn[2:]) - 1
    if _jmx(JN_HTTP + i, "Hadoop:service=JournalNode,name=JournalNodeInfo") is None:
        return False, f"{jn} http not answering"
    return True, f"{jn} answering"


def datanode_ready() -> tuple[bool, str]:
    """Registered with both NameNodes (each one's live nodes), so blocks survive a failover."""
    seen = []
    for nn in NAMENODES:
        info = nn_jmx(nn, "NameNodeInfo")
        if info and json.loads(str(info.get("LiveNodes") or "{}")):
            seen.append(nn)
    if len(seen) < len(NAMENODES):
        return False, f"DataNode registered with {', '.join(seen) or 'no NameNode'} yet"
    return True, "DataNode live on both NameNodes"


def wait_for(check: Callable[[], tuple[bool, str]], role: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        ok, why = check()
        if ok:
            return
        if not ds._recorded_pid_alive(role):
            raise SystemExit(f"devstack: {role} exited ({why}); last log lines:\n"
                             f"{ds._tail(ds.log_file(role), 30)}")
        time.sleep(0.25)
    raise SystemExit(f"devstack: {role} not ready after {timeout:.0f}s: {why}; see {ds.log_file(role)}")


def preferred() -> str:
    try:
        nn = (RUN / "active").read_text().strip()
    except FileNotFoundError:
        nn = "nn1"
    return nn if nn in NAMENODES else "nn1"


def failover(to: str | None = None) -> tuple[str | None, str, float]:
    """Make `to` (default: the NameNode that is not active) the active one; returns (from, to,
    seconds until `to` was active and serving)."""
    now = states()
    current = next((nn for nn, s in now.items() if s == "active"), None)
    if to is None:
        if current is None:
            alive = [nn for nn in NAMENODES if now[nn] == "standby"]
            if not alive:
                raise SystemExit(f"devstack: no NameNode to make active ({now})")
            to = preferred() if preferred() in alive else alive[0]
        else:
            to = next(nn for nn in NAMENODES if nn != current)
    if now[to] == "active":
        log(f"{to} is already active")
        return None, to, 0.0
    if now[to] != "standby":
        raise SystemExit(f"devstack: {to} is {now[to]}, not standby: cannot make it active")
    source = current or next(nn for nn in NAMENODES if nn != to)
    started = time.monotonic()
    # -failover asks FROM to step down; when it cannot answer (dead), the fencing method stands
    # in, and the journal's new epoch keeps it from writing should it come back.
    # A NameNode started on existing data stays in safe mode until the DataNode has reported
    # its blocks, and refuses to become active until then: ask again for a while.
    deadline = time.monotonic() + 180
    while True:
        proc = hadoop_tool(HAADMIN, ["-failover", source, to])
        said = (proc.stdout or "") + (proc.stderr or "")
        if proc.returncode == 0 or "safemode" not in said.lower() or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    _checked(proc, f"haadmin -failover {source} {to}")
    wait_for(lambda: namenode_ready(to), to, 120)
    took = time.monotonic() - started
    (RUN / "active").write_text(to + "\n")
    log(f"failover {source} ({now[source]}) -> {to}: {to} active and serving after {took:.1f}s")
    return source, to, took


def answering(nn: str) -> tuple[bool, str]:
    state = ha_state(nn)
    return state in ("active", "standby"), f"{nn} {state}"


def ensure_active() -> None:
    """A NameNode always starts standby: make one active when none is."""
    for nn in NAMENODES:
        if ds.running_pid(nn):
            wait_for(functools.partial(answering, nn), nn, 180)
    if active() is None:
        failover(None)


# --------------------------------------------------------------------------- commands


def cmd_up(_args: list[str]) -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up()


def _up() -> int:
    started = time.monotonic()
    ds.resolve("hadoop")
    RUN.mkdir(parents=True, exist_ok=True)
    try:
        made = json.loads((RUN / "formatted.json").read_text())["journalnodes"]
    except (FileNotFoundError, ValueError, KeyError):
        made = None
    if made is not None and made != JOURNALNODES and formatted("nn1"):
        raise SystemExit(f"devstack: the HA stack's journal was formatted on {made} JournalNode(s), "
                         f"not {JOURNALNODES}: `devstack reset --ha` first")
    digest = write_hadoop_conf()
    digest_file = RUN / "hadoop-conf.started"
    if (any(ds.running_pid(r) for r in roles()) and digest_file.exists()
            and digest_file.read_text() != digest):
        log("HDFS settings changed (DEVSTACK_HA_HDFS_SITE): restarting the HA stack's servers")
        for role in reversed(all_roles()):
            stop(role)
    for jn in journalnodes():
        start_journalnode(jn)
    for jn in journalnodes():
        wait_for(functools.partial(journalnode_ready, jn), jn, 120)
    start_namenode("nn1")
    start_namenode("nn2")
    start_datanode()
    digest_file.write_text(digest)
    (RUN / "settings.json").write_text(json.dumps(
        {"journalnodes": JOURNALNODES, "hdfs_site": HDFS_SITE}) + "\n")
    ensure_active()
    nn = active()
    assert nn is not None
    wait_for(lambda: namenode_ready(nn), nn, 180)
    wait_for(datanode_ready, "datanode", 120)
    log(f"HA HDFS up in {time.monotonic() - started:.1f}s: {nn} active, nameservice {NAMESERVICE}")
    ensure_kafka()
    log(f"run: eval \"$({Path(sys.argv[0])} env --ha)\"")
    return 0


def ensure_kafka() -> None:
    """The plain stack's Kafka and registry, which the HA stack's clients use: `devstack up`
    when either does not answer (the plain stack's own code path, its own lock)."""
    if ds.kafka_state()[0] and ds.registry_state()[0]:
        return
    log("bringing up the plain stack for its Kafka and registry (devstack up)")
    env = {k: v for k, v in os.environ.items() if k != "DEVSTACK_HA_HOME"}
    rc = subprocess.run([sys.executable, str(HERE / "devstack"), "up"], env=env).returncode
    if rc != 0:
        raise SystemExit("devstack: the plain stack's `up` failed")


def env_lines() -> list[str]:
    # ds.KAFKA_PORT and ds.registry_url() are the plain stack's: its ports, not rebound here.
    return [
        f"export HADOOP_CONF_DIR={conf_dir('client')}",
        f"export HDFS_NAMENODE={','.join(f'{HOST}:{NN_RPC[nn]}' for nn in NAMENODES)}",
        f"export WEBHDFS_URL='{';'.join(f'http://{HOST}:{NN_HTTP[nn]}' for nn in NAMENODES)}'",
        f"export HDFS_USER={ds.USER}",
        f"export HDFS_NAMESERVICE={NAMESERVICE}",
        "# Kafka and the registry are the plain stack's (devstack up): the HA stack has none",
        f"export KAFKA_BOOTSTRAP={HOST}:{ds.KAFKA_PORT}",
        f"export SCHEMA_REGISTRY_URL={ds.registry_url()}",
        f"export DEVSTACK_HA_STATE={RUN}",
    ]


def cmd_env(args: list[str]) -> int:
    """`export` lines for a shell (eval); with --json, one object of the same names and values,
    for a program (WEBHDFS_URL's ';' needs the shell's quotes)."""
    if "--json" in args:
        import shlex

        pairs = (shlex.split(line.removeprefix("export "))[0].partition("=")
                 for line in env_lines() if line.startswith("export "))
        print(json.dumps({k: v for k, _, v in pairs}, indent=1))
        return 0
    print("\n".join(env_lines()))
    return 0


def cmd_status(_args: list[str]) -> int:
    all_ok = True
    now = states()
    for role in roles():
        pid = ds.running_pid(role)
        state = "stopped"
        if pid:
            state = f"running pid {pid}, {ds._memory(pid)}"
            if role in NAMENODES:
                ok, why = namenode_ready(role)
                txid = last_txid(role)
                state += f", {why}" + (f", last txid {txid}" if txid is not None else "")
            elif role.startswith("jn"):
                ok, why = journalnode_ready(role)
                state += f", {why}"
            else:
                ok, why = datanode_ready()
                state += f", {why}"
            all_ok &= ok
        else:
            all_ok = False
        print(f"{role:9s} {state}")
    act = [nn for nn, s in now.items() if s == "active"]
    all_ok &= len(act) == 1
    print(f"active    {act[0] if len(act) == 1 else 'NONE' if not act else 'BOTH ' + ','.join(act)}"
          f" (nameservice {NAMESERVICE}); {JOURNALNODES} JournalNode(s); hadoop {ds.HADOOP_VERSION}; "
          f"state in {RUN}")
    return 0 if all_ok else 1


def cmd_logs(args: list[str]) -> int:
    return ds.cmd_logs(args, roles())


def cmd_down(_args: list[str]) -> int:
    for role in reversed(all_roles()):
        stop(role)
    return 0


def cmd_restart(args: list[str]) -> int:
    if not args or args[0] not in roles():
        raise SystemExit(f"devstack: restart --ha one of {', '.join(roles())}")
    role = args[0]
    stop(role)
    start(role)
    if role.startswith("jn"):
        wait_for(lambda: journalnode_ready(role), role, 120)
    elif role == "datanode":
        wait_for(datanode_ready, role, 120)
    else:
        ensure_active()
        wait_for(lambda: namenode_ready(role), role, 180)
        # Until the DataNode has reported its blocks to it, a failover to it would find files
        # without blocks (and `failover` would wait for that).
        wait_for(datanode_ready, "datanode", 120)
        log(f"{role} is {ha_state(role)}")
    return 0


def cmd_reset(_args: list[str]) -> int:
    cmd_down([])
    shutil.rmtree(RUN, ignore_errors=True)
    log(f"removed {RUN}")
    return 0


def cmd_failover(args: list[str]) -> int:
    to = args[args.index("--to") + 1] if "--to" in args[:-1] else None
    if to is not None and to not in NAMENODES:
        raise SystemExit(f"devstack: failover --to {' or '.join(NAMENODES)}")
    source, target, took = failover(to)
    print(json.dumps({"from": source, "to": target, "seconds": round(took, 2)}))
    return 0


def cmd_kill_active(_args: list[str]) -> int:
    nn = active()
    if nn is None:
        raise SystemExit(f"devstack: no active NameNode ({states()})")
    pid = ds.running_pid(nn)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while ds.running_pid(nn):
        time.sleep(0.05)
    log(f"killed the active NameNode {nn} (pid {pid}, SIGKILL); `devstack failover --ha` makes "
        f"the standby active, `devstack restart --ha {nn}` brings {nn} back as standby")
    print(json.dumps({"killed": nn, "pid": pid}))
    return 0


def cmd_purge_edits(_args: list[str]) -> int:
    nn = active()
    if nn is None:
        raise SystemExit(f"devstack: no active NameNode ({states()})")
    before = last_txid(nn)
    admin = "org.apache.hadoop.hdfs.tools.DFSAdmin"
    _checked(hadoop_tool(admin, ["-fs", f"hdfs://{HOST}:{NN_RPC[nn]}", "-rollEdits"]),
             "dfsadmin -rollEdits")
    # On the nameservice, dfsadmin asks every NameNode: the standby, which keeps the segments
    # it wrote while it was active in its own directory, purges them too, so no NameNode has
    # the old transactions whichever is made active next.
    _checked(hadoop_tool(admin, ["-safemode", "enter"]), "dfsadmin -safemode enter")
    try:
        _checked(hadoop_tool(admin, ["-saveNamespace"]), "dfsadmin -saveNamespace")
    finally:
        _checked(hadoop_tool(admin, ["-safemode", "leave"]), "dfsadmin -safemode leave")
    kept = first_txid(edit_dirs()["jn1"])
    if kept is not None:
        for other in NAMENODES:
            if other != nn:
                drop_stale_copies(other, kept)
    first = {where: first_txid(d) for where, d in edit_dirs().items()}
    log(f"{nn} checkpointed at txid {before}; the first transaction kept: {first}")
    print(json.dumps({"namenode": nn, "checkpoint_txid": before, "first_txid": first}))
    return 0


def drop_stale_copies(nn: str, kept: int) -> None:
    """Delete the standby `nn`'s own copies of segments the journal no longer has.

    A NameNode writes a copy of the edit log to its own directory only while it is active, so a
    standby keeps the segments of its last time as active, with holes where the other one was
    active; and a standby never purges (Hadoop purges only a log open for writing). Made active,
    it would serve a transaction the journal purged from that copy and go on past the holes
    without a word: getEditsFromTxid reads the segments it finds one after the other. What is
    deleted here is what it would purge at its own next checkpoint as active.
    """
    current = edit_dirs()[nn]
    for f in list(current.glob("edits_*")):
        m = re.match(r"edits_(\d+)-(\d+)$", f.name) or re.match(r"edits_inprogress_(\d+)()$", f.name)
        if m and int(m.group(2) or m.group(1)) < kept:
            f.unlink(missing_ok=True)


def edit_dirs() -> dict[str, Path]:
    """Where edit segments are: each JournalNode's journal and each NameNode's own copy."""
    data = RUN / "hdfs"
    dirs = {jn: data / jn / NAMESERVICE / "current" for jn in journalnodes()}
    dirs.update({nn: data / nn / "name" / "current" for nn in NAMENODES})
    return dirs


def first_txid(current: Path) -> int | None:
    """The first transaction of the oldest edit segment in `current`."""
    firsts = []
    for f in current.glob("edits_*"):
        m = re.match(r"edits_(?:inprogress_)?(\d+)", f.name)
        if m:
            firsts.append(int(m.group(1)))
    return min(firsts) if firsts else None


HADOOP_TOOLS = {"dfs": "org.apache.hadoop.fs.FsShell", "dfsadmin": "org.apache.hadoop.hdfs.tools.DFSAdmin",
                "haadmin": HAADMIN, "getconf": "org.apache.hadoop.hdfs.tools.GetConf"}


def cmd_hdfs(args: list[str]) -> int:
    if not args or args[0] not in HADOOP_TOOLS:
        raise SystemExit(f"devstack: hdfs --ha {'|'.join(HADOOP_TOOLS)} ARGS...")
    return hadoop_tool(HADOOP_TOOLS[args[0]], args[1:], capture=False).returncode


def cmd_check(_args: list[str]) -> int:
    """What the HA stack promises, tried with Hadoop's own clients and WebHDFS: one line per
    check, exit 1 if any failed."""
    failed = []

    def report(what: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail and not ok else ''}", flush=True)
        if not ok:
            failed.append(what)

    def last_line(proc: subprocess.CompletedProcess[str]) -> str:
        lines = [x for x in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines() if x.strip()]
        return lines[-1][:300] if lines else f"exit {proc.returncode}"

    p = hadoop_tool(HAADMIN, ["-getAllServiceState"])
    report("haadmin -getAllServiceState: one active, one standby",
           p.returncode == 0 and p.stdout.count("active") == 1 and p.stdout.count("standby") == 1,
           p.stdout.strip().replace("\n", "; ") or last_line(p))
    nn = active()
    standby = next((n for n in NAMENODES if n != nn), None)
    path = f"/tmp/devstack-check-{os.getpid()}"
    p = hadoop_tool("org.apache.hadoop.fs.FsShell", ["-put", "-f", "-", path], conf="client",
                    stdin="row 1\nrow 2\n")
    q = hadoop_tool("org.apache.hadoop.fs.FsShell", ["-cat", f"hdfs://{NAMESERVICE}{path}"], conf="client")
    report(f"hdfs dfs -put and -cat through hdfs://{NAMESERVICE}",
           p.returncode == 0 and q.stdout == "row 1\nrow 2\n", last_line(p if p.returncode else q))
    if nn is not None and standby is not None:
        url = f"http://{HOST}:{NN_HTTP[nn]}/webhdfs/v1{path}?op=OPEN&user.name={ds.USER}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read().decode()
            report(f"WebHDFS OPEN on the active ({nn})", body == "row 1\nrow 2\n", body[:80])
        except OSError as exc:
            report(f"WebHDFS OPEN on the active ({nn})", False, str(exc))
        url = f"http://{HOST}:{NN_HTTP[standby]}/webhdfs/v1{path}?op=GETFILESTATUS&user.name={ds.USER}"
        try:
            urllib.request.urlopen(url, timeout=10).close()
            report(f"WebHDFS on the standby ({standby}) answers StandbyException", False, "it answered")
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            report(f"WebHDFS on the standby ({standby}) answers StandbyException",
                   exc.code == 403 and "StandbyException" in text, f"{exc.code} {text[:200]}")
        except OSError as exc:
            report(f"WebHDFS on the standby ({standby}) answers StandbyException", False, str(exc))
        # The standby reads finalized segments: after a roll it has everything.
        p = hadoop_tool("org.apache.hadoop.hdfs.tools.DFSAdmin", ["-rollEdits"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (last_txid(standby) or 0) < (last_txid(nn) or 0) - 1:
            time.sleep(0.2)
        a, s = last_txid(nn), last_txid(standby)
        report(f"the standby ({standby}) has applied the active's transactions within 10s of a roll",
               p.returncode == 0 and a is not None and s is not None and s >= a - 1,
               f"active {a}, standby {s}" if p.returncode == 0 else last_line(p))
    p = hadoop_tool(str(HERE / "ha-check" / "EditStream.java"), [f"{path}-inotify"], conf="client")
    report(f"edit stream (inotify) through hdfs://{NAMESERVICE} as {ds.USER}, the superuser: "
           "a new file's create", p.returncode == 0, last_line(p))
    ok, why = datanode_ready()
    report("the DataNode is live on both NameNodes", ok, why)
    if nn is not None and standby is not None:
        try:
            before = last_txid(nn) or 0
            _, _, there = failover(standby)
            after = last_txid(standby) or 0
            _, _, back = failover(nn)
            report(f"failover {nn} -> {standby} ({there:.1f}s) and back ({back:.1f}s), the "
                   "transaction ids going on", after > before, f"txid {before} then {after}")
        except SystemExit as exc:
            report(f"failover {nn} -> {standby} and back", False, str(exc))
    hadoop_tool("org.apache.hadoop.fs.FsShell", ["-rm", "-skipTrash", path], conf="client")
    print(f"{'all checks passed' if not failed else f'{len(failed)} failed'}")
    return 1 if failed else 0


COMMANDS = {"up": cmd_up, "env": cmd_env, "status": cmd_status, "logs": cmd_logs, "down": cmd_down,
            "restart": cmd_restart, "reset": cmd_reset, "failover": cmd_failover,
            "kill-active": cmd_kill_active, "purge-edits": cmd_purge_edits, "hdfs": cmd_hdfs,
            "check": cmd_check}
# Commands only this stack has: `devstack failover` means the HA stack without --ha.
HA_ONLY = ("failover", "kill-active", "purge-edits")


def main(argv: list[str], devstack: ModuleType) -> int:
    """Run `argv` (without --ha) on the HA stack, with the devstack script's helpers pointed at
    the HA stack's state directory."""
    global ds, HOME, RUN
    ds = devstack
    HOME = Path(os.environ.get("DEVSTACK_HA_HOME") or ds.HOME / "ha")
    RUN = HOME / "run"
    vars(ds).update(HOME=HOME, RUN=RUN)  # start_java, running_pid, pid and log files follow these
    _settings()
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])
