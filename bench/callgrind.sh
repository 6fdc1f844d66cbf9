#!/usr/bin/env bash
# Instructions per request of Portcullis's own process, counted by valgrind's callgrind: a number
# that, unlike req/s or CPU time, barely moves when other work shares the machine, so small
# changes to the request path can be compared run against run. Kernel work (the TCP stack) is not
# counted; see bench/run.sh for the full picture.
#
#   bench/callgrind.sh                  # keep-alive HTTP/1.1, resumed TLS, HTTP/2
#   WORKLOADS="tls-full tls-resumed tls-keepalive" bench/callgrind.sh   # the TLS workloads
#   SECONDS_PER=8 CONNECTIONS=10 bench/callgrind.sh
#   WORKLOADS="keepalive" KEEP_WORK=1 bench/callgrind.sh   # keeps callgrind.out.* for callgrind_annotate
#
# Prints one markdown table (instructions per request or per handshake, and the top functions).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_PER="${SECONDS_PER:-6}"
CONNECTIONS="${CONNECTIONS:-10}"
WORKLOADS="${WORKLOADS:-keepalive tls-resumed h2}"
BASE="${BENCH_PORT_BASE:-18700}"
P_BACKEND=$BASE P_HTTP=$((BASE + 1)) P_TLS=$((BASE + 2)) P_ADMIN=$((BASE + 3))

[[ "$SECONDS_PER" =~ ^[0-9]+$ ]] && [ "$SECONDS_PER" -ge 1 ] && [ "$SECONDS_PER" -le 120 ] ||
  die "SECONDS_PER must be 1..120"
[[ "$CONNECTIONS" =~ ^[0-9]+$ ]] && [ "$CONNECTIONS" -ge 1 ] && [ "$CONNECTIONS" -le 1000 ] ||
  die "CONNECTIONS must be 1..1000"
for w in $WORKLOADS; do
  case "$w" in
    keepalive | tls-keepalive | tls-full | tls-resumed | h2) ;;
    *) die "unknown workload $w (have: keepalive tls-keepalive tls-full tls-resumed h2)" ;;
  esac
done

install_traps
ensure_tools
if ! command -v valgrind >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "valgrind is missing; install it (needs root)"
  log "installing valgrind from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind
fi
require_ports_free $P_BACKEND $P_HTTP $P_TLS $P_ADMIN
build_portcullis
build_loadgen

WORK="$(mktemp -d /tmp/portcullis-callgrind.XXXXXX)"
make_cert "$WORK"
nginx_backend_conf "$WORK" "$P_BACKEND" >"$WORK/backend.conf"
small_manifests "$WORK/manifests" "$P_BACKEND" extra.bench.local /extra
"$PORTCULLIS" check "$WORK/manifests" >"$WORK/check.txt" 2>&1 || {
  cat "$WORK/check.txt" >&2
  die "portcullis check rejected the manifests"
}

start_nginx backend "" "$WORK/backend.conf"
wait_http "http://127.0.0.1:$P_BACKEND/" 30 || die "backend did not start"

# run_workload NAME SECONDS: drives one workload and prints how many requests completed.
run_workload() {
  case "$1" in
    keepalive)
      wrk -t1 -c "$CONNECTIONS" -d "${2}s" -H "Host: bench.local" "http://127.0.0.1:$P_HTTP/" |
        awk '/ requests in /{print $1}'
      ;;
    tls-keepalive)
      # wrk sends no SNI for an IP address: the handshakes get the generated default certificate
      # (ECDSA P-256, like the bench one), and routing follows the Host header.
      wrk -t1 -c "$CONNECTIONS" -d "${2}s" -H "Host: tls.bench.local" "https://127.0.0.1:$P_TLS/" |
        awk '/ requests in /{print $1}'
      ;;
    h2)
      h2load -c "$CONNECTIONS" -m 10 -D "$2" -H ":authority: bench.local" "http://127.0.0.1:$P_HTTP/" |
        awk '/^requests:/{print $8}'
      ;;
    tls-full)
      "$LOADGEN" tls --addr "127.0.0.1:$P_TLS" --sni tls.bench.local --host tls.bench.local \
        --path / --duration "$2" --concurrency "$CONNECTIONS" |
        tr ' ' '\n' | awk -F= '$1 == "full" {print $2}'
      ;;
    tls-resumed)
      "$LOADGEN" tls --addr "127.0.0.1:$P_TLS" --sni tls.bench.local --host tls.bench.local \
        --path / --duration "$2" --concurrency "$CONNECTIONS" --resume |
        tr ' ' '\n' | awk -F= '$1 == "resumed" {print $2}'
      ;;
  esac
}

# One callgrind run per workload, so each output file holds exactly that workload's requests.
ROWS=()
TOPS=()
for workload in $WORKLOADS; do
  out="$WORK/callgrind.out.$workload"
  start_bg "portcullis-$workload" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out" "$PORTCULLIS" run --manifests "$WORK/manifests" \
    --http-addr "127.0.0.1:$P_HTTP" --https-addr "127.0.0.1:$P_TLS" \
    --admin-addr "127.0.0.1:$P_ADMIN" --workers 1 --no-access-log --shutdown-grace 1
  pid=$LAST_PID
  wait_status "http://127.0.0.1:$P_ADMIN/readyz" 200 120 || die "portcullis under valgrind not ready"
  # Warm-up outside the count (valgrind translating code on first use, the first connections to
  # the backend, lazy statics): the workload's own client for a moment.
  run_workload "$workload" 2 >/dev/null || true
  callgrind_control -i on "$pid" >/dev/null
  n="$(run_workload "$workload" "$SECONDS_PER")"
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  stop_bg "$pid"
  [ -n "$n" ] && [ "$n" -gt 0 ] || die "$workload: no requests completed"
  # The dump written on demand carries a suffix; sum every part of this workload's output.
  total=0
  for f in "$out"*; do
    ir="$(awk '/^totals:/{print $2; exit}' "$f")"
    total=$((total + ${ir:-0}))
  done
  case "$workload" in
    tls-full) unit="full handshake (one request each)" ;;
    tls-resumed) unit="resumed handshake (one request each)" ;;
    *) unit=request ;;
  esac
  ROWS+=("| $workload | $n | $((total / n)) | $unit |")
  top="$(for f in "$out"*; do callgrind_annotate --inclusive=no "$f" 2>/dev/null || true; done |
    awk '/^ *[0-9,]+ \([ 0-9.]+%\)  / && !/PROGRAM TOTALS/ && shown < 8 {
      line = $0; match(line, /\([ 0-9.]+%\)/); pct = substr(line, RSTART + 1, RLENGTH - 2)
      gsub(/ /, "", pct); sub(/^ *[0-9,]+ \([ 0-9.]+%\) */, "", line); sub(/ \[[^]]*\]$/, "", line)
      sub(/^[^:]*:/, "", line); printf "    %6s  %s\n", pct, line; shown++ }')"
  TOPS+=("$workload:" "$top")
done

echo "# Portcullis instructions per request (callgrind) — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- command: \`$0\` (SECONDS_PER=$SECONDS_PER, CONNECTIONS=$CONNECTIONS, 1 worker)"
echo "- portcullis: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "- user-space instructions of the Portcullis process only (the kernel's TCP work is not counted)"
echo
echo "| workload | completed | instructions per unit | unit |"
echo "|---|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Functions with the most instructions (self cost):"
echo
printf '%s\n' "${TOPS[@]}"
