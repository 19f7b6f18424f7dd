# The menu of the mesh demo platform. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MESHCTL := $(BIN)/meshctl
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install browser up down status logs scale rollout trace console test lint clean

help: ## Show this menu
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with dev tools (quick when nothing changed)

browser: ## Install Debian chromium when missing (the web page tests drive /usr/bin/chromium)
	@test -x /usr/bin/chromium || \
	  { test "$$(id -u)" = 0 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium; } || \
	  { echo "browser: install Debian chromium (apt-get install chromium)"; exit 1; }

up: install ## Start the platform (RUNTIME=local|compose|k8s; default local), the console on local, and print where they run
ifeq ($(RUNTIME),k8s)
	$(MAKE) k8s-up
else
	RUNTIME=$(RUNTIME) $(MESHCTL) up
endif

down: install ## Stop the platform; leaves no process behind
ifeq ($(RUNTIME),k8s)
	$(MAKE) k8s-down
else
	RUNTIME=$(RUNTIME) $(MESHCTL) down
endif

status: install ## Show every part of the platform, where it came from and its health
	$(MESHCTL) status

logs: install ## Show the logs of one part (SERVICE=kafka|redis|consul|...; FOLLOW=1 to follow)
	$(MESHCTL) logs $(SERVICE) $(if $(FOLLOW),-f,)

scale: install ## Set a service's replicas and wait until healthy (SERVICE=orders N=3)
	$(MESHCTL) scale $(SERVICE)=$(N)

rollout: install ## Roll out a version (SERVICE=orders VERSION=v2 STRATEGY=rolling|bluegreen|canary)
	$(MESHCTL) rollout $(SERVICE) --version $(VERSION) --strategy $(or $(STRATEGY),rolling)

trace: install ## Print the span tree of an order or trace (ID=...)
	$(MESHCTL) trace $(ID)

console: install ## Start the live console of the running platform and print its URL (OPEN=1 opens it)
	$(MESHCTL) console $(if $(OPEN),--open)

test: install browser ## Run the test suite on real infrastructure started on loopback
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff on everything, mypy on the package code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: ## Stop everything and remove .venv, .mesh (compose volumes too) and caches
	-@test -x $(MESHCTL) && $(MESHCTL) down >/dev/null 2>&1 || true
	-@test -x $(MESHCTL) && RUNTIME=compose MESH_COMPOSE_DOWN_VOLUMES=1 $(MESHCTL) down >/dev/null 2>&1 || true
	rm -rf $(VENV) .mesh .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# -- Kubernetes (kubectl + kustomize; see k8s/README.md) -------------------------------------
K8S_OVERLAY ?= dev
KUBECTL ?= kubectl
.PHONY: k8s-secrets k8s-up k8s-down k8s-status k8s-validate test-k8s-pods

k8s-secrets: ## Write k8s/overlays/$(K8S_OVERLAY)/secrets.env with random values if missing
	bash k8s/scripts/gen-secrets.sh $(K8S_OVERLAY)

k8s-up: install k8s-secrets ## Deploy to the current kubectl context and wait until ready: checks first, builds and loads the images (kind, minikube, k3d; REGISTRY=host/prefix pushes); K8S_OVERLAY=dev|prod K8S_COMPONENTS=loadtest,canary AUTOSCALE=0
	KUBECTL='$(KUBECTL)' K8S_OVERLAY='$(K8S_OVERLAY)' K8S_COMPONENTS='$(K8S_COMPONENTS)' \
	  REGISTRY='$(REGISTRY)' AUTOSCALE='$(AUTOSCALE)' BASE_IMAGE='$(BASE_IMAGE)' \
	  $(BIN)/python -m infra.k8s.deploy up

k8s-down: ## Delete the mesh namespace from the current kubectl context (volumes included)
	$(KUBECTL) delete namespace mesh --ignore-not-found

k8s-status: ## Show workloads, autoscalers, budgets, Services and pods of the mesh namespace
	$(KUBECTL) -n mesh get deployments,statefulsets,jobs,hpa,pdb,services,pods -o wide
	-@$(KUBECTL) -n mesh get scaledobjects 2>/dev/null || true

k8s-validate: install ## Build every overlay and component combination and check them offline
	$(BIN)/python -m pytest tests/k8s -q

test-k8s-pods: install ## Every container of the dev overlay run on Docker as its pod spec says, probed (skips loudly without an engine)
	$(BIN)/python tests/k8s_pods/run.py

# -- load (Locust against the running platform; see loadtests/README.md) -----------------------
LOCUST_PORT ?= 8089
.PHONY: load

