# Sourced by the bench scripts (not run on its own): what a process tree
# costs, read from /proc.

# tree PID: every process in the tree under PID (NGINX's master and
# workers; HAProxy and Pointsman are one process whose stat already sums
# its threads).
tree() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        tree "$child"
    done
}

# cpu_ticks PID: "TOTAL USER" in clock ticks of PID and its descendants:
# utime+stime, and utime alone (the proxy's own code; the rest is the
# kernel's, mostly the sockets' work).
cpu_ticks() {
    local total=0 user=0 p stat
    for p in $(tree "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        # Fields after the ")" closing comm: state is 3, utime 14, stime 15.
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        user=$((user + ${12}))
        total=$((total + ${12} + ${13}))
    done
    echo "$total $user"
}

# rss_kb PID: resident memory (VmRSS) of PID and its descendants, in KiB.
rss_kb() {
    local total=0 p kb
    for p in $(tree "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
