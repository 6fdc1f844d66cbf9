#!/usr/bin/env bash
# Side-by-side benchmark of Portcullis, nginx and HAProxy on this machine, in one run.
#
#   bench/run.sh                      # 3 interleaved rounds of 10 s per measurement
#   QUICK=1 bench/run.sh              # 2 s per measurement
#   ROUNDS=5 DURATION=20 bench/run.sh
#
# Other knobs: WORKERS="1 2" (worker counts to run), WORKLOADS="tiny 1k ..." (a subset, see
# ALL_WORKLOADS), CONNECTIONS=50, RATE=N (fixed rate for the latency runs; default RATE_PCT=50 %
# of nginx's measured keep-alive maximum), IDLE_CONNECTIONS=2000 (connections held open by the idle
# workload), BENCH_PORT_BASE=18100, KEEP_WORK=1 (keep configs and logs).
# See bench/README.md for what each number means.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMAND="$0${*:+ $*}"
ENV_USED=""
for v in QUICK ROUNDS DURATION WORKERS WORKLOADS CONNECTIONS RATE RATE_PCT IDLE_CONNECTIONS BENCH_PORT_BASE; do
  if [ -n "${!v:-}" ]; then ENV_USED+="$v=${!v} "; fi
done

QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then DEFAULT_DURATION=2; else DEFAULT_DURATION=10; fi
DURATION="${DURATION:-$DEFAULT_DURATION}"
ROUNDS="${ROUNDS:-3}"
WORKERS_LIST="${WORKERS:-1 2}"
CONNECTIONS="${CONNECTIONS:-50}"
RATE_PCT="${RATE_PCT:-50}"
IDLE_CONNECTIONS="${IDLE_CONNECTIONS:-2000}"
# Seconds each kind of the idle workload's connections stays open once all are answered: under
# every proxy's client idle timeout (75 s for all three), and longer than the other kinds take to
# open beside it.
IDLE_HOLD=60
ALL_WORKLOADS="tiny 1k 100k close h2 h2-1 h2-100 tls-keepalive h2-tls tls-full tls-resumed routes-1 routes-10k idle nagle"
WORKLOADS="${WORKLOADS:-$ALL_WORKLOADS}"
PROXIES="nginx haproxy portcullis"
NROUTES=10000
# Portcullis chooses TLS 1.3 suites in this order; nginx and HAProxy are given the same choice so the
# TLS rows compare handshake work, not suite preference.
TLS13_SUITES="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
BASE="${BENCH_PORT_BASE:-18100}"

[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] ||
  die "DURATION must be 1..600 seconds"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] ||
  die "ROUNDS must be 1..20"
for w in $WORKLOADS; do
  [[ " $ALL_WORKLOADS " == *" $w "* ]] || die "unknown workload $w (have: $ALL_WORKLOADS)"
