#!/usr/bin/env bash
# Query benchmark: a fresh database, EVENTS generated events (deterministic
# seed, spread over the last 24 h) posted through the collector, then
# querybench over HTTP: the push-down ratio, then the API with the planner
# and again with --no-rollups (the minute cubes alone). Prints markdown
# tables. Usage:
#   benchmarks/query.sh [EVENTS]     (default 10000000)
#   SHAPE=2x1 benchmarks/query.sh    (on a local cluster of that many shards x
#                                     replicas, in a fresh data directory)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
db=clickagg_bench
listen=127.0.0.1:18080
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/querybench ./benchmarks/querybench
cleanup() { :; }
if [ -n "${SHAPE:-}" ]; then
	CLICKAGG_DATA_DIR=$(mktemp -d /tmp/clickagg-query-XXXXXX)
	export CLICKAGG_DATA_DIR
	bin/clickagg services up --shards "${SHAPE%x*}" --replicas "${SHAPE#*x}" >/dev/null
	cleanup() { bin/clickagg services down >/dev/null 2>&1; rm -rf "$CLICKAGG_DATA_DIR"; }
else
	bin/clickagg services up >/dev/null
fi
eval "$(bin/clickagg services status)"
[ -n "${SHAPE:-}" ] || curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $db"
bin/clickagg serve --listen "$listen" --clickhouse-database "$db" --migrate --no-reconcile 2>benchmarks/query-serve.log &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "command: ${SHAPE:+SHAPE=$SHAPE }benchmarks/query.sh $events"
bin/querybench --target "http://$listen" --clickhouse-http "$CLICKAGG_CLICKHOUSE_HTTP" --database "$db" --load "$events" --only pushdown ${QUERYBENCH_FLAGS:-}
sleep "${SETTLE:-30}" # the loads' merges, which would slow the first table only
echo
echo "serve (the planner and its rollups):"
bin/querybench --target "http://$listen" --clickhouse-http "$CLICKAGG_CLICKHOUSE_HTTP" --database "$db" --only api ${QUERYBENCH_FLAGS:-}
# The same questions without the planner (the minute cubes alone, as before
# the rollups), on the same data, for the before/after ratio.
kill $serve; wait $serve 2>/dev/null || true
bin/clickagg serve --listen "$listen" --clickhouse-database "$db" --no-rollups --no-reconcile 2>>benchmarks/query-serve.log &
serve=$!
for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
echo
echo "serve --no-rollups (the minute cubes alone):"
bin/querybench --target "http://$listen" --clickhouse-http "$CLICKAGG_CLICKHOUSE_HTTP" --database "$db" --only api ${QUERYBENCH_FLAGS:-}
