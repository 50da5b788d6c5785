"""Secrets kept out of sight: a password planted in a config (inline, in a file, as a systemd
credential) reaches the Kafka client and the admin check, and appears nowhere else: not in
check-config's output, problem messages, log lines (ours, a library's, tracebacks) in either
format, /status or /metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from config_files import CLICKS, ORDERS, logging_kept, write_config

from pipeline import cli, logs
from pipeline import config as config_mod
from pipeline.config import ConfigError
from pipeline.daemon import Daemon
from pipeline.http import HttpServer
from pipeline.kafka.client import client_args
from pipeline.metrics import Metrics
from pipeline.secret import Secret, scrub

PLANTED = "planted-S3cret-p4ss"
TOKEN = "planted-T0ken-" + "9" * 20


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    with logging_kept():
        yield


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A $CREDENTIALS_DIRECTORY as systemd makes it for LoadCredential=: one file per name."""
    d = tmp_path / "credentials"
    d.mkdir()
    (d / "kafka-password").write_text(PLANTED + "\n")
    (d / "admin-token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(d))
    return d


def jaas(password: str) -> str:
    return ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            f'username="hdfs2kafka" password="{password}";')


def forms(tmp_path: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """The same two secrets given inline, through files and as systemd credentials:
    (daemon settings, kafka settings) per form."""
    (tmp_path / "kafka.pass").write_text(PLANTED + "\n")
    (tmp_path / "secrets.properties").write_text(f"# hdfs2kafka\nadmin.token = {TOKEN}\n")
    return {
        "inline": ({"admin_token": TOKEN},
                   {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": PLANTED}),
        "file": ({"admin_token": "${file:secrets.properties:admin.token}"},
                 {"sasl.mechanism": "SCRAM-SHA-512", "sasl.jaas.config": jaas("${file:kafka.pass}")}),
        "credential": ({"admin_token": "${credential:admin-token}"},
                       {"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u",
                        "sasl.password": "${credential:kafka-password}",
                        "ssl.key.password": "${credential:kafka-password}"}),
    }


FORMS = ["inline", "file", "credential"]


def write(tmp_path: Path, form: str, daemon: dict[str, Any] | None = None,
          kafka: dict[str, Any] | None = None) -> Path:
    d, k = forms(tmp_path)[form]
    return write_config(tmp_path / "h.toml", daemon={"http": "0.0.0.0:9464", **d, **(daemon or {})},
                        kafka={**k, **(kafka or {})})


@pytest.mark.parametrize("form", FORMS)
def test_each_form_hands_the_real_value_over_and_shows_it_nowhere(
        tmp_path: Path, creds: Path, form: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, form)
    cfg = config_mod.load(path)
    # What the Kafka client and the admin check get is the secret itself, newline dropped.
    args = client_args(cfg.kafka.client)
    assert args["sasl_plain_password"] == PLANTED
    assert args["sasl_plain_password"].encode() == PLANTED.encode()  # as aiokafka's SCRAM takes it
    assert cfg.daemon.admin_token is not None and cfg.daemon.admin_token.reveal() == TOKEN
    # Its text forms are masked, and so is the whole config's.
    for text in (str(cfg), repr(cfg), f"{cfg.daemon.admin_token}", str(args["sasl_plain_password"])):
        assert PLANTED not in text and TOKEN not in text
    assert cli.main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert PLANTED not in out + err and TOKEN not in out + err
    where = {"inline": "written in the file", "file": f"from file {tmp_path}",
             "credential": "from credential admin-token"}[form]
    assert f"daemon.admin_token: *** ({where}" in out


@pytest.mark.parametrize("form", FORMS)
def test_a_problem_next_to_a_secret_never_quotes_it(tmp_path: Path, creds: Path, form: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, form, daemon={"workers": 0}, kafka={"linger.ms": "soon", "sasl.pasword": PLANTED})
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path)
    problems = "\n".join(exc.value.problems)
    assert "daemon.workers: must be greater than 0" in problems
    assert "kafka.linger.ms" in problems and "kafka.sasl.pasword: unknown Kafka setting" in problems
    assert PLANTED not in str(exc.value) and TOKEN not in str(exc.value)
    assert cli.main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "daemon.workers" in err
    assert PLANTED not in out + err and TOKEN not in out + err


def test_a_secret_of_the_wrong_type_is_named_but_not_quoted(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    write_config(path, daemon={"admin_token": 31415926535897},
                 kafka={"sasl.password": [PLANTED], "ssl.key.password": 27182818284})
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path)
    assert sorted(exc.value.problems) == [
        "daemon.admin_token: expected a string, got an integer (its value is not shown: a secret setting)",
        "kafka.sasl.password: expected a string, got a list (its value is not shown: a secret setting)",
        "kafka.ssl.key.password: expected a string, got an integer (its value is not shown: a secret setting)",
    ]
    assert "31415926535897" not in str(exc.value) and PLANTED not in str(exc.value)


def test_invalid_toml_beside_a_password_does_not_echo_the_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "h.toml", kafka={"sasl.password": PLANTED})
    path.write_text(path.read_text().replace(f'"{PLANTED}"', f'"{PLANTED}" "{PLANTED}"'))
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path)
    assert "not valid TOML" in str(exc.value)
    assert PLANTED not in str(exc.value)


