# Sourced by benches/e2e.sh inside its plain section (not run on its own):
# the plain proxies at a fixed rate below their capacity, as production
# runs them, with latency counted from when each request was due
# (examples/fixed_rate.rs, open loop, as wrk2). wrk's closed loop measures
# a queue at saturation instead: 50 connections wait on the proxy, so its
# p99 is mostly how the host's scheduler shares two cores, and a stall
# holds back only the one request each connection has out.
#
#   RATE_RPS       requests a second in all (default 25000: a third to
#                  half of what one proxy worker serves on the 2-core
#                  machine of BENCHMARKS.md; pick a rate every target
#                  keeps up with, or the run warns that one is behind)
#   RATE_CONNS     keep-alive connections sharing it (default: CONNS)
#   RATE_SECONDS   counted seconds per run, after a second of warm-up
#                  (default: DURATION's)
#   RATE_TARGETS   who is measured (default "backend pointsman nginx
#                  haproxy"; backend: the client against the backend
#                  directly, the floor every proxy adds to)
# The client is pinned like wrk (WRK_CPUS).

RATE_RPS=${RATE_RPS:-25000}
RATE_CONNS=${RATE_CONNS:-$CONNS}
RATE_SECONDS=${RATE_SECONDS:-$(awk -v d="${DURATION%s}" 'BEGIN {print d + 0}')}
RATE_TARGETS=${RATE_TARGETS:-backend pointsman nginx haproxy}
RATE_WARMUP=1 # seconds sent before the counted ones, in every run
RATE_CLIENT=("$ROOT/target/release/examples/fixed_rate")
[ -z "${WRK_CPUS:-}" ] || RATE_CLIENT=(taskset -c "$WRK_CPUS" "${RATE_CLIENT[@]}")

# run_rate NAME PORT PID: one fixed-rate run; appends "rate p50 p99 cpu10k
# errors user10k round p90 p99.9 max" (latencies in ms) to
# $TMP/rate-NAME.results.
run_rate() {
    local name=$1 port=$2 pid=$3 before after ubefore uafter out
    read -r before ubefore <<<"$(cpu_ticks "$pid")"
    out=$("${RATE_CLIENT[@]}" "127.0.0.1:$port" "$RATE_RPS" "$RATE_CONNS" "$RATE_SECONDS" "$RATE_WARMUP" 2>&1) || {
        log "warning: fixed_rate against $name failed: $out"
        return
    }
    read -r after uafter <<<"$(cpu_ticks "$pid")"
    echo "$out" >>"$TMP/rate-$name.out"
    # key=value pairs, latencies in µs; the run's CPU includes its
    # warm-up, so it is divided by every request sent.
    awk -v t=$((after - before)) -v u=$((uafter - ubefore)) -v hz="$CLK_TCK" -v warm=$((RATE_RPS * RATE_WARMUP)) -v round="${round:-0}" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        sent = v["requests"] + warm
        printf "%s %.3f %.3f %.4f %d %.4f %d %.3f %.3f %.3f\n", v["rate"], v["p50_us"] / 1000, v["p99_us"] / 1000,
            t / hz / sent * 10000, v["errors"], u / hz / sent * 10000, round,
            v["p90_us"] / 1000, v["p999_us"] / 1000, v["max_us"] / 1000
    }' <<<"$out" >>"$TMP/rate-$name.results"
    log "  rate-$name: $out"
    awk -v want="$RATE_RPS" -v n="$name" '$1 < 0.99 * want {
        printf "warning: %s answered %d a second of the %d due: it is behind, lower RATE_RPS\n", n, $1, want }' \
        <(tail -n 1 "$TMP/rate-$name.results") >&2
}

echo
echo "fixed rate: $RATE_RPS requests a second over $RATE_CONNS connections, ${RATE_SECONDS}s counted per run after ${RATE_WARMUP}s of warm-up, latency from when each request was due (examples/fixed_rate.rs)"
echo "proxies: $THREADS worker(s) each${PROXY_CPUS:+ (pinned to CPU $PROXY_CPUS)}${BACKEND_CPUS:+; backend pinned to CPU $BACKEND_CPUS}${WRK_CPUS:+; client pinned to CPU $WRK_CPUS}; pointsman: $BIN"
read -r -a rate_order <<<"$RATE_TARGETS"
for round in $(seq "$ROUNDS"); do
    log "fixed rate, round $round/$ROUNDS"
    for ((k = 0; k < ${#rate_order[@]}; k++)); do
        t=${rate_order[$(((k + round - 1) % ${#rate_order[@]}))]}
        read -r port pid _ <<<"$(target "$t")"
        run_rate "$t" "$port" "$pid"
    done
done
printf '%-12s %8s %8s %8s %6s %9s %6s %8s %11s %6s %7s\n' target 'p50 ms' 'p90 ms' 'p99 ms' '×' 'p99.9 ms' '×' 'max ms' 'CPU s/10k' '×' errors
for t in $RATE_TARGETS; do
    [ -f "$TMP/rate-$t.results" ] || continue
    printf '%-12s %8.3f %8.3f %8.3f %6s %9.3f %6s %8.3f %11.4f %6s %7s\n' "$t" \
        "$(col "rate-$t" 2)" "$(col "rate-$t" 8)" "$(col "rate-$t" 3)" "$(ratio "$(col "rate-$t" 3)" "$(col rate-nginx 3)")" \
        "$(col "rate-$t" 9)" "$(ratio "$(col "rate-$t" 9)" "$(col rate-nginx 9)")" "$(col "rate-$t" 10)" \
        "$(col "rate-$t" 4)" "$(ratio "$(col "rate-$t" 4)" "$(col rate-nginx 4)")" \
        "$(awk '{n += $5} END {print n + 0}' "$TMP/rate-$t.results")"
done
echo "(medians of $ROUNDS rounds; × against nginx; the backend row's CPU is the backend's)"
echo
for other in nginx haproxy; do
    paired rate-pointsman "rate-$other" "p50:2:low p99:3:low p99.9:9:low CPU/request:4:low"
done
