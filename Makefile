# The menu of the mesh demo platform. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MESHCTL := $(BIN)/meshctl
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install up down status logs scale rollout trace test lint clean

help: ## Show this menu
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with dev tools (quick when nothing changed)

up: install ## Start the platform (RUNTIME=local|compose|k8s; default local) and print where it runs
ifeq ($(RUNTIME),compose)
	bash infra/docker/compose-up.sh
else ifeq ($(RUNTIME),k8s)
	$(MAKE) k8s-up
else
	$(MESHCTL) up
endif

down: install ## Stop the platform; leaves no process behind
ifeq ($(RUNTIME),compose)
	bash infra/docker/compose-down.sh
else ifeq ($(RUNTIME),k8s)
	$(MAKE) k8s-down
else
	$(MESHCTL) down
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

test: install ## Run the test suite on real infrastructure started on loopback
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff on everything, mypy on the package code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean: ## Stop everything and remove .venv, .mesh (compose volumes too) and caches
	-@test -x $(MESHCTL) && $(MESHCTL) down >/dev/null 2>&1 || true
	-@bash infra/docker/compose-down.sh --volumes >/dev/null 2>&1 || true
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
	bash tests/k8s_pods/run.sh

# -- load (Locust against the running platform; see loadtests/README.md) -----------------------
LOCUST_PORT ?= 8089
.PHONY: load

load: install ## Locust on the running platform: web UI on 127.0.0.1:LOCUST_PORT, or HEADLESS=1 USERS=10 RATE=2 DURATION=1m; OPEN=1 ARRIVALS=5 (arrivals/s per user); SHAPE=steady|step|spike|soak
	@gateway=$$($(MESHCTL) status --json 2>/dev/null | $(BIN)/python -c 'import json, sys; g = json.load(sys.stdin).get("gateway") or {}; print(g.get("url") or "", g.get("api_key") or "")' 2>/dev/null); \
	read -r url key <<< "$$gateway"; \
	if [ -z "$$url" ] || [ -z "$$key" ]; then echo "load: the platform is not running (make up first)" >&2; exit 1; fi; \
	export MESH_API_KEY="$$key" $(if $(OPEN),LOAD_MODE=open) $(if $(ARRIVALS),LOAD_USER_RATE=$(ARRIVALS)) \
	  $(if $(SHAPE),LOAD_SHAPE=$(SHAPE) $(if $(USERS),LOAD_USERS=$(USERS)) $(if $(RATE),LOAD_SPAWN_RATE=$(RATE)) $(if $(DURATION),LOAD_DURATION=$(DURATION))); \
	args=(-f loadtests/locustfile.py --host "$$url" $(if $(SHAPE),,-u $(or $(USERS),10) -r $(or $(RATE),2))); \
	if [ -n "$(HEADLESS)" ]; then \
	  exec $(BIN)/locust "$${args[@]}" --headless $(if $(SHAPE),,-t $(or $(DURATION),1m)); \
	else \
	  echo "Locust web UI: http://127.0.0.1:$(LOCUST_PORT)  (load on $$url; Ctrl-C stops)"; \
	  exec $(BIN)/locust "$${args[@]}" --web-host 127.0.0.1 --web-port $(LOCUST_PORT); \
	fi

# -- drills (an operation under load, measured; see loadtests/README.md) ------------------------
.PHONY: drill

drill: install ## Rehearse an operation under load and write a report: NAME=rolling|bluegreen|canary|canary-bad|autoscale|kill-replica|broker-restart [DURATION=60s]
	@test -n "$(NAME)" || { $(MESHCTL) drill list; echo "usage: make drill NAME=rolling [DURATION=60s]" >&2; exit 2; }
	$(MESHCTL) drill $(NAME) $(if $(DURATION),--duration $(DURATION))

# -- benchmarks (print figures; never timed unit tests) ---------------------------------------
.PHONY: bench bench-tools bench-gateway bench-saga

bench: bench-saga bench-gateway ## Run every benchmark and print its figures

bench-tools: ## Install wrk and nginx (Debian) for bench-gateway when they are missing
	@command -v wrk >/dev/null && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } || \
	  { test "$$(id -u)" = 0 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq wrk nginx-light; } || \
	  { echo "bench-tools: install wrk and nginx (apt-get install wrk nginx-light)"; exit 1; }

bench-gateway: install bench-tools ## wrk on loopback: upstream direct vs nginx vs the gateway
	$(BIN)/python -m loadtests.bench_gateway

bench-saga: install ## Orders/s end to end and POST-to-terminal latency, one replica each
	$(BIN)/python -m loadtests.bench_saga

# -- Docker Compose (see "Compose runtime" in this README) -----------------------------------
.PHONY: compose-up compose-down compose-clean compose-images test-compose

compose-up: ## Start the platform on Docker Compose (engine installed/started if root), print URLs
	bash infra/docker/compose-up.sh

compose-down: ## Stop the compose stack; volumes stay
	bash infra/docker/compose-down.sh

compose-clean: ## Stop the compose stack and remove its volumes
	bash infra/docker/compose-down.sh --volumes

compose-images: ## Build every project image (BASE_IMAGE=python:3.12-slim by default, or local)
	bash infra/docker/build-images.sh --base $(or $(BASE_IMAGE),python:3.12-slim)

test-compose: install ## Compose runtime end to end on a real engine (skips loudly without one)
	bash infra/docker/test-compose.sh
