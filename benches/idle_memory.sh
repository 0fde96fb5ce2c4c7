#!/usr/bin/env bash
# Idle memory of the release binary with the e2e rule generator
# (benches/gen_rules.sh): starts `pointsman run` per route count, waits until
# it listens, sleeps 1 s, prints VmRSS, RssAnon, RssFile and VmHWM from
# /proc/PID/status, and stops it. Nothing is sent to it; no backend runs.
# With RELOADS=N it then reloads the same file N times (`POST /reload`, one
# after the other) and prints the same fields again, a second after the
# last: VmHWM is then the peak of the start-up and of the reloads.
#
#   benches/idle_memory.sh                # 2 and 10000 routes
#   benches/idle_memory.sh 2 1000 10000   # any route counts
#   RELOADS=5 benches/idle_memory.sh 10000
#
# Settings (environment variables):
#   RELOADS    reloads after the first line (default 0)
#   BASE_PORT  first loopback port used (default 28100; three are used)
#   THREADS    --threads (default 1)
#   NO_BUILD=1 skip `cargo build --release`
#   BIN        the binary (default target/release/pointsman)

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/pointsman}
BASE_PORT=${BASE_PORT:-28100}
THREADS=${THREADS:-1}
P_BACKEND=$BASE_PORT
P_LISTEN=$((BASE_PORT + 1))
P_ADMIN=$((BASE_PORT + 2))
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(2 10000)

# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"

if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

# The log goes to its own directory: writes next to the rule file would wake
# the config watcher, whose (unchanged) reload parses the file again.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-mem.XXXXXX")
mkdir "$TMP/rules" "$TMP/log"
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

field() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$PID/status"; }
row() {
    printf '%8s %10s %10s %10s %10s\n' "$1" "$(field VmRSS)" "$(field RssAnon)" \
        "$(field RssFile)" "$(field VmHWM)"
}
# One `POST /reload`, answered (over bash's /dev/tcp: no curl needed).
reload_once() {
    exec 3<>"/dev/tcp/127.0.0.1/$P_ADMIN"
    printf 'POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' >&3
    local status
    read -r _ status _ <&3
    cat <&3 >/dev/null
    exec 3<&-
    if [ "$status" != 200 ]; then
        echo "POST /reload answered $status" >&2
        exit 1
    fi
}

printf '%8s %10s %10s %10s %10s  (kB)\n' routes VmRSS RssAnon RssFile VmHWM
for n in "${COUNTS[@]}"; do
    gen_rules "$n" "$P_LISTEN" "$P_ADMIN" >"$TMP/rules/rules.yaml"
    "$BIN" run --config "$TMP/rules/rules.yaml" --access-log off --threads "$THREADS" \
        >"$TMP/log/log" 2>&1 &
    PID=$!
    up=
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$P_LISTEN") 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$up" ]; then
        echo "pointsman did not listen on 127.0.0.1:$P_LISTEN; its log:" >&2
        cat "$TMP/log/log" >&2
        exit 1
    fi
    sleep 1
    row "$n"
    if [ "${RELOADS:-0}" -gt 0 ]; then
        ms=()
        for _ in $(seq "$RELOADS"); do
            t0=$(date +%s%N)
            reload_once
            ms+=($((($(date +%s%N) - t0) / 1000000)))
        done
        sleep 1
        row "+${RELOADS}rl"
        echo "  reloads of $n routes took ${ms[*]} ms"
    fi
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
done
