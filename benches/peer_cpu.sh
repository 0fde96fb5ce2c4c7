#!/usr/bin/env bash
# Who pays for a proxied request: the CPU the proxy, the backend and wrk
# each spend per request, how long the host's cores stood idle, and how
# often the proxy and the backend slept (voluntary context switches) or
# were preempted, with Pointsman, NGINX and HAProxy (one worker each) as the
# proxy in front of the same NGINX backend.
#
# e2e.sh counts the proxy's CPU only. On a machine where the load
# generator, the backend and the proxy share the cores, requests per second
# also depend on what the proxy makes the other two spend and on how often
# it leaves a core with nothing to run; this script measures both.
#
#   benches/peer_cpu.sh                  # 4 rounds of 8 s, wrk -c50
#   ROUNDS=8 BIN=target/pgo/pointsman benches/peer_cpu.sh
#   WRK_THREADS=2 BACKEND_WORKERS=2 benches/peer_cpu.sh
#
# Settings (environment variables): ROUNDS (4; the proxies rotate which
# goes first), PROXIES (nginx pointsman haproxy), DURATION (8s), CONNS
# (50), WRK_THREADS (wrk -t, 1), BACKEND_WORKERS (the backend NGINX's
# worker_processes, 1), BASE_PORT (18700), NO_BUILD=1, BIN (the pointsman
# binary). A benchmark, not a test. Needs nginx, wrk, GNU time
# (/usr/bin/time), and haproxy when PROXIES names it. Stops only what it
# started.

set -euo pipefail

ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-50}
PROXIES=${PROXIES:-nginx pointsman haproxy}
WRK_THREADS=${WRK_THREADS:-1}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
THREADS=1
BASE_PORT=${BASE_PORT:-18700}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pointsman}
export PATH=$PATH:/usr/sbin
P_BACKEND=$BASE_PORT
P_NGINX=$((BASE_PORT + 1))
P_POINTSMAN=$((BASE_PORT + 2))
P_ADMIN=$((BASE_PORT + 3))
P_HAPROXY=$((BASE_PORT + 4))
HZ=$(getconf CLK_TCK)
read -ra ORDER <<<"$PROXIES"
for name in "${ORDER[@]}"; do
    case $name in
    nginx | pointsman | haproxy) ;;
    *) echo "unknown proxy in PROXIES: $name (nginx, pointsman, haproxy)" >&2 && exit 2 ;;
    esac
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-peer.XXXXXX")
# cleanup (at exit) and wait_port.
# shellcheck source=benches/support/procs.sh
. "$ROOT/benches/support/procs.sh"
# shellcheck source=benches/support/nginx.sh
. "$ROOT/benches/support/nginx.sh"
# haproxy_plain.
# shellcheck source=benches/support/haproxy.sh
. "$ROOT/benches/support/haproxy.sh"
# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"
# tree and cpu_ticks.
# shellcheck source=benches/support/proc_stats.sh
. "$ROOT/benches/support/proc_stats.sh"

[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet)

mkdir -p "$TMP/backend" "$TMP/nginx" "$TMP/conf"
nginx_backend "$TMP/backend" "$P_BACKEND" "$BACKEND_WORKERS" >"$TMP/backend/nginx.conf"
{
    echo "worker_processes 1;"
    nginx_plain_proxy "$TMP/nginx" "127.0.0.1:$P_NGINX backlog=4096" "$P_BACKEND"
} >"$TMP/nginx/nginx.conf"
plain_rules "$P_POINTSMAN" "$P_ADMIN" >"$TMP/conf/pointsman.yaml"
haproxy_plain "$P_HAPROXY" "$P_BACKEND" >"$TMP/haproxy.cfg"

nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" -e "$TMP/backend/error.log" &
PID_BACKEND=$!
PIDS+=("$PID_BACKEND")
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log" &
PID_NGINX=$!
PIDS+=("$PID_NGINX")
"$BIN" run --config "$TMP/conf/pointsman.yaml" --access-log off --threads 1 >"$TMP/pointsman.log" 2>&1 &
PID_POINTSMAN=$!
PIDS+=("$PID_POINTSMAN")
PID_HAPROXY=
if [[ " $PROXIES " == *" haproxy "* ]]; then
    haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
    PID_HAPROXY=$!
    PIDS+=("$PID_HAPROXY")
    wait_port "$P_HAPROXY"