done
for w in $WORKERS_LIST; do
  [[ "$w" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must list positive numbers"
done
[[ "$RATE_PCT" =~ ^[0-9]+$ ]] && [ "$RATE_PCT" -ge 1 ] && [ "$RATE_PCT" -le 100 ] ||
  die "RATE_PCT must be 1..100"
[[ "$IDLE_CONNECTIONS" =~ ^[0-9]+$ ]] && [ "$IDLE_CONNECTIONS" -ge 1 ] && [ "$IDLE_CONNECTIONS" -le 2500 ] ||
  die "IDLE_CONNECTIONS must be 1..2500 (three kinds are held at once; HAProxy's maxconn is 8000)"

# Ports: backend, then per proxy: HTTP, h2c, TLS, and a second instance with 10 000 routes.
P_BACKEND=$BASE
P_NGINX=$((BASE + 10)) P_NGINX_H2=$((BASE + 11)) P_NGINX_TLS=$((BASE + 12)) P_NGINX_10K=$((BASE + 13))
P_HAPROXY=$((BASE + 20)) P_HAPROXY_H2=$((BASE + 21)) P_HAPROXY_TLS=$((BASE + 22)) P_HAPROXY_10K=$((BASE + 23))
P_PORT=$((BASE + 30)) P_PORT_TLS=$((BASE + 31)) P_PORT_ADMIN=$((BASE + 32))
P_PORT_10K=$((BASE + 33)) P_PORT_10K_TLS=$((BASE + 34)) P_PORT_10K_ADMIN=$((BASE + 35))

install_traps
ensure_tools
raise_fd_limit
require_ports_free $P_BACKEND $P_NGINX $P_NGINX_H2 $P_NGINX_TLS $P_NGINX_10K $P_HAPROXY \
  $P_HAPROXY_H2 $P_HAPROXY_TLS $P_HAPROXY_10K $P_PORT $P_PORT_TLS $P_PORT_ADMIN $P_PORT_10K \
  $P_PORT_10K_TLS $P_PORT_10K_ADMIN
build_portcullis
build_loadgen

WORK="$(mktemp -d /tmp/portcullis-bench.XXXXXX)"
RESULTS="$WORK/results.tsv"
DEATHS="$WORK/deaths.txt"
LOG_SAMPLES="$WORK/log-samples.txt"
: >"$RESULTS"
: >"$DEATHS"
: >"$LOG_SAMPLES"
START_INFO="$(machine_info)"
START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "work dir $WORK; $ROUNDS round(s) of ${DURATION}s; workers: $WORKERS_LIST"

# ------------------------------------------------------------------------------------------------
# Configurations

make_cert "$WORK"
nginx_backend_conf "$WORK" "$P_BACKEND" >"$WORK/backend.conf"

PROXY_HEADERS_NGINX='
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Request-ID $request_id;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Forwarded-Port $server_port;
  proxy_set_header X-Forwarded-Proto $scheme;'

nginx_proxy_conf() {
  local workers="$1" name="$2" servers="$3"
  mkdir -p "$WORK/tmp-$name"
  cat <<EOF
$(nginx_user)
worker_processes $workers;
worker_rlimit_nofile 65536;
pid $WORK/$name.pid;
error_log $WORK/$name.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  server_tokens off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  server_names_hash_max_size 65536;
  server_names_hash_bucket_size 128;
  $(nginx_temp_paths "$WORK/tmp-$name")
  $PROXY_HEADERS_NGINX
  upstream app {
    server 127.0.0.1:$P_BACKEND;
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
$servers
}
EOF
}

nginx_small_servers() {
  cat <<EOF
  server {
    listen 127.0.0.1:$P_NGINX reuseport default_server;
    server_name bench.local;
    location / { proxy_pass http://app; }
  }
  server {
    listen 127.0.0.1:$P_NGINX;
    server_name r$((NROUTES - 1)).bench.local;
    location /p$((NROUTES - 1)) { proxy_pass http://app; }
  }
  server {
    listen 127.0.0.1:$P_NGINX_H2 http2 reuseport default_server;
    server_name bench.local;
    location / { proxy_pass http://app; }
  }
  server {
    listen 127.0.0.1:$P_NGINX_TLS ssl http2 reuseport default_server;
    server_name tls.bench.local;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:20m;
    ssl_session_timeout 10m;
    ssl_session_tickets on;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites $TLS13_SUITES;
    location / { proxy_pass http://app; }
  }
EOF
}

nginx_10k_servers() {
  cat <<EOF
  server {
    listen 127.0.0.1:$P_NGINX_10K reuseport default_server;
    location / { return 404; }
  }
EOF
  awk -v n="$NROUTES" -v port="$P_NGINX_10K" 'BEGIN {
    for (i = 0; i < n; i++)
      printf "  server { listen 127.0.0.1:%d; server_name r%d.bench.local; location /p%d { proxy_pass http://app; } }\n", port, i, i
  }'
}

haproxy_conf() {
  local workers="$1" frontends="$2"
  cat <<EOF
global
  nbthread $workers
  maxconn 8000
  tune.ssl.cachesize 20000
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-ciphersuites $TLS13_SUITES

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 75s
  timeout server 60s
  timeout http-request 75s
  timeout http-keep-alive 75s
  maxconn 8000
  unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid

$frontends

backend be_app
  server app 127.0.0.1:$P_BACKEND

backend be_miss
  http-request return status 404
EOF
}

HAPROXY_HEADERS='
  unique-id-header X-Request-ID
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }'

haproxy_small_frontend() {
  cat <<EOF
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$P_HAPROXY_H2 proto h2
  bind 127.0.0.1:$P_HAPROXY_TLS ssl crt $WORK/bench.pem alpn h2,http/1.1
$HAPROXY_HEADERS
  default_backend be_app
EOF
}

haproxy_10k_frontend() {
  awk -v n="$NROUTES" 'BEGIN { for (i = 0; i < n; i++) printf "r%d.bench.local/p%d be_app\n", i, i }' \
    >"$WORK/routes.map"
  cat <<EOF
frontend fe_10k
  bind 127.0.0.1:$P_HAPROXY_10K
$HAPROXY_HEADERS
  use_backend %[base,map_beg($WORK/routes.map,be_miss)]
EOF
}

portcullis_10k_manifests() {
  local dir="$WORK/manifests-10k"
  mkdir -p "$dir"
  {
    cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: routes
  namespace: bench
spec:
  ingressClassName: portcullis
  rules:
EOF
    awk -v n="$NROUTES" 'BEGIN {
      for (i = 0; i < n; i++) {
        printf "    - host: r%d.bench.local\n      http:\n        paths:\n", i
        printf "          - path: /p%d\n            pathType: Prefix\n", i
        printf "            backend:\n              service:\n                name: backend\n                port:\n                  number: 80\n"
      }
    }'
    manifest_service backend "$P_BACKEND"
  } >"$dir/routes.yaml"
}

small_manifests "$WORK/manifests-small" "$P_BACKEND" "r$((NROUTES - 1)).bench.local" "/p$((NROUTES - 1))"
portcullis_10k_manifests
if ! "$PORTCULLIS" check "$WORK/manifests-small" >"$WORK/check-small.txt" 2>&1; then
  cat "$WORK/check-small.txt" >&2
  die "portcullis check rejected the benchmark manifests"
fi

# ------------------------------------------------------------------------------------------------
# Processes

declare -A PID     # proxy instance -> main pid
declare -A DEAD    # proxy instance -> 1 once it died

start_all() {
  local w="$1" proxy_cpus="$2" client_cpus="$3"
  nginx_proxy_conf "$w" nginx "$(nginx_small_servers)" >"$WORK/nginx.conf"
  nginx_proxy_conf "$w" nginx-10k "$(nginx_10k_servers)" >"$WORK/nginx-10k.conf"
  haproxy_conf "$w" "$(haproxy_small_frontend)" >"$WORK/haproxy.cfg"
  haproxy_conf "$w" "$(haproxy_10k_frontend)" >"$WORK/haproxy-10k.cfg"
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected its configuration"
  nginx -t -q -e "$WORK/nginx-test.err" -p "$WORK" -c "$WORK/nginx.conf" ||
    die "nginx rejected its configuration ($WORK/nginx-test.err)"

  start_nginx backend "$client_cpus" "$WORK/backend.conf"
  PID[backend]=$LAST_PID
  start_nginx nginx "$proxy_cpus" "$WORK/nginx.conf"
  PID[nginx]=$LAST_PID
  start_nginx nginx-10k "$proxy_cpus" "$WORK/nginx-10k.conf"
  PID[nginx-10k]=$LAST_PID
  start_bg haproxy pin "$proxy_cpus" haproxy -db -f "$WORK/haproxy.cfg"
  PID[haproxy]=$LAST_PID
  start_bg haproxy-10k pin "$proxy_cpus" haproxy -db -f "$WORK/haproxy-10k.cfg"
  PID[haproxy-10k]=$LAST_PID
  start_bg portcullis pin "$proxy_cpus" "$PORTCULLIS" run --manifests "$WORK/manifests-small" \
    --http-addr "127.0.0.1:$P_PORT" --https-addr "127.0.0.1:$P_PORT_TLS" \
    --admin-addr "127.0.0.1:$P_PORT_ADMIN" --workers "$w" --no-access-log --shutdown-grace 1
  PID[portcullis]=$LAST_PID
  start_bg portcullis-10k pin "$proxy_cpus" "$PORTCULLIS" run --manifests "$WORK/manifests-10k" \
    --http-addr "127.0.0.1:$P_PORT_10K" --https-addr "127.0.0.1:$P_PORT_10K_TLS" \
    --admin-addr "127.0.0.1:$P_PORT_10K_ADMIN" --workers "$w" --no-access-log --shutdown-grace 1
  PID[portcullis-10k]=$LAST_PID
  DEAD=()

  wait_http "http://127.0.0.1:$P_BACKEND/" 30 || die "backend did not start (see $WORK/backend.err)"
  wait_status "http://127.0.0.1:$P_PORT_ADMIN/readyz" 200 60 || die "portcullis not ready ($WORK/portcullis.log)"
  wait_status "http://127.0.0.1:$P_PORT_10K_ADMIN/readyz" 200 120 ||
    die "portcullis (10k routes) not ready ($WORK/portcullis-10k.log)"
  local inst name port host code
  for inst in nginx:$P_NGINX:bench.local haproxy:$P_HAPROXY:bench.local portcullis:$P_PORT:bench.local \
    nginx-10k:$P_NGINX_10K:r$((NROUTES - 1)).bench.local haproxy-10k:$P_HAPROXY_10K:r$((NROUTES - 1)).bench.local \
    portcullis-10k:$P_PORT_10K:r$((NROUTES - 1)).bench.local; do
    IFS=: read -r name port host <<<"$inst"
    local path=/
    [[ "$name" == *-10k ]] && path="/p$((NROUTES - 1))"
    wait_http "http://127.0.0.1:$port$path" 60 "$host" || die "$name did not start (see $WORK/$name.log)"
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$port$path")"
    [ "$code" = 200 ] || die "$name answers $code for $host$path, expected 200"
  done
  code="$(curl -sk -o /dev/null -m 2 -w '%{http_code}' --resolve "tls.bench.local:$P_PORT_TLS:127.0.0.1" \
    "https://tls.bench.local:$P_PORT_TLS/")"
  [ "$code" = 200 ] || die "portcullis HTTPS answers $code, expected 200"
}

stop_all() {
  local name
  for name in portcullis-10k portcullis haproxy-10k haproxy nginx-10k nginx backend; do
    if [ -n "${PID[$name]:-}" ]; then stop_bg "${PID[$name]}"; fi
    PID[$name]=""
  done
}

instance_pids() { pids_of "${PID[$1]}"; }

# alive INSTANCE: false (and the death recorded once) when the proxy is gone.
alive() {
  local inst="$1"
  [ -n "${DEAD[$inst]:-}" ] && return 1
  if ! kill -0 "${PID[$inst]}" 2>/dev/null; then
    DEAD[$inst]=1
    log "!! $inst (pid ${PID[$inst]}) is gone"
    {
      echo "### $inst died (workers=$CUR_W, during or before $CUR_WORKLOAD)"
      echo '```'
      tail -n 20 "$WORK/$inst.log" "$WORK/$inst.err" 2>/dev/null || true
      echo '```'
    } >>"$DEATHS"
    return 1
  fi
  return 0
}

# ------------------------------------------------------------------------------------------------
# Measurements. Each appends one TSV line:
#   workers round workload target rate_per_s count errors cpu_s wall_s extra

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

# The port and Host header a target serves a workload on.
endpoint() {
  local workload="$1" target="$2"
  case "$workload:$target" in
    routes-1:nginx) echo "$P_NGINX r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    routes-1:haproxy) echo "$P_HAPROXY r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    routes-1:portcullis) echo "$P_PORT r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    routes-10k:nginx) echo "$P_NGINX_10K r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    routes-10k:haproxy) echo "$P_HAPROXY_10K r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    routes-10k:portcullis) echo "$P_PORT_10K r$((NROUTES - 1)).bench.local /p$((NROUTES - 1))" ;;
    h2:nginx | h2-1:nginx | h2-100:nginx) echo "$P_NGINX_H2 bench.local /" ;;
    h2:haproxy | h2-1:haproxy | h2-100:haproxy) echo "$P_HAPROXY_H2 bench.local /" ;;
    h2:portcullis | h2-1:portcullis | h2-100:portcullis) echo "$P_PORT bench.local /" ;;
    tls-*:nginx | h2-tls:nginx) echo "$P_NGINX_TLS tls.bench.local /" ;;
    tls-*:haproxy | h2-tls:haproxy) echo "$P_HAPROXY_TLS tls.bench.local /" ;;
    tls-*:portcullis | h2-tls:portcullis) echo "$P_PORT_TLS tls.bench.local /" ;;
    *:direct) echo "$P_BACKEND bench.local $(workload_path "$workload")" ;;
    *:nginx) echo "$P_NGINX bench.local $(workload_path "$workload")" ;;
    *:haproxy) echo "$P_HAPROXY bench.local $(workload_path "$workload")" ;;
    *:portcullis) echo "$P_PORT bench.local $(workload_path "$workload")" ;;
  esac
}

