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


# --------------------------------------------------------------------------- source paths


def with_sources(*paths: str) -> str:
    text = GOOD.split("[[sources]]")[0]
    for i, p in enumerate(paths):
        text += f'\n[[sources]]\nname = "s{i}"\npath = "{p}"\ntopic = "t{i}"\n'
    return text


@pytest.mark.parametrize("pattern", ["/data/{a,b/*.avro", "/data/x{/y", "/data/[z-a]/*"])
def test_a_path_pattern_that_does_not_compile_is_refused_with_source_and_field(tmp_path: Path, pattern: str) -> None:
    path = write(tmp_path, with_sources("/data/ok/**", pattern))
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith("sources[s1].path: not a valid path pattern")
    assert str(path) in str(exc.value)


def test_check_config_fails_on_a_pattern_that_does_not_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import cli

    path = write(tmp_path, with_sources("/data/{a,b"))
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: sources[s0].path: not a valid path pattern" in err and "unbalanced '{'" in err


@pytest.mark.parametrize(("first", "second"), [
    ("/data/clicks/**", "/data/clicks/**"),
    ("/data/clicks", "/data/clicks/"),          # the same directory, written twice
    ("/data/**", "/data/clicks/*.parquet"),     # under an earlier DIR/**: never gets a file
    ("/**", "/data/x"),
])
def test_a_source_that_would_never_get_a_file_is_refused(tmp_path: Path, first: str, second: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, with_sources(first, second)))
    (problem,) = exc.value.problems
    assert problem.startswith("sources[s1].path: ")
    assert "source 's0'" in problem and "would never get a file" in problem


@pytest.mark.parametrize(("first", "second"), [
    ("/data/clicks/special/**", "/data/clicks/**"),  # the narrower first: both get files
    ("/data/a/**", "/data/b/**"),
    ("/data/**", "/data/_landing/*"),               # `**` does not enter hidden directories
    ("/data/*/x", "/data/y/**"),
])
def test_overlapping_sources_that_both_get_files_are_accepted(tmp_path: Path, first: str, second: str) -> None:
    cfg = load(write(tmp_path, with_sources(first, second)))
    assert [s.path for s in cfg.sources] == [first, second]


# --------------------------------------------------------------------------- admin token


def with_http(http: str, token: str | None) -> str:
    text = GOOD.replace('http = "127.0.0.1:9464"', f'http = "{http}"')
    if token is not None:
        text = text.replace("[daemon]\n", f'[daemon]\nadmin_token = "{token}"\n')
    return text


@pytest.mark.parametrize("http", ["127.0.0.1:9464", "0.0.0.0:9464", "10.1.2.3:9464"])
def test_an_empty_admin_token_is_refused_anywhere(tmp_path: Path, http: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, with_http(http, " ")))
    (problem,) = exc.value.problems
    assert problem.startswith("daemon.admin_token: empty: set a long random one")
    assert "openssl rand -hex 32" in problem


@pytest.mark.parametrize("token", [None, "change-me"])
@pytest.mark.parametrize("http", ["0.0.0.0:9464", "10.1.2.3:9464", "edge-01.example:9464", "[::]:9464"])
def test_no_real_token_on_an_address_other_machines_reach_is_refused(
        tmp_path: Path, http: str, token: str | None) -> None:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, with_http(http, token)))
    (problem,) = exc.value.problems
    assert problem.startswith("daemon.admin_token: ")
    assert f"daemon.http ({http}) is reachable from other machines" in problem
    assert "openssl rand -hex 32" in problem


@pytest.mark.parametrize("http", ["127.0.0.1:9464", "127.0.0.2:80", "localhost:9464", "[::1]:9464"])
@pytest.mark.parametrize("token", [None, "change-me"])
def test_loopback_needs_no_token(tmp_path: Path, http: str, token: str | None) -> None:
    assert load(write(tmp_path, with_http(http, token))).daemon.admin_token == token


def test_a_real_token_on_any_address(tmp_path: Path) -> None:
    assert load(write(tmp_path, with_http("0.0.0.0:9464", "3f1c" * 8))).daemon.admin_token == "3f1c" * 8


def test_numbers_must_be_finite(tmp_path: Path) -> None:
    text = GOOD.replace('name = "clicks"\n', 'name = "clicks"\nrows_per_second = inf\nbytes_per_second = nan\n')
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    assert exc.value.problems == ["sources[clicks].rows_per_second: expected a finite number, got inf",
                                  "sources[clicks].bytes_per_second: expected a finite number, got nan"]


# --------------------------------------------------------------------------- reload


def test_every_setting_has_a_reload_policy() -> None:
    from pipeline.config import RELOAD, DaemonConfig

    assert {f"daemon.{f}" for f in DaemonConfig.__dataclass_fields__} <= set(RELOAD)
    assert {"hdfs", "kafka", "sources"} <= set(RELOAD)


def test_reload_plan_refuses_what_needs_a_restart_and_names_each_setting(tmp_path: Path) -> None:
    from pipeline.config import reload_plan

    running = load(write(tmp_path, GOOD))
    changed = (GOOD.replace('instance_id = "edge-01"', 'instance_id = "edge-02"')
               .replace('"linger.ms" = 10', '"linger.ms" = 20')
               .replace('namenodes = ["127.0.0.1:8020"]', 'namenodes = ["127.0.0.1:8021"]')
               .replace('sasl.jaas.config" = \'org.apache.kafka.common.security.plain.PlainLoginModule '
                        'required username="u" password="p";\'',
                        'sasl.jaas.config" = \'org.apache.kafka.common.security.plain.PlainLoginModule '
                        'required username="u" password="q";\'')
               + '\n[[sources]]\nname = "new"\npath = "/data/new/*"\ntopic = "new"\n')
    plan = reload_plan(running, load(write(tmp_path, changed)))
    assert plan.restart_needed == ("daemon.instance_id", "hdfs.namenodes", "kafka.linger.ms",
                                   "kafka.sasl.password")
    assert plan.added == ("new",)
    assert "q" not in repr(plan.restart_needed)  # names, never values (secrets live there)


def test_reload_plan_applies_live_or_by_a_new_flow(tmp_path: Path) -> None:
    from pipeline.config import reload_plan

    running = load(write(tmp_path, GOOD))
    changed = GOOD.replace("[daemon]\n", '[daemon]\nadmin_token = "rotated-secret"\nworkers = 7\nunit_rows = 500\n')
    changed = changed.split('[[sources]]\nname = "orders"')[0]  # orders removed
    plan = reload_plan(running, load(write(tmp_path, changed)))
    assert plan.restart_needed == ()
    assert plan.new_flow == ("daemon.unit_rows",)
    assert plan.removed == ("orders",) and plan.added == ()
    same = reload_plan(running, load(write(tmp_path, GOOD)))
    assert (same.restart_needed, same.new_flow, same.added, same.removed) == ((), (), (), ())
