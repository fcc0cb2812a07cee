#!/usr/bin/env bash
# Ingest benchmark, end to end: the same generated corpus (EVENTS events,
# seed 1, 10 000 Zipf ads) loaded into a fresh database with every
# materialized view by five peers side by side:
#   loader     ClickHouse's own loader (clickhouse-client, JSONEachRow), one INSERT;
#   go         clickhouse-go/v2 columnar batches of GO_BATCH rows (default
#              1048576), one after another;
#   http       the collector's client pattern straight to ClickHouse's HTTP
#              interface (INSERT INTO events FORMAT JSONEachRow, the loader's
#              rows), a failed request tried again after 100 ms, at most 20 times;
#   buffer     the same into a Buffer table in front of events;
#   collector  clickagg's collector (POST /v1/events, answered once committed).
# loader and go do not depend on the client pattern and run once; the others
# run once per pattern of PATTERNS (clients x events per request, each client
# waiting for its answer; default "8x5000 64x500"). EVENTS_HTTP (default
# EVENTS) is the corpus of http and buffer, slow at small requests. Prints one
# markdown table per pattern at the end. Usage:
#   benchmarks/ingest.sh [EVENTS]     (default 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
events_http=${EVENTS_HTTP:-$events}
patterns=${PATTERNS:-"8x5000 64x500"}
go_batch=${GO_BATCH:-1048576}
listen=127.0.0.1:18081
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/ingestbench ./benchmarks/ingestbench
bin/clickagg services up >/dev/null
eval "$(bin/clickagg services status)"
chpid=$(cat "${CLICKAGG_DATA_DIR:-.local}/clickhouse.pid")
tmp=$(mktemp -d)
serve=
stop_serve() { [ -z "$serve" ] || { kill "$serve" 2>/dev/null || true; wait "$serve" 2>/dev/null || true; serve=; }; }
trap 'stop_serve; rm -rf "$tmp"' EXIT
declare -A row=() notes=()
note() { notes[$1]+="- $2"$'\n'; }

q() { curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "$1"; }
fresh() {
	q "DROP DATABASE IF EXISTS $1"
	bin/clickagg migrate up --clickhouse-database "$1" >/dev/null
}
# CPU seconds a process used so far (user + system).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$1/stat"; }
# CPU seconds per million events: from $1 to $2 for $3 events.
per_million() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }'; }
# The value of a "name value" line of an ingestbench --result file.
val() { awk -v k="$2" '$1 == k { sub(/^[^ ]+ /, ""); print }' "$1"; }
# Level-0 parts written so far into database $1, in events and in all its
# tables: each table's highest block number, as a MergeTree numbers every
# inserted part and a merge keeps its sources' range. 18.16 counts no parts
# in system.events and the services' config has no system.part_log.
parts() {
	q "SELECT sumIf(m, table = 'events'), sum(m) FROM (SELECT table, max(max_block_number) AS m
		FROM system.parts WHERE database = '$1' GROUP BY table) FORMAT TSV"
}
# "yes" when database $1's events (not marked duplicate) and the events
# counted in ad_stats_minute both number $2; both figures in brackets.
exact() {
	local got
	got=$(q "SELECT (SELECT count() FROM $1.events WHERE duplicate = 0),
		(SELECT sum(impressions + clicks + conversions) FROM $1.ad_stats_minute) FORMAT TSV")
	awk -v n="$2" '{ printf "%s (%s / %s)", ($1 == n && $2 == n) ? "yes" : "no", $1, $2 }' <<<"$got"
}
# Empties database $1's Buffer table into events (OPTIMIZE flushes a Buffer
# table on 18.16) and prints the seconds it took. A flush events refuses
# goes back into the buffer and is retried in the background: wait for that
# up to 300 s.
flush() {
	local t0 left end=$((SECONDS + 300))
	t0=$(date +%s.%N)
	curl -sS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "OPTIMIZE TABLE $1.events_buffer" >&2
	while :; do
		# a Buffer table reads its buffer and its destination
		left=$(q "SELECT (SELECT count() FROM $1.events_buffer) - (SELECT count() FROM $1.events)")
		[ "$left" != 0 ] && [ $SECONDS -lt $end ] || break
		sleep 0.1
	done
	awk -v a="$t0" -v b="$(date +%s.%N)" -v left="$left" \
		'BEGIN { printf "%.1f s%s", b - a, left == 0 ? "" : ", " left " rows still buffered" }'
}
# run KEY PEER DB N APP INGESTBENCH-ARGS...: loads N events into DB with
# ingestbench and sets row[KEY] (and its notes) from its figures, the
# server's CPU, the parts and the exactness. APP is the pid whose CPU is the
# client's (clickagg serve); without one it is ingestbench's own.
run() {
	local key=$1 peer=$2 db=$3 n=$4 app=$5 res=$tmp/result p0 p1 c0 a0 ch client written
	shift 5
	p0=$(parts "$db")
	c0=$(cpu "$chpid")
	[ -z "$app" ] || a0=$(cpu "$app")
	bin/ingestbench --events "$n" --result "$res" "$@"
	[ "$peer" != buffer ] || note "$key" "buffer: flush wait after the last answer $(flush "$db")"
	ch=$(per_million "$c0" "$(cpu "$chpid")" "$n")
	if [ -n "$app" ]; then client=$(per_million "$a0" "$(cpu "$app")" "$n"); else client=$(per_million 0 "$(val "$res" cpu)" "$n"); fi
	p1=$(parts "$db")
	written=$(awk -v a="$p0" -v b="$p1" 'BEGIN { split(a, x, "\t"); split(b, y, "\t"); printf "%d / %d", y[1] - x[1], y[2] - x[2] }')
	row[$key]="| $peer | $n | $(val "$res" rate) | $(val "$res" p50) | $(val "$res" p99) | $ch | $client | $written | $(val "$res" retries) ($(val "$res" given_up)) | $(exact "$db" "$n") |"
	while read -r f; do note "$key" "$peer answers: $f"; done < <(val "$res" failure)
	stop_serve # before its database goes
	q "DROP DATABASE $db"
}

header="Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u '+%F %H:%M UTC'); ClickHouse $(q 'SELECT version()').
Command: \`PATTERNS=\"$patterns\" EVENTS_HTTP=$events_http GO_BATCH=$go_batch benchmarks/ingest.sh $events\`${SERVE_FLAGS:+ (SERVE_FLAGS=\"$SERVE_FLAGS\")}."
echo "$header"
echo

fresh clickagg_bench_loader
run loader loader clickagg_bench_loader "$events" "" --mode loader \
	--clickhouse-client "clickhouse-client --host ${CLICKAGG_CLICKHOUSE_NATIVE%:*} --port ${CLICKAGG_CLICKHOUSE_NATIVE##*:} --database clickagg_bench_loader"
fresh clickagg_bench_go
run go go clickagg_bench_go "$events" "" --mode go --clickhouse-native "$CLICKAGG_CLICKHOUSE_NATIVE" --database clickagg_bench_go --go-batch "$go_batch"
for p in $patterns; do
	set -- --clients "${p%x*}" --batch "${p#*x}"
	db=clickagg_bench_http_$p
	fresh "$db"
	run "http $p" http "$db" "$events_http" "" --mode http --clickhouse-http "$CLICKAGG_CLICKHOUSE_HTTP" --database "$db" "$@"
	db=clickagg_bench_buffer_$p
	fresh "$db"
	# The Buffer engine documentation's example thresholds: 16 layers, each
	# flushed when 10 s, 10 000 rows and 10 MB are all reached, or 100 s,
	# 1 000 000 rows or 100 MB is.
	q "CREATE TABLE $db.events_buffer AS $db.events ENGINE = Buffer($db, events, 16, 10, 100, 10000, 1000000, 10000000, 100000000)"
	run "buffer $p" buffer "$db" "$events_http" "" --mode http --clickhouse-http "$CLICKAGG_CLICKHOUSE_HTTP" --database "$db" --table events_buffer "$@"
	db=clickagg_bench_collector_$p
	fresh "$db"
	bin/clickagg serve --listen "$listen" --clickhouse-database "$db" --no-reconcile \
		--kafka-verify-every 0 ${SERVE_FLAGS:-} 2>benchmarks/ingest-serve.log &
	serve=$!
	for _ in $(seq 50); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
	run "collector $p" collector "$db" "$events" "$serve" --mode collector --target "http://$listen" --pid "$serve" "$@"
done

echo
echo "---- for benchmarks/README.md ----"
echo
echo "$header"
for p in $patterns; do
	echo
	echo "**${p%x*} clients × ${p#*x} events per request** (loader and go: the same run in every table)"
	echo
	echo "| peer | events | events/s | ack p50 ms | ack p99 ms | ClickHouse CPU s per M events | client CPU s per M events | parts written: events / all tables | retries (given up) | exact: events / ad_stats_minute |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for k in loader go "http $p" "buffer $p" "collector $p"; do echo "${row[$k]}"; done
	for k in "http $p" "buffer $p" "collector $p"; do printf '%s' "${notes[$k]:-}"; done
done
cat <<'EOF'

events/s: events in requests answered 200 (all but those given up) ÷ time
until the last answer; for buffer that is the acknowledged load into memory,
its wait for the flush into events is the note below its table. Ack: each
request's answered attempt; failed attempts are the retries (a request is
given up after 20). ClickHouse CPU: the whole server process (user + system)
from before the load to the last answer (buffer: to the end of the flush):
anything else it serves meanwhile counts, merges still running then do not.
Client CPU: clickhouse-client (loader), ingestbench's timed part with the
rows already converted (go, http, buffer), clickagg serve (collector). Parts:
the level-0 parts inserts and Buffer flushes wrote, in events and in all
tables (events and every view's). Exact: events not marked duplicate in
events and events counted in ad_stats_minute, both equal to the corpus.
EOF
