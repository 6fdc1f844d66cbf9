# Helpers shared by bench/run.sh and bench/scale.sh (sourced, not run).
# shellcheck shell=bash

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# The binary measured: $PORTCULLIS when set (with BUILD=0, to compare builds), else the build
# in $CARGO_TARGET_DIR (default target/).
PORTCULLIS="${PORTCULLIS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis}"
LOADGEN_TARGET="$ROOT/target/bench-loadgen"
LOADGEN="$LOADGEN_TARGET/release/loadgen"
# shellcheck disable=SC2034 # used by run.sh
CLK_TCK="$(getconf CLK_TCK)"

# Every process we start, in start order; cleanup stops them in reverse.
BG_PIDS=()
BG_NAMES=()
WORK=""

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local i pid
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${BG_PIDS[$i]}"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${BG_PIDS[$i]}"
    [ -n "$pid" ] || continue
    local n=0
    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 50 ]; do
      sleep 0.1
      n=$((n + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "${BG_NAMES[$i]} (pid $pid) did not stop on SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "${KEEP_WORK:-0}" = 1 ] || [ "$status" -ne 0 ]; then
      log "work files kept in $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$status"
}

install_traps() {
  trap cleanup EXIT
  trap 'log "interrupted"; exit 130' INT
  trap 'log "terminated"; exit 143' TERM
}

# start_bg NAME CMD...: runs CMD in the background with output in $WORK/NAME.log; sets LAST_PID.
start_bg() {
  local name="$1"
  shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  BG_PIDS+=("$LAST_PID")
  BG_NAMES+=("$name")
}

# stop_bg PID: stops one process we started and forgets it.
stop_bg() {
  local pid="$1" i n=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 50 ]; do
    sleep 0.1
    n=$((n + 1))
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in "${!BG_PIDS[@]}"; do
    if [ "${BG_PIDS[$i]}" = "$pid" ]; then BG_PIDS[$i]=""; fi
  done
  return 0
}

# pin CPUS CMD...: runs CMD pinned to CPUS, or unpinned when CPUS is empty.
pin() {
  local cpus="$1"
  shift
  if [ -n "$cpus" ]; then
    exec taskset -c "$cpus" "$@"
  else
    exec "$@"
  fi
}

ensure_tools() {
  local need=() cmd pkg
  for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl \
    curl:curl taskset:util-linux python3:python3 ss:iproute2; do
    cmd="${pair%%:*}"
    pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing from Debian: ${need[*]}"
    [ "$(id -u)" = 0 ] || die "missing ${need[*]}; install them (needs root)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found"
}

build_portcullis() {
  if [ "${BUILD:-1}" = 0 ] && [ -x "$PORTCULLIS" ]; then
    log "BUILD=0: using the existing $PORTCULLIS"
    return 0
  fi
  log "building Portcullis (release)"
  (cd "$ROOT" && cargo build --release -p portcullis --quiet) || die "cargo build failed"
}

build_loadgen() {
  if [ "${BUILD:-1}" = 0 ] && [ -x "$LOADGEN" ]; then return 0; fi
  log "building bench/loadgen (release)"
  cargo build --release --quiet --manifest-path "$BENCH_DIR/loadgen/Cargo.toml" \
    --target-dir "$LOADGEN_TARGET" || die "building bench/loadgen failed"
}

raise_fd_limit() {
  local hard
  hard="$(ulimit -Hn)"
  if [ "$hard" = unlimited ]; then hard=1048576; fi
  ulimit -n "$hard"
}

port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

require_ports_free() {
  local p
  for p in "$@"; do
    port_free "$p" || die "port $p is in use; set BENCH_PORT_BASE to another range"
  done
}

# wait_http URL [SECONDS] [HOST]: waits (bounded) until URL answers with any HTTP status.
wait_http() {
  local url="$1" secs="${2:-30}" host="${3:-}" i
  local args=(-s -o /dev/null -m 1)
  [ -n "$host" ] && args+=(-H "Host: $host")
  for ((i = 0; i < secs * 10; i++)); do
    if curl "${args[@]}" "$url"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# wait_status URL CODE SECONDS: waits (bounded) until URL answers CODE.
wait_status() {
  local url="$1" code="$2" secs="$3" i got
  for ((i = 0; i < secs * 10; i++)); do
    got="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)"
    [ "$got" = "$code" ] && return 0
    sleep 0.1
  done
  return 1
}

# pids_of PID: the process and its direct children (nginx master + workers).
pids_of() {
  local pid="$1"
  echo "$pid"
  pgrep -P "$pid" 2>/dev/null || true
}

# cpu_ticks PID...: "TOTAL/SYSTEM" clock ticks of the processes (all their threads): user+system,
# and system (kernel) alone.
cpu_ticks() {
  local total=0 sys=0 p t a b
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13, $13}')" || continue
    read -r a b <<<"${t:-0 0}"
    total=$((total + a))
    sys=$((sys + b))
  done
  echo "$total/$sys"
}

