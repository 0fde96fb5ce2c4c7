# Sourced by benches/e2e.sh after its helpers, the backend and the "plain"
# and "memory" sections (not run on its own): the sections where Pointsman
# should be far ahead, each proxy measured in turn in the same run.
#
#   large   LARGE_SIZES routes (default "10 10000") of host + path prefix +
#           header, the request matching the last route; the proxies run
#           side by side and take turns inside each round
#   reload  RELOAD_COUNT reloads (20) of a RELOAD_ROUTES-route (10000) config
#           during a RELOAD_DURATION (20s) wrk run, against the same run
#           without reloads; RELOAD_CONTROL=1 sends the same admin requests
#           (and no signals) without reloading; for Pointsman also how
#           long its serving threads waited for a CPU in each run, and
#           how long each reload took (RELOAD_TIMES=1: every one, in order);
#           RELOAD_ROUNDS (1) pairs of the two runs, in turns, with the
#           p99 and req/s ratios round by round
#   h2      h2load over h2c and over TLS 1.3 (ALPN h2): H2_CLIENTS (50)
#           connections, H2_STREAMS (10) concurrent streams each
#   PROXIES picks the proxies of large, reload and h2 (default: all three)
#   conns   memory of CONNS_IDLE (10000) idle keep-alive client connections
#           (benches/idle_conns.sh), Pointsman against NGINX (HAProxy wants
#           two descriptors per maxconn, more than this machine's 20,000)

PROXIES=${PROXIES:-pointsman haproxy nginx}
LARGE_SIZES=${LARGE_SIZES:-10 10000}
RELOAD_ROUTES=${RELOAD_ROUTES:-10000}
RELOAD_COUNT=${RELOAD_COUNT:-20}
RELOAD_DURATION=${RELOAD_DURATION:-20s}
RELOAD_ROUNDS=${RELOAD_ROUNDS:-1}
H2_CLIENTS=${H2_CLIENTS:-50}
H2_STREAMS=${H2_STREAMS:-10}
CONNS_IDLE=${CONNS_IDLE:-10000}

P_L_POINTSMAN=$((BASE_PORT + 20))
P_L_HAPROXY=$((BASE_PORT + 21))
P_L_NGINX=$((BASE_PORT + 22))
P_L_ADMIN=$((BASE_PORT + 23))
P_H2_POINTSMAN=$((BASE_PORT + 24))
P_H2S_POINTSMAN=$((BASE_PORT + 25))
P_H2_ADMIN=$((BASE_PORT + 26))
P_H2_NGINX=$((BASE_PORT + 27))
P_H2S_NGINX=$((BASE_PORT + 28))
P_H2_HAPROXY=$((BASE_PORT + 29))
P_H2S_HAPROXY=$((BASE_PORT + 30))
for port in $(seq $((BASE_PORT + 20)) $((BASE_PORT + 30))); do
    if ! port_free "$port"; then
        log "error: 127.0.0.1:$port is in use; set BASE_PORT to another range"
        exit 1
    fi
done

# large_start PROXY N NAME: writes PROXY's config for N routes and starts
# it as NAME (not in a subshell: `start` records its PID); sets READY_SECS
# to the seconds it took to answer on its port.
large_start() {
    local proxy=$1 n=$2 name=$3 dir=$TMP/large/$1-$2 t0 t1
    mkdir -p "$dir"
    case $proxy in
    pointsman) gen_large_pointsman "$n" "$P_L_POINTSMAN" "$P_L_ADMIN" >"$dir/pointsman.yaml" ;;
    haproxy) gen_large_haproxy "$n" "$P_L_HAPROXY" >"$dir/haproxy.cfg" ;;
    nginx) gen_large_nginx "$n" "$P_L_NGINX" "$dir" >"$dir/nginx.conf" ;;
    esac
    t0=$(date +%s.%N)
    case $proxy in
    pointsman) start "$name" "$BIN" run --config "$dir/pointsman.yaml" --access-log off --threads "$THREADS" ;;
    # Master-worker mode (-W): SIGUSR2 to the master reloads.
    haproxy) start "$name" haproxy -W -db -f "$dir/haproxy.cfg" ;;
    nginx) start "$name" nginx -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" ;;
    esac
    wait_port "$(large_port "$proxy")" "$name"
    t1=$(date +%s.%N)
    READY_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
}

