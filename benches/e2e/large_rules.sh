# Sourced by benches/e2e.sh (not run on its own).
#
# The large-rule-set comparison: N routes, each a host, a path prefix and a
# header test, expressed the way each proxy's users write them, with the
# benchmark request matching the last route. Every route goes to one of ten
# upstreams/backends, all pointing at the backend on $P_BACKEND.
#
# - Pointsman: one route per rule (indexed by host and path).
# - HAProxy: one `use_backend ... if { host } { path_beg } { header }` line
#   per rule, evaluated in order (its ACL form; maps cannot combine three
#   tests).
# - NGINX: one `server` block per host (server_name is hashed), a
#   `location` per path prefix, and the header test as `if (...) { return
#   404; }` inside it.

# large_request N: the curl/wrk header arguments and path that match the
# last of N routes, as "PATH HOST TENANT".
large_request() {
    local i=$(($1 - 1))
    echo "/api/$i/items h$i.example.com t$i"
}

gen_large_pointsman() { # N LISTEN ADMIN
    local n=$1 i
    cat <<EOF
listen: [{bind: "127.0.0.1:$2"}]
admin: {bind: "127.0.0.1:$3"}
upstreams:
EOF
    for i in $(seq 0 9); do echo "  b$i: {endpoints: [\"127.0.0.1:$P_BACKEND\"]}"; done
    echo "routes:"
    for ((i = 0; i < n; i++)); do
        echo "  - {name: r$i, match: {host: h$i.example.com, path_prefix: /api/$i, header: {name: x-tenant, equals: t$i}}, to: b$((i % 10))}"
    done
}

gen_large_haproxy() { # N LISTEN
    local n=$1 i
    haproxy_head
    cat <<EOF
frontend fe
    bind 127.0.0.1:$2
EOF
    for ((i = 0; i < n; i++)); do
        echo "    use_backend b$((i % 10)) if { hdr(host) -i h$i.example.com } { path_beg /api/$i } { req.hdr(x-tenant) -m str t$i }"
    done
    # use_backend lines run after every http-request rule: the miss is
    # a backend of its own.
    printf '    default_backend miss\nbackend miss\n    http-request deny deny_status 404\n'
    for i in $(seq 0 9); do
        printf 'backend b%s\n    server s 127.0.0.1:%s\n' "$i" "$P_BACKEND"
    done
}

gen_large_nginx() { # N LISTEN DIR
    local n=$1 i
    echo "worker_processes $THREADS;"
    nginx_common "$3"
    cat <<EOF
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 128;
EOF
    nginx_proxy_settings "    "
    for i in $(seq 0 9); do
        printf '    upstream b%s { server 127.0.0.1:%s; keepalive 256; keepalive_requests 100000000; }\n' "$i" "$P_BACKEND"
    done
    for ((i = 0; i < n; i++)); do
        printf '    server { listen 127.0.0.1:%s; server_name h%s.example.com; location /api/%s { if ($http_x_tenant != "t%s") { return 404; } proxy_pass http://b%s; } }\n' \
            "$2" "$i" "$i" "$i" "$((i % 10))"
    done
    echo "}"
}
