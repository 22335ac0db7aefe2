#!/usr/bin/env bash
# Syscalls per request of twemproxy (Debian's nutcracker) and of
# `anykv router --threads 1`, both in front of one redis-server, under
# redis-benchmark -c 50 GET at -P 1 (or -P $PIPE): counted with
# `perf stat` on the syscall tracepoints of the proxy's process only.
#
# Usage: bench/scripts/router_syscalls.sh [target/release/anykv] [requests]
# Needs perf, nutcracker, redis-server, redis-benchmark; run as root (or
# with perf_event_paranoid allowing tracepoints).
set -euo pipefail
ANYKV=${1:-target/release/anykv}
N=${2:-200000}
PIPE=${PIPE:-1}
RP=24001; TP=24002; AP=24003; SP=24004
tmp=$(mktemp -d)
redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
RS=$!
cat > "$tmp/nc.yml" <<Y
bench:
  listen: 127.0.0.1:$TP
  hash: fnv1a_64
  distribution: ketama
  redis: true
  servers:
   - 127.0.0.1:$RP:1
Y
nutcracker -c "$tmp/nc.yml" -s $SP -o "$tmp/nc.log" &
NC=$!
"$ANYKV" router --port $AP --bind 127.0.0.1 --upstream 127.0.0.1:$RP --threads 1 >/dev/null 2>&1 &
AR=$!
trap 'kill $RS $NC $AR 2>/dev/null; rm -rf "$tmp"' EXIT
sleep 1
EV=$(printf 'syscalls:sys_enter_%s,' read write readv writev recvfrom sendto recvmsg sendmsg \
  epoll_wait epoll_pwait epoll_ctl futex sched_yield)
EV=${EV%,}
echo "| proxy | syscalls per request | by call |"
echo "|---|---|---|"
for p in "$TP $NC twemproxy" "$AP $AR router-1t"; do
  set -- $p
  perf stat -x, -e "$EV" -p "$2" -o "$tmp/perf.$3" &
  ST=$!
  sleep 0.3
  # (requests/s under perf's tracepoints are not a throughput figure)
  redis-benchmark -p "$1" -c 50 -P "$PIPE" -n "$N" -t get -q >/dev/null 2>&1
  kill -INT $ST; wait $ST || true
  awk -F, -v n="$N" -v name="$3" '
    $3 ~ /^syscalls:/ && $1+0 > 0 { sub("syscalls:sys_enter_", "", $3); total += $1; by = by sprintf("%s %.2f, ", $3, $1 / n) }
    END { sub(/, $/, "", by); printf "| %s | %.2f | %s |\n", name, total / n, by }' "$tmp/perf.$3"
done
