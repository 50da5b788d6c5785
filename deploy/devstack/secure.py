"""The Kerberized dev stack: `devstack <command> --secure`.

The same servers as the plain stack (HDFS NameNode + DataNode, Kafka in KRaft combined mode,
Apicurio Registry), from the same cached jars, but in secure mode, with a KDC of their own, in
their own state directory and on their own ports, so it runs beside the plain stack:

    devstack up --secure       KDC, realm, principals, keytabs, CA and certificates (first time),
                               then the servers; ACLs and HDFS directories; idempotent
    devstack env --secure      `export` lines a client needs (see env_lines)
    devstack status --secure   each process, its memory and whether it answers
    devstack logs --secure [kdc|namenode|datanode|kafka|registry] [-n LINES]
    devstack restart --secure kdc|namenode|datanode|kafka|registry
    devstack down --secure     stop only what the secure stack started
    devstack reset --secure    down, then delete its state (realm, keys, certificates, data)
    devstack kinit --secure [hdfs2kafka|analyst]   a ticket from the keytab into the stack's
                               ticket cache ($KRB5CCNAME of `env --secure`)
    devstack acl --secure grant|revoke TOPIC [--principal User:NAME] [--prefixed]
                               every topic operation on TOPIC for NAME (default hdfs2kafka), or
                               take that grant away: for tests of a missing ACL that is added
                               later
    devstack check --secure    try what the stack promises with Hadoop's and Kafka's own
                               clients and curl (tickets, QOPs, SASL data transfer, SPNEGO,
                               edit stream superuser, GSSAPI/SCRAM/mTLS, ACLs); one line each
    devstack hdfs --secure dfs|dfsadmin|getconf ARGS...   Hadoop's client, as the ticket in
                               $KRB5CCNAME
    devstack kafka --secure topics|acls|configs|console-producer|console-consumer
                               [--as CONFIG] ARGS...   Kafka's tools as kafka-clients/CONFIG
                               (hdfs2kafka-gssapi, hdfs2kafka-scram, hdfs2kafka-mtls, analyst-*;
                               default kafka-gssapi, the broker, a super user)

Why it is built this way:

- KDC: MIT krb5 from Debian's packages (krb5-kdc, krb5-admin-server, krb5-user, libkrb5-dev;
  `deploy/tools/install-test-tools` installs them). It is the same implementation as the client
  libraries the daemon uses (libgssapi-krb5; the `gssapi` Python package builds against
  libkrb5-dev, having no Linux wheel), and it brings kinit, klist and kadmin.local for tests.
  krb5kdc runs as a plain process with its own kdc.conf, krb5.conf and database in the state
  directory (KRB5_KDC_PROFILE, KRB5_CONFIG), on 127.0.0.1 only; /etc/krb5.conf is not used.
  krb5.conf sets udp_preference_limit = 1 (clients talk TCP), rdns = false and
  dns_canonicalize_hostname = false, so "localhost" stays "localhost" in every principal.
- One host name everywhere: servers bind 127.0.0.1, clients are given "localhost", which
  /etc/hosts maps to 127.0.0.1 (and 127.0.0.1 back to localhost, which is what Hadoop's _HOST
  becomes). Service principals are <service>/localhost@HDFS2KAFKA.TEST.
- The daemon's principal hdfs2kafka/localhost maps to the short name `hdfs2kafka` in Hadoop
  and in Kafka (the DEFAULT rule of both). Reading the edit stream needs an HDFS superuser, so
  `hdfs2kafka` is put in the superuser group with Hadoop's static group mapping
  (hadoop.user.group.static.mapping.overrides; no OS user is needed); `analyst` is not.
- HDFS: Kerberos RPC with hadoop.rpc.protection from DEVSTACK_RPC_PROTECTION (authentication,
  integrity, privacy, or a comma list such as "authentication,integrity,privacy": Hadoop takes
  a list and lets the client pick any QOP in it), authorization on, block access tokens,
  HTTPS only (WebHDFS with SPNEGO), SASL on data transfer (dfs.data.transfer.protection), so
  the DataNode needs neither root nor jsvc. `up` restarts the NameNode and DataNode when the
  settings they were started with changed (another QOP, say).
- Kafka: one SASL_SSL listener with both GSSAPI and SCRAM-SHA-512 (clients and the broker's
  own inter-broker connections, as kafka/localhost by GSSAPI), an SSL listener that requires a
  client certificate (mutual TLS; CN=<name> becomes User:<name>), and the controller listener
  SASL_SSL with GSSAPI too: nothing is plaintext. SCRAM credentials are created when the
  storage is formatted. StandardAuthorizer with allow.everyone.if.no.acl.found=false; the
  broker's principal is the only super user. `up` grants User:hdfs2kafka its topic and group
  prefixes, its transactional ids (prefix hdfs2kafka-) and Describe on the cluster; `analyst`
  gets nothing.
- Schema registry: HTTPS only with the stack's certificate (Quarkus settings). Apicurio 2.x
  has no basic auth of its own: its basic auth exchanges the credentials for a token at an
  OIDC server (Keycloak), so there is none here.
- DEVSTACK_TICKET_LIFETIME (e.g. 2m) is the maximum ticket life of the daemon's principal and
  the analyst's (modprinc -maxlife, applied at every `up`, so it can change on a running
  stack); the servers' own principals keep the realm's 10h. DEVSTACK_TICKET_RENEW_LIFETIME
  (default 7d) the same for renewal.

Settings (environment), besides the plain stack's DEVSTACK_HOME, DEVSTACK_LIB and versions:
    DEVSTACK_SECURE_HOME     state (default $DEVSTACK_HOME/secure)
    DEVSTACK_RPC_PROTECTION  authentication (default) | integrity | privacy | a comma list
    DEVSTACK_TICKET_LIFETIME (10h)  DEVSTACK_TICKET_RENEW_LIFETIME (7d): 90s, 2m, 10h, 7d
    DEVSTACK_SECURE_TOPIC_PREFIXES  topic and group prefixes granted to hdfs2kafka
                             (default "hdfs2kafka,demo-,secure-")
    These four stick: an `up` whose environment does not set one keeps what the stack has
    (settings.json in the state directory); `reset --secure` returns to the defaults.
    DEVSTACK_SECURE_KDC_PORT (17088) DEVSTACK_SECURE_NN_RPC_PORT (17820)
    DEVSTACK_SECURE_NN_HTTPS_PORT (17871) DEVSTACK_SECURE_DN_PORT (17866)
    DEVSTACK_SECURE_DN_HTTPS_PORT (17865) DEVSTACK_SECURE_DN_IPC_PORT (17867)
    DEVSTACK_SECURE_KAFKA_PORT (17092, SASL_SSL) DEVSTACK_SECURE_KAFKA_MTLS_PORT (17094, SSL)
    DEVSTACK_SECURE_KAFKA_CONTROLLER_PORT (17093) DEVSTACK_SECURE_REGISTRY_PORT (17081, HTTPS)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REALM = "HDFS2KAFKA.TEST"
HOSTNAME = "localhost"  # what clients are given; servers bind HOST (127.0.0.1)
HOST = "127.0.0.1"
DAEMON = "hdfs2kafka"
ANALYST = "analyst"
ROLES = ("kdc", "namenode", "datanode", "kafka", "registry")


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


KDC_PORT = _port("DEVSTACK_SECURE_KDC_PORT", 17088)
NN_RPC = _port("DEVSTACK_SECURE_NN_RPC_PORT", 17820)
NN_HTTPS = _port("DEVSTACK_SECURE_NN_HTTPS_PORT", 17871)
DN_PORT = _port("DEVSTACK_SECURE_DN_PORT", 17866)
DN_HTTPS = _port("DEVSTACK_SECURE_DN_HTTPS_PORT", 17865)
DN_IPC = _port("DEVSTACK_SECURE_DN_IPC_PORT", 17867)
KAFKA_PORT = _port("DEVSTACK_SECURE_KAFKA_PORT", 17092)
KAFKA_CONTROLLER = _port("DEVSTACK_SECURE_KAFKA_CONTROLLER_PORT", 17093)
KAFKA_MTLS = _port("DEVSTACK_SECURE_KAFKA_MTLS_PORT", 17094)
REGISTRY_PORT = _port("DEVSTACK_SECURE_REGISTRY_PORT", 17081)

# These four are set by main(): from the environment, else kept from the stack's last `up`.
RPC_PROTECTION = "authentication"
TOPIC_PREFIXES = ["hdfs2kafka", "demo-", "secure-"]
TICKET_LIFE = 36000
RENEW_LIFE = 7 * 86400
TXN_PREFIX = "hdfs2kafka-"


def seconds(text: str) -> int:
    """"90s", "2m", "10h", "7d" or a number of seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)




