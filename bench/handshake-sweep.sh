#!/usr/bin/env bash
# Handshakes/s of both engines against dial concurrency: for each concurrency and round, a
# fresh redis-server and a fresh server per engine (alternating which goes first), one
# `wsbench idle` of CONNS connections, then the median per engine and concurrency.
#
#   bench/handshake-sweep.sh [ROUNDS] [CONCURRENCY...]     (default: 5 rounds of 8 64 256)
#
# Needs redis-server and curl; builds bin/websocket-service and bin/wsbench first. Every run
# is bounded (CONNS connections, wsbench's own timeouts); nothing listens beyond loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; shift || true
CONCS=${*:-8 64 256}
CONNS=${CONNS:-10000}
SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
go build -o bin/websocket-service ./cmd/websocket-service
go build -o bin/wsbench ./cmd/wsbench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }

one() { # engine concurrency → "rate cpu"
  local eng=$1 c=$2 rp port rpid sp out
  rp=$(free_port); port=$(free_port)
  redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & rpid=$!
  env WEBSOCKET_SERVICE_ENGINE="$eng" WEBSOCKET_SERVICE_HOST=127.0.0.1 WEBSOCKET_SERVICE_PORT="$port" \
    WEBSOCKET_SERVICE_REDIS_URL="redis://127.0.0.1:$rp/0" WEBSOCKET_SERVICE_JWT_SECRET_KEY="$SECRET" \
    WEBSOCKET_SERVICE_MAX_CONNECTIONS_PER_USER=0 WEBSOCKET_SERVICE_LOG_LEVEL=WARNING \
    WEBSOCKET_SERVICE_SHUTDOWN_DRAIN_TIMEOUT=1 \
    bin/websocket-service serve >/dev/null 2>&1 & sp=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
  out=$(bin/wsbench idle --url "ws://127.0.0.1:$port/ws" --secret "$SECRET" --conns "$CONNS" \
    --concurrency "$c" --hold 100ms --src 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 --pid "$sp" 2>&1) || true
  # Connections wsbench has just closed may still be open in the server at SIGTERM; a short
  # drain window keeps it from spreading their closes over the default 30 s.
  kill "$sp" "$rpid" 2>/dev/null; wait "$sp" "$rpid" 2>/dev/null || true
  echo "$(grep -oE '\(([0-9]+)/s\)' <<<"$out" | tr -dc 0-9) $(grep '^server cpu' <<<"$out" | grep -oE '= [0-9]+' | tr -dc 0-9)"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

declare -A rate cpu
for c in $CONCS; do
  for r in $(seq "$ROUNDS"); do
    order="gws epoll"; [ $((r % 2)) -eq 0 ] && order="epoll gws"
    for eng in $order; do
      read -r hs us < <(one "$eng" "$c")
      echo "concurrency $c round $r $eng: ${hs:-?} handshakes/s, server ${us:-?} µs/handshake"
      rate[$eng.$c]+="${hs:-0} "; cpu[$eng.$c]+="${us:-0} "
    done
  done
done
echo
printf '%-12s %10s %10s %10s %16s\n' concurrency "gws /s" "epoll /s" epoll/gws "server µs g/e"
for c in $CONCS; do
  g=$(tr ' ' '\n' <<<"${rate[gws.$c]}" | grep . | median); e=$(tr ' ' '\n' <<<"${rate[epoll.$c]}" | grep . | median)
  gc=$(tr ' ' '\n' <<<"${cpu[gws.$c]}" | grep . | median); ec=$(tr ' ' '\n' <<<"${cpu[epoll.$c]}" | grep . | median)
  printf '%-12s %10s %10s %10s %16s\n' "$c" "$g" "$e" "$(awk -v a="$e" -v b="$g" 'BEGIN{printf "%.2f", (b>0? a/b : 0)}')" "$gc / $ec"
done
