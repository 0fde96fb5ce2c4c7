#!/usr/bin/env bash
# End-to-end benchmark: Pointsman against NGINX and HAProxy as reverse
# proxies in front of one NGINX backend, all on 127.0.0.1.
#
# A benchmark, not a test: CI never runs it and it never fails because the
# machine is slow. It prints figures; read them against BENCHMARKS.md.
#
#   benches/e2e.sh                      # defaults below
#   THREADS=2 DURATION=30s ROUNDS=5 benches/e2e.sh
#
# Settings (environment variables):
#   THREADS      proxy workers: NGINX worker_processes, HAProxy nbthread,
#                Pointsman --threads (default 1, leaving a core to wrk)
#   BACKEND_WORKERS  worker_processes of the backend NGINX (default 1)
#   WRK_THREADS  wrk -t (default 1)     CONNS     wrk -c (default 50)
#   WRK_CPUS     pin wrk to these CPUs (taskset -c), e.g. 1: with THREADS=1
#                and THREADS=2, requests per CPU-second at 1 and 2 proxy
#                threads with wrk on a core of its own (default: unpinned)
#   PROXY_CPUS   pin every proxy to these CPUs (taskset -c), and
#   BACKEND_CPUS the backend NGINX: PROXY_CPUS=0 BACKEND_CPUS=1 WRK_CPUS=1
#                gives the proxy a core of its own, as in production, so
#                that where the scheduler happens to put the three
#                processes stops moving the figures (default: unpinned);
#                PROXY_CPUS=0 BACKEND_CPUS=0 WRK_CPUS=1 has the proxy and
#                the backend share a core, so the proxy's cost sets the
#                rate (unpinned on 2 cores, wrk and the backend fill one
#                and a cheaper proxy waits for them: benches/peer_cpu.sh;
#                WRK_THREADS=2 BACKEND_WORKERS=2 lets their work spread)
#   DURATION     wrk -d (default 10s)   WARMUP    per target (default 2s)
#   ROUNDS       rounds; targets alternate inside each round and the
#                median over rounds is reported (default 3)
#   RULES        routes in the realistic rule set (default 300)
#   MEM_ROUTES   routes loaded for the idle-memory figure (default 10000)
#   BASE_PORT    first of the loopback ports used (default 18100)
#   NO_BUILD=1   skip `cargo build --release`
#   BIN          the Pointsman measured (default: target/pgo/pointsman, the
#                profile-guided build the container image ships, when
#                benches/pgo.sh made it from this tree's src/, Cargo.* and
#                build.rs; else this tree's release build, said so)
#   FLOOR_BIN    examples/hyper_floor.rs (default: this tree's release build)
#   BASE_BIN     an earlier pointsman build, measured in the same rounds on
#                the plain config as `pointsman-base` (before/after ratios)
#   ONLY         space-separated subset of targets to run in "plain"
#                (backend pointsman pointsman-rules nginx haproxy hyper-floor
#                nginx-same haproxy-same; also hyper-origin, not run by
#                default). With
#                pointsman-rules, nginx, haproxy and pointsman are also
#                sent the rule-set request (nginx-rules, haproxy-rules,
#                pointsman-catchall: the plain config, that request)
#   SECTIONS     what to measure (default: all of them, in this order):
#                plain   the plain proxy and the 300-route rule set
#                rate    the plain proxies at a fixed rate below capacity,
#                        latency from when each request was due
#                        (settings at the top of benches/e2e/rate.sh)
#                memory  idle memory with MEM_ROUTES routes loaded
#                large   10 and 10,000 routes in each proxy's own idiom
#                reload  20 reloads of a 10,000-route config under load
#                        (RELOAD_CONTROL=1: the same admin requests and
#                        no reload, what the harness itself costs;
#                        RELOAD_TIMES=1: each reload's time, in order;
#                        RELOAD_ROUNDS=5: five rounds of a steady run
#                        and a run with reloads, in turns, compared
#                        round by round)
#                h2      h2load over h2c and TLS 1.3
#                conns   memory of 10,000 idle keep-alive connections
#                The settings of the last four are at the top of
#                benches/e2e/sections.sh.
#
# `nginx-same` and `haproxy-same` are NGINX and HAProxy configured to add
# the headers Pointsman's contract adds to every request (SPEC 5):
# X-Forwarded-Host, Via, and a request id sent upstream and echoed on the
# response (the plain `nginx` and `haproxy` rows add X-Forwarded-For and
# -Proto only). Pointsman against them is the comparison at equal work.
#
# `hyper-floor` is examples/hyper_floor.rs: the least a proxy on Pointsman's
# stack (tokio, hyper 1 HTTP/1.1, mimalloc) does per request, no routing.
# `hyper-origin` is the same example answering itself, as the backend NGINX
# does: the server half of the stack, to compare with the `backend` row.
#
# It starts every process itself, tracks their PIDs and stops only those
# on exit (trap EXIT). Configs live in a temporary directory.

