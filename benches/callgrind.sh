#!/usr/bin/env bash
# Instructions per proxied request, from valgrind's callgrind: repeatable
# whatever else the machine is doing, unlike wall-clock figures. Use it to
# judge a hot-path change (before/after) and to find where the time goes.
#
#   benches/callgrind.sh                # plain catch-all route
#   RULES=300 benches/callgrind.sh      # the realistic rule set of e2e.sh
#   LARGE=10000 benches/callgrind.sh    # e2e.sh's large rule set (host +
#                                       # path prefix + header per route,
#                                       # the last one matched); with
#                                       # NGINX=1, NGINX's form of it
#   FLOOR=1 benches/callgrind.sh        # examples/hyper_floor.rs instead
#   NGINX=1 benches/callgrind.sh        # NGINX as the proxy (plain only):
#                                       # the same count for the reference
#   NGINX=1 SAME=1 benches/callgrind.sh # NGINX adding the headers Pointsman
#                                       # adds (e2e.sh's nginx-same row)
#   ATOMICS=1 benches/callgrind.sh      # also atomic read-modify-writes
#                                       # per request, by function
#   CACHE=1 benches/callgrind.sh        # also simulated first-level cache
#                                       # misses per request (instruction
#                                       # and data; --cache-sim=yes)
#   BRANCH=1 benches/callgrind.sh       # also simulated branch
#                                       # mispredictions per request
#                                       # (conditional, indirect;
#                                       # --branch-sim=yes)
#   H2=1 benches/callgrind.sh           # the plain route over h2c (h2load,
#                                       # CONNS connections x 10 streams)
#   RULES_REQUEST=1 benches/callgrind.sh  # the plain route, sent the rule
#                                       # set's request (its path, Host,
#                                       # x-user-id and Cookie): what the
#                                       # rules cost, request held equal
#
# Starts an NGINX backend and the release binary under callgrind
# (--threads 1), warms up, zeroes the counters, sends wrk traffic for
# DURATION (default 10s), dumps, and prints instructions per request and
# the costliest functions (inclusive). Needs valgrind, nginx, wrk (h2load
# for H2).
# Stops only what it started.

set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-10}
RULES=${RULES:-0}
LARGE=${LARGE:-0}
BASE_PORT=${BASE_PORT:-18200}
TOP=${TOP:-40}
KEEP=${KEEP:-} # a directory to copy callgrind.out into

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pointsman}
FLOOR=${FLOOR:-}
NGINX=${NGINX:-}
ATOMICS=${ATOMICS:-}
RULES_REQUEST=${RULES_REQUEST:-}
SAME=${SAME:-}
CACHE=${CACHE:-}
BRANCH=${BRANCH:-}
H2=${H2:-}
if [ -n "$NGINX" ] && [ "$RULES" -gt 0 ]; then
    echo "error: NGINX=1 measures the plain proxy or LARGE=N, not RULES" >&2
    exit 2
fi
FLOOR_BIN=${FLOOR_BIN:-$ROOT/target/release/examples/hyper_floor}
export PATH=$PATH:/usr/sbin
P_BACKEND=$BASE_PORT
P_PROXY=$((BASE_PORT + 1))
P_ADMIN=$((BASE_PORT + 2))

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-cg.XXXXXX")
# cleanup (at exit) and wait_port.
# shellcheck source=benches/support/procs.sh
. "$ROOT/benches/support/procs.sh"

if [ -z "${NO_BUILD:-}" ] && [ -z "$NGINX" ]; then
    if [ -n "$FLOOR" ]; then
        (cd "$ROOT" && cargo build --release --quiet --example hyper_floor)
    else
        (cd "$ROOT" && cargo build --release --quiet)
    fi
fi

# nginx_common and nginx_proxy_settings, as e2e.sh configures NGINX.
# shellcheck source=benches/support/nginx.sh
. "$ROOT/benches/support/nginx.sh"

mkdir -p "$TMP/backend"
nginx_backend "$TMP/backend" "$P_BACKEND" >"$TMP/backend/nginx.conf"
nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" -e "$TMP/backend/error.log" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)

# The e2e rule generators.
# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"
HEADERS=()
URL_PATH=/
if [ "$RULES" -gt 0 ] || [ -n "$RULES_REQUEST" ]; then
    HEADERS=(-H "Host: shop.example.com" -H "x-user-id: user-4217" -H "Cookie: session=abc123; theme=dark")
    URL_PATH=/api/v2/items/12345
