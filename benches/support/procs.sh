# Sourced by the bench scripts (not run on its own): the processes they
# start and the ports they wait for.
#
# The caller sets TMP (a directory removed at exit) and appends the PID of
# each process it starts to PIDS; `cleanup` runs at exit and stops only
# those.

PIDS=()

# Stops every process in PIDS (TERM, then KILL after 10 s) and removes TMP.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to 30 s for something to listen on 127.0.0.1:$1; otherwise
# prints the logs in TMP and exits.
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: nothing listens on 127.0.0.1:$1" >&2
    cat "$TMP"/*.log >&2 || true
    exit 1
}
