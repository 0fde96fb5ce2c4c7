# Sourced by the bench scripts (not run on its own): the HAProxy configs
# they share, so that every HAProxy here proxies the same way.
#
# Read from the caller: THREADS (nbthread), and optionally HAPROXY_MAXCONN
# (default 4096) and HAPROXY_IDLE (how long an idle client connection is
# kept, default 60s).

# haproxy_head [GLOBAL-LINE...]: the global and defaults sections every
# HAProxy config here shares (keep-alive both ways, X-Forwarded-For),
# with GLOBAL-LINEs added to `global`.
haproxy_head() {
    printf 'global\n    nbthread %s\n    maxconn %s\n' "$THREADS" "${HAPROXY_MAXCONN:-4096}"
    local line
    for line in "$@"; do printf '    %s\n' "$line"; done
    cat <<EOT
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 2s
    timeout client ${HAPROXY_IDLE:-60s}
    timeout server 30s
    timeout http-keep-alive ${HAPROXY_IDLE:-60s}
EOT
}

# haproxy_plain PORT BACKEND_PORT: the whole config of the plain proxy:
# 127.0.0.1:PORT, every request to the backend on 127.0.0.1:BACKEND_PORT.
haproxy_plain() {
    haproxy_head
    cat <<EOT
frontend fe
    bind 127.0.0.1:$1
    default_backend be
backend be
    server backend 127.0.0.1:$2
EOT
}