@pytest.mark.parametrize(("value", "env", "expected"), [
    ("${file:missing.pass}", True, "kafka.sasl.password: file {tmp}/missing.pass: no such file"),
    ("${file:secrets.properties:nope}", True, "kafka.sasl.password: file {tmp}/secrets.properties has no key 'nope'"),
    ("${file:empty.pass}", True, "kafka.sasl.password: file {tmp}/empty.pass: empty"),
    ("${credential:kafka-password}", False,
     "kafka.sasl.password: names the systemd credential 'kafka-password', but $CREDENTIALS_DIRECTORY is not set"),
    ("${credential:other}", True,
     "kafka.sasl.password: the systemd credential 'other' is not in $CREDENTIALS_DIRECTORY ({tmp}/credentials): "
     "add LoadCredential=other:/path/to/file to the unit"),
])
def test_an_unreadable_reference_names_the_setting_and_the_path(
        tmp_path: Path, creds: Path, monkeypatch: pytest.MonkeyPatch, value: str, env: bool,
        expected: str) -> None:
    (tmp_path / "secrets.properties").write_text(f"sasl.password={PLANTED}\n")
    (tmp_path / "empty.pass").write_text("\n")
    if not env:
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    path = write_config(tmp_path / "h.toml", kafka={"sasl.password": value})
    with pytest.raises(ConfigError) as exc:
        config_mod.load(path)
    (problem,) = exc.value.problems
    assert problem.startswith(expected.format(tmp=tmp_path)), problem
    assert PLANTED not in problem


def test_check_config_outside_the_service_notes_a_credential_it_cannot_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(tmp_path, "credential")
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kafka.sasl.password: *** (from systemd credential kafka-password (not read here))" in out
    assert ("note: daemon.admin_token: the systemd credential 'admin-token' is not read here "
            "($CREDENTIALS_DIRECTORY is set inside the service only)") in out
    # The daemon itself does not start on a credential it cannot read.
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "daemon.admin_token: names the systemd credential 'admin-token'" in capsys.readouterr().err


def test_the_daemon_refuses_an_address_other_machines_reach_without_a_token(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "h.toml", daemon={"http": "0.0.0.0:9464"})
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "daemon.admin_token: missing while daemon.http (0.0.0.0:9464) is reachable from other machines" in err


# --------------------------------------------------------------------------- logs


