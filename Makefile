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

.PHONY: help uv install promtool jq nginx pgbouncer wrk run stop demo mail test lint bench bench-http bench-ratelimit rl-node-peer \
	oauth-node-client browser test-browser test-resilience security-report proto openapi clean images compose-keys test-containers

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

# `make test` runs two command-line tools besides Python: promtool (it checks and unit-tests
# deploy/prometheus/bulwark-alerts.yml, tests/test_alert_rules.py) and jq (it runs the one-liners
# of docs/queries.md against real logs, tests/integration/test_log_queries.py). Each is taken
# from PATH, else fetched: promtool extracted from Debian's `prometheus` package (apt-get
# download, which verifies it against the signed archive index; the package is not installed,
# which would start a Prometheus daemon), jq with `apt-get install jq`, which needs root.
# Where that cannot be done, the target stops with one line saying what to install; apt's own
# output goes to .bulwark/tools/<tool>-install.log.
TOOLS := .bulwark/tools
PROMTOOL := $(TOOLS)/bin/promtool

promtool: ## install promtool into .bulwark/tools/bin unless on PATH (from Debian's prometheus package)
	@if [ -x $(PROMTOOL) ] || command -v promtool >/dev/null 2>&1; then exit 0; fi; \
	mkdir -p $(TOOLS); log=$(TOOLS)/promtool-install.log; \
	fail() { echo "promtool: not on PATH and $$1; install Prometheus's promtool (Debian and Ubuntu: apt-get install prometheus; elsewhere: https://prometheus.io/download/)" >&2; exit 1; }; \
	command -v apt-get >/dev/null 2>&1 || fail "no apt-get here to fetch it"; \
	echo "promtool: not on PATH; extracting it from Debian's prometheus package (apt-get download)"; \
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	download() { (cd "$$tmp" && apt-get download -q prometheus); }; \
	{ download || { [ "$$(id -u)" = 0 ] && apt-get update -q && download; }; } >$$log 2>&1 \
		|| fail "apt-get download prometheus failed (see $$log)"; \
	dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root" >>$$log 2>&1 \
		|| fail "its package could not be unpacked (see $$log)"; \
	mkdir -p $(dir $(PROMTOOL)); \
	install -m 0755 "$$tmp/root/usr/bin/promtool" $(PROMTOOL); \
	echo "promtool installed: $(PROMTOOL) ($$($(PROMTOOL) --version 2>&1 | head -n 1))"

jq: ## install jq unless it is on PATH (apt-get install jq, which needs root)
	@if command -v jq >/dev/null 2>&1; then exit 0; fi; \
	mkdir -p $(TOOLS); log=$(TOOLS)/jq-install.log; \
	fail() { echo "jq: not on PATH and $$1; install jq (Debian and Ubuntu: apt-get install jq; macOS: brew install jq)" >&2; exit 1; }; \
	command -v apt-get >/dev/null 2>&1 || fail "no apt-get here to install it"; \
	[ "$$(id -u)" = 0 ] || fail "installing it with apt-get needs root"; \
	echo "jq: not on PATH; installing it (apt-get install jq)"; \
	{ apt-get install -y -q jq || { apt-get update -q && apt-get install -y -q jq; }; } >$$log 2>&1 \
		|| fail "apt-get install jq failed (see $$log)"

# The browser tests (tests/browser, marker `browser`, `make test-browser`) drive Debian's
# chromium with Playwright for Python; Playwright's own browser downloads are never used (no
# such host is reachable here). Installed like jq: apt-get install, as root.
CHROMIUM ?= /usr/bin/chromium

