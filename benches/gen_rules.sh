# Sourced by benches/e2e.sh, benches/idle_memory.sh, benches/callgrind.sh
# and benches/pool_churn.sh (not run on its own).
#
# plain_rules LISTEN_PORT ADMIN_PORT prints the plain rule file: one
# catch-all route to 127.0.0.1:$P_BACKEND.
plain_rules() {
    cat <<EOF
listen: [{bind: "127.0.0.1:$1"}]
admin: {bind: "127.0.0.1:$2"}
upstreams:
  backend: {endpoints: ["127.0.0.1:$P_BACKEND"]}
routes:
  - {name: all, match: {path_prefix: /}, to: backend}
EOF
}

#
# gen_rules N LISTEN_PORT ADMIN_PORT prints a rule file with N routes; every
# upstream points at 127.0.0.1:$P_BACKEND (set by the caller).
#
# A realistic rule set: N routes mixing hosts, path templates, headers and
# cookies, one experiment; the benchmark request matches the route just
# before the catch-all, i.e. late in the file.
gen_rules() {
    local n=$1 listen=$2 admin=$3 i
    cat <<EOF
listen: [{bind: "127.0.0.1:$listen"}]
admin: {bind: "127.0.0.1:$admin"}
upstreams:
  shop: {endpoints: ["127.0.0.1:$P_BACKEND"]}
  shop-v2: {endpoints: ["127.0.0.1:$P_BACKEND"]}
EOF
    for i in $(seq 0 9); do
        echo "  svc$i: {endpoints: [\"127.0.0.1:$P_BACKEND\"]}"
    done
    cat <<EOF
experiments:
  checkout-redesign:
    sticky_on: [header:x-user-id, cookie:pm_uid]
    issue_cookie: pm_uid
    variants:
      - {name: control, weight: 1}
      - {name: redesign, weight: 1, to: shop-v2}
routes:
EOF
    for ((i = 0; i < n - 2; i++)); do
        local up=svc$((i % 10))
        case $((i % 6)) in
        0) echo "  - {name: r$i, match: {host: svc$i.example.com, path_prefix: /api}, to: $up}" ;;
        1) echo "  - {name: r$i, match: {path: \"/t$i/users/{id}/orders/{order}\", method: GET}, to: $up}" ;;
        2) echo "  - {name: r$i, match: {path_prefix: /tenant, header: {name: x-tenant, equals: tenant-$i}}, to: $up}" ;;
        3) echo "  - {name: r$i, match: {host: \"*.apps$i.example.com\", cookie: {name: beta$i, equals: \"1\"}}, to: $up}" ;;
        4) echo "  - {name: r$i, match: {host: [a$i.example.com, b$i.example.com], path: \"/static$i/{*rest}\"}, to: $up}" ;;
        5) echo "  - {name: r$i, match: {host: shop.example.com, path: \"/api/v1/items$i/{id}\", header: {name: x-user-id, prefix: vip-}}, to: $up}" ;;
        esac
    done
    cat <<EOF
  - name: items
    match:
      host: shop.example.com
      path: "/api/v2/items/{id}"
      header: {name: x-user-id, present: true}
      cookie: {name: session, present: true}
    to: shop
    experiment: checkout-redesign
  - {name: web, match: {path_prefix: /}, to: shop}
EOF
}
