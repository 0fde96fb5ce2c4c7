# Sourced by the bench scripts (not run on its own): the NGINX configs they
# share, so that every NGINX here proxies and answers the same way.

# nginx_common DIR [MASTER]: the head of an NGINX config whose files live
# in DIR, up to inside its `http` block: logs off, keep-alive on and never
# cut short by a request count. MASTER is `master_process` (default on;
# off runs one process, as under valgrind).
nginx_common() {
    cat <<EOF
daemon off;
master_process ${2:-on};
pid $1/nginx.pid;
error_log $1/error.log crit;
user root;
events { worker_connections 10240; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

# nginx_backend DIR PORT [WORKERS]: the whole config of the backend
# (WORKERS processes, default 1) that answers every request on
# 127.0.0.1:PORT with the same 200 (e2e.sh, callgrind.sh, pgo.sh).
nginx_backend() {
    echo "worker_processes ${3:-1};"
    nginx_common "$1"
    cat <<EOF
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { default_type text/plain; return 200 "hello from the backend\n"; }
    }
}
EOF
}

# nginx_proxy_settings INDENT: how every NGINX config here proxies (HTTP/1.1
# keep-alive upstream, Host kept, X-Forwarded-For and -Proto added).
nginx_proxy_settings() {
    sed "s/^/$1/" <<'EOF'
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $http_host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_connect_timeout 2s;
proxy_read_timeout 30s;
EOF
}

# nginx_same_headers INDENT: what NGINX needs on top of
# nginx_proxy_settings to send and answer the headers Pointsman's contract
# adds to every request (SPEC 5): X-Forwarded-Host, Via, and a request id
# (the client's, else a new one: NGINX's idiom is $request_id) sent
# upstream and echoed on the response. Needs nginx_request_id_map at the
# http level.
nginx_same_headers() {
    sed "s/^/$1/" <<'EOF'
proxy_set_header X-Forwarded-Host $http_host;
proxy_set_header Via "1.1 nginx";
proxy_set_header X-Request-Id $bench_request_id;
add_header X-Request-Id $bench_request_id always;
EOF
}

# nginx_request_id_map: the client's X-Request-Id when it sent one, else
# NGINX's own $request_id (http level, for nginx_same_headers).
nginx_request_id_map() {
    printf '    map $http_x_request_id $bench_request_id { "" $request_id; default $http_x_request_id; }\n'
}

# nginx_plain_proxy DIR LISTEN BACKEND_PORT [MASTER] [SAME]: the whole config
# of the plain proxy (one catch-all location, a keep-alive upstream pool)
# that e2e.sh's `nginx` target runs and `NGINX=1 callgrind.sh` counts;
# LISTEN is what follows `listen`. With SAME non-empty it also adds the
# headers Pointsman adds (nginx_same_headers: e2e.sh's `nginx-same`).
# Callers put `worker_processes` before it.
nginx_plain_proxy() {
    nginx_common "$1" "${4:-on}"
    [ -z "${5:-}" ] || nginx_request_id_map
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$3;
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 30s;
    }
    server {
        listen $2;
        location / {
            proxy_pass http://backend;
EOF
    nginx_proxy_settings "            "
    [ -z "${5:-}" ] || nginx_same_headers "            "
    printf '        }\n    }\n}\n'
}