browser: ## install Debian's chromium at /usr/bin/chromium unless there (apt-get install chromium, which needs root)
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	mkdir -p $(TOOLS); log=$(TOOLS)/chromium-install.log; \
	fail() { echo "chromium: no $(CHROMIUM) and $$1; install it (Debian and Ubuntu: apt-get install chromium)" >&2; exit 1; }; \
	command -v apt-get >/dev/null 2>&1 || fail "no apt-get here to install it"; \
	[ "$$(id -u)" = 0 ] || fail "installing it with apt-get needs root"; \
	echo "chromium: no $(CHROMIUM); installing it (apt-get install chromium)"; \
	{ apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >$$log 2>&1 \
		|| fail "apt-get install chromium failed (see $$log)"

# nginx and pgbouncer (tests/integration/test_ingress.py and test_pgbouncer.py run them as
# plain processes, with their own config, on free ports): each is taken from PATH, else its
# binary is extracted from Debian's package into .bulwark/tools/bin, as promtool is. The packages
# are not installed: nginx's would start a daemon on port 80 and pgbouncer's one on 6432. The
# shared libraries a binary needs (its package's Depends, libraries only: they start nothing)
# are installed with apt-get, as root, when missing.
# $(call debian_binary,TOOL,PACKAGE,PATH IN THE PACKAGE,LIBRARY PACKAGES,VERSION FLAG): the
# binary runs when the flag prints its version (wrk's exits 1 even then).
define debian_binary
	@if [ -x $(TOOLS)/bin/$(1) ] || command -v $(1) >/dev/null 2>&1; then exit 0; fi; \
	mkdir -p $(TOOLS)/bin; log=$(TOOLS)/$(1)-install.log; : >$$log; \
	fail() { echo "$(1): not on PATH and $$1; install it (Debian and Ubuntu: apt-get install $(2); elsewhere your system's $(1) package)" >&2; exit 1; }; \
	command -v apt-get >/dev/null 2>&1 || fail "no apt-get here to fetch it"; \
	echo "$(1): not on PATH; extracting it from Debian's $(2) package (apt-get download)"; \
	tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	download() { (cd "$$tmp" && apt-get download -q $(2)); }; \
	{ download || { [ "$$(id -u)" = 0 ] && apt-get update -q && download; }; } >>$$log 2>&1 \
		|| fail "apt-get download $(2) failed (see $$log)"; \
	dpkg-deb -x "$$tmp"/$(2)_*.deb "$$tmp/root" >>$$log 2>&1 \
		|| fail "its package could not be unpacked (see $$log)"; \
	missing=""; for lib in $(4); do dpkg -s $$lib >/dev/null 2>&1 || missing="$$missing $$lib"; done; \
	if [ -n "$$missing" ]; then \
		[ "$$(id -u)" = 0 ] || fail "it needs the libraries$$missing, and installing them with apt-get needs root"; \
		echo "$(1): installing the libraries it needs:$$missing (apt-get install)"; \
		apt-get install -y -q --no-install-recommends $$missing >>$$log 2>&1 \
			|| fail "apt-get install$$missing failed (see $$log)"; \
	fi; \
	install -m 0755 "$$tmp/root/$(3)" $(TOOLS)/bin/$(1); \
	$(TOOLS)/bin/$(1) $(5) >"$$tmp/version" 2>&1; \
	if [ ! -s "$$tmp/version" ] || grep -q "error while loading shared libraries" "$$tmp/version"; then \
		cat "$$tmp/version" >>$$log; rm -f $(TOOLS)/bin/$(1); fail "its binary does not run here (see $$log)"; fi; \
	echo "$(1) installed: $(TOOLS)/bin/$(1) ($$(head -n 1 "$$tmp/version"))"
endef

nginx: ## install nginx into .bulwark/tools/bin unless on PATH (binary of Debian's nginx package; no daemon)
	$(call debian_binary,nginx,nginx,usr/sbin/nginx,libcrypt1 libpcre2-8-0 libssl3 zlib1g,-v)

wrk: ## install wrk into .bulwark/tools/bin unless on PATH (binary of Debian's wrk package; for make bench-http)
	$(call debian_binary,wrk,wrk,usr/bin/wrk,libluajit-5.1-2 libssl3,--version)

pgbouncer: ## install pgbouncer into .bulwark/tools/bin unless on PATH (binary of Debian's pgbouncer package; no daemon)
	$(call debian_binary,pgbouncer,pgbouncer,usr/sbin/pgbouncer,libc-ares2 libevent-2.1-7 libpam0g libssl3 libsystemd0,--version)

# The stack runs from .venv/bin directly (not through `uv run`), so that `bulwark-dev` is
# make's own child: signals reach it without a process in between.
VENV_BIN := .venv/bin

# RUN_ARGS, e.g. "--api-port 28000 --auth-port 28001 --ratelimit-port 25051", "--free-ports"
# or "--replace" (see `.venv/bin/bulwark-dev run --help`).
run: install ## run the stack on 127.0.0.1 (api :8000, auth :8001, ratelimit :50051), restarting a service that exits, until Ctrl-C
	$(VENV_BIN)/bulwark-dev run $(RUN_ARGS)

stop: ## stop what an earlier `make run` of this checkout left running
	@test -x $(VENV_BIN)/bulwark-dev || { echo "stop: nothing installed, so nothing runs"; exit 0; }; \
	$(VENV_BIN)/bulwark-dev stop

# DEMO_ARGS, e.g. "--api http://127.0.0.1:28000 --auth http://127.0.0.1:28001"; by default the
# URLs of the stack `make run` is running (.bulwark/run/stack.json), else the default ports.
demo: install ## play a scripted mobile session against the running stack (make run first)
	$(VENV_BIN)/bulwark-dev demo $(DEMO_ARGS)

# MAIL_ARGS, e.g. "show --last" (the newest message), "show 3 --html", "--json".
mail: install ## list the mail the services sent to the SMTP sink of make run (.bulwark/mail)
	$(VENV_BIN)/bulwark-dev mail $(MAIL_ARGS)

test: install ## run the unit and integration tests (the failure-path suites: make test-resilience); needs jq, promtool, nginx, pgbouncer and the node OAuth client, fetched when missing (apt-get as root, npm)
	@$(MAKE) --no-print-directory --keep-going oauth-node-client promtool jq nginx pgbouncer
	$(UV) run pytest

# The failure-path suites, apart from make test for its time budget: Redis, Postgres and the
# limiter stopped, stalled and restarted under load, load bursts against the limits, a
# streaming replica, PgBouncer (tests marked `resilience`; about 4 minutes).
test-resilience: install ## the failure-path suites: dependencies killed or stalled under load, load bursts, replica, PgBouncer
	@$(MAKE) --no-print-directory --keep-going pgbouncer
	$(UV) run pytest -m resilience tests/integration

test-browser: install browser ## the browser tests (tests/browser: Playwright driving Debian's chromium through the auth pages)
	$(UV) run pytest -m browser tests/browser

# The security test report (docs/security-report.md, issue 14): every test marked `security`
# (tests/security_report.py), over make test's paths with tests/browser's included (the -m here
# replaces pyproject's), tests/containers left out. The report is written from the run even when
# a test fails, and the target then fails. Commit the report in a commit of its own.
security-report: install browser ## run the tests marked security (browser ones included) and write docs/security-report.md from that run
	@$(MAKE) --no-print-directory --keep-going oauth-node-client promtool jq nginx pgbouncer
	$(UV) run pytest -m 'security and not containers' -p tests.security_report \
		--security-report docs/security-report.md libs services tests

lint: install ## ruff (lint and format) and mypy (strict)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy libs/*/src services/*/src bench

# BENCH_ARGS, e.g. "--login-clients 32 --duration 20" or "--auth http://127.0.0.1:8001 --api ...".
bench: install ## latency of JWKS, refresh and /v1/me with and without a login flood (own stack, ~40 s)
	$(UV) run python -m bench $(BENCH_ARGS)

# HTTP_BENCH_ARGS, e.g. "--rounds 5 --duration 10 --connections 64".
bench-http: install wrk ## requests/s of the API's /healthz, /v1/me, /v1/notes beside a bare Litestar app (issue 11's targets; ~2 min)
	$(UV) run python -m bench.http $(HTTP_BENCH_ARGS)

# RL_BENCH_ARGS, e.g. "--scale", "--requests 20000 --clients 1 16 64" or "--redis-url redis://host:6379/0".
bench-ratelimit: install rl-node-peer ## rate-limit decisions/s and p50/p99 at 1, 16, 64 clients, beside limits, rate-limiter-flexible and redis-benchmark EVALSHA (issue 11's target; ~80 s)
	$(UV) run python -m bench.ratelimit $(RL_BENCH_ARGS)

# The node peer's packages (bench/ratelimit/node/package-lock.json), installed again only when
# the lock file is newer than the install; without npm the benchmark skips that peer.
RL_NODE := bench/ratelimit/node
rl-node-peer: ## npm ci of bench-ratelimit's node peer (rate-limiter-flexible), unless done or npm is absent
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not on PATH: bench-ratelimit will skip its rate-limiter-flexible peer"; \
	elif [ ! $(RL_NODE)/node_modules/.package-lock.json -nt $(RL_NODE)/package-lock.json ]; then \
		npm ci --prefix $(RL_NODE) --no-audit --no-fund; \
	fi

# openid-client (tests/clients/node/package-lock.json), a standard OAuth client that
# tests/integration/test_oauth_clients.py drives as a subprocess; installed again only when the
# lock file is newer than the install. Without npm those tests skip.
OAUTH_NODE := tests/clients/node
oauth-node-client: ## npm ci of the node OAuth client the tests drive (openid-client), unless done or npm is absent
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not on PATH: the openid-client tests (tests/integration/test_oauth_clients.py) will skip"; \
	elif [ ! $(OAUTH_NODE)/node_modules/.package-lock.json -nt $(OAUTH_NODE)/package-lock.json ]; then \
		npm ci --prefix $(OAUTH_NODE) --no-audit --no-fund; \
	fi

# The published OpenAPI documents (what /schema serves in development; tests/test_openapi_documents.py
# fails when they differ from what the apps produce): run after changing a route, commit the result.
openapi: install ## regenerate docs/openapi/api.json and auth.json from the apps (commit the result)
	@mkdir -p docs/openapi
	$(VENV_BIN)/bulwark-api openapi > docs/openapi/api.json.tmp && mv docs/openapi/api.json.tmp docs/openapi/api.json
	$(VENV_BIN)/bulwark-auth openapi > docs/openapi/auth.json.tmp && mv docs/openapi/auth.json.tmp docs/openapi/auth.json

proto: install ## regenerate bulwark/ratelimit/_generated from proto/ (grpcio-tools; commit the result)
	$(UV) run python proto/compile.py

# Container images (deploy/docker/Dockerfile): bulwark-auth, bulwark-api, bulwark-ratelimit,
# tagged TAG. docker-compose.yml runs them (its header has the quick start).
TAG ?= dev
IMAGE_SERVICES := auth api ratelimit
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

images: ## build the bulwark-auth, -api and -ratelimit images, tagged TAG (default dev)
	@set -e; created=$$(date -u +%Y-%m-%dT%H:%M:%SZ); for service in $(IMAGE_SERVICES); do \
		echo "building bulwark-$$service:$(TAG)"; \
		docker build -q --force-rm -f deploy/docker/Dockerfile --build-arg PACKAGE=bulwark-$$service \
			--build-arg REVISION=$(REVISION) --build-arg CREATED=$$created \
			-t bulwark-$$service:$(TAG) . >/dev/null; \
	done

# Signing keys for the compose stack, made by the auth image itself for the BULWARK_ENV of
# ENV_FILE, into KEYS_HOST_DIR (git-ignored), owned by the images' user 10001 (mode 0700
# folder, 0600 files): docker-compose.yml mounts the folder read-only into auth.
ENV_FILE ?= .env
KEYS_HOST_DIR ?= .bulwark/compose/keys

compose-keys: ## generate the compose stack's signing keys (BULWARK_ENV of .env) into .bulwark/compose/keys
	@test -f $(ENV_FILE) || { echo "compose-keys: no $(ENV_FILE); cp .env.example .env and fill it in first" >&2; exit 1; }
	mkdir -p $(KEYS_HOST_DIR)
	docker run --rm --network none --read-only --user 0 --env-file $(ENV_FILE) \
		-v "$(abspath $(KEYS_HOST_DIR)):/keys" --entrypoint /bin/sh bulwark-auth:$(TAG) \
		-c 'bulwark-auth keys generate --dir /keys && chown -R 10001:10001 /keys && chmod 700 /keys'

# The container test (tests/containers; about 2 minutes on a 2-core machine, images and
# stand-ins built from scratch): builds the images, brings docker-compose.yml
# up with stand-ins for the official postgres/redis/nginx images (tests/containers/standins.yml:
# no registry is reachable on our CI machines), plays the demo through nginx, inspects the
# images, and tears everything down. Needs Docker and docker-compose (on CI:
# ../shared/tools/container-host). Not part of `make test`.
test-containers: install ## build the images and test docker-compose.yml for real (Docker + docker-compose)
	$(MAKE) --no-print-directory images TAG=test
	BULWARK_TAG=test $(UV) run pytest -m containers tests/containers

clean: ## delete the embedded servers' data (.bulwark/data)
	rm -rf .bulwark/data