def _settings() -> None:
    """The stack's settings: each from the environment when set there, else what the last `up`
    applied (so an `up` from another shell does not undo them), else the default."""
    global RPC_PROTECTION, TOPIC_PREFIXES, TICKET_LIFE, RENEW_LIFE
    try:
        prev = json.loads((RUN / "settings.json").read_text())
    except (FileNotFoundError, ValueError):
        prev = {}
    env = os.environ.get
    RPC_PROTECTION = (env("DEVSTACK_RPC_PROTECTION") or prev.get("rpc_protection")
                      or RPC_PROTECTION).replace(" ", "")
    prefixes = env("DEVSTACK_SECURE_TOPIC_PREFIXES")
    TOPIC_PREFIXES = ([p.strip() for p in prefixes.split(",") if p.strip()] if prefixes
                      else list(prev.get("topic_prefixes") or TOPIC_PREFIXES))
    life, renew = env("DEVSTACK_TICKET_LIFETIME"), env("DEVSTACK_TICKET_RENEW_LIFETIME")
    TICKET_LIFE = seconds(life) if life else int(prev.get("ticket_lifetime_s") or TICKET_LIFE)
    RENEW_LIFE = seconds(renew) if renew else int(prev.get("renew_lifetime_s") or RENEW_LIFE)

ds: ModuleType  # the devstack script, its helpers pointed at this stack's state directory
HOME: Path
RUN: Path


def principal(name: str) -> str:
    return f"{name}@{REALM}" if "/" in name or name == ANALYST else f"{name}/{HOSTNAME}@{REALM}"


# Service principals and the keytab each is written to; `analyst` is a user.
PRINCIPALS = {"nn": "nn", "dn": "dn", "HTTP": "http", "kafka": "kafka", DAEMON: DAEMON,
              ANALYST: ANALYST}


def keytab(name: str) -> Path:
    return RUN / "keytabs" / f"{PRINCIPALS.get(name, name)}.keytab"


def krb5_dir() -> Path:
    return RUN / "krb5"


def tls_dir() -> Path:
    return RUN / "tls"


def secret_file(name: str) -> Path:
    return RUN / "secrets" / name


def log(msg: str) -> None:
    ds.log(msg)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None,
         cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=stdin, cwd=cwd)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"devstack: {what} failed (exit {proc.returncode}): {' '.join(cmd[:3])} ...")
    return proc.stdout


def _secret(name: str, nbytes: int = 18) -> str:
    """A password generated once and kept in a file of the state directory (mode 0600)."""
    path = secret_file(name)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


# --------------------------------------------------------------------------- Kerberos


def krb_env() -> dict[str, str]:
    return {**os.environ, "KRB5_CONFIG": str(krb5_dir() / "krb5.conf"),
            "KRB5_KDC_PROFILE": str(krb5_dir() / "kdc.conf")}


def _krb_duration(secs: int) -> str:
    return f"{secs // 3600}h {secs % 3600 // 60}m {secs % 60}s"


def write_krb5_conf() -> None:
    d = krb5_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "krb5.conf").write_text(f"""[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    forwardable = true
    renew_lifetime = {_krb_duration(RENEW_LIFE)}
    ignore_acceptor_hostname = false

[realms]
    {REALM} = {{
        kdc = {HOST}:{KDC_PORT}
    }}

[domain_realm]
    localhost = {REALM}
    .localhost = {REALM}
""")
    (d / "kdc.conf").write_text(f"""[kdcdefaults]
    kdc_listen = {HOST}:{KDC_PORT}
    kdc_tcp_listen = {HOST}:{KDC_PORT}

[realms]
    {REALM} = {{
        database_name = {d / 'principal'}
        key_stash_file = {d / 'stash'}
        acl_file = {d / 'kadm5.acl'}
        max_life = {_krb_duration(max(TICKET_LIFE, 36000))}
        max_renewable_life = {_krb_duration(max(RENEW_LIFE, 7 * 86400))}
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = STDERR
""")
    (d / "kadm5.acl").write_text("")


def ensure_realm() -> None:
    """The KDC database, principals and keytabs, once; the ticket lifetimes at every `up`."""
    d = krb5_dir()
    env = krb_env()
    if not (d / "stash").exists():
        for stale in d.glob("principal*"):
            stale.unlink()
        log(f"creating realm {REALM}")
        _run(["kdb5_util", "create", "-s", "-r", REALM, "-P", _secret("kdc-master")],
             "creating the KDC database", env)
        shutil.rmtree(RUN / "keytabs", ignore_errors=True)
    if not keytab(DAEMON).exists():
        (RUN / "keytabs").mkdir(parents=True, exist_ok=True)
        os.chmod(RUN / "keytabs", 0o700)
        cmds = []
        for name in PRINCIPALS:
            cmds.append(f"addprinc -randkey {principal(name)}")
            cmds.append(f"ktadd -k {keytab(name)} {principal(name)}")
        _run(["kadmin.local", "-r", REALM], "creating principals", env, stdin="\n".join(cmds) + "\n")
        missing = [n for n in PRINCIPALS if not keytab(n).exists()]
        if missing:
            raise SystemExit(f"devstack: no keytab written for {missing}")
    cmds = [f'modprinc -maxlife "{TICKET_LIFE} seconds" -maxrenewlife "{RENEW_LIFE} seconds" '
            f"{principal(n)}" for n in (DAEMON, ANALYST)]
    cmds.append(f'modprinc -maxrenewlife "{max(RENEW_LIFE, 7 * 86400)} seconds" krbtgt/{REALM}@{REALM}')
    _run(["kadmin.local", "-r", REALM], "setting ticket lifetimes", env, stdin="\n".join(cmds) + "\n")


def kdc_pid() -> int | None:
    """The recorded KDC if it is alive and is ours (its environment names our kdc.conf)."""
    try:
        pid = int(ds.pid_file("kdc").read_text().split()[0])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    mine = f"KRB5_KDC_PROFILE={krb5_dir() / 'kdc.conf'}".encode()
    return pid if mine in environ and state != "Z" else None


def start_kdc() -> None:
    if kdc_pid():
        return
    krb5kdc = shutil.which("krb5kdc") or "/usr/sbin/krb5kdc"
    if not Path(krb5kdc).exists():
        raise SystemExit("devstack: krb5kdc is missing; run deploy/tools/install-test-tools")
    (RUN / "logs").mkdir(parents=True, exist_ok=True)
    with open(ds.log_file("kdc"), "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting kdc\n".encode())
        out.flush()
        proc = subprocess.Popen([krb5kdc, "-n", "-r", REALM], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=RUN, env=krb_env())
    ds.pid_file("kdc").write_text(f"{proc.pid}\n")
    log(f"started KDC (pid {proc.pid}) realm {REALM} on {HOST}:{KDC_PORT} (tcp, udp)")