set -euo pipefail

THREADS=${THREADS:-1}
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
WRK_THREADS=${WRK_THREADS:-1}
CONNS=${CONNS:-50}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
RULES=${RULES:-300}
MEM_ROUTES=${MEM_ROUTES:-10000}
BASE_PORT=${BASE_PORT:-18100}
ONLY=${ONLY:-backend pointsman pointsman-rules nginx haproxy hyper-floor nginx-same haproxy-same}
WRK=(wrk)
[ -z "${WRK_CPUS:-}" ] || WRK=(taskset -c "$WRK_CPUS" wrk)
SECTIONS=${SECTIONS:-plain rate memory large reload h2 conns}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGO_BIN=$ROOT/target/pgo/pointsman
# Whether the profile-guided build is of this tree's code: the sources at
# the commit it names (`--version`) are those of HEAD and of the work tree.
# By file times, outside a git checkout (a checkout rewrites a file's time
# without changing it).
pgo_is_current() {
    [ -x "$PGO_BIN" ] || return 1
    local sources=(src Cargo.toml Cargo.lock build.rs) commit
    commit=$("$PGO_BIN" --version 2>/dev/null | sed -n 's/.*(commit \([0-9a-f]*\)).*/\1/p')
    if [ -n "$commit" ] && git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then
        git -C "$ROOT" diff --quiet "$commit" -- "${sources[@]}"
    else
        [ -z "$(cd "$ROOT" && find "${sources[@]}" -newer "$PGO_BIN" -print -quit)" ]
    fi
}
if [ -z "${BIN:-}" ] && pgo_is_current; then
    BIN=$PGO_BIN
fi
BIN=${BIN:-$ROOT/target/release/pointsman}
FLOOR_BIN=${FLOOR_BIN:-$ROOT/target/release/examples/hyper_floor}
BASE_BIN=${BASE_BIN:-}
[ -z "$BASE_BIN" ] || ONLY="$ONLY pointsman-base"
CLK_TCK=$(getconf CLK_TCK)

P_BACKEND=$BASE_PORT
P_POINTSMAN=$((BASE_PORT + 1))
P_RULES=$((BASE_PORT + 2))
P_NGINX=$((BASE_PORT + 3))
P_HAPROXY=$((BASE_PORT + 4))
P_FLOOR=$((BASE_PORT + 5))
P_BASE=$((BASE_PORT + 6))
P_ORIGIN=$((BASE_PORT + 7))
P_NGINX_SAME=$((BASE_PORT + 8))
P_HAPROXY_SAME=$((BASE_PORT + 9))
P_ADMIN1=$((BASE_PORT + 11))
P_ADMIN2=$((BASE_PORT + 12))
P_MEM=$((BASE_PORT + 13))
P_ADMIN3=$((BASE_PORT + 14))
P_ADMIN4=$((BASE_PORT + 15))

log() { printf '%s\n' "$*" >&2; }

# --- processes we started -------------------------------------------------

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-e2e.XXXXXX")

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ----------------------------------------------------------------

need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} with apt"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin
# Debian starts packaged services on install where systemd runs; ours are
# separate instances on their own ports, so that does not matter.

if [ -z "${NO_BUILD:-}" ]; then
    log "building pointsman (release)"
    (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example hyper_floor --example fixed_rate)
fi

# --- helpers --------------------------------------------------------------

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# host_cpu: prints "STEAL TOTAL" from /proc/stat's first line, in ticks: the CPU
# time the VM's host took from it, and all CPU time, over every CPU.
host_cpu() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit}' /proc/stat; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "error: $name did not listen on 127.0.0.1:$port; its log:"
    cat "$TMP/$name.log" >&2 || true
    exit 1
}

# tree, cpu_ticks and rss_kb.
# shellcheck source=benches/support/proc_stats.sh
. "$ROOT/benches/support/proc_stats.sh"

