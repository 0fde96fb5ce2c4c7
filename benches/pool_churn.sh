#!/usr/bin/env bash
# Upstream pool churn: how many new backend connections Pointsman opens
# under steady load. The backend (NGINX, one worker) counts its accepted
# connections (`stub_status` on a second port); each of RUNS wrk runs
# through Pointsman is bracketed by two reads of that count. A pool that
# keeps its connections opens none once it holds as many as there are
# requests in flight.
#
#   benches/pool_churn.sh                 # 3 runs of 10 s, wrk -c50
#   RUNS=5 CONNS=200 benches/pool_churn.sh
#
# Settings (environment variables): RUNS (3), DURATION (10s), CONNS (50),
# THREADS (Pointsman --threads, 1; with 2 each serving thread keeps its
# own connections and takes another's when it has none), BASE_PORT (18600), NO_BUILD=1, BIN (the pointsman
# binary).
# A benchmark, not a test. Needs nginx, wrk, curl. Stops only what it
# started.

set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
BASE_PORT=${BASE_PORT:-18600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pointsman}
export PATH=$PATH:/usr/sbin
P_BACKEND=$BASE_PORT
P_PROXY=$((BASE_PORT + 1))
P_ADMIN=$((BASE_PORT + 2))
P_STATUS=$((BASE_PORT + 3))

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-churn.XXXXXX")
# cleanup (at exit) and wait_port.
# shellcheck source=benches/support/procs.sh
. "$ROOT/benches/support/procs.sh"

[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet)

cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log crit;
user root;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/cb;
    proxy_temp_path $TMP/p;
    fastcgi_temp_path $TMP/f;
    uwsgi_temp_path $TMP/u;
    scgi_temp_path $TMP/s;
    server {
        listen 127.0.0.1:$P_BACKEND;
        location / { default_type text/plain; return 200 "hello from the backend\n"; }
    }
    server {
        listen 127.0.0.1:$P_STATUS;
        location / { stub_status; }
    }
}
EOF
nginx -c "$TMP/nginx.conf" -p "$TMP" >/dev/null 2>&1 &
PIDS+=($!)

# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"
plain_rules "$P_PROXY" "$P_ADMIN" >"$TMP/proxy.yaml"
"$BIN" run --config "$TMP/proxy.yaml" --access-log off --threads "${THREADS:-1}" >"$TMP/proxy.log" 2>&1 &
PIDS+=($!)
wait_port "$P_STATUS"
wait_port "$P_PROXY"

# The third line of stub_status: accepts handled requests.
accepts() { curl -sf "http://127.0.0.1:$P_STATUS/" | awk 'NR == 3 {print $1}'; }
URL=http://127.0.0.1:$P_PROXY/
wrk -t1 -c"$CONNS" -d3s "$URL" >/dev/null
echo "wrk -t1 -c$CONNS -d$DURATION through Pointsman, after a 3 s warm-up"
for i in $(seq "$RUNS"); do
    before=$(accepts)
    out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "$URL")
    after=$(accepts)
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    # The status request itself is one accepted connection.
    echo "run $i: $reqs requests, $((after - before - 1)) new backend connections"
done