large_port() {
    case $1 in
    pointsman) echo "$P_L_POINTSMAN" ;;
    haproxy) echo "$P_L_HAPROXY" ;;
    nginx) echo "$P_L_NGINX" ;;
    esac
}

# large_reload PROXY NAME: one reload of the running proxy; fails when the
# proxy refused it. Shell built-ins only: spawning curl or `nginx -s
# reload` (which parses the whole config to find the pid file) costs the
# saturated machine more than some reloads do, and would be measured as
# the reload's effect on latency.
large_reload() {
    local var=PID_${2//-/_}
    case $1 in
    pointsman)
        # RELOAD_CONTROL=1: the same request, asking GET /config instead
        # (what the harness itself costs the machine, without any reload).
        local method=POST path=/reload
        [ -z "${RELOAD_CONTROL:-}" ] || method=GET path=/config
        admin_request "$method" "$path" && [ "$ADMIN_STATUS" = 200 ]
        ;;
    haproxy) [ -n "${RELOAD_CONTROL:-}" ] || kill -USR2 "${!var}" ;;
    # What `nginx -s reload` sends to the master.
    nginx) [ -n "${RELOAD_CONTROL:-}" ] || kill -HUP "${!var}" ;;
    esac
}

# serving_wait PID: nanoseconds Pointsman's serving threads (all but its
# named helper threads: admin, reload, log, file watcher) have waited for
# a CPU while runnable, from /proc/PID/task/*/schedstat (its second field).
serving_wait() {
    local t comm run wait total=0
    for t in /proc/"$1"/task/*; do
        read -r comm <"$t/comm" 2>/dev/null || continue
        case $comm in pointsman-* | notify-* | tokio-*) continue ;; esac
        read -r run wait _ <"$t/schedstat" 2>/dev/null || continue
        total=$((total + wait))
    done
    echo "$total"
}

# admin_request METHOD PATH: sets ADMIN_STATUS to the status code
# Pointsman's admin API answers, over bash's /dev/tcp (no process started,
# not even a subshell).
admin_request() {
    ADMIN_STATUS=000
    exec 7<>"/dev/tcp/127.0.0.1/$P_L_ADMIN" || return 1
    printf '%s %s HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$1" "$2" >&7
    read -r _ ADMIN_STATUS _ <&7 || true
    exec 7<&-
}

# --------------------------------------------------------------------------
if section large; then
    mkdir -p "$TMP/large"
    echo
    echo "large rule sets: host + path prefix + header per route, the request matching the last route"
    for n in $LARGE_SIZES; do
        read -r lpath lhost ltenant <<<"$(large_request "$n")"
        for proxy in $PROXIES; do
            name=large-$proxy-$n
            large_start "$proxy" "$n" "$name"
            echo "$READY_SECS" >"$TMP/$name.ready"
            port=$(large_port "$proxy")
            code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $lhost" -H "x-tenant: $ltenant" "http://127.0.0.1:$port$lpath")
            [ "$code" = 200 ] || { log "error: $name answered $code to the last route's request"; exit 1; }
            "${WRK[@]}" -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" -H "Host: $lhost" -H "x-tenant: $ltenant" "http://127.0.0.1:$port$lpath" >/dev/null 2>&1 || true
        done
        # The proxies alternate inside each round, in a rotated order (as
        # in the plain section), so a slow spell of the VM falls on all.
        read -r -a order <<<"$PROXIES"
        for round in $(seq "$ROUNDS"); do
            for ((k = 0; k < ${#order[@]}; k++)); do
                proxy=${order[$(((k + round - 1) % ${#order[@]}))]}
                name=large-$proxy-$n
                var=PID_${name//-/_}
                run_wrk "$name" "$(large_port "$proxy")" "${!var}" "$lpath" -H "Host: $lhost" -H "x-tenant: $ltenant"
            done
        done
        for proxy in $PROXIES; do
            name=large-$proxy-$n
            var=PID_${name//-/_}
            echo "$(rss_kb "${!var}") $(cat "$TMP/$name.ready")" >"$TMP/$name.mem"
            stop "$name"
        done
        table "large rule set, $n routes" "large-haproxy-$n" "large-pointsman-$n" "large-haproxy-$n" "large-nginx-$n"
        echo "  ratios to nginx: pointsman $(ratio "$(col "large-pointsman-$n" 1)" "$(col "large-nginx-$n" 1)")× req/s, $(ratio "$(col "large-pointsman-$n" 4)" "$(col "large-nginx-$n" 4)")× CPU/request"
        paired "large-pointsman-$n" "large-nginx-$n" | sed 's/^/  /'
        for proxy in $PROXIES; do
            read -r kb secs <"$TMP/large-$proxy-$n.mem"
            printf '  %-10s %6d routes: VmRSS %8d kB after the runs, ready in %ss\n' "$proxy" "$n" "$kb" "$secs"
        done
    done
fi

# --------------------------------------------------------------------------
if section reload; then
    mkdir -p "$TMP/large"
    read -r lpath lhost ltenant <<<"$(large_request "$RELOAD_ROUTES")"
    echo
    echo "reload under load: $RELOAD_COUNT reloads of a $RELOAD_ROUTES-route config during wrk -d$RELOAD_DURATION"
    secs_total=$(awk -v d="${RELOAD_DURATION%s}" 'BEGIN {print d + 0}')
    # Reload i starts i gaps after the run does (at once when the one
    # before is late), so slower reloads still fall inside the run.
    gap_us=$(awk -v d="$secs_total" -v n="$RELOAD_COUNT" 'BEGIN {printf "%d", d * 1e6 / (n + 1)}')
    window_us=$(awk -v d="$secs_total" 'BEGIN {printf "%d", d * 1e6}')
    for proxy in $PROXIES; do
        name=reload-$proxy
        large_start "$proxy" "$RELOAD_ROUTES" "$name"
        port=$(large_port "$proxy")
        var=PID_${name//-/_}
        headers=(-H "Host: $lhost" -H "x-tenant: $ltenant")
        "${WRK[@]}" -t"$WRK_THREADS" -c"$CONNS" -d"$WARMUP" "${headers[@]}" "http://127.0.0.1:$port$lpath" >/dev/null 2>&1 || true
        # Each round pairs a steady run with a run with reloads, in turns
        # (steady first in odd rounds), so a drift of the VM's speed does
        # not always fall on the same side.
        for ((round = 1; round <= RELOAD_ROUNDS; round++)); do
            order="steady reloads"
            ((round % 2)) || order="reloads steady"
            for run in $order; do
                [ "$proxy" != pointsman ] || wait0=$(serving_wait "${!var}")
                if [ "$run" = steady ]; then
                    DURATION=$RELOAD_DURATION run_wrk "$name-steady" "$port" "${!var}" "$lpath" "${headers[@]}"
                    [ "$proxy" != pointsman ] || echo "steady $(($(serving_wait "${!var}") - ${wait0:-0}))" >>"$TMP/$name.waits"
                    continue
                fi
                (
                    # `read -t` on a FIFO nobody writes is a sleep without a process.
                    [ -p "$TMP/tick-$proxy" ] || mkfifo "$TMP/tick-$proxy"
                    exec 8<>"$TMP/tick-$proxy"
                    ok=0 inside=0 start=${EPOCHREALTIME/./}
                    for ((i = 1; i <= RELOAD_COUNT; i++)); do
                        wait_us=$((start + i * gap_us - ${EPOCHREALTIME/./}))
                        if ((wait_us > 0)); then
                            printf -v wait_s '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000))
                            read -r -t "$wait_s" -u 8 _ || true
                        fi
                        t0=$EPOCHREALTIME
                        large_reload "$proxy" "$name" && ok=$((ok + 1))
                        t1=$EPOCHREALTIME
                        ((${t1/./} - start > window_us)) || inside=$((inside + 1))
                        echo "${t0/./} ${t1/./}" >>"$TMP/$name.reload-times"
                    done
                    echo "$ok $inside" >>"$TMP/$name.reloads"
                ) &
                reloader=$!
                DURATION=$RELOAD_DURATION run_wrk "$name" "$port" "${!var}" "$lpath" "${headers[@]}"
                [ "$proxy" != pointsman ] || echo "reloads $(($(serving_wait "${!var}") - ${wait0:-0}))" >>"$TMP/$name.waits"
                wait "$reloader" || true
            done
        done
        unset round
        stop "$name"
    done
    echo
    printf '%-10s %10s %10s %9s %9s %8s %9s\n' proxy 'req/s' 'steady' 'p99 ms' 'steady' 'p99 ×' errors
    for proxy in $PROXIES; do
        name=reload-$proxy
        read -r ok inside <<<"$(awk '{ok += $1; inside += $2} END {print ok + 0, inside + 0}' "$TMP/$name.reloads" 2>/dev/null)"
        printf '%-10s %10.0f %10.0f %9.3f %9.3f %8s %9s   (%s/%s reloads accepted, %s done inside the runs)\n' "$proxy" \
            "$(col "$name" 1)" "$(col "$name-steady" 1)" "$(col "$name" 3)" "$(col "$name-steady" 3)" \
            "$(ratio "$(col "$name" 3)" "$(col "$name-steady" 3)")" \
            "$(awk '{n += $5} END {print n + 0}' "$TMP/$name.results" 2>/dev/null || echo -)" \
            "$ok" $((RELOAD_COUNT * RELOAD_ROUNDS)) "$inside"
    done
    if ((RELOAD_ROUNDS > 1)); then
        for proxy in $PROXIES; do
            paired "reload-$proxy" "reload-$proxy-steady" "p99:3:low req/s:1:high"
        done
    fi
    # POST /reload answers once the new config serves: how long a reload
    # takes on the loaded machine (the others' signals return at once).
    if [ -s "$TMP/reload-pointsman.reload-times" ] && [ -z "${RELOAD_CONTROL:-}" ]; then
        sort -n -k1 "$TMP/reload-pointsman.reload-times" | awk '{print ($2 - $1) / 1000}' |
            awk 'NR == 1 {first = $1} {print $1, first}' | sort -n |
            awk '{a[NR] = $1; first = $2} END {printf "pointsman: POST /reload answered in %.0f ms (median), %.0f ms (max), the first in %.0f ms\n", a[int((NR + 1) / 2)], a[NR], first}'
        [ -z "${RELOAD_TIMES:-}" ] || sort -n -k1 "$TMP/reload-pointsman.reload-times" | awk '{printf "%.0f ", ($2 - $1) / 1000} END {print ""}'
    fi
    # How long the serving threads waited for a CPU while they had work:
    # what a reload thread that holds a CPU they want costs them.
    if [ -s "$TMP/reload-pointsman.waits" ]; then
        awk '{w[$1] += $2} END {
            printf "pointsman: serving threads waited %.0f ms for a CPU in the steady runs, %.0f ms in the runs with reloads (%.2f×)\n",
                w["steady"] / 1e6, w["reloads"] / 1e6, (w["steady"] > 0 ? w["reloads"] / w["steady"] : 0) }' "$TMP/reload-pointsman.waits"
    fi
fi

# --------------------------------------------------------------------------
# h2load_run NAME URL PID: one h2load run; appends "rps mean_ms 0 cpu10k
# failed user10k round" to $TMP/NAME.results (p50/p99: h2load gives
# min/max/mean only; $round: the caller's).
h2load_run() {
    local name=$1 url=$2 pid=$3 before after ubefore uafter out rps done_ failed mean cpu10k user10k secs
    secs=$(awk -v d="${DURATION%s}" 'BEGIN {print d + 0}')
    read -r before ubefore <<<"$(cpu_ticks "$pid")"
    out=$(h2load -c"$H2_CLIENTS" -m"$H2_STREAMS" -t"$WRK_THREADS" -D"$secs" --warm-up-time=1 "$url" 2>&1) || true
    read -r after uafter <<<"$(cpu_ticks "$pid")"
    echo "$out" >>"$TMP/$name.h2load"
    rps=$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")
    # requests: T total, S started, D done, OK succeeded, F failed, E errored
    done_=$(awk '/^requests:/ {print $6}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
    mean=$(awk '/^time for request:/ {print $6}' <<<"$out")
    if [ -z "$rps" ] || [ -z "$done_" ] || [ "$done_" = 0 ]; then
        log "warning: no result from h2load against $name"
        return
    fi
    cpu10k=$(per10k $((after - before)) "$done_")
    user10k=$(per10k $((uafter - ubefore)) "$done_")
    echo "$rps $(to_ms "$mean") 0 $cpu10k $failed $user10k ${round:-0}" >>"$TMP/$name.results"
    log "  $name: $rps req/s, mean $mean, $cpu10k CPU s/10k req, $failed failed"
}

if section h2; then
    command -v h2load >/dev/null || {
        log "installing nghttp2-client (h2load) with apt"
        SUDO=
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client >/dev/null
    }
    h2=$TMP/h2
    mkdir -p "$h2/conf" "$h2/nginx"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$h2/key.pem" -out "$h2/cert.pem" 2>/dev/null
    cat "$h2/cert.pem" "$h2/key.pem" >"$h2/haproxy.pem"
    cat >"$h2/conf/pointsman.yaml" <<EOF
listen:
  - bind: "127.0.0.1:$P_H2_POINTSMAN"
  - bind: "127.0.0.1:$P_H2S_POINTSMAN"
    tls:
      certificates: [{cert: $h2/cert.pem, key: $h2/key.pem}]
      alpn: [h2, http/1.1]
admin: {bind: "127.0.0.1:$P_H2_ADMIN"}
upstreams:
  backend: {endpoints: ["127.0.0.1:$P_BACKEND"]}
routes:
  - {name: all, match: {path_prefix: /}, to: backend}
EOF
    {
        echo "worker_processes $THREADS;"
        nginx_common "$h2/nginx"
        cat <<EOF
    upstream backend { server 127.0.0.1:$P_BACKEND; keepalive 1024; keepalive_requests 100000000; }
    ssl_protocols TLSv1.3;
    server {
        listen 127.0.0.1:$P_H2_NGINX http2;
        listen 127.0.0.1:$P_H2S_NGINX ssl http2;
        ssl_certificate $h2/cert.pem;
        ssl_certificate_key $h2/key.pem;
        http2_max_concurrent_streams 128;
        keepalive_requests 100000000;
        location / {
            proxy_pass http://backend;
EOF
        nginx_proxy_settings "            "
        printf '        }\n    }\n}\n'
    } >"$h2/nginx/nginx.conf"
    {
        haproxy_head "ssl-default-bind-options ssl-min-ver TLSv1.3"
        cat <<EOF
frontend fe
    bind 127.0.0.1:$P_H2_HAPROXY proto h2
    bind 127.0.0.1:$P_H2S_HAPROXY ssl crt $h2/haproxy.pem alpn h2,http/1.1
    default_backend be
backend be
    server backend 127.0.0.1:$P_BACKEND
EOF
    } >"$h2/haproxy.cfg"
    start h2-pointsman "$BIN" run --config "$h2/conf/pointsman.yaml" --access-log off --threads "$THREADS"
    start h2-nginx nginx -c "$h2/nginx/nginx.conf" -p "$h2/nginx" -e "$h2/nginx/error.log"
    start h2-haproxy haproxy -f "$h2/haproxy.cfg" -db
    wait_port "$P_H2S_POINTSMAN" h2-pointsman
    wait_port "$P_H2S_NGINX" h2-nginx
    wait_port "$P_H2S_HAPROXY" h2-haproxy
    echo
    echo "HTTP/2: h2load -c$H2_CLIENTS -m$H2_STREAMS -D${DURATION} (h2c prior knowledge; TLS 1.3 with ALPN h2), median of $ROUNDS rounds"
    for round in $(seq "$ROUNDS"); do
        for proxy in pointsman nginx haproxy; do
            var=PID_h2_$proxy
            case $proxy in
            pointsman) c=$P_H2_POINTSMAN s=$P_H2S_POINTSMAN ;;
            nginx) c=$P_H2_NGINX s=$P_H2S_NGINX ;;
            haproxy) c=$P_H2_HAPROXY s=$P_H2S_HAPROXY ;;
            esac
            h2load_run "h2c-$proxy" "http://127.0.0.1:$c/" "${!var}"
            h2load_run "h2tls-$proxy" "https://127.0.0.1:$s/" "${!var}"
        done
    done
    table "h2c (p50 column: mean; no p99 from h2load)" h2c-nginx h2c-pointsman h2c-nginx h2c-haproxy
    table "h2 over TLS 1.3 (p50 column: mean)" h2tls-nginx h2tls-pointsman h2tls-nginx h2tls-haproxy
    echo
    for kind in h2c h2tls; do
        for other in nginx haproxy; do paired "$kind-pointsman" "$kind-$other"; done
    done
    for proxy in pointsman nginx haproxy; do stop "h2-$proxy"; done
fi

# --------------------------------------------------------------------------
if section conns; then
    echo
    echo "idle keep-alive client connections ($CONNS_IDLE, benches/idle_conns.sh):"
    CONNS=$CONNS_IDLE NO_BUILD=1 BASE_PORT=$((BASE_PORT + 40)) ONLY="pointsman nginx" \
        BIN=$BIN "$ROOT/benches/idle_conns.sh"
fi