# per10k TICKS REQUESTS: CPU seconds per 10,000 requests.
per10k() {
    awk -v t="$1" -v hz="$CLK_TCK" -v r="$2" 'BEGIN {printf "%.4f", t / hz / r * 10000}'
}

# wrk latency figure ("812.00us", "1.23ms", "2.01s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000
        else if (v ~ /ms$/) n = n
        else if (v ~ /m$/) n *= 60000
        else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

# section NAME: whether SECTIONS asks for it.
section() { [[ " $SECTIONS " == *" $1 "* ]]; }

# stop NAME: stops a process started with `start` and waits for it.
stop() {
    local var=PID_${1//-/_}
    kill -TERM "${!var}" 2>/dev/null || true
    wait "${!var}" 2>/dev/null || true
}

# nginx_common and nginx_proxy_settings.
# shellcheck source=benches/support/nginx.sh
. "$ROOT/benches/support/nginx.sh"

# haproxy_head and haproxy_plain.
# shellcheck source=benches/support/haproxy.sh
. "$ROOT/benches/support/haproxy.sh"

start() {
    local name=$1 pin=${PROXY_CPUS:-}
    shift
    [ "$name" != backend ] || pin=${BACKEND_CPUS:-}
    [ -z "$pin" ] || set -- taskset -c "$pin" "$@"
    "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_${name//-/_}=$!"
}

# run_wrk NAME PORT PID PATH [HEADERS...]: one wrk run; appends
# "rps p50 p99 cpu10k errors user10k round" to $TMP/NAME.results ($round:
# the caller's round, 0 outside one).
run_wrk() {
    local name=$1 port=$2 pid=$3 path=$4
    shift 4
    local before after ubefore uafter out rps p50 p99 reqs errs
    read -r before ubefore <<<"$(cpu_ticks "$pid")"
    out=$("${WRK[@]}" -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port$path" 2>&1) || true
    read -r after uafter <<<"$(cpu_ticks "$pid")"
    echo "$out" >>"$TMP/$name.wrk"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
        log "warning: no result from wrk against $name"
        return
    fi
    local cpu10k user10k
    cpu10k=$(per10k $((after - before)) "$reqs")
    user10k=$(per10k $((uafter - ubefore)) "$reqs")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") $cpu10k $errs $user10k ${round:-0}" >>"$TMP/$name.results"
    local note=
    [ "$errs" = 0 ] || note=", $errs errors"
    log "  $name: $rps req/s, p50 $p50, p99 $p99, $cpu10k CPU s/10k req$note"
}

col() { # col NAME FIELD -> median of that field over rounds
    [ -f "$TMP/$1.results" ] || { echo nan; return; }
    median $(awk -v f="$2" '{print $f}' "$TMP/$1.results")
}

# paired A B [METRICS]: A against B round by round. The two ran back to
# back in each round, on the same state of the host, so the ratio of each
# round's pair varies less than the ratio of the two medians: the median of
# those ratios, how many rounds A did at least as well, and the sign
# test's two-sided p (the chance of a split this uneven or more if neither
# were better; small p: a real difference, large p: no difference the
# rounds can show). METRICS: NAME:FIELD:BETTER words, FIELD a column of
# the .results lines and BETTER high or low (default: req/s, CPU/request
# and p99); a round where either side has 0 in a field (h2load gives no
# p99) is left out of that line.
paired() {
    [ -f "$TMP/$1.results" ] && [ -f "$TMP/$2.results" ] || return 0
    awk -v a="$1" -v b="$2" -v metrics="${3:-req/s:1:high CPU/request:4:low p99:3:low}" '
        function median(v, n,    i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
            return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
        }
        function sign_p(k, n,    i, m, c, s) {
            m = k < n - k ? k : n - k; c = 1; s = 0
            for (i = 0; i <= m; i++) { s += c; c = c * (n - i) / (i + 1) }
            s = 2 * s / 2 ^ n
            return s > 1 ? 1 : s
        }
        function line(what, level, v, k, n,    i, list) {
            for (i = 1; i <= n; i++) list = list sprintf(" %.3f", v[i])
            printf "  %-13s median %.3f×, %s in %d of %d rounds (sign test p = %.2f):%s\n", what, median(v, n), level, k, n, sign_p(k, n), list
        }
        BEGIN {
            nm = split(metrics, m, " ")
            for (i = 1; i <= nm; i++) { split(m[i], p, ":"); label[i] = p[1]; field[i] = p[2]; high[i] = p[3] == "high" }
        }
        FNR == NR { first[$7] = $0; next }
        $7 in first {
            split(first[$7], x)
            rounds++
            for (i = 1; i <= nm; i++) {
                f = field[i]
                if (x[f] > 0 && $f > 0) {
                    r = x[f] / $f
                    ratios[i, ++n[i]] = r
                    if (high[i] ? r >= 1 : r <= 1) won[i]++
                }
            }
        }
        END {
            if (rounds == 0) exit
            printf "%s against %s, round by round:\n", a, b
            for (i = 1; i <= nm; i++) {
                if (n[i] == 0) continue
                for (k = 1; k <= n[i]; k++) v[k] = ratios[i, k]
                line(label[i], high[i] ? "at least level" : "at most level", v, won[i] + 0, n[i])
            }
        }' "$TMP/$1.results" "$TMP/$2.results"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "nan") print "-"; else printf "%.2f", a / b }'; }

table() {
    local title=$1 ref=$2
    shift 2
    local rrps rp50 rp99 rcpu ruser
    rrps=$(col "$ref" 1)
    rp50=$(col "$ref" 2)
    rp99=$(col "$ref" 3)
    rcpu=$(col "$ref" 4)
    ruser=$(col "$ref" 6)
    echo
    echo "$title (ratios to ${ref})"
    printf '%-16s %10s %6s %9s %6s %9s %6s %12s %6s %10s %6s %7s\n' target 'req/s' '×' 'p50 ms' '×' 'p99 ms' '×' 'CPU s/10k' '×' 'user s/10k' '×' errors
    local t rps p50 p99 cpu user errs
    for t in "$@"; do
        [ -f "$TMP/$t.results" ] || continue
        rps=$(col "$t" 1)
        p50=$(col "$t" 2)
        p99=$(col "$t" 3)
        cpu=$(col "$t" 4)
        user=$(col "$t" 6)
        errs=$(awk '{n += $5} END {print n + 0}' "$TMP/$t.results")
        printf '%-16s %10.0f %6s %9.3f %6s %9.3f %6s %12.4f %6s %10.4f %6s %7s\n' "$t" "$rps" "$(ratio "$rps" "$rrps")" \
            "$p50" "$(ratio "$p50" "$rp50")" "$p99" "$(ratio "$p99" "$rp99")" "$cpu" "$(ratio "$cpu" "$rcpu")" \
            "$user" "$(ratio "$user" "$ruser")" "$errs"
    done
}

for port in $P_BACKEND $P_POINTSMAN $P_RULES $P_NGINX $P_HAPROXY $P_FLOOR $P_BASE $P_ORIGIN $P_NGINX_SAME $P_HAPROXY_SAME $P_ADMIN1 $P_ADMIN2 $P_MEM $P_ADMIN3 $P_ADMIN4; do
    if ! port_free "$port"; then
        log "error: 127.0.0.1:$port is in use; set BASE_PORT to another range"
        exit 1
    fi
done

# --- configs --------------------------------------------------------------

mkdir -p "$TMP/backend" "$TMP/nginx" "$TMP/nginx-same"
nginx_backend "$TMP/backend" "$P_BACKEND" "$BACKEND_WORKERS" >"$TMP/backend/nginx.conf"
read -r STEAL0 TOTAL0 <<<"$(host_cpu)" # reported at the end

start backend nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" -e "$TMP/backend/error.log"
wait_port "$P_BACKEND" backend

# ==========================================================================
# Section "plain": the plain proxy and the realistic rule set, every target
# running side by side, rounds alternating between them. Section "rate"
# (benches/e2e/rate.sh) sends the same plain proxies a fixed rate.
# ==========================================================================
if section plain || section rate; then


{
    echo "worker_processes $THREADS;"
    nginx_plain_proxy "$TMP/nginx" "127.0.0.1:$P_NGINX backlog=4096" "$P_BACKEND"
} >"$TMP/nginx/nginx.conf"
{
    echo "worker_processes $THREADS;"
    nginx_plain_proxy "$TMP/nginx-same" "127.0.0.1:$P_NGINX_SAME backlog=4096" "$P_BACKEND" on same
} >"$TMP/nginx-same/nginx.conf"

haproxy_plain "$P_HAPROXY" "$P_BACKEND" >"$TMP/haproxy.cfg"

# HAProxy adding the headers Pointsman adds (see nginx-same): its idiom for
# a request id is unique-id-format; the client's id is kept when it sent one.
{
    haproxy_head
    cat <<EOF
frontend fe
    bind 127.0.0.1:$P_HAPROXY_SAME
    unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
    http-request set-var(txn.request_id) req.hdr(x-request-id)
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request add-header Via "1.1 haproxy"
    http-response set-header X-Request-Id %[var(txn.request_id)]
    default_backend be
backend be
    server backend 127.0.0.1:$P_BACKEND
EOF
} >"$TMP/haproxy-same.cfg"

# Rule files sit in their own directory: Pointsman watches it, and the logs
# written into $TMP would wake its watcher.
mkdir -p "$TMP/conf/plain" "$TMP/conf/base" "$TMP/conf/rules" "$TMP/conf/mem"
cat >"$TMP/conf/plain/pointsman.yaml" <<EOF
listen: [{bind: "127.0.0.1:$P_POINTSMAN"}]
admin: {bind: "127.0.0.1:$P_ADMIN1"}
upstreams:
  backend: {endpoints: ["127.0.0.1:$P_BACKEND"]}
routes:
  - name: all
    match: {path_prefix: /}
    to: backend
EOF
sed -e "s/:$P_POINTSMAN\"/:$P_BASE\"/" -e "s/:$P_ADMIN1\"/:$P_ADMIN4\"/" \
    "$TMP/conf/plain/pointsman.yaml" >"$TMP/conf/base/pointsman.yaml"

# A realistic rule set (benches/gen_rules.sh): N routes mixing hosts, path
# templates, headers and cookies, one experiment; the benchmark request
# matches the route just before the catch-all, i.e. late in the file.
# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"
gen_rules "$RULES" "$P_RULES" "$P_ADMIN2" >"$TMP/conf/rules/rules.yaml"
RULES_HEADERS=(-H "Host: shop.example.com" -H "x-user-id: user-4217" -H "Cookie: session=abc123; theme=dark")
RULES_PATH=/api/v2/items/12345

# --- start ----------------------------------------------------------------

start pointsman "$BIN" run --config "$TMP/conf/plain/pointsman.yaml" --access-log off --threads "$THREADS"
start pointsman-rules "$BIN" run --config "$TMP/conf/rules/rules.yaml" --access-log off --threads "$THREADS"
start nginx nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/error.log"
start haproxy haproxy -f "$TMP/haproxy.cfg" -db
start nginx-same nginx -c "$TMP/nginx-same/nginx.conf" -p "$TMP/nginx-same" -e "$TMP/nginx-same/error.log"
start haproxy-same haproxy -f "$TMP/haproxy-same.cfg" -db
start hyper-floor "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_BACKEND" "$THREADS"
start hyper-origin "$FLOOR_BIN" "127.0.0.1:$P_ORIGIN" origin "$THREADS"
if [ -n "$BASE_BIN" ]; then
    start pointsman-base "$BASE_BIN" run --config "$TMP/conf/base/pointsman.yaml" --access-log off --threads "$THREADS"
    wait_port "$P_BASE" pointsman-base
fi
wait_port "$P_POINTSMAN" pointsman
wait_port "$P_RULES" pointsman-rules
wait_port "$P_NGINX" nginx
wait_port "$P_HAPROXY" haproxy
wait_port "$P_NGINX_SAME" nginx-same
wait_port "$P_HAPROXY_SAME" haproxy-same
wait_port "$P_FLOOR" hyper-floor
wait_port "$P_ORIGIN" hyper-origin

# target NAME -> "port pid path headers-kind"
target() {
    case $1 in
    backend) echo "$P_BACKEND $PID_backend / plain" ;;
    pointsman) echo "$P_POINTSMAN $PID_pointsman / plain" ;;
    pointsman-rules) echo "$P_RULES $PID_pointsman_rules $RULES_PATH rules" ;;
    nginx) echo "$P_NGINX $PID_nginx / plain" ;;
    haproxy) echo "$P_HAPROXY $PID_haproxy / plain" ;;
    nginx-same) echo "$P_NGINX_SAME $PID_nginx_same / plain" ;;
    haproxy-same) echo "$P_HAPROXY_SAME $PID_haproxy_same / plain" ;;
    hyper-floor) echo "$P_FLOOR $PID_hyper_floor / plain" ;;
    hyper-origin) echo "$P_ORIGIN $PID_hyper_origin / plain" ;;
    pointsman-base) echo "$P_BASE $PID_pointsman_base / plain" ;;
    pointsman-catchall) echo "$P_POINTSMAN $PID_pointsman $RULES_PATH rules" ;;
    nginx-rules) echo "$P_NGINX $PID_nginx $RULES_PATH rules" ;;
    haproxy-rules) echo "$P_HAPROXY $PID_haproxy $RULES_PATH rules" ;;
    esac
}

