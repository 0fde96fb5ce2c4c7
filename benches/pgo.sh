#!/usr/bin/env bash
# A profile-guided (PGO) release build of Pointsman, to measure what
# laying the code out by a real profile is worth (BENCHMARKS.md: the plain
# path misses the instruction cache 2.4x as often as NGINX).
#
#   benches/pgo.sh                    # writes target/pgo/pointsman
#   BIN=target/pgo/pointsman benches/callgrind.sh
#   BASE_BIN=target/release/pointsman BIN=target/pgo/pointsman \
#       SECTIONS=plain benches/e2e.sh
#
# Builds an instrumented binary, trains it on the benchmarks' own traffic
# (plain proxying, the 300-route rule set, h2c through h2load), merges the
# profile with the llvm-profdata that matches rustc's LLVM (installs
# llvm-NN with apt if missing) and builds again with the profile. Needs
# nginx, wrk and h2load. Stops only what it started.
#
# Settings: TRAIN (wrk -d per workload, default 10s), BASE_PORT (default
# 18500).

set -euo pipefail

TRAIN=${TRAIN:-10s}
BASE_PORT=${BASE_PORT:-18500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/pgo
TARGET=$(rustc -vV | awk '/^host:/ {print $2}')
export PATH=$PATH:/usr/sbin

llvm=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')
PROFDATA=$(command -v "llvm-profdata-$llvm" || true)
if [ -z "$PROFDATA" ]; then
    echo "installing llvm-$llvm (llvm-profdata for rustc's LLVM $llvm) with apt" >&2
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "llvm-$llvm" >/dev/null
    PROFDATA=$(command -v "llvm-profdata-$llvm")
fi

# An explicit --target keeps RUSTFLAGS off build scripts and proc macros:
# only the binary and its libraries are instrumented, then optimised.
rm -rf "$OUT/data"
mkdir -p "$OUT/data"
echo "building the instrumented binary" >&2
RUSTFLAGS="-Cprofile-generate=$OUT/data" cargo build --release --quiet \
    --target "$TARGET" --target-dir "$OUT/gen"

P_BACKEND=$BASE_PORT
P_PLAIN=$((BASE_PORT + 1))
P_RULES=$((BASE_PORT + 2))
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pointsman-pgo.XXXXXX")
# shellcheck source=benches/support/procs.sh
. "$ROOT/benches/support/procs.sh"
# shellcheck source=benches/support/nginx.sh
. "$ROOT/benches/support/nginx.sh"
# shellcheck source=benches/gen_rules.sh
. "$ROOT/benches/gen_rules.sh"

mkdir -p "$TMP/backend" "$TMP/conf"
nginx_backend "$TMP/backend" "$P_BACKEND" >"$TMP/backend/nginx.conf"
nginx -c "$TMP/backend/nginx.conf" -p "$TMP/backend" -e "$TMP/backend/error.log" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
plain_rules "$P_PLAIN" $((BASE_PORT + 11)) >"$TMP/conf/plain.yaml"
gen_rules 300 "$P_RULES" $((BASE_PORT + 12)) >"$TMP/conf/rules.yaml"

GEN=$OUT/gen/$TARGET/release/pointsman
"$GEN" run --config "$TMP/conf/plain.yaml" --access-log off --threads 1 >"$TMP/plain.log" 2>&1 &
PLAIN=$!
PIDS+=($PLAIN)
"$GEN" run --config "$TMP/conf/rules.yaml" --access-log off --threads 1 >"$TMP/rules.log" 2>&1 &
RULES=$!
PIDS+=($RULES)
wait_port "$P_BACKEND"
wait_port "$P_PLAIN"
wait_port "$P_RULES"

echo "training ($TRAIN each: plain, rule set, h2c)" >&2
wrk -t1 -c50 -d"$TRAIN" "http://127.0.0.1:$P_PLAIN/" >/dev/null
wrk -t1 -c50 -d"$TRAIN" -H "Host: shop.example.com" -H "x-user-id: user-4217" \
    -H "Cookie: session=abc123; theme=dark" "http://127.0.0.1:$P_RULES/api/v2/items/12345" >/dev/null
h2load -c10 -m10 -D"${TRAIN%s}" "http://127.0.0.1:$P_PLAIN/" >/dev/null

# The profile is written as each process exits.
kill -TERM "$PLAIN" "$RULES"
wait "$PLAIN" "$RULES" || true
ls "$OUT"/data/*.profraw >/dev/null
"$PROFDATA" merge -o "$OUT/merged.profdata" "$OUT/data"

echo "building with the profile" >&2
RUSTFLAGS="-Cprofile-use=$OUT/merged.profdata" cargo build --release --quiet \
    --target "$TARGET" --target-dir "$OUT/use"
cp "$OUT/use/$TARGET/release/pointsman" "$OUT/pointsman"
echo "$OUT/pointsman"