workload_path() {
  case "$1" in
    1k) echo /files/1k ;;
    100k) echo /files/100k ;;
    *) echo / ;;
  esac
}

targets_for() {
  case "$1" in
    tiny | 1k | 100k | close) echo "direct $PROXIES" ;;
    *) echo "$PROXIES" ;;
  esac
}

instance_for() {
  if [ "$1" = routes-10k ] && [ "$2" != direct ]; then echo "$2-10k"; else echo "$2"; fi
}

run_one() {
  local w="$1" round="$2" workload="$3" target="$4"
  local inst port host path
  inst="$(instance_for "$workload" "$target")"
  read -r port host path <<<"$(endpoint "$workload" "$target")"
  if [ "$target" != direct ] && ! alive "$inst"; then
    record "$w" "$round" "$workload" "$target" 0 0 -1 0 0 "died=1"
    return
  fi
  local pids=() before after t0 t1 out cpu_before cpu_after
  if [ "$target" != direct ]; then mapfile -t pids < <(instance_pids "$inst"); fi
  cpu_before="$(cpu_stat "$PROXY_CPU_STAT")"
  before="$(cpu_ticks "${pids[@]}")"
  t0="$(now_ns)"
  local tmo=$((DURATION + 40))
  case "$workload" in
    tiny | 1k | 100k | routes-1 | routes-10k | close)
      local extra_hdr=()
      [ "$workload" = close ] && extra_hdr=(-H "Connection: close")
      out="$(timeout "$tmo" "${CLIENT_PREFIX[@]}" wrk -t "$CLIENT_THREADS" -c "$CONNECTIONS" -d "${DURATION}s" \
        -H "Host: $host" "${extra_hdr[@]}" "http://127.0.0.1:$port$path" 2>&1 || true)"
      t1="$(now_ns)"
      after="$(cpu_ticks "${pids[@]}")"
      parse_wrk "$out" "$w" "$round" "$workload" "$target" "$before" "$after" "$t0" "$t1"
      ;;
    h2 | h2-1 | h2-100)
      # 16 connections × 16 streams; 64 × 1 (HTTP/2 as one request at a time per connection);
      # 4 × 100 (few connections, deep multiplexing, within every proxy's stream limit).
      local shape=(-c 16 -m 16)
      [ "$workload" = h2-1 ] && shape=(-c 64 -m 1)
      [ "$workload" = h2-100 ] && shape=(-c 4 -m 100)
      out="$(timeout "$tmo" "${CLIENT_PREFIX[@]}" h2load -t "$CLIENT_THREADS" "${shape[@]}" -D "$DURATION" \
        -H ":authority: $host" "http://127.0.0.1:$port$path" 2>&1 || true)"
      t1="$(now_ns)"
      after="$(cpu_ticks "${pids[@]}")"
      parse_h2load "$out" "$w" "$round" "$workload" "$target" "$before" "$after" "$t0" "$t1"
      ;;
    tls-keepalive | h2-tls)
      # h2load over TLS, the SNI taken from the URL and the connection made to loopback: HTTP/1.1
      # keep-alive (one request at a time per connection) or HTTP/2 (16 × 16 streams, by ALPN).
      local shape=(--h1 -c "$CONNECTIONS" -m 1)
      [ "$workload" = h2-tls ] && shape=(-c 16 -m 16)
      out="$(timeout "$tmo" "${CLIENT_PREFIX[@]}" h2load -t "$CLIENT_THREADS" "${shape[@]}" -D "$DURATION" \
        --connect-to "127.0.0.1:$port" "https://$host:$port$path" 2>&1 || true)"
      t1="$(now_ns)"
      after="$(cpu_ticks "${pids[@]}")"
      parse_h2load "$out" "$w" "$round" "$workload" "$target" "$before" "$after" "$t0" "$t1"
      ;;
    tls-full | tls-resumed)
      local resume=()
      [ "$workload" = tls-resumed ] && resume=(--resume)
      out="$(timeout "$tmo" "${CLIENT_PREFIX[@]}" "$LOADGEN" tls --addr "127.0.0.1:$port" --sni "$host" \
        --host "$host" --path "$path" --duration "$DURATION" --concurrency "$CONNECTIONS" \
        --threads "$CLIENT_THREADS" "${resume[@]}" 2>&1 || true)"
      t1="$(now_ns)"
      after="$(cpu_ticks "${pids[@]}")"
      parse_kv "$out" "$w" "$round" "$workload" "$target" "$before" "$after" "$t0" "$t1" \
        handshakes_per_s connections
      ;;
    latency)
      out="$(timeout "$tmo" "${CLIENT_PREFIX[@]}" "$LOADGEN" rate --addr "127.0.0.1:$port" --host "$host" \
        --path "$path" --rate "$LAT_RATE" --duration "$DURATION" --connections "$CONNECTIONS" \
        --threads "$CLIENT_THREADS" 2>&1 || true)"
      t1="$(now_ns)"
      after="$(cpu_ticks "${pids[@]}")"
      parse_kv "$out" "$w" "$round" "$workload" "$target" "$before" "$after" "$t0" "$t1" \
        achieved_rps requests
      ;;
  esac
  cpu_after="$(cpu_stat "$PROXY_CPU_STAT")"
  other_load "$cpu_before" "$cpu_after" "$before" "$after" "$t0" "$(now_ns)"
  if [ "$target" != direct ]; then alive "$inst" || true; fi
  sleep 0.5
}

