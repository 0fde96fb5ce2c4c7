# Sourced by the bench scripts (not run on its own): the HAProxy config
# head they share, so that every HAProxy here proxies the same way.

# haproxy_head [GLOBAL-LINE...]: the global and defaults sections every
# HAProxy config here shares (THREADS threads, keep-alive both ways,
# X-Forwarded-For), followed by GLOBAL-LINEs in `global`.
haproxy_head() {
    printf 'global\n    nbthread %s\n    maxconn 4096\n' "$THREADS"
    local line
    for line in "$@"; do printf '    %s\n' "$line"; done
    cat <<EOT
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
EOT
}
