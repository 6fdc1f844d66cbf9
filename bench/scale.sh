#!/usr/bin/env bash
# Portcullis at scale: 10 000 Ingresses, each in its own file with its own Service and
# EndpointSlice (host h<i>.bench.local, path /p<i>).
#
#   bench/scale.sh                 # N=10000, 3 changes, 10 000 idle connections
#   N=2000 CHANGES=1 CONNS=2000 bench/scale.sh
#
# Measures: `portcullis check` on the folder (cold parse + translate), `portcullis run` start to
# /readyz 200, time from editing one file (rename over it, as editors do) until the proxy serves the
# new backend, endpoint churn (CHURN EndpointSlice changes a second for CHURN_SECONDS while requests
# flow: change-to-served times and failed requests), peak RSS, and RSS per idle keep-alive client
# connection (and, for comparison, the same for nginx and HAProxy; COMPARE=0 skips them). Other
# knobs: WORKERS (default 2), BENCH_PORT_BASE (default 18200), KEEP_WORK=1, CARGO_TARGET_DIR (where
# the measured binary is built). See bench/README.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMAND="$0${*:+ $*}"
ENV_USED=""
for v in N CHANGES CHURN CHURN_SECONDS CONNS WORKERS BENCH_PORT_BASE; do
  if [ -n "${!v:-}" ]; then ENV_USED+="$v=${!v} "; fi
done
N="${N:-10000}"
CHANGES="${CHANGES:-3}"
CHURN="${CHURN:-100}"
CHURN_SECONDS="${CHURN_SECONDS:-10}"
CONNS="${CONNS:-10000}"
WORKERS="${WORKERS:-2}"
BASE="${BENCH_PORT_BASE:-18200}"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 2 ] && [ "$N" -le 100000 ] || die "N must be 2..100000"
[[ "$CHANGES" =~ ^[0-9]+$ ]] && [ "$CHANGES" -le 20 ] || die "CHANGES must be 0..20"
[[ "$CONNS" =~ ^[0-9]+$ ]] && [ "$CONNS" -le 50000 ] || die "CONNS must be 0..50000"
[[ "$CHURN" =~ ^[0-9]+$ ]] && [ "$CHURN" -le 1000 ] || die "CHURN must be 0..1000 (changes a second)"
[[ "$CHURN_SECONDS" =~ ^[0-9]+$ ]] && [ "$CHURN_SECONDS" -ge 1 ] && [ "$CHURN_SECONDS" -le 120 ] ||
  die "CHURN_SECONDS must be 1..120"

P_BACKEND=$BASE P_BACKEND_NEW=$((BASE + 1))
P_HTTP=$((BASE + 10)) P_HTTPS=$((BASE + 11)) P_ADMIN=$((BASE + 12))
P_NGINX=$((BASE + 20)) P_HAPROXY=$((BASE + 21))

install_traps
ensure_tools
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time ||
    die "GNU time (/usr/bin/time) is needed"
fi
raise_fd_limit
need_fds=$((CONNS + 1000))
[ "$(ulimit -n)" -ge "$need_fds" ] ||
  die "need $need_fds open files for CONNS=$CONNS (ulimit -n is $(ulimit -n)); lower CONNS"
require_ports_free $P_BACKEND $P_BACKEND_NEW $P_HTTP $P_HTTPS $P_ADMIN $P_NGINX $P_HAPROXY
build_portcullis

WORK="$(mktemp -d /tmp/portcullis-scale.XXXXXX)"
RESULTS="$WORK/scale.tsv"
: >"$RESULTS"
START_INFO="$(machine_info)"
# With BUILD=0 the binary measured may be another commit's: BINARY_COMMIT says which.
if [ -n "${BINARY_COMMIT:-}" ]; then
  START_INFO+=$'\n'"- binary measured: built from $BINARY_COMMIT ($PORTCULLIS)"
fi
START_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "work dir $WORK; N=$N"

result() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }
# kv KEY: the value of KEY in the last helper output ($out, key=value pairs).
kv() { tr ' ' '\n' <<<"$out" | awk -F= -v k="$1" '$1 == k {print $2}'; }

# ------------------------------------------------------------------------------------------------
# Backends: "ok" on one port, "new" on another (the backend a changed Ingress points to).