load: install ## Locust on the running platform: web UI on 127.0.0.1:LOCUST_PORT, or HEADLESS=1 USERS=10 RATE=2 DURATION=1m; OPEN=1 ARRIVALS=5 (arrivals/s per user); SHAPE=steady|step|spike|soak
	$(MESHCTL) load --web-port $(LOCUST_PORT) $(if $(HEADLESS),--headless) $(if $(USERS),--users $(USERS)) \
	  $(if $(RATE),--rate $(RATE)) $(if $(DURATION),--duration $(DURATION)) $(if $(OPEN),--open) \
	  $(if $(ARRIVALS),--arrivals $(ARRIVALS)) $(if $(SHAPE),--shape $(SHAPE))

# -- drills (an operation under load, measured; see loadtests/README.md) ------------------------
.PHONY: drill

drill: install ## Rehearse an operation under load and write a report: NAME=rolling|bluegreen|canary|canary-bad|autoscale|kill-replica|broker-restart|redis-crash, or a lesson: lesson-probes|lesson-limits [DURATION=60s] [PERSISTENCE=always|everysec|off]
	@test -n "$(NAME)" || { $(MESHCTL) drill list; echo "usage: make drill NAME=rolling [DURATION=60s]" >&2; exit 2; }
	$(MESHCTL) drill $(NAME) $(if $(DURATION),--duration $(DURATION)) $(if $(PERSISTENCE),--persistence $(PERSISTENCE))

# -- benchmarks (print figures; never timed unit tests) ---------------------------------------
.PHONY: bench bench-tools bench-gateway bench-saga bench-console bench-memory bench-curves bench-report

bench: bench-saga bench-gateway bench-console bench-memory bench-curves bench-report ## Run every benchmark, print its figures and a verdict per target, draw reports/bench/index.html

bench-tools: ## Install wrk and nginx (Debian) for bench-gateway when they are missing
	@command -v wrk >/dev/null && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } || \
	  { test "$$(id -u)" = 0 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq wrk nginx-light; } || \
	  { echo "bench-tools: install wrk and nginx (apt-get install wrk nginx-light)"; exit 1; }

bench-gateway: install bench-tools ## wrk on loopback: upstream direct vs nginx vs the gateway, and their latency-vs-load curves
	$(BIN)/python -m loadtests.bench_gateway

bench-saga: install ## Orders/s end to end and POST-to-terminal latency, one replica each
	@mkdir -p reports/bench
	$(BIN)/python -m loadtests.bench_saga --json reports/bench/saga.json

bench-console: install browser ## The console's CPU and memory (idle, a browser attached, under load), first paint, what it costs the saga
	@mkdir -p reports/bench
	$(BIN)/python -m loadtests.bench_console --json reports/bench/console.json

bench-memory: install ## The whole local platform's RSS (every process make up starts, the console too), idle and at the saga load, per process
	@mkdir -p reports/bench
	$(BIN)/python -m loadtests.bench_memory --json reports/bench/memory.json

bench-curves: install ## The saga's POST->terminal latency vs offered orders/s (open loop, through the gateway) and its throughput with 1 and 2 replicas of each service
	@mkdir -p reports/bench
	$(BIN)/python -m loadtests.bench_curves --json reports/bench/saga_curves.json

bench-report: install ## Draw reports/bench/index.html (PNG charts, figures.json, a verdict per target) from the benchmarks' figures; PUBLISH=1 copies the chart to docs/bench/
	$(BIN)/python -m loadtests.bench_report $(if $(PUBLISH),--publish)

# -- Docker Compose (see "Compose runtime" in this README) -----------------------------------
.PHONY: compose-up compose-down compose-clean compose-images test-compose

compose-up: install ## Start the platform on Docker Compose (= make up RUNTIME=compose), print URLs
	RUNTIME=compose $(MESHCTL) up

compose-down: install ## Stop the compose stack; volumes stay
	RUNTIME=compose $(MESHCTL) down

compose-clean: install ## Stop the compose stack and remove its volumes
	RUNTIME=compose MESH_COMPOSE_DOWN_VOLUMES=1 $(MESHCTL) down

compose-images: install ## Build every project image (BASE_IMAGE=python:3.12-slim by default, or local)
	bash infra/docker/build-images.sh --base $(or $(BASE_IMAGE),python:3.12-slim)

test-compose: install ## Compose runtime end to end on a real engine, Compose v2, drills included (skips loudly without one)
	$(BIN)/python tests/compose/run.py
