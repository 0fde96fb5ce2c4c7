#!/usr/bin/env bash
# Idle memory of the release binary with the e2e rule generator
# (benches/gen_rules.sh): starts `pointsman run` per route count, waits until
# it listens, sleeps 1 s, prints VmRSS, RssAnon, RssFile and VmHWM from
# /proc/PID/status, and stops it. Nothing is sent to it; no backend runs.
#
#   benches/idle_memory.sh                # 2 and 10000 routes
#   benches/idle_memory.sh 2 1000 10000   # any route counts
#
# Settings (environment variables):
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
    printf '%8s %10s %10s %10s %10s\n' "$n" "$(field VmRSS)" "$(field RssAnon)" \
        "$(field RssFile)" "$(field VmHWM)"
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
done
