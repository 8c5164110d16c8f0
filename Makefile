# CityBrain: the two commands of the README, and the pieces they are made of.
VENV := .venv/streams
AVENV := .venv/airflow
STAMP := $(VENV)/.installed
CB := $(VENV)/bin/citybrain

.PHONY: demo test setup constraints unit dags check broker-up broker-down simulate gateway ui up down status bench clean

## The platform's main job on the embedded default (set-up included).
demo: $(STAMP)
	$(CB) demo

## The whole test suite against the real local broker and the real Airflow (set-up included).
test: $(STAMP)
	bash infra/browser.sh
	bash infra/prometheus.sh
	bash infra/postgres.sh
	bash infra/s3.sh
	$(CB) contracts check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(AVENV)/bin/pytest tests/airflow
	$(VENV)/bin/pytest

setup: $(STAMP)

$(STAMP): pyproject.toml infra/setup.sh
	bash infra/setup.sh

## infra/constraints/<env>.txt from what the set-up installed (docs/how-to/operator/install.md).
constraints: $(STAMP)
	bash infra/constraints.sh

## Issue 32's chaos test on a three-node cluster alone (about 6 min; `make test` runs it too, see docs/explanation/exactly-once.md).
chaos: $(STAMP)
	$(VENV)/bin/pytest -m chaos tests/integration/test_cluster.py

## Unit tests only: no broker, a few seconds.
unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

## Every Airflow DAG once, in order, on the lake of the last `make demo` (airflow dags test).
dags: $(STAMP)
	$(CB) dags run

check: $(STAMP)
	$(CB) contracts check

broker-up: $(STAMP)
	$(CB) broker up

broker-down: $(STAMP)
	$(CB) broker down

## A simulated day of the city on the embedded broker (ground truth in var/sim/latest/).
simulate: $(STAMP)
	$(CB) dev simulate

## Benchmark of the fusion worker on the local broker (figures in var/bench/latest.json).
bench: $(STAMP)
	$(CB) dev bench --write-docs

## The local platform's services in the background, supervised: broker, gateway, fusion worker, lake sinks, view,
## notifier and the live Airflow (PostgreSQL, api-server, scheduler, dag-processor, triggerer, asset events).
up: $(STAMP)
	bash infra/postgres.sh
	$(CB) up

down: $(STAMP)
	$(CB) down

status: $(STAMP)
	$(CB) status

## The operations view on 127.0.0.1:8320 (after `make demo`: the demo's day) until interrupted.
ui: $(STAMP)
	$(CB) ui

## The Open311 / FIWARE gateway on 127.0.0.1:8311 until interrupted.
gateway: $(STAMP)
	$(CB) gateway

## Stop the broker and delete local state (broker data, demo feeds); keeps the jar cache.
clean:
	-$(CB) down
	rm -rf var/kafka var/audit var/demo var/test var/sim var/lake var/streams var/airflow var/run