def kdc_state() -> tuple[bool, str]:
    try:
        with socket.create_connection((HOST, KDC_PORT), timeout=2):
            return True, f"KDC answering on {HOST}:{KDC_PORT}"
    except OSError as exc:
        return False, f"KDC not answering ({exc.__class__.__name__})"


def kinit(name: str, ccache: Path | None = None) -> Path:
    """A ticket for `name` from its keytab into `ccache` (default: the stack's ticket cache)."""
    ccache = ccache or RUN / "ccache"
    env = {**krb_env(), "KRB5CCNAME": f"FILE:{ccache}"}
    _run(["kinit", "-kt", str(keytab(name)), principal(name)], f"kinit {principal(name)}", env)
    return ccache


# --------------------------------------------------------------------------- TLS


def ensure_tls() -> None:
    """One CA; a server certificate for localhost and 127.0.0.1 (PEM, and PKCS12 for Java);
    client certificates CN=hdfs2kafka and CN=analyst for mutual TLS; a truststore with the CA."""
    d = tls_dir()
    if (d / ".complete").exists():
        return
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.chmod(d, 0o700)
    pw = _secret("store-password")
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
          "-out", "ca.pem", "-days", "3650", "-subj", f"/CN=hdfs2kafka devstack CA {REALM}",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"], "making the CA", cwd=d)
    certs = {"server": ("localhost", "serverAuth,clientAuth", "DNS:localhost,IP:127.0.0.1"),
             DAEMON: (DAEMON, "clientAuth", None), ANALYST: (ANALYST, "clientAuth", None)}
    for name, (cn, usage, san) in certs.items():
        ext = f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        if san:
            ext += f"subjectAltName={san}\n"
        (d / f"{name}.ext").write_text(ext)
        _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
              "-out", f"{name}.csr", "-subj", f"/CN={cn}/O=hdfs2kafka devstack"], f"key for {name}", cwd=d)
        _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "3650", "-out", f"{name}.pem", "-extfile", f"{name}.ext"],
             f"certificate for {name}", cwd=d)
        _run(["openssl", "pkcs12", "-export", "-in", f"{name}.pem", "-inkey", f"{name}.key",
              "-certfile", "ca.pem", "-name", name, "-out", f"{name}.p12", "-passout", f"pass:{pw}"],
             f"keystore for {name}", cwd=d)
        (d / f"{name}.csr").unlink()
        (d / f"{name}.ext").unlink()
    _run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem",
          "-keystore", "truststore.p12", "-storetype", "PKCS12", "-storepass", pw],
         "truststore", cwd=d)
    for f in d.iterdir():
        os.chmod(f, 0o644 if f.suffix == ".pem" else 0o600)
    (d / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))


def ca_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_dir() / "ca.pem"))


# --------------------------------------------------------------------------- HDFS


def _hadoop_site() -> tuple[dict[str, object], dict[str, object]]:
    """(core-site, hdfs-site) of the servers."""
    data = RUN / "hdfs"
    core: dict[str, object] = {
        "fs.defaultFS": f"hdfs://{HOSTNAME}:{NN_RPC}",
        "hadoop.tmp.dir": data / "tmp",
        "hadoop.security.authentication": "kerberos",
        "hadoop.security.authorization": "true",
        "hadoop.rpc.protection": RPC_PROTECTION,
        "hadoop.security.auth_to_local": "DEFAULT",
        # SPNEGO on every web endpoint (WebHDFS, /jmx, the UI): core-default.xml says "simple"
        # with anonymous access, and Hadoop 3.4's WebHDFS filter takes its settings from here,
        # not from dfs.web.authentication.* (those are set below too, for older releases).
        "hadoop.http.authentication.type": "kerberos",
        "hadoop.http.authentication.kerberos.principal": f"HTTP/_HOST@{REALM}",
        "hadoop.http.authentication.kerberos.keytab": keytab("HTTP"),
        "hadoop.http.authentication.simple.anonymous.allowed": "false",
        # Groups without OS users: the daemon is an HDFS superuser (it reads the edit stream),
        # the analyst is not.
        "hadoop.user.group.static.mapping.overrides":
            f"dr.who=;nn=supergroup;dn=supergroup;{DAEMON}=supergroup;{ANALYST}={ANALYST}",
    }
    hdfs: dict[str, object] = {
        "dfs.namenode.rpc-address": f"{HOSTNAME}:{NN_RPC}",
        "dfs.namenode.rpc-bind-host": HOST,
        "dfs.namenode.https-address": f"{HOSTNAME}:{NN_HTTPS}",
        "dfs.namenode.https-bind-host": HOST,
        "dfs.namenode.http-address": f"{HOST}:0",
        "dfs.namenode.name.dir": data / "name",
        "dfs.datanode.data.dir": data / "data",
        "dfs.datanode.address": f"{HOST}:{DN_PORT}",
        "dfs.datanode.https.address": f"{HOST}:{DN_HTTPS}",
        "dfs.datanode.http.address": f"{HOST}:0",
        "dfs.datanode.ipc.address": f"{HOST}:{DN_IPC}",
        "dfs.datanode.hostname": HOSTNAME,
        "dfs.replication": 1,
        "dfs.permissions.enabled": "true",
        "dfs.permissions.superusergroup": "supergroup",
        "dfs.webhdfs.enabled": "true",
        "dfs.namenode.resource.du.reserved": 1048576,
        "dfs.datanode.du.reserved": 0,
        "dfs.namenode.safemode.extension": 0,
        "dfs.namenode.safemode.min.datanodes": 0,
        "dfs.namenode.fs-limits.min-block-size": 4096,
        "dfs.namenode.num.extra.edits.retained": 2,
        "dfs.namenode.max.extra.edits.segments.retained": 1,
        "dfs.namenode.inotify.max.events.per.rpc": 1000,
        "dfs.heartbeat.interval": 1,
        "dfs.namenode.heartbeat.recheck-interval": 5000,
        "dfs.client.use.datanode.hostname": "false",
        # secure mode
        "dfs.block.access.token.enable": "true",
        "dfs.namenode.kerberos.principal": f"nn/_HOST@{REALM}",
        "dfs.namenode.keytab.file": keytab("nn"),
        "dfs.namenode.kerberos.internal.spnego.principal": f"HTTP/_HOST@{REALM}",
        "dfs.datanode.kerberos.principal": f"dn/_HOST@{REALM}",
        "dfs.datanode.keytab.file": keytab("dn"),
        "dfs.web.authentication.kerberos.principal": f"HTTP/_HOST@{REALM}",
        "dfs.web.authentication.kerberos.keytab": keytab("HTTP"),
        "dfs.http.policy": "HTTPS_ONLY",
        "dfs.data.transfer.protection": "authentication",
    }
    for item in os.environ.get("DEVSTACK_HDFS_SITE", "").split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            hdfs[name.strip()] = value.strip()
    return core, hdfs


def _ssl_xml(side: str) -> dict[str, object]:
    pw = _secret("store-password")
    props: dict[str, object] = {
        f"ssl.{side}.truststore.location": tls_dir() / "truststore.p12",
        f"ssl.{side}.truststore.password": pw,
        f"ssl.{side}.truststore.type": "pkcs12",
    }
    if side == "server":
        props.update({"ssl.server.keystore.location": tls_dir() / "server.p12",
                      "ssl.server.keystore.password": pw, "ssl.server.keystore.keypassword": pw,
                      "ssl.server.keystore.type": "pkcs12"})
    return props