def log_everything(secret: Secret) -> None:
    """Every way a secret could reach a log line."""
    log = structlog.get_logger("hdfs2kafka.test")
    log.info("connecting", password=secret, admin_token=secret.reveal(), settings={"sasl.password": secret})
    log.info(f"jaas is {jaas(secret.reveal())}")
    log.warning("url", url=f"https://svc:{secret.reveal()}@registry.example:8081/apis")
    try:
        raise ValueError(f"login failed for password {secret.reveal()}")
    except ValueError:
        log.exception("kafka start failed")
    logging.getLogger("aiokafka.conn").error("SCRAM with %s failed", secret.reveal())
    try:
        raise RuntimeError(f"password={secret.reveal()[:6]}x-not-loaded")
    except RuntimeError:
        logging.getLogger("aiokafka").exception("unexpected")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_log_line_shows_a_loaded_secret(tmp_path: Path, creds: Path, fmt: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_mod.load(write(tmp_path, "credential"))
    logs.configure("info", fmt)
    secret = cfg.kafka.client["sasl_plain_password"]
    log_everything(secret)
    err = capsys.readouterr().err
    assert len(err.splitlines()) >= 6
    assert PLANTED not in err
    assert PLANTED[:6] + "x-not-loaded" not in err  # only looks like a password: masked too
    assert "login failed for password ***" in err and "SCRAM with *** failed" in err
    assert "https://svc:***@registry.example:8081" in err
    if fmt == "json":
        first = json.loads(err.splitlines()[0])
        assert (first["password"], first["admin_token"], first["settings"]) == ("***", "***", {"sasl.password": "***"})


def test_scrub_masks_what_looks_like_a_secret_and_leaves_the_rest() -> None:
    text = ('user="etl" password="hunter2hunter2"; sasl.password = s3cr3t, op=OPEN&delegation=HAAKDGtv&offset=0 '
            '{"admin_token": "abc"} Authorization: Bearer 0123456789abcdef x://u:pw@h/p daemon.admin_token: missing')
    assert scrub(text) == (
        'user="etl" password="***"; sasl.password = ***, op=OPEN&delegation=***&offset=0 '
        '{"admin_token": "***"} Authorization: Bearer *** x://u:***@h/p daemon.admin_token: missing')


# --------------------------------------------------------------------------- /status, /metrics


async def test_status_and_metrics_show_no_secret(tmp_path: Path, creds: Path) -> None:
    path = write(tmp_path, "credential")
    write_config(path, daemon={"http": "127.0.0.1:9464", "admin_token": "${credential:admin-token}"},
                 kafka=forms(tmp_path)["credential"][1], sources=[CLICKS, ORDERS])
    d = Daemon(config_mod.load(path))
    metrics = Metrics(d)
    d.hooks.append(metrics)
    # A failure whose text carries the secret (a library's message, say) lands in last_errors.
    d._note_error("clicks", f"starting the transactional producer: ValueError: bad password {PLANTED}")
    server = HttpServer(d, metrics, d.config.daemon.http)
    async with TestClient(TestServer(server.app, host="127.0.0.1")) as client:
        status = await (await client.get("/status")).text()
        text = await (await client.get("/metrics")).text()
        denied = await client.post("/sources/clicks/pause", headers={"Authorization": "Bearer nope"})
        allowed = await client.post("/sources/clicks/pause", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (denied.status, allowed.status) == (401, 200)
        denied_text = await denied.text()
    assert "bad password ***" in status
    for body in (status, text, denied_text):
        assert PLANTED not in body and TOKEN not in body


async def test_a_rotated_token_file_applies_on_reload(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    path = write_config(tmp_path / "h.toml", daemon={"admin_token": "${file:admin.token}"})
    d = Daemon(config_mod.load(path))
    metrics = Metrics(d)
    server = HttpServer(d, metrics, d.config.daemon.http)
    async with TestClient(TestServer(server.app, host="127.0.0.1")) as client:
        async def pause(token: str) -> int:
            resp = await client.post("/sources/clicks/pause", headers={"Authorization": f"Bearer {token}"})
            return resp.status

        assert await pause(TOKEN) == 200
        token_file.write_text("rotated-" + TOKEN + "\n")
        assert await d.reload() is False  # applied live, no new flow
        assert (await pause(TOKEN), await pause("rotated-" + TOKEN)) == (401, 200)