# other_load CPU_BEFORE CPU_AFTER PROXY_BEFORE PROXY_AFTER T0 T1: appends to the last result how
# busy the proxy's CPU was with processes other than the proxy, how much time the hypervisor took
# from it (steal), and how much of it stayed idle, in % of that CPU. Only meaningful when the proxy
# is pinned alone (1 worker).
other_load() {
  local extra
  extra="$(awk -v cb="$1" -v ca="$2" -v pb="$3" -v pa="$4" -v t0="$5" -v t1="$6" -v hz="$CLK_TCK" -v n="$PROXY_CPU_COUNT" 'BEGIN {
    split(cb, b, " "); split(ca, a, " ");
    avail = (t1 - t0) / 1e9 * hz * n;
    if (avail <= 0) avail = 1;
    other = (a[1] - b[1]) - (pa - pb); if (other < 0) other = 0;
    printf "other_cpu_pct=%.0f;steal_pct=%.0f;idle_pct=%.0f", 100 * other / avail, 100 * (a[2] - b[2]) / avail, 100 * (a[3] - b[3]) / avail
  }')"
  local last
  last="$(tail -n 1 "$RESULTS")"
  sed -i '$ d' "$RESULTS"
  printf '%s;%s\n' "$last" "$extra" >>"$RESULTS"
}