def write_hadoop_conf() -> str:
    """The servers' configuration (RUN/hadoop-conf) and a client's (RUN/client-conf); returns
    a digest of the servers' settings, to tell whether running servers need a restart."""
    core, hdfs = _hadoop_site()
    server = RUN / "hadoop-conf"
    server.mkdir(parents=True, exist_ok=True)
    files = {"core-site.xml": ds._xml(core), "hdfs-site.xml": ds._xml(hdfs),
             "ssl-server.xml": ds._xml(_ssl_xml("server")), "ssl-client.xml": ds._xml(_ssl_xml("client"))}
    for name, text in files.items():
        (server / name).write_text(text)
    (server / "log4j.properties").write_text(
        "log4j.rootLogger=INFO,console\n"
        "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.console.target=System.out\n"
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n"
        "log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN\n"
        "log4j.logger.BlockStateChange=WARN\n"
        "log4j.logger.org.apache.hadoop.hdfs.server.datanode.DataNode.clienttrace=WARN\n"
        "log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN\n")
    # What a client reads: no server keytabs, the addresses under the name clients use.
    client = RUN / "client-conf"
    client.mkdir(parents=True, exist_ok=True)
    client_core = {k: core[k] for k in ("fs.defaultFS", "hadoop.security.authentication",
                                        "hadoop.security.authorization", "hadoop.rpc.protection",
                                        "hadoop.security.auth_to_local")}
    client_hdfs = {k: hdfs[k] for k in ("dfs.namenode.rpc-address", "dfs.namenode.https-address",
                                        "dfs.namenode.kerberos.principal", "dfs.http.policy",
                                        "dfs.data.transfer.protection", "dfs.block.access.token.enable",
                                        "dfs.web.authentication.kerberos.principal",
                                        "dfs.client.use.datanode.hostname")}
    client_hdfs["dfs.datanode.kerberos.principal"] = hdfs["dfs.datanode.kerberos.principal"]
    client_hdfs["dfs.replication"] = 1
    (client / "core-site.xml").write_text(ds._xml(client_core))
    (client / "hdfs-site.xml").write_text(ds._xml(client_hdfs))
    (client / "ssl-client.xml").write_text(files["ssl-client.xml"])
    (client / "log4j.properties").write_text(
        "log4j.rootLogger=WARN,console\n"
        "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n"
        "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.console.target=System.err\n"
        "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n")
    return hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()


def java_krb_opts() -> list[str]:
    return [f"-Djava.security.krb5.conf={krb5_dir() / 'krb5.conf'}",
            "-Djavax.security.auth.useSubjectCredsOnly=false"]


def hadoop_opts() -> list[str]:
    return [*ds.hadoop_opts(), *java_krb_opts()]


