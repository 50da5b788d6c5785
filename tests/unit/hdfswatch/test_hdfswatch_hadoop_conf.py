"""NameNode addresses from core-site.xml and hdfs-site.xml, as edge nodes carry them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hdfswatch.errors import ConfigError
from hdfswatch.hadoop_conf import NameNodeAddress, load_hadoop_conf
from hdfswatch.namenode import NameNodeClient


def write_conf(directory: Path, core: dict[str, str], hdfs: dict[str, str]) -> Path:
    for name, props in (("core-site.xml", core), ("hdfs-site.xml", hdfs)):
        rows = "".join(f"<property><name>{k}</name><value>{v}</value></property>"
                       for k, v in props.items())
        (directory / name).write_text(f'<?xml version="1.0"?><configuration>{rows}</configuration>')
    return directory


def test_ha_nameservice_lists_every_namenode_with_rpc_and_http(tmp_path):
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://prod"}, {
        "dfs.nameservices": "prod,backup",
        "dfs.ha.namenodes.prod": "nn1, nn2",
        "dfs.namenode.rpc-address.prod.nn1": "master1.example.com:8020",
        "dfs.namenode.rpc-address.prod.nn2": "master2.example.com:8020",
        "dfs.namenode.http-address.prod.nn1": "master1.example.com:9870",
        "dfs.namenode.http-address.prod.nn2": "master2.example.com:9870",
        "dfs.ha.namenodes.backup": "b1",
        "dfs.namenode.rpc-address.backup.b1": "backup1:8020",
    })
    conf = load_hadoop_conf(tmp_path)
    assert conf.nameservice == "prod"
    assert conf.namenodes == (
        NameNodeAddress("master1.example.com:8020", "master1.example.com:9870", None, "nn1"),
        NameNodeAddress("master2.example.com:8020", "master2.example.com:9870", None, "nn2"))
    assert conf.rpc_addresses == ("master1.example.com:8020", "master2.example.com:8020")
    assert conf.http_addresses == ("master1.example.com:9870", "master2.example.com:9870")
    assert load_hadoop_conf(tmp_path, nameservice="backup").rpc_addresses == ("backup1:8020",)


def test_single_namenode_from_default_fs(tmp_path):
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://nn.example.com:9000"},
               {"dfs.namenode.http-address": "nn.example.com:50070"})
    conf = load_hadoop_conf(tmp_path)
    assert conf.nameservice is None
    assert conf.namenodes == (NameNodeAddress("nn.example.com:9000", "nn.example.com:50070"),)


def test_default_port_and_variable_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("NN_HOST", "nn.internal")
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://${env.NN_HOST}"}, {})
    assert load_hadoop_conf(tmp_path).rpc_addresses == ("nn.internal:8020",)


def test_the_dev_stack_layout(tmp_path):
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://127.0.0.1:19820"},
               {"dfs.namenode.rpc-address": "127.0.0.1:19820",
                "dfs.namenode.http-address": "127.0.0.1:19870"})
    client = NameNodeClient.from_hadoop_conf(tmp_path, "hdfs")
    assert client.addresses == ("127.0.0.1:19820",)
    assert client.user == "hdfs"


def test_hadoop_conf_dir_from_the_environment(tmp_path, monkeypatch):
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://h:1"}, {})
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert load_hadoop_conf().rpc_addresses == ("h:1",)


@pytest.mark.parametrize(("core", "hdfs", "message"), [
    ({"fs.defaultFS": "hdfs://prod"}, {"dfs.nameservices": "prod", "dfs.ha.namenodes.prod": "a"},
     "dfs.namenode.rpc-address.prod.a"),
    ({"fs.defaultFS": "s3a://bucket"}, {}, "not an hdfs:// URI"),
    ({}, {}, "names a NameNode"),
])
def test_incomplete_configuration_names_what_is_missing(tmp_path, core, hdfs, message):
    write_conf(tmp_path, core, hdfs)
    with pytest.raises(ConfigError, match=message):
        load_hadoop_conf(tmp_path)


def test_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_hadoop_conf(tmp_path / "nope")


def test_broken_xml(tmp_path):
    (tmp_path / "core-site.xml").write_text("<configuration><property>")
    with pytest.raises(ConfigError, match="not valid XML"):
        load_hadoop_conf(tmp_path)


def test_kerberos_settings_come_from_the_conf_dir(tmp_path):
    from hdfswatch.hadoop_conf import RpcSecurity, load_rpc_security

    write_conf(tmp_path, {"fs.defaultFS": "hdfs://nn1:8020",
                          "hadoop.security.authentication": "Kerberos",
                          "hadoop.rpc.protection": "privacy, integrity"},
               {"dfs.namenode.kerberos.principal": "nn/_HOST@EXAMPLE.COM"})
    security = load_hadoop_conf(tmp_path).rpc_security
    assert security == load_rpc_security(tmp_path)
    assert security == RpcSecurity("kerberos", ("privacy", "integrity"), "nn/_HOST@EXAMPLE.COM")
    assert security.kerberos
    # The client's own arguments win over the files.
    assert security.with_overrides(protection=("authentication",), namenode_principal=None
                                   ).protection == ("authentication",)


def test_without_a_conf_dir_the_client_speaks_simple(monkeypatch):
    from hdfswatch.hadoop_conf import load_rpc_security

    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    assert not load_rpc_security().kerberos
    assert NameNodeClient(["nn1:8020"], "etl").security.authentication == "simple"


def test_an_unknown_authentication_or_protection_is_named(tmp_path):
    from hdfswatch.hadoop_conf import load_rpc_security

    write_conf(tmp_path, {"fs.defaultFS": "hdfs://nn1:8020",
                          "hadoop.security.authentication": "ldap"}, {})
    with pytest.raises(ConfigError, match="'ldap'"):
        load_rpc_security(tmp_path)
    write_conf(tmp_path, {"fs.defaultFS": "hdfs://nn1:8020",
                          "hadoop.rpc.protection": "secrecy"}, {})
    with pytest.raises(ConfigError, match="'secrecy'"):
        load_rpc_security(tmp_path)