mkdir -p "$WORK/tmp-backend"
cat >"$WORK/backend.conf" <<EOF
$(nginx_user)
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/backend.pid;
error_log $WORK/backend.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type text/plain;
  $(nginx_temp_paths "$WORK/tmp-backend")
  server { listen 127.0.0.1:$P_BACKEND backlog=4096; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$P_BACKEND_NEW; location / { return 200 "new"; } }
}
EOF
start_nginx backend "" "$WORK/backend.conf"
wait_http "http://127.0.0.1:$P_BACKEND/" 30 || die "backend did not start ($WORK/backend.err)"
wait_http "http://127.0.0.1:$P_BACKEND_NEW/" 30 || die "backend did not start ($WORK/backend.err)"

# ------------------------------------------------------------------------------------------------
# Manifests: one file per Ingress.

M="$WORK/manifests"
mkdir -p "$M"
log "writing $N Ingresses, Services and EndpointSlices"
# ingress_file I SERVICE: the text of file I with its path pointing at SERVICE.
ingress_awk='
function ingress(i, svc) {
  return "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing-" i "\n  namespace: bench\nspec:\n  ingressClassName: portcullis\n  rules:\n    - host: h" i ".bench.local\n      http:\n        paths:\n          - path: /p" i "\n            pathType: Prefix\n            backend:\n              service:\n                name: " svc "\n                port:\n                  number: 80\n"
}
function service(name, port) {
  return "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: " name "\n  namespace: bench\nspec:\n  ports:\n    - port: 80\n      targetPort: " port "\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: " name "-local\n  namespace: bench\n  labels:\n    kubernetes.io/service-name: " name "\naddressType: IPv4\nports:\n  - port: " port "\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions:\n      ready: true\n"
}'
awk -v n="$N" -v dir="$M" -v port="$P_BACKEND" "$ingress_awk"'
BEGIN {
  for (i = 0; i < n; i++) {
    f = sprintf("%s/ing-%05d.yaml", dir, i)
    printf "%s%s", ingress(i, "svc-" i), service("svc-" i, port) > f
    close(f)
  }
}'
CHANGED=$((N / 2))
CHANGED_FILE="$(printf '%s/ing-%05d.yaml' "$M" "$CHANGED")"
cp "$CHANGED_FILE" "$WORK/original.yaml"
awk -v i="$CHANGED" -v port="$P_BACKEND" -v newport="$P_BACKEND_NEW" "$ingress_awk"'
BEGIN { printf "%s%s%s", ingress(i, "svc-new-" i), service("svc-" i, port), service("svc-new-" i, newport) }' \
  >"$WORK/changed.yaml"
log "manifests: $(du -sh "$M" | cut -f1) in $N files"

# ------------------------------------------------------------------------------------------------
# portcullis check (cold)

log "portcullis check on $N Ingresses"
set +e
/usr/bin/time -f '%e %M' -o "$WORK/check.time" "$PORTCULLIS" check "$M" >"$WORK/check.out" 2>"$WORK/check.err"
check_rc=$?
set -e
read -r check_s check_kb <"$WORK/check.time" || true
result "portcullis check, wall time (exit $check_rc)" "${check_s:-?}" s
result "portcullis check, peak RSS" "$(awk -v k="${check_kb:-0}" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
tail -n 1 "$WORK/check.out" >"$WORK/check.summary" || true

# ------------------------------------------------------------------------------------------------
# portcullis run: start to /readyz

log "portcullis run: start to /readyz"
t0="$(now_ns)"
start_bg portcullis "$PORTCULLIS" run --manifests "$M" --http-addr "127.0.0.1:$P_HTTP" \
  --https-addr "127.0.0.1:$P_HTTPS" --admin-addr "127.0.0.1:$P_ADMIN" --workers "$WORKERS" \
  --no-access-log --shutdown-grace 1
PPID_PORTCULLIS=$LAST_PID
ready=""
for ((i = 0; i < 6000; i++)); do
  if ! kill -0 "$PPID_PORTCULLIS" 2>/dev/null; then
    tail -n 20 "$WORK/portcullis.log" >&2
    die "portcullis exited during start-up"
  fi
  code="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$P_ADMIN/readyz" || true)"
  if [ "$code" = 200 ]; then
    ready="$(now_ns)"
    break
  fi
  sleep 0.02
done
[ -n "$ready" ] || die "portcullis not ready after 120 s"
result "portcullis run, start to /readyz 200" "$(awk -v a="$t0" -v b="$ready" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')" s
result "RSS when ready" "$(awk -v k="$(proc_kb VmRSS "$PPID_PORTCULLIS")" 'BEGIN { printf "%.1f", k / 1024 }')" MiB

