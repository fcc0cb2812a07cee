#!/usr/bin/env bash
# HTTP throughput with wrk (Debian package): the cached metrics endpoint and
# the collector. serve runs on a fresh database loaded with EVENTS generated
# events. Usage: benchmarks/http.sh [SECONDS]   (default 15; EVENTS=200000,
# CONNECTIONS=64, BATCH=100 events per collector request)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
conns=${CONNECTIONS:-64}
listen=127.0.0.1:18082
db=clickagg_bench_http
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
go build -o bin/clickagg ./cmd/clickagg
bin/clickagg services up >/dev/null
eval "$(bin/clickagg services status)"
curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $db"
bin/clickagg serve --listen "$listen" --clickhouse-database "$db" --migrate --no-reconcile --kafka-verify-every 0 2>benchmarks/http-serve.log &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
bin/clickagg generate --target "http://$listen" --rate -1 --concurrency 8 --batch 2000 --duration 3s --bad-share 0 >/dev/null 2>&1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F); wrk and serve share them"
url="http://$listen/v1/metrics/US/banner?window=24h"
curl -fsS "$url" >/dev/null # fills the cache
echo "## cached GET /v1/metrics/US/banner?window=24h: wrk -t2 -c$conns -d${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency "$url" | grep -E "Requests/sec|Latency|50%|99%|requests in"
echo "## POST /v1/events, ${BATCH:-100} events per request: wrk -t2 -c$conns -d${secs}s -s benchmarks/collector.lua"
EVENTS=${BATCH:-100} wrk -t2 -c"$conns" -d"${secs}s" --latency -s benchmarks/collector.lua "http://$listen" | grep -E "Requests/sec|Latency|50%|99%|requests in|Non-2xx"
echo "cache: $(curl -fsS "http://$listen/v1/cache/stats")"
