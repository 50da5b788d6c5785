from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load

GOOD = """
[daemon]
instance_id = "edge-01"
http = "127.0.0.1:9464"

[hdfs]
namenodes = ["127.0.0.1:8020"]
webhdfs = "http://127.0.0.1:9870"
user = "hdfs"

[kafka]
bootstrap = "127.0.0.1:9092"
ledger_topic = "hdfs2kafka.ledger"
security.protocol = "SASL_PLAINTEXT"
sasl.mechanism = "PLAIN"
"sasl.jaas.config" = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";'
"linger.ms" = 10
compression.type = "zstd"

[[sources]]
name = "clicks"
path = "/data/clicks/**"
format = "parquet"
topic = "clicks"
key = ["user_id"]
value_format = "json"
start_from = "earliest"

[[sources]]
name = "orders"
path = "/data/orders/*.avro"
topic = "orders"
[sources.errors]
tolerance = "none"
dead_letter_topic = "orders.dlq"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hdfs2kafka.toml"
    p.write_text(text)
    return p


def test_the_documented_shape_loads(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    assert cfg.daemon.instance_id == "edge-01"
    assert [s.name for s in cfg.sources] == ["clicks", "orders"]
    clicks = cfg.source("clicks")
    assert clicks is not None and clicks.key == ("user_id",) and clicks.format == "parquet"
    orders = cfg.source("orders")
    assert orders is not None and orders.format == "auto" and orders.errors.tolerance == "none"
    assert orders.errors.dead_letter_topic == "orders.dlq"
    # Kafka's own names become client settings.
    assert cfg.kafka.client["security_protocol"] == "SASL_PLAINTEXT"
    assert cfg.kafka.client["sasl_plain_username"] == "u"
    assert cfg.kafka.client["sasl_plain_password"] == "p"
    assert cfg.kafka.client["linger_ms"] == 10
    assert cfg.kafka.client["compression_type"] == "zstd"


def test_every_mistake_is_named_with_file_source_and_field(tmp_path: Path) -> None:
    bad = GOOD.replace('format = "parquet"', 'format = "csv"').replace(
        'topic = "orders"', 'topic = "bad topic!"').replace('"linger.ms" = 10', '"linger.ms" = "soon"')
    bad += '\n[[sources]]\nname = "clicks"\npath = "relative/dir"\ntopic = "x"\nspeed = 3\n'
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as exc:
        load(path)
    text = str(exc.value)
    assert str(path) in text
    assert "sources[clicks].format: must be one of parquet, avro, auto (got 'csv')" in text
    assert "sources[orders].topic: not a valid Kafka topic name" in text
    assert "kafka.linger.ms: expected an integer" in text
    assert "sources[clicks].name: another source has the same name" in text
    assert "sources[clicks].path: must be an absolute HDFS path" in text
    assert "sources[clicks].speed: unknown field" in text
    assert len(exc.value.problems) == 6


def test_missing_sections_and_required_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, "[daemon]\n"))
    problems = exc.value.problems
    assert "daemon.instance_id: missing (required)" in problems
    assert "[hdfs]: missing section (required)" in problems
    assert "[kafka]: missing section (required)" in problems


def test_settings_that_would_break_exactly_once_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace('"linger.ms" = 10', 'acks = "1"\n"enable.idempotence" = false')
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    assert any(p.startswith("kafka.acks: must be 'all'") for p in exc.value.problems)
    assert any(p.startswith("kafka.enable.idempotence: set by hdfs2kafka itself") for p in exc.value.problems)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "[daemon\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml")


def test_client_properties_file(tmp_path: Path) -> None:
    (tmp_path / "client.properties").write_text("# copied\nsecurity.protocol=SSL\nssl.ca.location=/etc/ca.pem\n")
    text = GOOD.replace('security.protocol = "SASL_PLAINTEXT"\nsasl.mechanism = "PLAIN"\n', "").replace(
        '"sasl.jaas.config"', 'client_properties = "client.properties"\n"x.unused"', 1)
    text = text.replace('"x.unused" = ', "# ", 1)
    cfg = load(write(tmp_path, text))
    assert cfg.kafka.client["security_protocol"] == "SSL"
    assert cfg.kafka.client["_ssl"]["ssl.ca.location"] == "/etc/ca.pem"