cpu_seconds() { awk -v a="${1%/*}" -v b="${2%/*}" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }
# kernel_share BEFORE AFTER: the share of the CPU ticks between two cpu_ticks readings spent in the kernel.
kernel_share() {
  awk -v a="${1%/*}" -v b="${2%/*}" -v sa="${1#*/}" -v sb="${2#*/}" \
    'BEGIN { if (b > a) printf "%.2f", (sb - sa) / (b - a); else printf "0" }'
}
wall_seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# wrk: "N requests in Xs", "Requests/sec: R", "Non-2xx or 3xx responses: E", "Socket errors: ...".
parse_wrk() {
  local out="$1"
  shift
  local rps count non2xx sockerr
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  count="$(awk '/requests in/ {print $1}' <<<"$out")"
  non2xx="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")"
  sockerr="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")"
  if [ -z "$rps" ]; then
    log "wrk failed for $3/$4: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    record "$1" "$2" "$3" "$4" 0 0 -1 0 0 "failed=1"
    return
  fi
  record "$1" "$2" "$3" "$4" "$rps" "${count:-0}" $((${non2xx:-0} + ${sockerr:-0})) \
    "$(cpu_seconds "$5" "$6")" "$(wall_seconds "$7" "$8")" \
    "non2xx=${non2xx:-0};socket_errors=${sockerr:-0};kernel=$(kernel_share "$5" "$6")"
}