def start_namenode() -> None:
    if ds.running_pid("namenode"):
        return
    if not (RUN / "hdfs" / "name" / "current" / "VERSION").exists():
        log("formatting the NameNode")
        (RUN / "logs").mkdir(parents=True, exist_ok=True)
        cmd = [ds.java(), "-Xmx256m", *ds.JAVA_OPENS, *hadoop_opts(), "-cp", ds.hadoop_classpath(),
               "org.apache.hadoop.hdfs.server.namenode.NameNode", "-format", "-force", "-nonInteractive"]
        with open(ds.log_file("namenode-format"), "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=RUN).returncode
        if rc != 0:
            raise SystemExit(f"devstack: NameNode format failed, see {ds.log_file('namenode-format')}")
        (RUN / "hdfs" / ".dirs").unlink(missing_ok=True)
    pid = ds.start_java("namenode", ds.hadoop_classpath(), "org.apache.hadoop.hdfs.server.namenode.NameNode",
                        [], "384m", hadoop_opts())
    log(f"started NameNode (pid {pid}) rpc {HOSTNAME}:{NN_RPC} https {HOSTNAME}:{NN_HTTPS} "
        f"rpc protection {RPC_PROTECTION}")


def start_datanode() -> None:
    if ds.running_pid("datanode"):
        return
    pid = ds.start_java("datanode", ds.hadoop_classpath(), "org.apache.hadoop.hdfs.server.datanode.DataNode",
                        [], "256m", hadoop_opts())
    log(f"started DataNode (pid {pid})")


def admin_ccache() -> Path:
    """A ticket of the daemon's principal for the stack's own calls (readiness, directories),
    kept apart from the ticket cache `env --secure` gives clients."""
    cc = RUN / "admin-ccache"
    env = {**krb_env(), "KRB5CCNAME": f"FILE:{cc}"}
    if subprocess.run(["klist", "-s"], env=env).returncode != 0:
        kinit(DAEMON, cc)
    return cc


def namenode_state() -> tuple[bool, str]:
    """(ready, why) from the NameNode's /jmx over HTTPS with SPNEGO (curl --negotiate)."""
    url = f"https://{HOSTNAME}:{NN_HTTPS}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
    env = {**krb_env(), "KRB5CCNAME": f"FILE:{admin_ccache()}"}
    proc = subprocess.run(["curl", "-sS", "--fail", "--max-time", "3", "--negotiate", "-u", ":",
                           "--cacert", str(tls_dir() / "ca.pem"), url], capture_output=True, text=True, env=env)
    try:
        beans = json.loads(proc.stdout)["beans"] if proc.returncode == 0 else None
    except (ValueError, KeyError):
        beans = None
    if beans is None:
        return False, f"NameNode https not answering ({proc.stderr.strip()[:80] or proc.returncode})"
    if not beans:
        return False, "NameNode starting"
    info = beans[0]
    if info.get("Safemode"):
        return False, "NameNode in safe mode"
    live = json.loads(info.get("LiveNodes") or "{}")
    if not live:
        return False, "no live DataNode yet"
    return True, (f"NameNode active, {len(live)} live DataNode "
                  f"(https, rpc protection {applied()['rpc_protection']})")


def webhdfs(method: str, path: str, op: str, ccache: Path, **params: str) -> str:
    """One WebHDFS call with SPNEGO (curl --negotiate) as the ticket in `ccache`."""
    query = "&".join([f"op={op}", *(f"{k}={v}" for k, v in params.items())])
    url = f"https://{HOSTNAME}:{NN_HTTPS}/webhdfs/v1{path}?{query}"
    env = {**krb_env(), "KRB5CCNAME": f"FILE:{ccache}"}
    return _run(["curl", "-sS", "--fail-with-body", "--negotiate", "-u", ":", "--cacert",
                 str(tls_dir() / "ca.pem"), "-X", method, url], f"WebHDFS {op} {path}", env)


def ensure_hdfs_dirs() -> None:
    """/tmp (1777) and home directories for hdfs2kafka and analyst, once after a format."""
    mark = RUN / "hdfs" / ".dirs"
    if mark.exists():
        return
    cc = admin_ccache()
    webhdfs("PUT", "/tmp", "MKDIRS", cc, permission="1777")
    webhdfs("PUT", "/tmp", "SETPERMISSION", cc, permission="1777")
    for user in (DAEMON, ANALYST):
        webhdfs("PUT", f"/user/{user}", "MKDIRS", cc, permission="755")
        webhdfs("PUT", f"/user/{user}", "SETOWNER", cc, owner=user, group=user)
    mark.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    log("HDFS: /tmp (1777), /user/hdfs2kafka, /user/analyst")


# --------------------------------------------------------------------------- Kafka


def _jaas_keytab(name: str) -> str:
    return (f'com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true storeKey=true '
            f'keyTab="{keytab(name)}" principal="{principal(name)}";')


def _ssl_client_props(store: str | None = None) -> dict[str, object]:
    pw = _secret("store-password")
    props: dict[str, object] = {"ssl.truststore.location": tls_dir() / "truststore.p12",
                                "ssl.truststore.type": "PKCS12", "ssl.truststore.password": pw}
    if store:
        props.update({"ssl.keystore.location": tls_dir() / f"{store}.p12", "ssl.keystore.type": "PKCS12",
                      "ssl.keystore.password": pw, "ssl.key.password": pw})
    return props


def write_kafka_conf() -> Path:
    conf = RUN / "kafka-conf"
    conf.mkdir(parents=True, exist_ok=True)
    pw = _secret("store-password")
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "listeners": (f"SASL_SSL://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER},"
                      f"MTLS://{HOST}:{KAFKA_MTLS}"),
        "advertised.listeners": (f"SASL_SSL://{HOSTNAME}:{KAFKA_PORT},"
                                 f"CONTROLLER://{HOSTNAME}:{KAFKA_CONTROLLER},MTLS://{HOSTNAME}:{KAFKA_MTLS}"),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL,MTLS:SSL",
        "controller.quorum.bootstrap.servers": f"{HOSTNAME}:{KAFKA_CONTROLLER}",
        # SASL: GSSAPI and SCRAM for clients, GSSAPI between broker and controller.
        "sasl.enabled.mechanisms": "GSSAPI,SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "GSSAPI",
        "sasl.mechanism.controller.protocol": "GSSAPI",
        "listener.name.controller.sasl.enabled.mechanisms": "GSSAPI",
        "sasl.kerberos.service.name": "kafka",
        "sasl.kerberos.principal.to.local.rules": "DEFAULT",
        "listener.name.sasl_ssl.gssapi.sasl.jaas.config": _jaas_keytab("kafka"),
        "listener.name.controller.gssapi.sasl.jaas.config": _jaas_keytab("kafka"),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        # TLS from the stack's CA; the MTLS listener wants a client certificate, CN=x -> User:x.
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": tls_dir() / "server.p12",
        "ssl.keystore.password": pw,
        "ssl.key.password": pw,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": tls_dir() / "truststore.p12",
        "ssl.truststore.password": pw,
        "listener.name.mtls.ssl.client.auth": "required",
        # Java names the subject in RFC 2253 order ("O=...,CN=name"): take the CN wherever it is.
        "ssl.principal.mapping.rules": "RULE:^(?:.*,)?CN=([^,]+)(?:,.*)?$/$1/,DEFAULT",
        # ACLs: nobody but the broker itself without one.
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:kafka",
        "log.dirs": RUN / "kafka" / "data",
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "log.cleaner.backoff.ms": 1000,
    }
    for item in os.environ.get("DEVSTACK_KAFKA_PROPS", "").split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            props[name.strip()] = value.strip()
    (conf / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    os.chmod(conf / "server.properties", 0o600)
    (conf / "log4j2.properties").write_text(
        "status = warn\n"
        "appender.console.type = Console\n"
        "appender.console.name = STDOUT\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.stdout.ref = STDOUT\n"
        "logger.state.name = state.change.logger\n"
        "logger.state.level = WARN\n"
        "logger.req.name = kafka.request.logger\n"
        "logger.req.level = WARN\n")
    (conf / "tools-log4j2.properties").write_text(
        "status = warn\n"
        "appender.console.type = Console\n"
        "appender.console.name = STDERR\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\n"
        "rootLogger.appenderRef.stderr.ref = STDERR\n")
    write_client_configs()
    return conf


def client_config(name: str) -> Path:
    return RUN / "kafka-clients" / f"{name}.properties"


def write_client_configs() -> None:
    """Java client configs (kafka-topics, console producer...): the broker's admin, and
    hdfs2kafka and analyst by GSSAPI, by SCRAM and by mutual TLS."""
    d = RUN / "kafka-clients"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    configs: dict[str, dict[str, object]] = {}
    for who in ("kafka", DAEMON, ANALYST):
        configs[f"{who}-gssapi"] = {"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI",
                                    "sasl.kerberos.service.name": "kafka",
                                    "sasl.jaas.config": _jaas_keytab(who), **_ssl_client_props()}
    for who in (DAEMON, ANALYST):
        configs[f"{who}-scram"] = {
            "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                                 f'username="{who}" password="{_secret(f"{who}.scram-password")}";'),
            **_ssl_client_props()}
        configs[f"{who}-mtls"] = {"security.protocol": "SSL", **_ssl_client_props(who)}
    for name, props in configs.items():
        path = client_config(name)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        os.chmod(path, 0o600)


def kafka_classpath() -> str:
    return f"{ds.lib_dir('kafka')}/*"


def start_kafka() -> None:
    if ds.running_pid("kafka"):
        return
    conf = RUN / "kafka-conf"
    log_opts = [f"-Dlog4j2.configurationFile={conf / 'log4j2.properties'}", f"-Dkafka.logs.dir={RUN / 'logs'}",
                *java_krb_opts()]
    if not (RUN / "kafka" / "data" / "meta.properties").exists():
        log("formatting Kafka storage (SCRAM credentials for hdfs2kafka and analyst)")
        args = ["format", "-t", ds.kafka_uuid(), "-c", str(conf / "server.properties"), "--standalone"]
        for who in (DAEMON, ANALYST):
            args += ["--add-scram",
                     f"SCRAM-SHA-512=[name={who},password={_secret(f'{who}.scram-password')}]"]
        cmd = [ds.java(), "-Xmx256m", *log_opts, "-cp", kafka_classpath(), ds.kafka_storage_tool(), *args]
        (RUN / "logs").mkdir(parents=True, exist_ok=True)
        with open(ds.log_file("kafka-format"), "wb") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=RUN).returncode
        if rc != 0:
            raise SystemExit(f"devstack: Kafka storage format failed, see {ds.log_file('kafka-format')}")
        (RUN / "kafka" / ".acls").unlink(missing_ok=True)
    pid = ds.start_java("kafka", kafka_classpath(), "kafka.Kafka", [str(conf / "server.properties")], "512m",
                        log_opts)
    log(f"started Kafka {ds.KAFKA_VERSION} (pid {pid}) SASL_SSL {HOSTNAME}:{KAFKA_PORT}, "
        f"SSL (mutual) {HOSTNAME}:{KAFKA_MTLS}")


def kafka_state() -> tuple[bool, str]:
    """(ready, why): TLS with the stack's CA and an ApiVersions answer (allowed before SASL);
    whether clients get in is what the ACL step then shows."""
    try:
        with socket.create_connection((HOST, KAFKA_PORT), timeout=3) as raw:
            with ca_context().wrap_socket(raw, server_hostname=HOSTNAME) as sock:
                resp = ds._kafka_request(sock, 18, 0, 1, b"")
    except (OSError, ssl.SSLError) as exc:
        return False, f"Kafka not answering TLS ({exc.__class__.__name__})"
    error = int.from_bytes(resp[:2], "big", signed=True)
    if error:
        return False, f"Kafka ApiVersions error {error}"
    return True, f"Kafka answering over TLS (SASL_SSL {HOSTNAME}:{KAFKA_PORT})"


