#!/usr/bin/env bash
# Where clickagg's CPU goes under ingest load: serve on a fresh database with
# --debug-listen, the generated corpus posted by ingestbench's collector
# mode (CLIENTS x BATCH, default 64 x 500), a CPU profile of PROFILE_SECONDS (10)
# taken 3 s into the load, then the samples sorted into disjoint groups by
# the first matching frame (pprof -focus/-ignore, in the order below) and
# scaled to the whole run's CPU per event from /proc. Usage:
#   benchmarks/profile.sh [EVENTS]   (default 2000000; SERVE_FLAGS for serve)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
clients=${CLIENTS:-64}
batch=${BATCH:-500}
db=clickagg_bench_profile
listen=127.0.0.1:18083
debug=127.0.0.1:18084
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/ingestbench ./benchmarks/ingestbench
bin/clickagg services up >/dev/null
eval "$(bin/clickagg services status)"
out=$(mktemp -d)
curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $db"
bin/clickagg migrate up --clickhouse-database "$db" >/dev/null
bin/clickagg serve --listen "$listen" --debug-listen "$debug" --clickhouse-database "$db" --no-reconcile \
	--kafka-verify-every 0 ${SERVE_FLAGS:-} 2>"$out/serve.log" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null || true; curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $db" || true; rm -rf "$out"' EXIT
for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
s0=$(cpu "$serve")
(sleep 3; curl -fsS "http://$debug/debug/pprof/profile?seconds=${PROFILE_SECONDS:-10}" -o "$out/cpu.pprof") &
prof=$!
bin/ingestbench --mode collector --events "$events" --target "http://$listen" --clients "$clients" --batch "$batch" --pid "$serve"
wait "$prof"
perevent=$(awk -v a="$s0" -v b="$(cpu "$serve")" -v n="$events" 'BEGIN { printf "%.3f", (b - a) / n * 1e6 }')
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC')"
echo "clickagg: $perevent CPU µs per event over the run (profiler on)"
# ms of samples matching pprof's filter arguments
sum() { go tool pprof -top -unit=ms -nodecount=1000000 -nodefraction=0 -edgefraction=0 "$@" bin/clickagg "$out/cpu.pprof" 2>/dev/null |
	awk '/Showing nodes accounting for/ { v = $5; gsub("ms,?", "", v); print v + 0 }'; }
total=$(sum)
echo "| where | share | µs per event |"
echo "|---|---|---|"
row() { awk -v name="$1" -v v="$2" -v t="$total" -v e="$perevent" 'BEGIN { printf "| %s | %.0f %% | %.2f |\n", name, v / t * 100, v / t * e }'; }
rest=$total prev=
while IFS='=' read -r name re; do
	if [ -n "$prev" ]; then v=$(sum -focus="$re" -ignore="$prev"); prev="$prev|$re"; else v=$(sum -focus="$re"); prev=$re; fi
	rest=$(awk -v a="$rest" -v b="$v" 'BEGIN { print a - b }')
	row "$name" "$v"
done <<'GROUPS'
LZ4 compression of blocks=lz4
JSON decode, validation, column append (eventjson and the collector's callback)=eventjson
dedup set (check, settle)=clickagg/dedup
rows copied into the shared block=ingestor.\(\*Rows\)|ingestor.\(\*Ingestor\).Enqueue
INSERT to ClickHouse (HTTP client, Native encode)=ingestor.\(\*Ingestor\).send|net/http|EncodeNative|EncodeRawBlock
cache invalidation for late events (Redis)=MarkChanged|go-redis
garbage collector=gcBgMarkWorker|gcAssist
GROUPS
row "the rest: HTTP server, reading bodies, answers, scheduler" "$rest"