# h2load: "finished in Xs, R req/s, ..." and "requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout".
parse_h2load() {
  local out="$1"
  shift
  local rps ok failed errored non2xx
  rps="$(awk '/^finished in/ {print $4}' <<<"$out")"
  read -r ok failed errored < <(awk '/^requests:/ {print $8, $10, $12}' <<<"$out") || true
  non2xx="$(awk '/^status codes:/ {gsub(",", ""); print $5 + $7 + $9}' <<<"$out")"
  if [ -z "$rps" ] || [ -z "${ok:-}" ]; then
    log "h2load failed for $3/$4: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    record "$1" "$2" "$3" "$4" 0 0 -1 0 0 "failed=1"
    return
  fi
  record "$1" "$2" "$3" "$4" "$rps" "$ok" $((failed + errored + ${non2xx:-0})) \
    "$(cpu_seconds "$5" "$6")" "$(wall_seconds "$7" "$8")" \
    "failed=$failed;errored=$errored;non2xx=${non2xx:-0};kernel=$(kernel_share "$5" "$6")"
}

# loadgen: one line of key=value pairs; RATE_KEY and COUNT_KEY name the rate and the count.
parse_kv() {
  local out="$1" w="$2" round="$3" workload="$4" target="$5" before="$6" after="$7" t0="$8" t1="$9"
  local rate_key="${10}" count_key="${11}" line
  line="$(grep -m1 '^mode=' <<<"$out" || true)"
  if [ -z "$line" ]; then
    log "loadgen failed for $workload/$target: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    record "$w" "$round" "$workload" "$target" 0 0 -1 0 0 "failed=1"
    return
  fi
  local rate count errors
  rate="$(tr ' ' '\n' <<<"$line" | awk -F= -v k="$rate_key" '$1 == k {print $2}')"
  count="$(tr ' ' '\n' <<<"$line" | awk -F= -v k="$count_key" '$1 == k {print $2}')"
  errors="$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "errors" || $1 == "non2xx" || $1 == "unsent" {s += $2} END {print s + 0}')"
  record "$w" "$round" "$workload" "$target" "$rate" "$count" "$errors" \
    "$(cpu_seconds "$before" "$after")" "$(wall_seconds "$t0" "$t1")" \
    "$(tr ' ' ';' <<<"$line");kernel=$(kernel_share "$before" "$after")"
}

