# uninlu: one entry point for humans and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov
STACK ?= dev
# pip finds the local CPU torch wheel here on this kind of machine; never a CUDA build.
PIP_FLAGS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
# Pulumi: a local file state backend inside the repo unless the user configured one.
export PULUMI_BACKEND_URL ?= file://$(CURDIR)/.pulumi-state

.PHONY: help venv lint test test-fast serve up preview diff kind-up kind-down bench peer-venv plan image-test dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_FLAGS) -r requirements.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

venv: $(VENV)/.installed $(CHECKOV_VENV)/.installed ## create .venv (and the checkov tool venv) from the pinned requirements

lint: venv ## ruff, the import contracts (pyproject.toml), hadolint, checkov on the Dockerfile, actionlint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	@if [ -f docker/Dockerfile ]; then $(VENV)/bin/hadolint docker/Dockerfile; fi
	@if [ -f docker/Dockerfile ]; then $(CHECKOV_VENV)/bin/checkov --quiet --compact --framework dockerfile --skip-download -f docker/Dockerfile; fi
	@if [ -d .github/workflows ]; then $(VENV)/bin/actionlint; fi

test: lint ## lint, then the whole offline test suite
	PATH="$(CURDIR)/$(CHECKOV_VENV)/bin:$$PATH" $(VENV)/bin/pytest

test-fast: venv ## the test suite without lint
	PATH="$(CURDIR)/$(CHECKOV_VENV)/bin:$$PATH" $(VENV)/bin/pytest -x -q

serve: venv ## run the model server locally (MODEL_PATH=dir, default: a generated tiny checkpoint)
	@if [ -z "$$MODEL_PATH" ]; then $(PY) -m app.tools.random_checkpoint --size tiny --seed 4 --out .models/tiny >/dev/null; fi
	MODEL_PATH=$${MODEL_PATH:-.models/tiny} $(PY) -m app

# One line and a non-zero exit when the Pulumi CLI is missing (expanded only when up/preview run).
require_pulumi = $(if $(shell command -v pulumi),,$(error pulumi CLI not found: install it (https://www.pulumi.com/docs/install/, e.g. curl -fsSL https://get.pulumi.com | sh) and re-run 'make $@ STACK=$(STACK)'))
require_stack = $(if $(wildcard Pulumi.$(STACK).yaml),,$(error no Pulumi.$(STACK).yaml: STACK must name a stack file ($(patsubst Pulumi.%.yaml,%,$(wildcard Pulumi.*.yaml)))))
# The exact commands of `make up` / `make preview` (also listed in README.md).
define pulumi_stack
	mkdir -p .pulumi-state
	pulumi login "$$PULUMI_BACKEND_URL"
	pulumi stack select --create --secrets-provider passphrase $(STACK)
endef

up: ## pulumi up for STACK (dev|prod), local file state backend by default
	$(require_stack)
	$(require_pulumi)
	@$(MAKE) --no-print-directory venv
	$(pulumi_stack)
	pulumi up --stack $(STACK)

preview: ## pulumi preview --diff for STACK
	$(require_stack)
	$(require_pulumi)
	@$(MAKE) --no-print-directory venv
	$(pulumi_stack)
	pulumi preview --diff --stack $(STACK)

# make diff STACK=prod [BASE=<git ref>]: exits 0 without changes; with changes (the tool's 2) or an
# error (its 1) make itself exits 2. Scripts that must tell the two apart run the tool directly.
diff: ## the Kubernetes diff of STACK against BASE (default: merge base with main), helm-diff style, with the capacity consequence
	$(require_stack)
	@$(MAKE) --no-print-directory --silent venv
	@$(PY) -m infra.review --stack $(STACK) $(if $(BASE),--base '$(BASE)',)

kind-up: ## the dev stack's laptop cluster: kind, registry localhost:5001, buildx builder (idempotent)
	@bash infra/kind/up.sh

kind-down: ## remove what kind-up made (cluster, registry, builder)
	@bash infra/kind/down.sh

# make bench CONTENTION=1: every configuration again with a CPU hog on one core; PEER=1: add the
# ModelScope peer (its own venv, `make peer-venv`); BENCH_ARGS: further `python -m bench` options.
BENCH_FLAGS = $(if $(filter 1,$(CONTENTION)),--contention,) $(if $(filter 1,$(PEER)),--peer,) $(BENCH_ARGS)

bench: venv ## benchmark on a full-size random checkpoint (CONTENTION=1, PEER=1; writes bench/out/)
	$(PY) -m bench $(BENCH_FLAGS)

peer-venv: venv ## the bench peer's own venv .venv-peer (ModelScope, transformers < 5, CPU torch)
	$(PY) -c "from bench.peer import ensure_venv; print(ensure_venv())"

plan: venv ## autoscaling targets for STACK from one pod's measured capacity (PLAN_ARGS=--reuse: no measuring)
	$(require_stack)
	$(PY) -m infra.capacity.plan --stack $(STACK) $(PLAN_ARGS)

image-test: venv ## build docker/Dockerfile with podman here and run it read-only, non-root
	bash docker/image-test.sh

dashboard: venv ## regenerate the chart's Grafana dashboard JSON (infra/chart/dashboards/uninlu.json)
	$(PY) -m infra.dashboard

clean: ## remove the venvs and generated files
	rm -rf $(VENV) $(CHECKOV_VENV) .venv-peer .models bench/out .pytest_cache .ruff_cache
