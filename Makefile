# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
DEVSTACK := deploy/devstack/devstack

.PHONY: demo test unit soak stack secure-stack ha-stack tools down lint types bench

$(VENV)/.installed: pyproject.toml pipeline/encoders/_rows.c pipeline/kafka/_batches.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

stack:
	$(DEVSTACK) up

## The Kerberized stack beside it (KDC, secure HDFS, SASL_SSL Kafka), its NameNode taking every QOP.
secure-stack: tools
	DEVSTACK_RPC_PROTECTION=authentication,integrity,privacy $(DEVSTACK) up --secure

## The tools the deployment and fault tests run (systemd-analyze, promtool, Toxiproxy); idempotent.
tools:
	deploy/tools/install-test-tools

## Stream sample Parquet and Avro files from the local HDFS into the local Kafka, live.
demo: $(VENV)/.installed stack
	eval "$$($(DEVSTACK) env)" && $(VENV)/bin/hdfs2kafka demo

## HDFS with NameNode HA beside the plain stack (nameservice hdfs2kafka-ha; Kafka is the plain one's).
ha-stack: stack
	$(DEVSTACK) up --ha

## Every test: unit tests, then integration tests against the real HDFS and Kafka, plain, Kerberized and HA.
test: $(VENV)/.installed tools stack secure-stack ha-stack
	eval "$$($(DEVSTACK) env)" && $(VENV)/bin/pytest

unit: $(VENV)/.installed
	$(VENV)/bin/pytest -m unit

## The fault-injection soak: seeded fault scenarios for SOAK_MINUTES (30); seeds SOAK_SEED-0, -1... (SOAK_FROM).
SOAK_MINUTES ?= 30
soak: $(VENV)/.installed tools stack
	eval "$$($(DEVSTACK) env)" && SOAK_MINUTES=$(SOAK_MINUTES) SOAK_SEED=$(SOAK_SEED) SOAK_FROM=$(SOAK_FROM) \
		$(VENV)/bin/pytest -m soak -p no:cacheprovider tests/integration/faults

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hdfswatch hdfsread pipeline demo tests bench

types: $(VENV)/.installed
	$(VENV)/bin/mypy

down:
	$(DEVSTACK) down
	$(DEVSTACK) down --secure
	$(DEVSTACK) down --ha