# idle_target W TARGET: opens IDLE_CONNECTIONS answered, silent connections of each kind (h1,
# h2c, tls) to TARGET in turn, holding every kind's open while the next is opened, so that each
# kind's memory is new memory (none of it reused from connections closed before). Records, per
# kind, the growth of the proxy's RSS divided by the connections opened, in KiB, as workload
# idle-KIND (the rate column); the RSS before and after go in the extra field.
idle_target() {
  local w="$1" target="$2" kind port sni lg i line opened errors before after t0 t1
  if ! alive "$target"; then
    for kind in h1 h2c tls; do record "$w" 1 "idle-$kind" "$target" 0 0 -1 0 0 "died=1"; done
    return
  fi
  local pids=() loadgens=()
  mapfile -t pids < <(instance_pids "$target")
  after="$(proc_kb VmRSS "${pids[@]}")"
  for kind in h1 h2c tls; do
    # The port the throughput workload of the same protocol uses.
    case "$kind" in
      h1) read -r port _ <<<"$(endpoint tiny "$target")" ;;
      h2c) read -r port _ <<<"$(endpoint h2 "$target")" ;;
      tls) read -r port _ <<<"$(endpoint tls-full "$target")" ;;
    esac
    sni=()
    [ "$kind" = tls ] && sni=(--sni tls.bench.local)
    local ready="$WORK/idle-ready-$kind"
    rm -f "$ready"
    before="$after"
    t0="$(now_ns)"
    # Stopped below once all kinds are measured.
    timeout $((IDLE_HOLD + 180)) "${CLIENT_PREFIX[@]}" "$LOADGEN" idle --addr "127.0.0.1:$port" \
      --kind "$kind" "${sni[@]}" --connections "$IDLE_CONNECTIONS" --hold "$IDLE_HOLD" \
      --ready-file "$ready" >"$WORK/idle-out-$kind.txt" 2>&1 &
    lg=$!
    loadgens+=("$lg")
    for ((i = 0; i < 1500; i++)); do
      [ -e "$ready" ] && break
      kill -0 "$lg" 2>/dev/null || break
      sleep 0.1
    done
    # A moment for the proxy to finish with the last responses before its memory is read.
    sleep 0.5
    t1="$(now_ns)"
    line="$(grep -m1 '^mode=idle' "$ready" 2>/dev/null || true)"
    after="$(proc_kb VmRSS "${pids[@]}")"
    opened="$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "opened" {print $2}')"
    errors="$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "errors" {print $2}')"
    if [ -z "$line" ] || [ "${opened:-0}" -eq 0 ]; then
      log "loadgen idle failed for $kind/$target: $(tail -n 3 "$WORK/idle-out-$kind.txt" | tr '\n' ' ')"
      record "$w" 1 "idle-$kind" "$target" 0 0 -1 0 0 "failed=1"
      continue
    fi
    record "$w" 1 "idle-$kind" "$target" \
      "$(awk -v a="$before" -v b="$after" -v n="$opened" 'BEGIN { printf "%.2f", (b - a) / n }')" \
      "$opened" "$errors" 0 "$(wall_seconds "$t0" "$t1")" \
      "rss_before_kb=$before;rss_after_kb=$after;$(tr ' ' ';' <<<"$line")"
  done
  for lg in "${loadgens[@]}"; do kill "$lg" 2>/dev/null || true; done
  for lg in "${loadgens[@]}"; do wait "$lg" 2>/dev/null || true; done
  alive "$target" || true
  # Let the proxy close the dropped connections before the next measurement.
  sleep 1
}

median_rate() {
  awk -F'\t' -v w="$1" -v wl="$2" -v t="$3" '$1 == w && $3 == wl && $4 == t && $7 >= 0 {print $5}' "$RESULTS" |
    sort -g | awk '{v[NR] = $1} END { if (NR) print v[int((NR + 1) / 2)] }'
}

warm_up() {
  local target port host path
  for target in direct $PROXIES; do
    read -r port host path <<<"$(endpoint tiny "$target")"
    timeout 20 "${CLIENT_PREFIX[@]}" wrk -t 1 -c "$CONNECTIONS" -d 1s -H "Host: $host" \
      "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
  done
}

declare -A RSS_IDLE RSS_PEAK

