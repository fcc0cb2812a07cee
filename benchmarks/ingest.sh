#!/usr/bin/env bash
# Ingest benchmark, end to end: the same generated corpus (EVENTS events,
# seed 1, 10 000 Zipf ads) loaded into a fresh database with every
# materialized view, by ClickHouse's own loader (clickhouse-client,
# JSONEachRow), by a plain clickhouse-go/v2 columnar batch insert (GO_BATCH
# rows per batch, default 1048576; the two baselines) and through clickagg's collector
# (POST /v1/events, CLIENTS concurrent requests of BATCH events, each
# answered only once committed). Usage:
#   benchmarks/ingest.sh [EVENTS]     (default 2000000; CLIENTS=8 BATCH=5000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
clients=${CLIENTS:-8}
batch=${BATCH:-5000}
listen=127.0.0.1:18081
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/ingestbench ./benchmarks/ingestbench
bin/clickagg services up >/dev/null
eval "$(bin/clickagg services status)"
fresh() {
	curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $1"
	bin/clickagg migrate up --clickhouse-database "$1" >/dev/null
}
# CPU seconds a process used so far (user + system).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$1/stat"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
chpid=$(cat "${CLICKAGG_DATA_DIR:-.local}/clickhouse.pid")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "command: benchmarks/ingest.sh $events (CLIENTS=$clients BATCH=$batch)"

fresh clickagg_bench_loader
c0=$(cpu "$chpid")
bin/ingestbench --mode loader --events "$events" \
	--clickhouse-client "clickhouse-client --host ${CLICKAGG_CLICKHOUSE_NATIVE%:*} --port ${CLICKAGG_CLICKHOUSE_NATIVE##*:} --database clickagg_bench_loader"

echo "loader: clickhouse used $(sub "$(cpu "$chpid")" "$c0") CPU s"
fresh clickagg_bench_go
c0=$(cpu "$chpid")
bin/ingestbench --mode go --events "$events" --clickhouse-native "$CLICKAGG_CLICKHOUSE_NATIVE" --database clickagg_bench_go --go-batch "${GO_BATCH:-1048576}"
echo "go: clickhouse used $(sub "$(cpu "$chpid")" "$c0") CPU s"
fresh clickagg_bench_ingest
bin/clickagg serve --listen "$listen" --clickhouse-database clickagg_bench_ingest --no-reconcile \
	--kafka-verify-every 0 ${SERVE_FLAGS:-} 2>benchmarks/ingest-serve.log &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
c0=$(cpu "$chpid")
s0=$(cpu "$serve")
bin/ingestbench --mode collector --events "$events" --target "http://$listen" --clients "$clients" --batch "$batch" --pid "$serve"
echo "collector: clickhouse used $(sub "$(cpu "$chpid")" "$c0") CPU s, clickagg $(sub "$(cpu "$serve")" "$s0") CPU s"
for db in clickagg_bench_loader clickagg_bench_go clickagg_bench_ingest; do
	echo "$db: $(curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/?database=$db" --data-binary 'SELECT count(), (SELECT sum(impressions + clicks + conversions) FROM ad_stats_minute) FROM events')"
done