def kafka_tool(main: str, args: list[str], config: str = "kafka-gssapi", check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A Kafka command-line tool (org.apache.kafka.tools.*) as the client of `config`."""
    conf = RUN / "kafka-conf"
    cmd = [ds.java(), "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
           f"-Dlog4j2.configurationFile={conf / 'tools-log4j2.properties'}", *java_krb_opts(),
           "-cp", kafka_classpath(), main, "--bootstrap-server", f"{HOSTNAME}:{KAFKA_PORT}",
           "--command-config", str(client_config(config)), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"devstack: {main.rsplit('.', 1)[1]} {' '.join(args[:4])} failed")
    return proc


ACL_TOOL = "org.apache.kafka.tools.AclCommand"
TOPIC_OPS = ("Read", "Write", "Create", "Describe", "DescribeConfigs", "Alter", "AlterConfigs", "Delete")


def _acl_args(action: str, who: str, ops: tuple[str, ...], resource: list[str], prefixed: bool) -> list[str]:
    args = [f"--{action}", "--force", "--allow-principal", f"User:{who}"]
    for op in ops:
        args += ["--operation", op]
    args += resource
    if prefixed:
        args += ["--resource-pattern-type", "prefixed"]
    return args


def ensure_acls() -> None:
    """The daemon's grants, once per Kafka format (ACLs live in the metadata log) and again when
    the prefixes change: prefixed topics and groups, prefixed transactional ids, the cluster's
    Describe and IdempotentWrite. The first call also waits until the broker lets its own
    principal in."""
    mark = RUN / "kafka" / ".acls"
    want = ",".join(TOPIC_PREFIXES)
    if mark.exists() and mark.read_text() == want:
        return
    topics = [a for p in TOPIC_PREFIXES for a in ("--topic", p)]
    groups = [a for p in TOPIC_PREFIXES for a in ("--group", p)]
    steps = [
        _acl_args("add", DAEMON, TOPIC_OPS, topics, True),
        _acl_args("add", DAEMON, ("Read", "Describe", "Delete"), groups, True),
        _acl_args("add", DAEMON, ("Write", "Describe"), ["--transactional-id", TXN_PREFIX], True),
        _acl_args("add", DAEMON, ("Describe", "IdempotentWrite"), ["--cluster"], False),
    ]
    deadline = time.monotonic() + 120
    for args in steps:
        while True:
            proc = kafka_tool(ACL_TOOL, args, check=False)
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit("devstack: could not create the Kafka ACLs")
            time.sleep(2)
    mark.write_text(want)
    log(f"Kafka ACLs: User:{DAEMON} on topics and groups prefixed {want}, transactional ids "
        f"prefixed {TXN_PREFIX}, cluster Describe/IdempotentWrite; {ANALYST}: none")


# --------------------------------------------------------------------------- registry


def start_registry() -> None:
    if ds.running_pid("registry"):
        return
    jar = ds.lib_dir("registry") / "registry-runner.jar"
    tls = tls_dir()
    opts = [f"-Dquarkus.http.ssl-port={REGISTRY_PORT}", f"-Dquarkus.http.host={HOST}",
            "-Dquarkus.http.port=0", "-Dquarkus.http.insecure-requests=disabled",
            f"-Dquarkus.http.ssl.certificate.files={tls / 'server.pem'}",
            f"-Dquarkus.http.ssl.certificate.key-files={tls / 'server.key'}",
            "-Dquarkus.log.console.color=false"]
    pid = ds.start_java("registry", str(jar), "io.quarkus.runner.GeneratedMain", [], "256m", opts)
    log(f"started Apicurio Registry (pid {pid}) on https://{HOSTNAME}:{REGISTRY_PORT}")


def registry_url() -> str:
    return f"https://{HOSTNAME}:{REGISTRY_PORT}/apis/ccompat/v7"


def registry_state() -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{registry_url()}/subjects", timeout=3, context=ca_context()) as resp:
            subjects = json.load(resp)
    except (OSError, ValueError) as exc:
        return False, f"registry not answering HTTPS ({exc.__class__.__name__})"
    return True, f"Schema Registry answering HTTPS ({len(subjects)} subjects)"


# --------------------------------------------------------------------------- commands


def pid_of(role: str) -> int | None:
    return kdc_pid() if role == "kdc" else ds.running_pid(role)


def stop(role: str, timeout: float = 30.0) -> bool:
    pid = pid_of(role)
    if pid is None:
        ds.pid_file(role).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_of(role):
        time.sleep(0.2)
    if pid_of(role):
        os.kill(pid, signal.SIGKILL)
        while pid_of(role):
            time.sleep(0.1)
    ds.pid_file(role).unlink(missing_ok=True)
    log(f"stopped {role} (pid {pid})")
    return True


STARTERS: dict[str, Callable[[], None]] = {}
CHECKS: dict[str, Callable[[], tuple[bool, str]] | None] = {}


def cmd_up(_args: list[str]) -> int:
    HOME.mkdir(parents=True, exist_ok=True)
    with open(HOME / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up()


def _up() -> int:
    started = time.monotonic()
    ds.resolve("hadoop")
    ds.resolve("kafka")
    ds.build_registry()
    RUN.mkdir(parents=True, exist_ok=True)
    os.chmod(RUN, 0o700)
    write_krb5_conf()
    ensure_realm()
    ensure_tls()
    start_kdc()
    ds.wait_ready("kdc", kdc_state, 30)
    digest = write_hadoop_conf()
    digest_file = RUN / "hadoop-conf.started"
    if ds.running_pid("namenode") and digest_file.exists() and digest_file.read_text() != digest:
        log("HDFS settings changed (e.g. DEVSTACK_RPC_PROTECTION): restarting NameNode and DataNode")
        stop("datanode")
        stop("namenode")
    start_namenode()
    start_datanode()
    digest_file.write_text(digest)
    (RUN / "settings.json").write_text(json.dumps(
        {"rpc_protection": RPC_PROTECTION, "ticket_lifetime_s": TICKET_LIFE, "renew_lifetime_s": RENEW_LIFE,
         "topic_prefixes": TOPIC_PREFIXES}) + "\n")
    write_kafka_conf()
    digest = hashlib.sha256((RUN / "kafka-conf" / "server.properties").read_bytes()).hexdigest()
    digest_file = RUN / "kafka-conf.started"
    if ds.running_pid("kafka") and digest_file.exists() and digest_file.read_text() != digest:
        log("Kafka settings changed: restarting Kafka")
        stop("kafka")
    start_kafka()
    digest_file.write_text(digest)
    start_registry()
    ds.wait_ready("kafka", kafka_state, 120)
    ensure_acls()
    ds.wait_ready("namenode", namenode_state, 180)
    ensure_hdfs_dirs()
    ds.wait_ready("registry", registry_state, 180)
    log(f"secure stack up in {time.monotonic() - started:.1f}s; run: "
        f"eval \"$({Path(sys.argv[0])} env --secure)\"")
    return 0


def applied() -> dict[str, object]:
    """The settings the last `up` applied (what the running stack has), else this shell's."""
    try:
        return dict(json.loads((RUN / "settings.json").read_text()))
    except (FileNotFoundError, ValueError):
        return {"rpc_protection": RPC_PROTECTION, "ticket_lifetime_s": TICKET_LIFE,
                "renew_lifetime_s": RENEW_LIFE, "topic_prefixes": TOPIC_PREFIXES}


def env_lines() -> list[str]:
    ca = tls_dir() / "ca.pem"
    return [
        f"export KRB5_CONFIG={krb5_dir() / 'krb5.conf'}",
        f"export KRB5CCNAME=FILE:{RUN / 'ccache'}",
        # For kadmin.local in tests (change a key so a keytab goes stale, say); clients ignore it.
        f"export KRB5_KDC_PROFILE={krb5_dir() / 'kdc.conf'}",
        f"export KRB5_CLIENT_KTNAME=FILE:{keytab(DAEMON)}",
        f"export HDFS2KAFKA_PRINCIPAL={principal(DAEMON)}",
        f"export HDFS2KAFKA_KEYTAB={keytab(DAEMON)}",
        f"export HDFS2KAFKA_CA={ca}",
        f"export HADOOP_CONF_DIR={RUN / 'client-conf'}",
        f"export HDFS_NAMENODE={HOSTNAME}:{NN_RPC}",
        f"export WEBHDFS_URL=https://{HOSTNAME}:{NN_HTTPS}",
        f"export HDFS_USER={DAEMON}",
        f"export HDFS_RPC_PROTECTION={applied()['rpc_protection']}",
        f"export KAFKA_BOOTSTRAP={HOSTNAME}:{KAFKA_PORT}",
        "export KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        "export KAFKA_SASL_MECHANISM=GSSAPI",
        "export KAFKA_SASL_KERBEROS_SERVICE_NAME=kafka",
        f"export KAFKA_SASL_USERNAME={DAEMON}",
        f"export KAFKA_SASL_PASSWORD_FILE={secret_file(f'{DAEMON}.scram-password')}",
        f"export KAFKA_SSL_CAFILE={ca}",
        f"export KAFKA_MTLS_BOOTSTRAP={HOSTNAME}:{KAFKA_MTLS}",
        f"export KAFKA_SSL_CERTFILE={tls_dir() / (DAEMON + '.pem')}",
        f"export KAFKA_SSL_KEYFILE={tls_dir() / (DAEMON + '.key')}",
        f"export SCHEMA_REGISTRY_URL={registry_url()}",
        f"export HDFS2KAFKA_ANALYST_PRINCIPAL={principal(ANALYST)}",
        f"export HDFS2KAFKA_ANALYST_KEYTAB={keytab(ANALYST)}",
        f"export HDFS2KAFKA_ANALYST_SCRAM_PASSWORD_FILE={secret_file(f'{ANALYST}.scram-password')}",
        f"export DEVSTACK_SECURE_STATE={RUN}",
    ]


def cmd_env(_args: list[str]) -> int:
    print("\n".join(env_lines()))
    return 0


def cmd_status(_args: list[str]) -> int:
    all_ok = True
    for role in ROLES:
        pid = pid_of(role)
        state = "stopped"
        if pid:
            state = f"running pid {pid}, {ds._memory(pid)}"
            check = CHECKS[role]
            if check:
                ok, why = check()
                state += f", {why}"
                all_ok &= ok
        else:
            all_ok = False
        print(f"{role:9s} {state}")
    settings = applied()
    print(f"versions  hadoop {ds.HADOOP_VERSION}, kafka {ds.KAFKA_VERSION}; realm {REALM}, "
          f"tickets of {DAEMON} and {ANALYST} {settings['ticket_lifetime_s']}s "
          f"(renewable {settings['renew_lifetime_s']}s); state in {RUN}")
    return 0 if all_ok else 1


def cmd_logs(args: list[str]) -> int:
    return ds.cmd_logs(args, list(ROLES))


def cmd_down(_args: list[str]) -> int:
    for role in reversed(ROLES):
        stop(role)
    return 0


def cmd_restart(args: list[str]) -> int:
    if not args or args[0] not in ROLES:
        raise SystemExit(f"devstack: restart --secure one of {', '.join(ROLES)}")
    role = args[0]
    stop(role)
    STARTERS[role]()
    if role == "kdc":
        ds.wait_ready("kdc", kdc_state, 30)
    elif role == "kafka":
        ds.wait_ready("kafka", kafka_state, 120)
    elif role == "registry":
        ds.wait_ready("registry", registry_state, 180)
    else:
        ds.wait_ready("namenode" if ds.running_pid("namenode") else role, namenode_state, 180)
    return 0


def cmd_reset(_args: list[str]) -> int:
    cmd_down([])
    shutil.rmtree(RUN, ignore_errors=True)
    log(f"removed {RUN}")
    return 0


def cmd_kinit(args: list[str]) -> int:
    who = args[0] if args else DAEMON
    if who not in (DAEMON, ANALYST):
        raise SystemExit(f"devstack: kinit --secure [{DAEMON}|{ANALYST}]")
    cc = kinit(who)
    log(f"ticket for {principal(who)} in FILE:{cc}")
    return 0


def cmd_acl(args: list[str]) -> int:
    usage = "devstack: acl --secure grant|revoke TOPIC [--principal User:NAME] [--prefixed]"
    if len(args) < 2 or args[0] not in ("grant", "revoke"):
        raise SystemExit(usage)
    action, topic = args[0], args[1]
    who = DAEMON
    if "--principal" in args[2:-1]:
        who = args[args.index("--principal") + 1].removeprefix("User:")
    prefixed = "--prefixed" in args
    kafka_tool(ACL_TOOL, _acl_args("add" if action == "grant" else "remove", who, TOPIC_OPS,
                                   ["--topic", topic], prefixed))
    log(f"{'granted' if action == 'grant' else 'revoked'} {', '.join(TOPIC_OPS)} on "
        f"{'topics prefixed' if prefixed else 'topic'} {topic} for User:{who}")
    return 0


HADOOP_TOOLS = {"dfs": "org.apache.hadoop.fs.FsShell", "dfsadmin": "org.apache.hadoop.hdfs.tools.DFSAdmin",
                "getconf": "org.apache.hadoop.hdfs.tools.GetConf"}
KAFKA_TOOLS = {"topics": "org.apache.kafka.tools.TopicCommand", "acls": ACL_TOOL,
               "configs": "org.apache.kafka.tools.ConfigCommand",
               "console-producer": "org.apache.kafka.tools.ConsoleProducer",
               "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer"}


def hadoop_client(args: list[str], ccache: Path | None = None, capture: bool = False,
                  stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Hadoop's own client (ARGS[0] a tool of HADOOP_TOOLS or a .java file to launch) with the
    client configuration, as the ticket in `ccache` (None: the caller's $KRB5CCNAME)."""
    conf = RUN / "client-conf"
    main = HADOOP_TOOLS.get(args[0], args[0])
    cmd = [ds.java(), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", *java_krb_opts(),
           f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
           "-cp", f"{conf}:{ds.lib_dir('hadoop')}/*", main, *args[1:]]
    env = {**os.environ, "KRB5_CONFIG": str(krb5_dir() / "krb5.conf")}
    if ccache is not None:
        env["KRB5CCNAME"] = f"FILE:{ccache}"
    return subprocess.run(cmd, env=env, text=True, input=stdin, capture_output=capture, timeout=300)


def kafka_client(tool: str, config: str, args: list[str], capture: bool = False,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A Kafka tool of KAFKA_TOOLS as the client of kafka-clients/<config>.properties."""
    conf = RUN / "kafka-conf"
    port = KAFKA_MTLS if config.endswith("-mtls") else KAFKA_PORT
    flag = "--command-config"  # Kafka 4.4 names it so for every tool; 3.x had per-tool names
    if ds.KAFKA_VERSION.startswith("3.") and tool.startswith("console-"):
        flag = f"--{tool.removeprefix('console-')}.config"
    cmd = [ds.java(), "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
           f"-Dlog4j2.configurationFile={conf / 'tools-log4j2.properties'}", *java_krb_opts(),
           "-cp", kafka_classpath(), KAFKA_TOOLS[tool], "--bootstrap-server", f"{HOSTNAME}:{port}",
           flag, str(client_config(config)), *args]
    return subprocess.run(cmd, text=True, input=stdin, capture_output=capture, timeout=300)


def cmd_hdfs(args: list[str]) -> int:
    """`hdfs --secure dfs -ls /`: Hadoop's own client with the client configuration, as whoever
    holds the ticket in $KRB5CCNAME (none: Hadoop's "Client cannot authenticate")."""
    if not args or args[0] not in HADOOP_TOOLS:
        raise SystemExit(f"devstack: hdfs --secure {'|'.join(HADOOP_TOOLS)} ARGS...")
    return hadoop_client(args).returncode


def cmd_kafka(args: list[str]) -> int:
    """`kafka --secure topics --as hdfs2kafka-scram --list`: Kafka's own tools as one of the
    client configs in kafka-clients/ (kafka-gssapi is the broker itself, a super user)."""
    usage = (f"devstack: kafka --secure {'|'.join(KAFKA_TOOLS)} [--as CONFIG] ARGS... "
             f"(CONFIG: {', '.join(p.stem for p in sorted((RUN / 'kafka-clients').glob('*.properties')))})")
    if not args or args[0] not in KAFKA_TOOLS:
        raise SystemExit(usage)
    rest = args[1:]
    config = "kafka-gssapi"
    if "--as" in rest[:-1]:
        i = rest.index("--as")
        config = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
    if not client_config(config).exists():
        raise SystemExit(usage)
    return kafka_client(args[0], config, rest).returncode


def cmd_check(_args: list[str]) -> int:
    """What the secure stack promises, tried with Hadoop's and Kafka's own clients and curl:
    one line per check, exit 1 if any failed."""
    import tempfile

    failed = []

    def report(what: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail and not ok else ''}", flush=True)
        if not ok:
            failed.append(what)

    def last_line(proc: subprocess.CompletedProcess[str]) -> str:
        lines = [x for x in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines() if x.strip()]
        return lines[-1][:300] if lines else f"exit {proc.returncode}"

    tmp = Path(tempfile.mkdtemp(prefix="check-", dir=RUN))
    try:
        daemon, analyst, nobody = kinit(DAEMON, tmp / "daemon.cc"), kinit(ANALYST, tmp / "analyst.cc"), tmp / "none.cc"
        report(f"kinit -kt {keytab(DAEMON).name} {principal(DAEMON)}", True)
        p = hadoop_client(["dfs", "-ls", "/"], daemon, capture=True)
        report("hdfs dfs -ls / with a ticket", p.returncode == 0, last_line(p))
        p = hadoop_client(["dfs", "-ls", "/"], nobody, capture=True)
        report("hdfs dfs -ls / without a ticket is refused",
               p.returncode != 0 and "Client cannot authenticate" in p.stderr, last_line(p))
        for qop in str(applied()["rpc_protection"]).split(","):
            p = hadoop_client(["dfs", "-D", f"hadoop.rpc.protection={qop}", "-ls", "/"], daemon, capture=True)
            report(f"hdfs dfs -ls / with hadoop.rpc.protection={qop}", p.returncode == 0, last_line(p))
        path = f"/tmp/devstack-check-{os.getpid()}"
        p = hadoop_client(["dfs", "-put", "-f", "-", path], daemon, capture=True, stdin="row 1\nrow 2\n")
        q = hadoop_client(["dfs", "-cat", path], daemon, capture=True)
        report("hdfs dfs -put (SASL data transfer) and -cat", p.returncode == 0 and q.stdout == "row 1\nrow 2\n",
               last_line(p if p.returncode else q))
        env = {**krb_env(), "KRB5CCNAME": f"FILE:{daemon}"}
        ca = str(tls_dir() / "ca.pem")
        url = f"https://{HOSTNAME}:{NN_HTTPS}/webhdfs/v1{path}?op=OPEN"
        r = subprocess.run(["curl", "-sS", "-L", "--fail", "--negotiate", "-u", ":", "--cacert", ca, url],
                           capture_output=True, text=True, env=env)
        report("WebHDFS OPEN over HTTPS with SPNEGO, DataNode redirect with a delegation token",
               r.returncode == 0 and r.stdout == "row 1\nrow 2\n", r.stderr.strip())
        env["KRB5CCNAME"] = f"FILE:{nobody}"
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--negotiate", "-u", ":",
                            "--cacert", ca, url], capture_output=True, text=True, env=env)
        report("WebHDFS without a ticket answers 401", r.stdout == "401", r.stdout + r.stderr)
        java_check = str(HERE / "secure-check" / "EditStream.java")
        p = hadoop_client([java_check], daemon, capture=True)
        report(f"edit stream (inotify) as {DAEMON}, a superuser", p.returncode == 0, last_line(p))
        p = hadoop_client([java_check], analyst, capture=True)
        report(f"edit stream as {ANALYST} is refused (AccessControlException)",
               p.returncode != 0 and "AccessControlException" in p.stderr, last_line(p))
        p = hadoop_client(["dfs", "-mkdir", f"/devstack-check-{os.getpid()}"], analyst, capture=True)
        report(f"{ANALYST} may not write to /", p.returncode != 0 and "Permission denied" in p.stderr, last_line(p))
        hadoop_client(["dfs", "-rm", "-skipTrash", path], daemon, capture=True)

        topic = f"secure-check-{os.getpid()}"
        p = kafka_client("topics", f"{DAEMON}-gssapi", ["--create", "--topic", topic], capture=True)
        report(f"kafka-topics --create {topic} as {DAEMON} (GSSAPI)", p.returncode == 0, last_line(p))
        for how in ("gssapi", "scram", "mtls"):
            p = kafka_client("console-producer", f"{DAEMON}-{how}", ["--topic", topic, "--sync"], capture=True,
                             stdin=f"by {how}\n")
            report(f"produce as {DAEMON} by {how.upper()}", p.returncode == 0 and "Exception" not in p.stderr,
                   last_line(p))
        p = kafka_client("console-consumer", f"{DAEMON}-scram",
                         ["--topic", topic, "--group", f"secure-check-{os.getpid()}", "--from-beginning",
                          "--max-messages", "3", "--timeout-ms", "30000"], capture=True)
        report(f"consume the three rows as {DAEMON} (SCRAM, group secure-check-...)",
               p.stdout.split() == ["by", "gssapi", "by", "scram", "by", "mtls"], p.stdout + last_line(p))
        for how in ("gssapi", "scram"):
            p = kafka_client("console-producer", f"{ANALYST}-{how}", ["--topic", topic, "--sync"], capture=True,
                             stdin="not allowed\n")
            report(f"{ANALYST} ({how.upper()}) is refused by the ACLs", "TopicAuthorizationException" in p.stderr,
                   last_line(p))
        kafka_client("topics", "kafka-gssapi", ["--delete", "--topic", topic], capture=True)
        ok, why = registry_state()
        report("schema registry over HTTPS", ok, why)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'all checks passed' if not failed else f'{len(failed)} failed'}")
    return 1 if failed else 0


COMMANDS = {"up": cmd_up, "env": cmd_env, "status": cmd_status, "logs": cmd_logs, "down": cmd_down,
            "restart": cmd_restart, "reset": cmd_reset, "kinit": cmd_kinit, "acl": cmd_acl,
            "hdfs": cmd_hdfs, "kafka": cmd_kafka, "check": cmd_check}


def main(argv: list[str], devstack: ModuleType) -> int:
    """Run `argv` (without --secure) on the secure stack, with the devstack script's helpers
    pointed at the secure stack's state directory."""
    global ds, HOME, RUN
    ds = devstack
    HOME = Path(os.environ.get("DEVSTACK_SECURE_HOME") or ds.HOME / "secure")
    RUN = HOME / "run"
    vars(ds).update(HOME=HOME, RUN=RUN)  # start_java, running_pid, pid and log files follow these
    _settings()
    STARTERS.update({"kdc": start_kdc, "namenode": start_namenode, "datanode": start_datanode,
                     "kafka": start_kafka, "registry": start_registry})
    CHECKS.update({"kdc": kdc_state, "namenode": namenode_state, "datanode": None,
                   "kafka": kafka_state, "registry": registry_state})
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])