CUR_W=""
CUR_WORKLOAD="start-up"
for W in $WORKERS_LIST; do
  CUR_W=$W
  if [ "$W" = 1 ]; then
    PROXY_CPUS=1 CLIENT_CPUS=0 CLIENT_THREADS=1
    CLIENT_PREFIX=(taskset -c 0)
    PROXY_CPU_STAT=cpu1 PROXY_CPU_COUNT=1
  else
    PROXY_CPUS="" CLIENT_CPUS="" CLIENT_THREADS=2
    CLIENT_PREFIX=()
    PROXY_CPU_STAT=cpu PROXY_CPU_COUNT="$(nproc)"
  fi
  log "=== $W worker(s): proxies on CPU ${PROXY_CPUS:-any}, backend and load generator on CPU ${CLIENT_CPUS:-any}"
  start_all "$W" "$PROXY_CPUS" "$CLIENT_CPUS"
  for inst in nginx haproxy portcullis nginx-10k haproxy-10k portcullis-10k; do
    mapfile -t pids < <(instance_pids "$inst")
    RSS_IDLE[$W:$inst]="$(proc_kb VmRSS "${pids[@]}")"
  done
  warm_up
  for ((round = 1; round <= ROUNDS; round++)); do
    for workload in $WORKLOADS; do
      # Latency with peers that leave Nagle on is measured once, after the throughput runs, and
      # idle connections' memory once per worker count, after the latency runs.
      [ "$workload" = nagle ] || [ "$workload" = idle ] && continue
      CUR_WORKLOAD=$workload
      for target in $(targets_for "$workload"); do
        log "workers=$W round $round/$ROUNDS $workload -> $target"
        run_one "$W" "$round" "$workload" "$target"
      done
    done
  done
  if [ -n "${RATE:-}" ]; then
    LAT_RATE="$RATE"
  else
    nginx_max="$(median_rate "$W" tiny nginx)"
    [ -n "$nginx_max" ] || nginx_max="$(median_rate 1 tiny nginx)"
    [ -n "$nginx_max" ] || die "no nginx 'tiny' measurement to derive the latency rate from; set RATE"
    LAT_RATE="$(awk -v r="$nginx_max" -v p="$RATE_PCT" 'BEGIN { printf "%d", r * p / 100 }')"
  fi
  CUR_WORKLOAD=latency
  for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct $PROXIES; do
      log "workers=$W round $round/$ROUNDS latency at $LAT_RATE req/s -> $target"
      run_one "$W" "$round" latency "$target"
    done
  done
  if [[ " $WORKLOADS " == *" idle "* ]]; then
    CUR_WORKLOAD=idle
    for target in $PROXIES; do
      log "workers=$W idle: $IDLE_CONNECTIONS connections of each kind held open -> $target"
      idle_target "$W" "$target"
    done
  fi
  for inst in nginx haproxy portcullis nginx-10k haproxy-10k portcullis-10k; do
    if alive "$inst"; then
      mapfile -t pids < <(instance_pids "$inst")
      RSS_PEAK[$W:$inst]="$(proc_kb VmHWM "${pids[@]}")"
    fi
  done
  stop_all
  for f in "$WORK"/portcullis*.log; do
    [ -f "$f" ] || continue
    grep -E 'WARN|ERROR' "$f" | sed 's/\x1b\[[0-9;]*m//g' | head -n 5 | sed "s|^|workers=$W $(basename "$f" .log): |" >>"$LOG_SAMPLES" || true
    mv "$f" "${f%.log}-w$W.log"
  done
done

NAGLE_TABLE="$WORK/nagle.md"
if [[ " $WORKLOADS " == *" nagle "* ]]; then
  log "nagle: peers with Nagle on, sequential keep-alive requests"
  BUILD=0 BENCH_PORT_BASE=$((BASE + 800)) "$BENCH_DIR/nagle.sh" >"$NAGLE_TABLE" ||
    die "bench/nagle.sh failed"
fi

# ------------------------------------------------------------------------------------------------
# Report

RSS_FILE="$WORK/rss.tsv"
: >"$RSS_FILE"
for key in "${!RSS_IDLE[@]}"; do
  printf '%s\t%s\t%s\t%s\n' "${key%%:*}" "${key#*:}" "${RSS_IDLE[$key]}" "${RSS_PEAK[$key]:-}" >>"$RSS_FILE"
done

STAMP="$(date -u '+%Y-%m-%dT%H%M%SZ')"
mkdir -p "$BENCH_DIR/results"
OUT="$BENCH_DIR/results/$STAMP.md"
{
  echo "# Portcullis vs nginx vs HAProxy — $START_DATE"
  echo
  echo "- command: \`${ENV_USED}$COMMAND\` ($ROUNDS round(s), ${DURATION} s per measurement, $CONNECTIONS connections)"
  echo "$START_INFO"
  echo "- tools: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'), $(wrk -v 2>&1 | head -n1 | awk '{print "wrk " $2}'), $(h2load --version | head -n1)"
  echo
  LATENCY_RATE_NOTE="${RATE:+as set by RATE}" python3 "$BENCH_DIR/report.py" run "$RESULTS" "$RSS_FILE"
  if [ -s "$NAGLE_TABLE" ]; then
    echo
    sed 's/^# /## /' "$NAGLE_TABLE"
  fi
  echo
  echo "Portcullis log lines at WARN or ERROR level over the whole run: $(cat "$WORK"/portcullis*.log 2>/dev/null | grep -c -E 'WARN|ERROR' || true)"
  if [ -s "$LOG_SAMPLES" ]; then
    echo
    echo '```'
    cat "$LOG_SAMPLES"
    echo '```'
  fi
  if [ -s "$DEATHS" ]; then
    echo
    echo "## Processes that died"
    echo
    cat "$DEATHS"
  fi
} >"$OUT"
cat "$OUT"
log "written to $OUT"
