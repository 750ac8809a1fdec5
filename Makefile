# Bulwark developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv from PATH, else one installed by `make install` (bootstrap venv, or pip --user).
UV_BOOTSTRAP := .bulwark/tools
UV ?= $(shell command -v uv 2>/dev/null \
	|| { test -x $(UV_BOOTSTRAP)/bin/uv && echo $(UV_BOOTSTRAP)/bin/uv; } \
	|| { test -x $(HOME)/.local/bin/uv && echo $(HOME)/.local/bin/uv; } \
	|| echo uv)
# --locked: fail if uv.lock is out of date with the pyproject files instead of rewriting it.
UV_SYNC_FLAGS ?= $(if $(wildcard uv.lock),--locked,)

.PHONY: help uv install promtool jq run demo test lint bench bench-ratelimit proto clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

uv: ## install uv (into .bulwark/tools, or with pip --user) unless it is already there
	@if command -v "$(UV)" >/dev/null 2>&1; then exit 0; fi; \
	echo "uv not found: installing it from PyPI with $(PYTHON)"; \
	if $(PYTHON) -m venv $(UV_BOOTSTRAP) && $(UV_BOOTSTRAP)/bin/python -m pip install -q uv; then \
		echo "uv installed in $(UV_BOOTSTRAP)/bin"; \
	else \
		rm -rf $(UV_BOOTSTRAP); \
		$(PYTHON) -m pip install -q --user uv && echo "uv installed in $(HOME)/.local/bin"; \
	fi

install: uv ## install every workspace package and the dev tools into .venv (uv sync)
	$(UV) sync --all-packages $(UV_SYNC_FLAGS)
	@# xds-protos ships its own, older copy of opentelemetry/proto/**/*_pb2.py, and whichever
	@# wheel is unpacked last wins; the OTLP exporter needs opentelemetry-proto's. Reinstalling
	@# that one package alone makes its files the ones on disk, on every install.
	$(UV) sync --all-packages $(UV_SYNC_FLAGS) --quiet --reinstall-package opentelemetry-proto

# promtool checks and unit-tests deploy/prometheus/bulwark-alerts.yml (tests/test_alert_rules.py).
# Taken from PATH, else extracted from Debian's `prometheus` package (apt-get download, which
# verifies it against the signed archive index) without installing the package, which would
# start a Prometheus daemon.
PROMTOOL := .bulwark/tools/bin/promtool

promtool: ## install promtool into .bulwark/tools/bin (from Debian's prometheus package)
	@if [ -x $(PROMTOOL) ] || command -v promtool >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "promtool: not on PATH, and no apt-get to fetch it; install Prometheus's promtool" >&2; \
		exit 1; \
	fi; \
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	download() { (cd "$$tmp" && apt-get download -q prometheus); }; \
	download || { [ "$$(id -u)" = 0 ] && apt-get update -q && download; } || exit 1; \
	dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root" || exit 1; \
	mkdir -p $(dir $(PROMTOOL)); \
	install -m 0755 "$$tmp/root/usr/bin/promtool" $(PROMTOOL); \
	echo "promtool installed: $(PROMTOOL) ($$($(PROMTOOL) --version 2>&1 | head -n 1))"

# jq runs the one-liners of docs/queries.md against real logs (tests/integration/test_log_queries.py).
jq: ## install jq from Debian's packages unless it is on PATH (needs root and apt-get)
	@if command -v jq >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "jq: not on PATH; install it (Debian and Ubuntu: apt-get install jq)" >&2; exit 1; \
	fi; \
	apt-get install -y -q jq || { apt-get update -q && apt-get install -y -q jq; }

# RUN_ARGS, e.g. "--api-port 18000 --auth-port 18001 --ratelimit-port 15051", for other ports.
run: install ## run the stack on 127.0.0.1 (api :8000, auth :8001, ratelimit :50051) until Ctrl-C
	$(UV) run bulwark-dev run $(RUN_ARGS)

demo: install ## play a scripted mobile session against a running stack (make run first)
	$(UV) run bulwark-dev demo

# Without promtool (no apt-get here), the alert-rule tests are skipped, unless CI is set.
test: install ## run every test (unit and integration)
	@$(MAKE) --no-print-directory promtool || { [ -z "$${CI:-}" ] \
		&& echo "make test: no promtool: the alert-rule tests will be skipped" >&2; }
	@$(MAKE) --no-print-directory jq || { [ -z "$${CI:-}" ] \
		&& echo "make test: no jq: the log-query tests will fail" >&2; }
	$(UV) run pytest

lint: install ## ruff and mypy (strict)
	$(UV) run ruff check .
	$(UV) run mypy libs/*/src services/*/src

# BENCH_ARGS, e.g. "--login-clients 32 --duration 20" or "--auth http://127.0.0.1:8001 --api ...".
bench: install ## latency of JWKS, refresh and /v1/me with and without a login flood (own stack, ~40 s)
	$(UV) run python -m bench $(BENCH_ARGS)

# RL_BENCH_ARGS, e.g. "--requests 20000 --clients 1 16 64" or "--redis-url redis://host:6379/0".
bench-ratelimit: install ## rate-limit decisions/s and p50/p99 at 1, 16, 64 clients, beside redis-benchmark EVALSHA
	$(UV) run python -m bench.ratelimit $(RL_BENCH_ARGS)

proto: install ## regenerate bulwark/ratelimit/_generated from proto/ (grpcio-tools; commit the result)
	$(UV) run python proto/compile.py

clean: ## delete the embedded servers' data (.bulwark/data)
	rm -rf .bulwark/data