last=$((N - 1))
code="$(curl -s -m 5 -H "Host: h$last.bench.local" "http://127.0.0.1:$P_HTTP/p$last" || true)"
[ "$code" = ok ] || die "h$last.bench.local/p$last answered '$code', expected ok"
# The watcher may still be settling right after start-up; changes are measured once it is idle.
sleep 2

# ------------------------------------------------------------------------------------------------
# One changed Ingress

for ((k = 1; k <= CHANGES; k++)); do
  if ((k % 2 == 1)); then content="$WORK/changed.yaml" expect=new; else content="$WORK/original.yaml" expect=ok; fi
  log "change $k/$CHANGES: ing-$CHANGED -> backend answering '$expect'"
  out="$(python3 "$BENCH_DIR/scale_helper.py" change --file "$CHANGED_FILE" --new-content "$content" \
    --port "$P_HTTP" --host "h$CHANGED.bench.local" --path "/p$CHANGED" --expect "$expect" \
    --other-host "h0.bench.local" --other-path /p0 --timeout 300 || true)"
  log "  $out"
  served="$(tr ' ' '\n' <<<"$out" | awk -F= '$1 == "served_after_s" {print $2}')"
  failed="$(tr ' ' '\n' <<<"$out" | awk -F= '$1 == "unchanged_route_failed" {print $2}')"
  result "change $k: edit to served (unchanged route failures meanwhile: ${failed:-?})" "${served:-failed}" s
  sleep 2
done
kill -0 "$PPID_PORTCULLIS" 2>/dev/null || die "portcullis died during the changes ($WORK/portcullis.log)"
result "peak RSS (VmHWM) after start and changes" "$(awk -v k="$(proc_kb VmHWM "$PPID_PORTCULLIS")" 'BEGIN { printf "%.1f", k / 1024 }')" MiB

# ------------------------------------------------------------------------------------------------
# Endpoint churn: EndpointSlices of up to 200 Ingresses (spread over all of them) switched between
# the two backends, CHURN times a second, while requests flow to those routes.

if [ "$CHURN" -gt 0 ]; then
  churn_routes=$((N < 201 ? N - 1 : 200))
  indices="$(awk -v n="$N" -v k="$churn_routes" -v skip="$CHANGED" 'BEGIN {
    for (j = 0; j < k; j++) { i = int(j * n / k) + 1; if (i >= n) i = n - 1; if (i != skip) printf "%s%d", (c++ ? "," : ""), i }
  }')"
  log "endpoint churn: $CHURN EndpointSlice changes a second for $CHURN_SECONDS s over $churn_routes routes"
  out="$(python3 "$BENCH_DIR/scale_helper.py" churn --dir "$M" --indices "$indices" --port "$P_HTTP" \
    --port-a "$P_BACKEND" --port-b "$P_BACKEND_NEW" --rate "$CHURN" --duration "$CHURN_SECONDS" \
    --timeout 2 || true)"
  log "  $out"
  result "endpoint churn: changes a second ($(kv changes) EndpointSlice changes in $CHURN_SECONDS s)" "$(kv changes_per_s)" ""
  result "endpoint churn: change to served, p50 / p90 / p99 / max" "$(kv p50_ms) / $(kv p90_ms) / $(kv p99_ms) / $(kv max_ms)" ms
  result "endpoint churn: changes not served within 2 s" "$(kv not_served)" ""
  result "endpoint churn: requests to the churned routes meanwhile (failed)" "$(kv requests) ($(kv failed))" ""
  kill -0 "$PPID_PORTCULLIS" 2>/dev/null || die "portcullis died during the churn ($WORK/portcullis.log)"
  result "peak RSS (VmHWM) after the churn" "$(awk -v k="$(proc_kb VmHWM "$PPID_PORTCULLIS")" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
fi

# ------------------------------------------------------------------------------------------------
# Idle keep-alive connections

