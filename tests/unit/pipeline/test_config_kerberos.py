"""The daemon's Kerberos identity and the NameNode's security as the config file gives them."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_files import write_config

from pipeline import config as config_mod
from pipeline.config import ConfigError, KerberosConfig
from pipeline.daemon import Daemon
from pipeline.kerberos_login import CCACHE, configure

JAAS = ('com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true storeKey=true '
        'keyTab="{keytab}" principal="hdfs2kafka/edge@EXAMPLE.TEST";')


def _with_kerberos(path: Path, section: str) -> Path:
    path.write_text(path.read_text() + "\n[kerberos]\n" + section + "\n")
    return path


def test_kerberos_section_gives_the_identity_and_a_relative_keytab(tmp_path: Path) -> None:
    (tmp_path / "daemon.keytab").write_bytes(b"\x05\x02")
    cfg_file = _with_kerberos(write_config(tmp_path / "c.toml"),
                              'principal = "hdfs2kafka/edge@EXAMPLE.TEST"\nkeytab = "daemon.keytab"')
    cfg = config_mod.load(cfg_file)
    assert cfg.kerberos == KerberosConfig(principal="hdfs2kafka/edge@EXAMPLE.TEST",
                                          keytab=str(tmp_path / "daemon.keytab"))


def test_an_unreadable_keytab_is_named(tmp_path: Path) -> None:
    cfg_file = _with_kerberos(write_config(tmp_path / "c.toml"), 'keytab = "/nonexistent/x.keytab"')
    with pytest.raises(ConfigError) as err:
        config_mod.load(cfg_file)
    assert "kerberos.keytab: cannot read /nonexistent/x.keytab" in str(err.value)


def test_kafka_jaas_krb5_login_module_sets_the_same_identity(tmp_path: Path) -> None:
    keytab = tmp_path / "k.keytab"
    keytab.write_bytes(b"\x05\x02")
    cfg = config_mod.load(write_config(tmp_path / "c.toml", kafka={
        "security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI",
        "sasl.jaas.config": JAAS.format(keytab=keytab)}))
    assert cfg.kerberos == KerberosConfig(principal="hdfs2kafka/edge@EXAMPLE.TEST", keytab=str(keytab))
    assert cfg.kafka.client["sasl_mechanism"] == "GSSAPI"


def test_two_identities_are_refused(tmp_path: Path) -> None:
    keytab = tmp_path / "k.keytab"
    keytab.write_bytes(b"\x05\x02")
    cfg_file = _with_kerberos(
        write_config(tmp_path / "c.toml", kafka={"sasl.mechanism": "GSSAPI",
                                                 "sasl.jaas.config": JAAS.format(keytab=keytab)}),
        'principal = "someone-else@EXAMPLE.TEST"')
    with pytest.raises(ConfigError) as err:
        config_mod.load(cfg_file)
    assert "kerberos.principal: differs from the principal in kafka.sasl.jaas.config" in str(err.value)


def test_hdfs_security_overrides_are_checked_and_reach_the_namenode_client(tmp_path: Path) -> None:
    conf = tmp_path / "hadoop"
    conf.mkdir()
    (conf / "core-site.xml").write_text(
        "<configuration><property><name>hadoop.security.authentication</name><value>kerberos"
        "</value></property><property><name>hadoop.rpc.protection</name><value>authentication"
        "</value></property></configuration>")
    (conf / "hdfs-site.xml").write_text("<configuration/>")
    cfg = config_mod.load(write_config(tmp_path / "c.toml", hdfs={
        "hadoop_conf_dir": str(conf), "rpc_protection": "privacy,integrity",
        "namenode_principal": "nn/_HOST@EXAMPLE.TEST"}))
    security = Daemon(cfg).rpc_security()
    assert security.kerberos
    assert security.protection == ("privacy", "integrity")
    assert security.namenode_principal == "nn/_HOST@EXAMPLE.TEST"

    with pytest.raises(ConfigError) as err:
        config_mod.load(write_config(tmp_path / "bad.toml", hdfs={
            "authentication": "token", "rpc_protection": "secret"}))
    text = str(err.value)
    assert "hdfs.authentication: must be simple or kerberos (got 'token')" in text
    assert "hdfs.rpc_protection: must be authentication, integrity or privacy" in text


def test_a_keytab_points_the_process_defaults_at_a_cache_of_its_own() -> None:
    env: dict[str, str] = {"KRB5CCNAME": "FILE:/tmp/krb5cc_operator"}
    assert configure(KerberosConfig(keytab="/etc/k.keytab"), env)
    assert env == {"KRB5CCNAME": CCACHE, "KRB5_CLIENT_KTNAME": "FILE:/etc/k.keytab"}
    untouched = {"KRB5CCNAME": "FILE:/tmp/krb5cc_operator"}
    assert not configure(KerberosConfig(principal="p@R"), untouched)
    assert untouched == {"KRB5CCNAME": "FILE:/tmp/krb5cc_operator"}