# Sanity: every target answers the benchmark request with the backend's 200.
for t in backend pointsman nginx haproxy hyper-floor hyper-origin nginx-same haproxy-same ${BASE_BIN:+pointsman-base}; do
    read -r port _ <<<"$(target "$t")"
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
    [ "$code" = 200 ] || { log "error: $t answered $code"; cat "$TMP/$t.log" >&2; exit 1; }
done
# The equal-work rows do add the headers: each answer carries a request id.
for t in pointsman nginx-same haproxy-same; do
    read -r port _ <<<"$(target "$t")"
    curl -s -D - -o /dev/null "http://127.0.0.1:$port/" | grep -qi '^x-request-id: ' ||
        { log "error: $t answered without an X-Request-Id"; exit 1; }
done
for t in pointsman-rules nginx haproxy; do
    case $t in pointsman-rules) port=$P_RULES ;; nginx) port=$P_NGINX ;; haproxy) port=$P_HAPROXY ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' "${RULES_HEADERS[@]}" "http://127.0.0.1:$port$RULES_PATH")
    [ "$code" = 200 ] || { log "error: $t answered $code to the rule-set request"; exit 1; }
done

# --- runs -----------------------------------------------------------------
if section plain; then

# The rule-set variant sends the rule-set request (host, headers, cookies)
# to the plain proxies too, so they carry the same bytes.
TARGETS=()
for t in $ONLY; do
    TARGETS+=("$t")
    [[ " $ONLY " == *" pointsman-rules "* ]] || continue
    case $t in
    nginx | haproxy) TARGETS+=("$t-rules") ;;
    # The plain config sent the rule-set request: what the rules cost
    # with the request (its headers, its cookie) held equal.
    pointsman) TARGETS+=(pointsman-catchall) ;;
    esac
