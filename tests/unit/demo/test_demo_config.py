"""The config `hdfs2kafka demo` writes for its daemon, from the environment `devstack env`
prints: on the secure stack it carries Hadoop's configuration, the CA, the Kerberos identity and
Kafka's security settings under Kafka's names, and the daemon's own loader accepts it as it is;
on the plain stack it carries none of them."""

from __future__ import annotations

import argparse
from pathlib import Path

from demo.run import Demo, add_arguments
from pipeline import config as config_mod
from pipeline.commands.common import connection_from

PASSWORD = "scram-planted-7Qx"


def _hadoop_conf(directory: Path, authentication: str) -> Path:
    directory.mkdir()
    (directory / "core-site.xml").write_text(
        "<configuration><property><name>hadoop.security.authentication</name>"
        f"<value>{authentication}</value></property></configuration>")
    return directory


def _secure_env(tmp_path: Path) -> dict[str, str]:
    for name in ("ca.pem", "daemon.keytab"):
        (tmp_path / name).write_bytes(b"not read here")
    (tmp_path / "scram-password").write_text(PASSWORD + "\n")
    return {
        "HADOOP_CONF_DIR": str(_hadoop_conf(tmp_path / "conf", "kerberos")),
        "HDFS_NAMENODE": "localhost:17820", "WEBHDFS_URL": "https://localhost:17871",
        "HDFS_USER": "hdfs2kafka", "KAFKA_BOOTSTRAP": "localhost:17092",
        "HDFS2KAFKA_PRINCIPAL": "hdfs2kafka/localhost@EXAMPLE.TEST",
        "HDFS2KAFKA_KEYTAB": str(tmp_path / "daemon.keytab"),
        "HDFS2KAFKA_CA": str(tmp_path / "ca.pem"),
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_KERBEROS_SERVICE_NAME": "kafka", "KAFKA_SASL_USERNAME": "hdfs2kafka",
        "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "scram-password"),
        "KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        # Mutual TLS material: for security.protocol SSL only, so not in this config.
        "KAFKA_SSL_CERTFILE": str(tmp_path / "client.pem"),
        "KAFKA_SSL_KEYFILE": str(tmp_path / "client.key"),
    }


def _demo(tmp_path: Path, env: dict[str, str], registry: str | None) -> Demo:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--workdir", str(tmp_path / "run")])
    return Demo(args, connection_from(args, env), registry)


def test_on_the_secure_stack_the_daemon_config_carries_every_security_setting(tmp_path):
    env = _secure_env(tmp_path)
    demo = _demo(tmp_path, env, "https://localhost:17081/apis/ccompat/v7")

    cfg = config_mod.load(demo.daemon.config)
    assert cfg.hdfs.webhdfs == "https://localhost:17871"
    assert cfg.hdfs.namenodes == ("localhost:17820",)
    assert cfg.hdfs.hadoop_conf_dir == env["HADOOP_CONF_DIR"]
    assert cfg.hdfs.ca_file == env["HDFS2KAFKA_CA"]
    assert (cfg.kerberos.principal, cfg.kerberos.keytab) == (env["HDFS2KAFKA_PRINCIPAL"],
                                                             env["HDFS2KAFKA_KEYTAB"])
    client = cfg.kafka.client
    assert client["security_protocol"] == "SASL_SSL"
    assert client["sasl_mechanism"] == "SCRAM-SHA-512"
    assert client["sasl_plain_username"] == "hdfs2kafka"
    assert client["sasl_plain_password"].reveal() == PASSWORD  # read from the file
    assert client["_ssl"] == {"ssl.ca.location": env["KAFKA_SSL_CAFILE"]}
    assert cfg.kafka.schema_registry == "https://localhost:17081/apis/ccompat/v7"
    assert {s.value_format for s in cfg.sources} == {"json", "avro"}

    # The password is in the file only, and the demo's own clients use the daemon's settings.
    assert PASSWORD not in demo.daemon.config.read_text()
    assert demo.kafka_settings["sasl_plain_password"].reveal() == PASSWORD
    assert demo.registry_ca_file == env["KAFKA_SSL_CAFILE"]


def test_on_the_plain_stack_the_daemon_config_has_no_security_setting(tmp_path):
    env = {"HADOOP_CONF_DIR": str(_hadoop_conf(tmp_path / "conf", "simple")),
           "HDFS_NAMENODE": "127.0.0.1:19820", "WEBHDFS_URL": "http://127.0.0.1:19870",
           "HDFS_USER": "root", "KAFKA_BOOTSTRAP": "127.0.0.1:19092",
           # Left over from a secure shell: not a reason to log in with Kerberos.
           "HDFS2KAFKA_PRINCIPAL": "hdfs2kafka/localhost@EXAMPLE.TEST"}
    demo = _demo(tmp_path, env, None)

    cfg = config_mod.load(demo.daemon.config)
    assert cfg.hdfs.webhdfs == "http://127.0.0.1:19870" and cfg.hdfs.ca_file is None
    assert cfg.kerberos == config_mod.KerberosConfig()
    assert cfg.kafka.client == {}
    assert {s.value_format for s in cfg.sources} == {"json"}
    assert "[kerberos]" not in demo.daemon.config.read_text()
