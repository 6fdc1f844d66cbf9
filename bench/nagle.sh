#!/usr/bin/env bash
# Peers that leave Nagle on, side by side through Portcullis, nginx and HAProxy: a backend that
# writes the response head and body in two writes (as Python's http.server and many small
# frameworks do), and a client that writes a request head and its body in two writes. On reused
# connections each such message waits for the other side's delayed ACK (~40 ms) unless the proxy
# acknowledges at once. Prints one markdown table of p50/p99 latency of sequential keep-alive
# requests.
#
#   bench/nagle.sh                      # 200 requests per cell
#   REQUESTS=50 bench/nagle.sh
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS="${REQUESTS:-200}"
BASE="${BENCH_PORT_BASE:-18900}"
P_SLOW=$BASE P_FAST=$((BASE + 1)) P_NGINX=$((BASE + 2)) P_HAPROXY=$((BASE + 3))
P_PORT=$((BASE + 4)) P_ADMIN=$((BASE + 5))
[[ "$REQUESTS" =~ ^[0-9]+$ ]] && [ "$REQUESTS" -ge 10 ] && [ "$REQUESTS" -le 10000 ] ||
  die "REQUESTS must be 10..10000"

install_traps
ensure_tools
require_ports_free $P_SLOW $P_FAST $P_NGINX $P_HAPROXY $P_PORT $P_ADMIN
build_portcullis
WORK="$(mktemp -d /tmp/portcullis-nagle.XXXXXX)"
NAGLE="$BENCH_DIR/nagle.py"

start_bg nagle-backend python3 "$NAGLE" backend --port "$P_SLOW"
nginx_backend_conf "$WORK" "$P_FAST" >"$WORK/backend.conf"
start_nginx backend "" "$WORK/backend.conf"

mkdir -p "$WORK/tmp-nginx"
cat >"$WORK/nginx.conf" <<CONF
$(nginx_user)
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  $(nginx_temp_paths "$WORK/tmp-nginx")
  upstream slow { server 127.0.0.1:$P_SLOW; keepalive 16; }
  upstream fast { server 127.0.0.1:$P_FAST; keepalive 16; }
  server {
    listen 127.0.0.1:$P_NGINX;
    server_name slow.bench.local;
    location / { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    server_name fast.bench.local;
    location / { proxy_pass http://fast; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
start_nginx nginx "" "$WORK/nginx.conf"

cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  use_backend be_slow if { req.hdr(host) -i slow.bench.local }
  default_backend be_fast
backend be_slow
  server slow 127.0.0.1:$P_SLOW
backend be_fast
  server fast 127.0.0.1:$P_FAST
CONF
start_bg haproxy haproxy -db -f "$WORK/haproxy.cfg"

mkdir -p "$WORK/manifests"
{
  for host in slow fast; do
    cat <<YAML
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: $host
  namespace: bench
spec:
  ingressClassName: portcullis
  rules:
    - host: $host.bench.local
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: $host
                port:
                  number: 80
YAML
  done
  manifest_service slow "$P_SLOW"
  manifest_service fast "$P_FAST"
} >"$WORK/manifests/all.yaml"
start_bg portcullis "$PORTCULLIS" run --manifests "$WORK/manifests" --http-addr "127.0.0.1:$P_PORT" \
  --https-addr 127.0.0.1:0 --admin-addr "127.0.0.1:$P_ADMIN" --workers 1 --no-access-log --shutdown-grace 1

wait_http "http://127.0.0.1:$P_FAST/" 30 || die "backend did not start"
wait_status "http://127.0.0.1:$P_ADMIN/readyz" 200 60 || die "portcullis not ready"
for port in $P_NGINX $P_HAPROXY $P_PORT; do
  wait_http "http://127.0.0.1:$port/" 30 fast.bench.local || die "proxy on $port did not start"
done

# cell PORT HOST [--post]: "p50 / p99" in ms.
cell() {
  local out
  out="$(python3 "$NAGLE" client --port "$1" --host "$2" --requests "$REQUESTS" "${@:3}")" ||
    die "client failed on port $1"
  awk -v o="$out" 'BEGIN { n = split(o, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
    printf "%s / %s", v["p50_ms"], v["p99_ms"] }'
}

echo "# Peers with Nagle on — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- command: \`$0\` (REQUESTS=$REQUESTS sequential keep-alive requests per cell, one connection)"
echo "- portcullis: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); $(nginx -v 2>&1); $(haproxy -v 2>&1 | head -1)"
echo "- each proxy: 1 worker, upstream keep-alive (nginx \`keepalive 16\`, HAProxy \`http-reuse always\`)"
echo
echo "| p50 / p99 latency (ms) | direct | Portcullis | nginx | HAProxy |"
echo "|---|---:|---:|---:|---:|"
echo "| backend writes head, then body | $(cell $P_SLOW slow.bench.local) | $(cell $P_PORT slow.bench.local) | $(cell $P_NGINX slow.bench.local) | $(cell $P_HAPROXY slow.bench.local) |"
echo "| client writes head, then body | $(cell $P_FAST fast.bench.local --post) | $(cell $P_PORT fast.bench.local --post) | $(cell $P_NGINX fast.bench.local --post) | $(cell $P_HAPROXY fast.bench.local --post) |"
echo "| both | $(cell $P_SLOW slow.bench.local --post) | $(cell $P_PORT slow.bench.local --post) | $(cell $P_NGINX slow.bench.local --post) | $(cell $P_HAPROXY slow.bench.local --post) |"
