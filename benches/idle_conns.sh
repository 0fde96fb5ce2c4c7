#!/usr/bin/env bash
# Memory of idle keep-alive client connections: Pointsman against NGINX and
# HAProxy (one worker each), in front of one NGINX backend on 127.0.0.1.
#
# For each proxy: one request to warm it up, VmRSS of its processes, then
# CONNS client connections (benches/support/idle_clients.py) that each send
# one GET, read the answer and stay open and silent; after SETTLE seconds
# of quiet, VmRSS again. Prints the growth per connection.
#
#   benches/idle_conns.sh                 # 10,000 connections
#   CONNS=2000 ONLY=pointsman benches/idle_conns.sh
#
# Settings (environment variables): CONNS (10000), SETTLE (5, seconds),
# BATCH (requests in flight while connecting, 100), BASE_PORT (18300),
# ONLY (pointsman nginx; add haproxy where the open-file limit allows about
# four descriptors per connection: HAProxy sizes its table from maxconn),
# NO_BUILD=1, BIN (the pointsman binary).
# A benchmark, not a test. Stops only the processes it started.

set -euo pipefail

CONNS=${CONNS:-10000}
SETTLE=${SETTLE:-5}
BATCH=${BATCH:-100}
BASE_PORT=${BASE_PORT:-18300}
ONLY=${ONLY:-pointsman nginx}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pointsman}
export PATH=$PATH:/usr/sbin
P_BACKEND=$BASE_PORT
P_POINTSMAN=$((BASE_PORT + 1))
P_NGINX=$((BASE_PORT + 2))
P_HAPROXY=$((BASE_PORT + 3))
P_ADMIN=$((BASE_PORT + 4))

# HAProxy asks for two descriptors per maxconn (2 * CONNS + 500 below), so
# about four per connection; the others need two. Up to the hard limit.
want=$((CONNS * 4 + 2000))
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$want" -le "$hard" ] || want=$hard
ulimit -n "$want"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-idle.XXXXXX")
# cleanup (at exit) and wait_port.
# shellcheck source=benches/support/procs.sh
. "$ROOT/benches/support/procs.sh"

# haproxy_plain.
# shellcheck source=benches/support/haproxy.sh
. "$ROOT/benches/support/haproxy.sh"

# tree and rss_kb.
# shellcheck source=benches/support/proc_stats.sh
. "$ROOT/benches/support/proc_stats.sh"

nginx_http() {
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $((CONNS * 2 + 1000));
pid $1/nginx.pid;
error_log $1/error.log crit;
user root;
events { worker_connections $((CONNS * 2 + 500)); }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $1/cb;
    proxy_temp_path $1/p;
    fastcgi_temp_path $1/f;
    uwsgi_temp_path $1/u;
    scgi_temp_path $1/s;
EOF
}

mkdir -p "$TMP/backend" "$TMP/nginx" "$TMP/conf"
{
    nginx_http "$TMP/backend"
    cat <<EOF
    server {
        listen 127.0.0.1:$P_BACKEND backlog=4096;
        location / { default_type text/plain; return 200 "hello from the backend\n"; }
    }
}
EOF
} >"$TMP/backend/nginx.conf"
{
    nginx_http "$TMP/nginx"
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$P_BACKEND;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
} >"$TMP/nginx/nginx.conf"
THREADS=1 HAPROXY_MAXCONN=$((CONNS * 2 + 500)) HAPROXY_IDLE=300s \
    haproxy_plain "$P_HAPROXY" "$P_BACKEND" >"$TMP/haproxy.cfg"
cat >"$TMP/conf/pointsman.yaml" <<EOF
listen: [{bind: "127.0.0.1:$P_POINTSMAN"}]
admin: {bind: "127.0.0.1:$P_ADMIN"}
limits: {max_connections: $((CONNS * 2)), idle_timeout: 300s}
upstreams:
  backend: {endpoints: ["127.0.0.1:$P_BACKEND"]}
routes:
  - {name: all, match: {path_prefix: /}, to: backend}
EOF

start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}
start backend nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" -e "$TMP/backend/error.log"
wait_port "$P_BACKEND"

echo "idle keep-alive connections: $(date -u +%FT%TZ), $CONNS connections, ${SETTLE}s quiet, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %12s %12s %14s %8s\n' proxy 'before kB' 'after kB' 'KiB per conn' ready
for t in $ONLY; do
    case $t in
    pointsman) start pointsman "$BIN" run --config "$TMP/conf/pointsman.yaml" --access-log off --threads 1; port=$P_POINTSMAN ;;
    nginx) start nginx nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log"; port=$P_NGINX ;;
    haproxy) start haproxy haproxy -f "$TMP/haproxy.cfg" -db; port=$P_HAPROXY ;;
    *) echo "unknown target $t" >&2; exit 1 ;;
    esac
    wait_port "$port"
    pidvar=PID_$t
    pid=${!pidvar}
    curl -sf -o /dev/null "http://127.0.0.1:$port/"
    sleep 1
    before=$(rss_kb "$pid")
    python3 "$ROOT/benches/support/idle_clients.py" "$port" "$CONNS" "$BATCH" 600 \
        >"$TMP/clients.out" 2>"$TMP/clients.err" </dev/null &
    client=$!
    PIDS+=($client)
    for _ in $(seq 1200); do
        grep -q '^ready' "$TMP/clients.out" 2>/dev/null && break
        sleep 0.1
    done
    sleep "$SETTLE"
    after=$(rss_kb "$pid")
    ready=$(awk '/^ready/ {print $2 "/" $2 + $4}' "$TMP/clients.out")
    printf '%-10s %12s %12s %14.2f %8s\n' "$t" "$before" "$after" \
        "$(awk -v a="$after" -v b="$before" -v n="$CONNS" 'BEGIN {print (a - b) / n}')" "$ready"
    kill -TERM "$client" 2>/dev/null || true
    wait "$client" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
