#!/usr/bin/env bash
# Pointsman's profile-guided release build: what the container image ships
# (deploy/docker/Dockerfile) and what BENCHMARKS.md measures against NGINX.
#
#   benches/pgo.sh                    # writes target/pgo/pointsman
#   BIN=target/pgo/pointsman benches/callgrind.sh
#   BIN=target/pgo/pointsman BASE_BIN=target/release/pointsman \
#       SECTIONS=plain benches/e2e.sh
#   POINTSMAN_TEST_BIN=target/pgo/pointsman cargo test --test tests
#
# The plain path's cost is instruction-cache misses as much as
# instructions (BENCHMARKS.md), and both passes lay the code out by a real
# profile of the benchmarks' own traffic (plain proxying, the 300-route
# rule set, h2c through h2load):
#   1. PGO: an instrumented build is trained, its profile merged with the
#      llvm-profdata that matches rustc's LLVM, and the release build
#      redone with it (inlining, block order, hot and cold functions);
#   2. BOLT: that binary (linked with --emit-relocs) is instrumented by
#      llvm-bolt, trained again, and rewritten with its functions and
#      blocks reordered and its cold paths split off. Skipped, with a
#      message, when llvm-bolt is missing and apt cannot install it, or
#      with BOLT=0.
# Needs nginx, wrk and h2load. Stops only what it started. About 9
# minutes on two cores from a clean tree.
#
# Settings: TRAIN (wrk -d per workload, default 10s), BASE_PORT (default
# 18500), BOLT (default 1).

set -euo pipefail

TRAIN=${TRAIN:-10s}
BOLT=${BOLT:-1}
BASE_PORT=${BASE_PORT:-18500}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/pgo
TARGET=$(rustc -vV | awk '/^host:/ {print $2}')
export PATH=$PATH:/usr/sbin

# llvm-profdata must match rustc's LLVM: rustup's llvm-tools component
# (installed here if rustup can), else apt's llvm-NN of the same major.
profdata() {
    local sysroot_bin
    sysroot_bin=$(rustc --print sysroot)/lib/rustlib/$TARGET/bin
    if [ -x "$sysroot_bin/llvm-profdata" ] \
        || { command -v rustup >/dev/null && rustup component add llvm-tools >&2 \
            && [ -x "$sysroot_bin/llvm-profdata" ]; }; then
        echo "$sysroot_bin/llvm-profdata"
        return
    fi
    command -v "llvm-profdata-$LLVM" >/dev/null || apt_install "llvm-$LLVM"
    command -v "llvm-profdata-$LLVM"
}

apt_install() {
    echo "installing $1 with apt" >&2
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

# llvm-bolt and merge-fdata, of rustc's LLVM when there is a choice:
# prints the version suffix ("-22", or "" for unversioned tools), or
# nothing when neither is found nor installable.
bolt_suffix() {
    local s
    for s in "-$LLVM" ""; do
        command -v "llvm-bolt$s" >/dev/null && command -v "merge-fdata$s" >/dev/null \
            && { echo "$s"; return; }
    done
    if command -v apt-get >/dev/null && apt_install "bolt-$LLVM" 2>/dev/null; then
        echo "-$LLVM"
    fi
}

LLVM=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')
PROFDATA=$(profdata)

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
wait_port "$P_BACKEND"

# Runs BINARY on the plain and the rule-set configs under the training
# traffic, then stops it: instrumented binaries write their profile as
# they exit.
train() {
    local plain rules
    "$1" run --config "$TMP/conf/plain.yaml" --access-log off --threads 1 >"$TMP/plain.log" 2>&1 &
    plain=$!
    PIDS+=($plain)
    "$1" run --config "$TMP/conf/rules.yaml" --access-log off --threads 1 >"$TMP/rules.log" 2>&1 &
    rules=$!
    PIDS+=($rules)
    wait_port "$P_PLAIN"
    wait_port "$P_RULES"
    echo "training $(basename "$1") ($TRAIN each: plain, rule set, h2c)" >&2
    wrk -t1 -c50 -d"$TRAIN" "http://127.0.0.1:$P_PLAIN/" >/dev/null
    wrk -t1 -c50 -d"$TRAIN" -H "Host: shop.example.com" -H "x-user-id: user-4217" \
        -H "Cookie: session=abc123; theme=dark" "http://127.0.0.1:$P_RULES/api/v2/items/12345" >/dev/null
    h2load -c10 -m10 -D"${TRAIN%s}" "http://127.0.0.1:$P_PLAIN/" >/dev/null
    kill -TERM "$plain" "$rules"
    wait "$plain" "$rules" || true
}

# An explicit --target keeps RUSTFLAGS off build scripts and proc macros:
# only the binary and its libraries are instrumented, then optimised.
rm -rf "$OUT/data" "$OUT/bolt"
mkdir -p "$OUT/data" "$OUT/bolt"
echo "building the instrumented binary" >&2
RUSTFLAGS="-Cprofile-generate=$OUT/data" cargo build --release --locked --quiet \
    --target "$TARGET" --target-dir "$OUT/gen"
train "$OUT/gen/$TARGET/release/pointsman"
ls "$OUT"/data/*.profraw >/dev/null
"$PROFDATA" merge -o "$OUT/merged.profdata" "$OUT/data"

# --emit-relocs keeps what BOLT needs to move functions.
echo "building with the profile" >&2
RUSTFLAGS="-Cprofile-use=$OUT/merged.profdata -Clink-arg=-Wl,--emit-relocs" \
    cargo build --release --locked --quiet --target "$TARGET" --target-dir "$OUT/use"
PGO_BIN=$OUT/use/$TARGET/release/pointsman

SUFFIX=
[ "$BOLT" = 0 ] || SUFFIX=$(bolt_suffix) || true
if [ "$BOLT" = 0 ] || ! command -v "llvm-bolt$SUFFIX" >/dev/null; then
    [ "$BOLT" = 0 ] || echo "warning: no llvm-bolt; target/pgo/pointsman is the PGO build only" >&2
    cp "$PGO_BIN" "$OUT/pointsman"
    echo "$OUT/pointsman"
    exit 0
fi
echo "instrumenting with llvm-bolt$SUFFIX" >&2
"llvm-bolt$SUFFIX" "$PGO_BIN" -instrument -o "$OUT/bolt/pointsman.inst" \
    --instrumentation-file="$OUT/bolt/prof" --instrumentation-file-append-pid >"$TMP/bolt.log" 2>&1 \
    || { cat "$TMP/bolt.log" >&2; exit 1; }
train "$OUT/bolt/pointsman.inst"
"merge-fdata$SUFFIX" "$OUT"/bolt/prof.*.fdata >"$OUT/bolt/merged.fdata" 2>"$TMP/bolt.log" \
    || { cat "$TMP/bolt.log" >&2; exit 1; }
# The layout LLVM's own BOLTed clang uses (perf-helper.py's bolt_optimize),
# with identical code folding.
"llvm-bolt$SUFFIX" "$PGO_BIN" -o "$OUT/pointsman" -data="$OUT/bolt/merged.fdata" \
    -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
    -split-eh -icf=1 -use-gnu-stack >"$TMP/bolt.log" 2>&1 \
    || { cat "$TMP/bolt.log" >&2; exit 1; }
"$OUT/pointsman" --version >/dev/null
echo "$OUT/pointsman"
