#!/bin/sh
# Quick perf sanity check (not a test). nginx `return 200` backend; wrk against the backend, nginx as
# proxy and the builtin engine (HTTP and HTTPS), alternating rounds. The proxy under test is pinned to
# CPU 1, wrk and the backend to CPU 0. Every process started here is stopped by pid on exit.
# usage (from the repository root): ROUNDS=3 D=10 sh bench/quick.sh
set -eu
PY=${PY:-/work/main/.venv/bin/python}
export PYTHONPATH="$(pwd):$(pwd)/plugins/builtin_proxy"
DIR=$(mktemp -d)
port() { $PY -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BP=$(port); NP=$(port); HP=$(port); SP=$(port)
sed -e "s#@DIR@#$DIR#g" -e "s#@PORT@#$BP#g" bench/nginx_backend.conf.tmpl > "$DIR/backend.conf"
sed -e "s#@DIR@#$DIR#g" -e "s#@PORT@#$NP#g" -e "s#@BPORT@#$BP#g" bench/nginx_proxy.conf.tmpl > "$DIR/proxy.conf"
taskset -c 0 nginx -c "$DIR/backend.conf" -p "$DIR" & NGINX=$!
taskset -c 1 nginx -c "$DIR/proxy.conf" -p "$DIR" & NGINXP=$!
taskset -c 1 $PY bench/run_engine.py "http://127.0.0.1:$BP" "$HP" "$SP" "$DIR/pki" ${TUNNELS:-0} > "$DIR/engine.log" 2>&1 & ENGINE=$!
trap 'kill $ENGINE $NGINX $NGINXP 2>/dev/null || true; rm -rf "$DIR"' EXIT
for i in $(seq 100); do grep -q ready "$DIR/engine.log" 2>/dev/null && break; sleep 0.1; done
D=${D:-10}
W="taskset -c 0 wrk -t1 -c50 -d${D}s"
curl -sf -H 'Host: bench.localhost' "http://127.0.0.1:$HP/" >/dev/null
run() { printf '%-16s' "$1"; shift; $W "$@" | awk '/Latency/{lat=$2} /Requests\/sec/{rps=$2} /Non-2xx|Socket/{err=err" "$0} END{printf "%10s req/s  avg %s %s\n", rps, lat, err}'; }
for r in $(seq ${ROUNDS:-1}); do
  run backend "http://127.0.0.1:$BP/"
  run nginx-proxy -H 'Host: bench.localhost' "http://127.0.0.1:$NP/"
  run builtin-http -H 'Host: bench.localhost' "http://127.0.0.1:$HP/"
  run builtin-https -H 'Host: bench.localhost' "https://127.0.0.1:$SP/"
done
