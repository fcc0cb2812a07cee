#!/usr/bin/env bash
# Cluster benchmark: the same corpus (EVENTS generated events, seed 1)
# posted through clickagg's collector (CLIENTS requests of BATCH events in
# flight, each answered once committed) into one server and into local
# clusters (ZooKeeper and 18.16 nodes on this box, 3 s sessions), then
# questions over the last day timed uncached (median of 30). Every server
# shares this machine's cores, so the figures are CPU seconds per million
# events, per node and in all, rather than a speed-up. Usage:
#   benchmarks/cluster.sh [EVENTS]   (default 1000000; SHAPES="single 1x1 2x1 2x2")
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
shapes=${SHAPES:-"single 1x1 2x1 2x2"}
clients=${CLIENTS:-8}
batch=${BATCH:-5000}
listen=127.0.0.1:18082
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/ingestbench ./benchmarks/ingestbench
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
# median of the uncached answer time of a route, in ms
median() {
	for _ in $(seq 30); do
		curl -fsS -o /dev/null -H 'Cache-Control: no-cache' -w '%{time_total}\n' "http://$listen$1"
	done | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}'
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "command: benchmarks/cluster.sh $events (CLIENTS=$clients BATCH=$batch)"
echo
echo "| shape | nodes | events/s | ack p50 / p99 | ClickHouse CPU s per M events (all nodes) | per node | ZooKeeper | clickagg CPU s per M | top 100 by clicks, 24 h | group by country, format | one cell (US, banner) | hot ad per minute |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for shape in $shapes; do
	dir=$(mktemp -d /tmp/clickagg-bench-XXXXXX)
	export CLICKAGG_DATA_DIR=$dir
	if [ "$shape" = single ]; then
		bin/clickagg services up --no-install >/dev/null 2>&1
	else
		bin/clickagg services up --no-install --shards "${shape%x*}" --replicas "${shape#*x}" >/dev/null 2>&1
	fi
	bin/clickagg migrate up >/dev/null
	pids=$(cat "$dir"/clickhouse*.pid)
	zk=$(cat "$dir/zookeeper.pid" 2>/dev/null || true)
	bin/clickagg serve --listen "$listen" --no-reconcile --kafka-verify-every 0 2>"$dir/serve.log" &
	serve=$!
	for _ in $(seq 100); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
	declare -A c0=()
	for p in $pids $zk $serve; do c0[$p]=$(cpu "$p"); done
	out=$(bin/ingestbench --mode collector --events "$events" --target "http://$listen" --clients "$clients" --batch "$batch")
	ch=0
	for p in $pids; do ch=$(awk -v a="$ch" -v b="$(cpu "$p")" -v c="${c0[$p]}" 'BEGIN {print a + b - c}'); done
	zkcpu=-
	[ -n "$zk" ] && zkcpu=$(awk -v b="$(cpu "$zk")" -v c="${c0[$zk]}" -v e="$events" 'BEGIN {printf "%.1f", (b - c) / e * 1e6}')
	app=$(awk -v b="$(cpu "$serve")" -v c="${c0[$serve]}" -v e="$events" 'BEGIN {printf "%.1f", (b - c) / e * 1e6}')
	n=$(echo "$pids" | wc -w)
	rate=$(echo "$out" | awk -F'\t' '{print $4}')
	ack=$(echo "$out" | awk -F'\t' '{print $5 " / " $6}' | sed 's/ack p50 //; s/p99 //')
	top=$(median "/v1/ads/top?n=100&metric=clicks&window=1440m")
	grp=$(median "/v1/metrics?group_by=country,ad_format&window=1440m")
	cell=$(median "/v1/metrics/US/banner?window=1440m")
	hot=$(curl -fsS "http://$listen/v1/ads/top?n=1&metric=impressions&window=1440m" | grep -o '"ad_id":"[^"]*"' | head -1 | cut -d'"' -f4)
	series=$(median "/v1/ads/$hot/series?granularity=1m&window=1440m")
	echo "| $shape | $n | ${rate% events/s} | $ack | $(awk -v a="$ch" -v e="$events" 'BEGIN {printf "%.1f", a / e * 1e6}') | $(awk -v a="$ch" -v e="$events" -v n="$n" 'BEGIN {printf "%.1f", a / e * 1e6 / n}') | $zkcpu | $app | $top ms | $grp ms | $cell ms | $series ms |"
	kill "$serve"; wait "$serve" 2>/dev/null || true
	bin/clickagg services down >/dev/null 2>&1
	rm -rf "$dir"
done