# proc_kb FIELD PID...: sum of a /proc/PID/status field (VmHWM, VmRSS) in KiB.
proc_kb() {
  local field="$1" total=0 p v
  shift
  for p in "$@"; do
    v="$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

now_ns() { date +%s%N; }

# cpu_stat NAME: "user+nice+system steal idle+iowait" clock ticks of one line of /proc/stat (cpu1, or
# cpu for all CPUs).
cpu_stat() {
  awk -v c="$1" '$1 == c {print $2 + $3 + $4, $9, $5 + $6}' /proc/stat
}

machine_info() {
  local model
  model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "- machine: $(nproc) CPUs ($model), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other people build and test on this machine; absolute numbers are noisy)"
  echo "- portcullis: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- crates 2>/dev/null || echo ' (+ uncommitted changes)')"
}

# An ECDSA P-256 self-signed certificate for tls.bench.local in DIR/cert.pem, DIR/key.pem, and
# both concatenated in DIR/bench.pem (HAProxy's format).
make_cert() {
  local dir="$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 30 -subj "/CN=tls.bench.local" \
    -addext "subjectAltName=DNS:tls.bench.local,DNS:bench.local" >/dev/null 2>&1 ||
    die "openssl could not create the certificate"
  cat "$dir/cert.pem" "$dir/key.pem" >"$dir/bench.pem"
}

# yaml_block FILE INDENT: FILE's lines indented for a YAML block scalar.
yaml_block() { sed "s/^/$2/" "$1"; }

# Service + EndpointSlice NAME in namespace bench pointing at 127.0.0.1:PORT.
manifest_service() {
  local name="$1" port="$2"
  cat <<EOF
---
apiVersion: v1
kind: Service
metadata:
  name: $name
  namespace: bench
spec:
  ports:
    - port: 80
      targetPort: $port
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $name-local
  namespace: bench
  labels:
    kubernetes.io/service-name: $name
addressType: IPv4
ports:
  - port: $port
endpoints:
  - addresses: ["127.0.0.1"]
    conditions:
      ready: true
EOF
}

# small_manifests DIR BACKEND_PORT EXTRA_HOST EXTRA_PATH: the small configuration. Ingress `bench`
# routes bench.local/ and EXTRA_HOST + Prefix EXTRA_PATH; `bench-tls` serves tls.bench.local/ with
# the certificate from make_cert (in $WORK); Service `backend` points at 127.0.0.1:BACKEND_PORT.
small_manifests() {
  local dir="$1" port="$2" extra_host="$3" extra_path="$4"
  mkdir -p "$dir"
  {
    cat <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
spec:
  ingressClassName: portcullis
  rules:
    - host: bench.local
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: backend
                port:
                  number: 80
    - host: $extra_host
      http:
        paths:
          - path: $extra_path
            pathType: Prefix
            backend:
              service:
                name: backend
                port:
                  number: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench-tls
  namespace: bench
spec:
  ingressClassName: portcullis
  tls:
    - hosts: [tls.bench.local]
      secretName: bench-tls
  rules:
    - host: tls.bench.local
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: backend
                port:
                  number: 80
---
apiVersion: v1
kind: Secret
metadata:
  name: bench-tls
  namespace: bench
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(yaml_block "$WORK/cert.pem" '    ')
  tls.key: |
$(yaml_block "$WORK/key.pem" '    ')
EOF
    manifest_service backend "$port"
  } >"$dir/bench.yaml"
}

# nginx_backend_conf DIR PORT: the loopback backend: "ok" on /, static files under /files/.
nginx_backend_conf() {
  local dir="$1" port="$2"
  mkdir -p "$dir/www" "$dir/tmp-backend"
  head -c 1024 /dev/zero | tr '\0' 'a' >"$dir/www/1k"
  head -c 102400 /dev/zero | tr '\0' 'b' >"$dir/www/100k"
  cat <<EOF
$(nginx_user)
worker_processes 1;
worker_rlimit_nofile 65536;
pid $dir/backend.pid;
error_log $dir/backend.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  server_tokens off;
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  $(nginx_temp_paths "$dir/tmp-backend")
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { return 200 "ok"; }
    location /files/ { alias $dir/www/; }
  }
}
EOF
}

nginx_user() { if [ "$(id -u)" = 0 ]; then echo "user root;"; fi; }

nginx_temp_paths() {
  local d="$1"
  echo "client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fastcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;"
}

# start_nginx NAME CPUS CONF: nginx in the foreground (master + workers), pinned to CPUS.
start_nginx() {
  local name="$1" cpus="$2" conf="$3"
  start_bg "$name" pin "$cpus" nginx -e "$WORK/$name.err" -p "$WORK" -c "$conf" -g 'daemon off;'
}