done

one() {
    local name=$1 port pid path kind
    read -r port pid path kind <<<"$(target "$name")"
    if [ "$kind" = rules ]; then
        run_wrk "$name" "$port" "$pid" "$path" "${RULES_HEADERS[@]}"
    else
        run_wrk "$name" "$port" "$pid" "$path"
    fi
}

log "warm-up ($WARMUP each)"
for t in "${TARGETS[@]}"; do
    read -r port pid path kind <<<"$(target "$t")"
    if [ "$kind" = rules ]; then
        "${WRK[@]}" -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "${RULES_HEADERS[@]}" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
    else
        "${WRK[@]}" -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
    fi
done

for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS (wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency)"
    # Rotate the order each round so no target always runs first.
    n=${#TARGETS[@]}
    for ((k = 0; k < n; k++)); do
        one "${TARGETS[$(((k + round - 1) % n))]}"
    done
done

# --- report ---------------------------------------------------------------

echo
echo "pointsman e2e: $(date -u +%FT%TZ), $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "proxies: $THREADS worker(s) each${PROXY_CPUS:+ (pinned to CPU $PROXY_CPUS)}; backend: NGINX, $BACKEND_WORKERS worker(s)${BACKEND_CPUS:+ (pinned to CPU $BACKEND_CPUS)}"
echo "wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency${WRK_CPUS:+ (pinned to CPU $WRK_CPUS)}; median of $ROUNDS rounds"
if [ "$(realpath -m "$BIN")" = "$(realpath -m "$PGO_BIN")" ]; then
    echo "pointsman: $BIN (profile-guided, benches/pgo.sh: what the container image ships)"
else
    echo "pointsman: $BIN (not the profile-guided build the container image ships: benches/pgo.sh makes it)"
fi
table "plain proxy, one catch-all route" nginx backend pointsman nginx haproxy hyper-floor pointsman-base hyper-origin nginx-same haproxy-same
# versus A B [NOTE]: one line of A's medians against B's, when both ran.
versus() {
    [ -f "$TMP/$1.results" ] && [ -f "$TMP/$2.results" ] || return 0
    echo "  $1 against $2${3:+ ($3)}: $(ratio "$(col "$1" 1)" "$(col "$2" 1)")× req/s, $(ratio "$(col "$1" 4)" "$(col "$2" 4)")× CPU/request, $(ratio "$(col "$1" 3)" "$(col "$2" 3)")× p99"
}
# At equal work: NGINX and HAProxy adding the headers Pointsman adds.
versus pointsman nginx-same "the same headers added"
versus pointsman haproxy-same "the same headers added"
echo
# Each reference that ran (paired skips the others).
for ref in nginx haproxy nginx-same haproxy-same pointsman-base; do
    paired pointsman "$ref"
done
table "realistic rule set ($RULES routes, request matches route $((RULES - 1)))" nginx-rules pointsman-rules pointsman-catchall nginx-rules haproxy-rules
# Issue 19's goal: the rule set within 5 % of the plain path. Against the
# plain row the request differs too (path, three more headers); against
# pointsman-catchall only the rules do.
versus pointsman-rules pointsman
versus pointsman-rules pointsman-catchall "same request"
echo
echo "CPU s/10k: utime+stime of the proxy's processes (all workers) per 10,000 requests; user s/10k: the utime part."
echo "The backend row is the ceiling: wrk against the backend directly (its CPU is the backend's)."
echo "hyper-floor: examples/hyper_floor.rs, the same stack with no routing, headers, metrics or timeouts."
echo "nginx-same, haproxy-same: adding the headers Pointsman adds (X-Forwarded-Host, Via, X-Request-Id both ways)."
[[ " $ONLY " != *" hyper-origin "* ]] || echo "hyper-origin: the same example answering itself; compare with the backend row (NGINX answering)."
[ -z "$BASE_BIN" ] || echo "pointsman-base: $BASE_BIN on the plain config."

echo
echo "resident memory after the runs (VmRSS):"
for t in pointsman pointsman-rules nginx haproxy; do
    var=PID_${t//-/_}
    printf '  %-16s %8s kB\n' "$t" "$(rss_kb "${!var}")"
done

fi # the plain runs

if section rate; then
    # shellcheck source=benches/e2e/rate.sh
    . "$ROOT/benches/e2e/rate.sh"
fi

for t in pointsman pointsman-rules nginx haproxy hyper-floor hyper-origin nginx-same haproxy-same ${BASE_BIN:+pointsman-base}; do stop "$t"; done
fi # sections plain and rate

# ==========================================================================
# Section "memory": idle memory with MEM_ROUTES routes loaded.
# ==========================================================================
if section memory; then
# --- idle memory with MEM_ROUTES routes -----------------------------------

# The same generator at 2 routes (the two fixed ones) is the baseline.
# (Also when this section runs alone: SECTIONS=memory.)
mkdir -p "$TMP/conf/mem"
# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"
echo
for n in 2 "$MEM_ROUTES"; do
    gen_rules "$n" "$P_MEM" "$P_ADMIN3" >"$TMP/conf/mem/mem.yaml"
    start pointsman-mem "$BIN" run --config "$TMP/conf/mem/mem.yaml" --access-log off --threads "$THREADS"
    wait_port "$P_MEM" pointsman-mem
    sleep 1
    echo "idle pointsman, $n routes loaded: VmRSS $(awk '/^VmRSS:/ {print $2, $3}' "/proc/$PID_pointsman_mem/status"), VmHWM $(awk '/^VmHWM:/ {print $2, $3}' "/proc/$PID_pointsman_mem/status")"
    kill -TERM "$PID_pointsman_mem" 2>/dev/null || true
    wait "$PID_pointsman_mem" 2>/dev/null || true
done
fi # section memory

# shellcheck source=benches/e2e/large_rules.sh
. "$ROOT/benches/e2e/large_rules.sh"
# shellcheck source=benches/e2e/sections.sh
. "$ROOT/benches/e2e/sections.sh"

# A VM's host can take CPU from it mid-run (steal), which skews every
# figure above whatever the ratios say: report it with them.
read -r steal1 total1 <<<"$(host_cpu)"
awk -v s=$((steal1 - STEAL0)) -v t=$((total1 - TOTAL0)) 'BEGIN {
    share = t > 0 ? 100 * s / t : 0
    printf "\nhost steal while measuring: %d of %d CPU ticks (%.1f %%)%s\n", s, t, share,
        (share > 1 ? ": the host took CPU from this VM during the run; read its figures with care" : "")
}'