if [ "$CONNS" -gt 0 ]; then
  log "opening $CONNS idle keep-alive connections"
  out="$(python3 "$BENCH_DIR/scale_helper.py" idle-conns --port "$P_HTTP" --host h0.bench.local \
    --path /p0 --count "$CONNS" --pid "$PPID_PORTCULLIS" --hold 2 --timeout 300 || true)"
  log "  $out"
  result "idle keep-alive connections opened (failed; still open after 2 s)" "$(kv connections)" "($(kv failed); $(kv still_open))"
  result "RSS before / after opening them" "$(awk -v a="$(kv rss_before_kb)" -v b="$(kv rss_after_kb)" 'BEGIN { printf "%.1f / %.1f", a / 1024, b / 1024 }')" MiB
  result "RSS per idle connection" "$(kv kb_per_connection)" KiB
  kill -0 "$PPID_PORTCULLIS" 2>/dev/null || die "portcullis died with $CONNS connections ($WORK/portcullis.log)"
  result "peak RSS (VmHWM) at the end" "$(awk -v k="$(proc_kb VmHWM "$PPID_PORTCULLIS")" 'BEGIN { printf "%.1f", k / 1024 }')" MiB
fi

# The same idle-connection test against nginx and HAProxy (one worker each), for comparison.
if [ "$CONNS" -gt 0 ] && [ "${COMPARE:-1}" = 1 ]; then
  mkdir -p "$WORK/tmp-nginx"
  cat >"$WORK/nginx.conf" <<EOF
$(nginx_user)
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  $(nginx_temp_paths "$WORK/tmp-nginx")
  upstream app { server 127.0.0.1:$P_BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  # HAProxy reserves two descriptors per connection (client and server side), so it takes fewer
  # connections under the same descriptor limit; the per-connection figure is what is compared.
  HA_CONNS=$(((($(ulimit -n) - 200) / 2) - 50))
  if [ "$HA_CONNS" -gt "$CONNS" ]; then HA_CONNS=$CONNS; fi
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $((HA_CONNS + 50))
  ulimit-n $(ulimit -n)
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 75s
  timeout server 60s
  timeout http-keep-alive 75s
  maxconn $((HA_CONNS + 50))
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  default_backend be
backend be
  server app 127.0.0.1:$P_BACKEND
EOF
  start_nginx nginx "" "$WORK/nginx.conf"
  NGINX_MASTER=$LAST_PID
  start_bg haproxy haproxy -db -f "$WORK/haproxy.cfg"
  HAPROXY_PID=$LAST_PID
  wait_http "http://127.0.0.1:$P_NGINX/" 30 || die "nginx did not start ($WORK/nginx.err)"
  wait_http "http://127.0.0.1:$P_HAPROXY/" 30 || die "haproxy did not start ($WORK/haproxy.log)"
  NGINX_WORKER="$(pgrep -P "$NGINX_MASTER" | head -n 1)"
  [ -n "$NGINX_WORKER" ] || die "no nginx worker process found"
  for pair in "nginx:$P_NGINX:$NGINX_WORKER:$CONNS" "haproxy:$P_HAPROXY:$HAPROXY_PID:$HA_CONNS"; do
    IFS=: read -r name port pid count <<<"$pair"
    log "opening $count idle keep-alive connections to $name"
    out="$(python3 "$BENCH_DIR/scale_helper.py" idle-conns --port "$port" --host h0.bench.local \
      --path / --count "$count" --pid "$pid" --hold 2 --timeout 300 || true)"
    log "  $out"
    result "for comparison, $name with 1 worker: RSS per idle connection ($(kv connections) opened, $(kv failed) failed)" "$(kv kb_per_connection)" KiB
  done
  stop_bg "$HAPROXY_PID"
  stop_bg "$NGINX_MASTER"
fi

errors="$(grep -c -E 'WARN|ERROR' "$WORK/portcullis.log" || true)"
result "portcullis log lines at WARN or ERROR" "${errors:-0}" ""

# ------------------------------------------------------------------------------------------------
# Report

STAMP="$(date -u '+%Y-%m-%dT%H%M%SZ')"
mkdir -p "$BENCH_DIR/results"
OUT="$BENCH_DIR/results/$STAMP-scale.md"
{
  echo "# Portcullis at scale — $START_DATE"
  echo
  echo "- command: \`${ENV_USED}$COMMAND\` ($N Ingresses in $N files, each with its own Service and EndpointSlice; --workers $WORKERS; nothing pinned)"
  echo "$START_INFO"
  echo "- \`portcullis check\` summary: $(cat "$WORK/check.summary" 2>/dev/null || echo '?')"
  echo
  python3 "$BENCH_DIR/report.py" scale "$RESULTS"
} >"$OUT"
cat "$OUT"
log "written to $OUT"