fi
wait_port "$P_BACKEND"
wait_port "$P_NGINX"
wait_port "$P_POINTSMAN"

# switches PID: voluntary and involuntary context switches of the threads
# of PID and of its descendants.
switches() {
    local p
    for p in $(tree "$1"); do cat "/proc/$p"/task/*/status; done 2>/dev/null |
        awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v + 0, n + 0}'
}

# idle_busy: the host's idle and total ticks so far (/proc/stat).
idle_busy() {
    awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat
}

# sample PID: the counters one run reads before and after, on one line:
# the proxy's and the backend's CPU ticks, the host's idle and total ticks,
# the proxy's and the backend's voluntary and involuntary switches.
sample() {
    local proxy backend
    read -r proxy _ <<<"$(cpu_ticks "$1")"
    read -r backend _ <<<"$(cpu_ticks "$PID_BACKEND")"
    echo "$proxy $backend $(idle_busy) $(switches "$1") $(switches "$PID_BACKEND")"
}

# run NAME PORT PID: one wrk run through that proxy; prints two lines and
# appends its figures to $TMP/NAME.results.
run() {
    local name=$1 port=$2 pid=$3 before after out
    wrk -t"$WRK_THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
    before=$(sample "$pid")
    out=$(/usr/bin/time -f "TIME %U %S" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$port/" 2>&1)
    after=$(sample "$pid")
    awk -v name="$name" -v hz="$HZ" -v before="$before" -v after="$after" -v results="$TMP/$name.results" '
        /requests in/ {reqs = $1}
        /^Requests\/sec:/ {rps = $2}
        /^TIME/ {wrk = $2 + $3}
        END {
            split(before, b); split(after, a)
            for (i = 1; i <= 8; i++) d[i] = a[i] - b[i]
            us = 1e6 / reqs
            proxy = d[1] / hz * us; backend = d[2] / hz * us; wrk *= us; idle = 100 * d[3] / d[4]
            printf "%-10s %8.0f req/s  proxy %6.2f  backend %6.2f  wrk %6.2f  all %6.2f us/req  host idle %4.1f %%\n",
                name, rps, proxy, backend, wrk, proxy + backend + wrk, idle
            printf "%-10s per 1,000 requests: proxy slept %.1f, preempted %.1f; backend slept %.1f, preempted %.1f\n",
                "", d[5] * 1000 / reqs, d[6] * 1000 / reqs, d[7] * 1000 / reqs, d[8] * 1000 / reqs
            print rps, proxy, backend, wrk, idle, d[5] * 1000 / reqs, d[6] * 1000 / reqs >>results
        }' <<<"$out"
}

# median NAME FIELD: the median of that figure over NAME's rounds.
median() {
    awk -v f="$2" '{print $f}' "$TMP/$1.results" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# proxy NAME: the port and PID of that proxy.
proxy() {
    case $1 in
    nginx) echo "$P_NGINX $PID_NGINX" ;;
    pointsman) echo "$P_POINTSMAN $PID_POINTSMAN" ;;
    haproxy) echo "$P_HAPROXY $PID_HAPROXY" ;;
    esac
}

echo "wrk -t$WRK_THREADS -c$CONNS -d$DURATION, backend: $BACKEND_WORKERS worker(s); CPU per request of each process ($ROUNDS rounds)"
for i in $(seq 0 $((ROUNDS - 1))); do
    for j in $(seq 0 $((${#ORDER[@]} - 1))); do
        name=${ORDER[$(((i + j) % ${#ORDER[@]}))]}
        # shellcheck disable=SC2046 # port and PID, two words
        run "$name" $(proxy "$name")
    done
done

echo
echo "medians:    req/s  proxy  backend  wrk (us/req)  host idle %  proxy slept, preempted /1k"
for name in "${ORDER[@]}"; do
    printf '%-10s %6.0f %6.2f %8.2f %4.2f %13.1f %16.1f %9.1f\n' "$name" \
        "$(median "$name" 1)" "$(median "$name" 2)" "$(median "$name" 3)" \
        "$(median "$name" 4)" "$(median "$name" 5)" "$(median "$name" 6)" "$(median "$name" 7)"
done