fi
if [ "$LARGE" -gt 0 ]; then
    # shellcheck source=benches/e2e/large_rules.sh
    . "$ROOT/benches/e2e/large_rules.sh"
    THREADS=1
    read -r lpath lhost ltenant <<<"$(large_request "$LARGE")"
    HEADERS=(-H "Host: $lhost" -H "x-tenant: $ltenant")
    URL_PATH=$lpath
    gen_large_pointsman "$LARGE" "$P_PROXY" "$P_ADMIN" >"$TMP/proxy.yaml"
elif [ "$RULES" -gt 0 ]; then
    gen_rules "$RULES" "$P_PROXY" "$P_ADMIN" >"$TMP/proxy.yaml"
else
    plain_rules "$P_PROXY" "$P_ADMIN" >"$TMP/proxy.yaml"
fi

cd "$TMP"
if [ -n "$NGINX" ]; then
    # One process (no master), one worker's work: what e2e.sh's nginx
    # target does per request, with the same proxy settings.
    mkdir -p "$TMP/proxy"
    if [ "$LARGE" -gt 0 ]; then
        gen_large_nginx "$LARGE" "$P_PROXY" "$TMP/proxy" |
            sed 's/master_process on;/master_process off;/' >"$TMP/proxy/nginx.conf"
    else
        nginx_plain_proxy "$TMP/proxy" "127.0.0.1:$P_PROXY" "$P_BACKEND" off "$SAME" >"$TMP/proxy/nginx.conf"
    fi
    CMD=(nginx -c "$TMP/proxy/nginx.conf" -p "$TMP/proxy" -e "$TMP/proxy/error.log")
elif [ -n "$FLOOR" ]; then
    CMD=("$FLOOR_BIN" "127.0.0.1:$P_PROXY" "127.0.0.1:$P_BACKEND" 1)
else
    CMD=("$BIN" run --config "$TMP/proxy.yaml" --access-log off --threads 1)
fi
VG_OPTS=()
[ -z "$ATOMICS" ] || VG_OPTS+=(--dump-instr=yes)
[ -z "$CACHE" ] || VG_OPTS+=(--cache-sim=yes)
[ -z "$BRANCH" ] || VG_OPTS+=(--branch-sim=yes)
valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.out" "${VG_OPTS[@]}" \
    "${CMD[@]}" >"$TMP/proxy.log" 2>&1 &
VG=$!
PIDS+=($VG)
wait_port "$P_BACKEND"
wait_port "$P_PROXY"
URL=http://127.0.0.1:$P_PROXY$URL_PATH
curl -sf "${HEADERS[@]}" -o /dev/null "$URL" || { echo "error: proxy did not answer 200" >&2; exit 1; }
if [ -n "$H2" ]; then
    load() { h2load -c"$CONNS" -m10 -t1 -D"${1%s}" "${HEADERS[@]}" "$URL" 2>&1; }
else
    load() { wrk -t1 -c"$CONNS" -d"$1" "${HEADERS[@]}" "$URL" 2>&1; }
fi
load 3s >/dev/null || true
callgrind_control -z "$VG" >/dev/null
out=$(load "$DURATION")
callgrind_control -d "$VG" >/dev/null
sleep 1
if [ -n "$H2" ]; then
    reqs=$(awk '/^requests:/ {print $8}' <<<"$out")
    errs=$(awk '/^status codes:/ {n = $5 + $7 + $9} END {if (n) print n}' <<<"$out")
else
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
fi
dump=$(ls -t "$TMP"/callgrind.out* | grep -v '^$' | head -1)
event_total() {
    callgrind_annotate --show="$1" "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}
total=$(event_total Ir)
echo "requests: $reqs${errs:+ (non-2xx: $errs)}"
echo "instructions: $total"
awk -v t="$total" -v r="$reqs" 'BEGIN {printf "instructions per request: %.0f\n", t / r}'
events=()
[ -z "$CACHE" ] || events+=(I1mr D1mr D1mw)
[ -z "$BRANCH" ] || events+=(Bc Bcm Bi Bim)
if [ "${#events[@]}" -gt 0 ]; then
    for event in "${events[@]}"; do
        awk -v e="$event" -v t="$(event_total "$event")" -v r="$reqs" \
            'BEGIN {printf "%s per request: %.0f\n", e, t / r}'
    done
fi
[ -z "$KEEP" ] || { mkdir -p "$KEEP" && cp "$dump" "$KEEP/"; }
if [ -n "$ATOMICS" ]; then
    python3 "$ROOT/benches/support/atomics.py" "$(readlink -f "$(command -v "${CMD[0]}")")" \
        "$dump" "$reqs" "$TOP"
fi
echo
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | head -n "$TOP"
