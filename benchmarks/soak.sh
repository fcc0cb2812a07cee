#!/usr/bin/env bash
# Soak: clickagg serve under a fixed open-loop load for an hour, its
# memory and goroutines sampled every SOAK_EVERY (10s); flat is the bar,
# judged over the second half. An hour, because ClickHouse on the same
# cores needs 20-30 minutes to reach its steady merge load (rows merged
# per row inserted climb from 13 to 21), and clickagg's memory follows the
# work in flight: shorter runs measure that warm-up (benchmarks/README.md).
# The load is 70 % of SUSTAINABLE (events/s this box sustains; default
# 140000, from short runs into an empty table: over a 20-minute closed
# loop the 2-core dev box sustains 115k, so the default 98000 is 85 % of
# that, harsher than 70 %) unless RATE is given, from `clickagg generate`
# in its own process so that its memory is not counted. Usage:
#   benchmarks/soak.sh                      (an hour at 98000 ev/s)
#   SOAK_DURATION=60s benchmarks/soak.sh    (quick mode)
#   RATE=5000 SOAK_DURATION=90s benchmarks/soak.sh
#   RATE=-1 SOAK_DURATION=20m benchmarks/soak.sh   (closed loop: the
#     accepted rate over the second half is SUSTAINABLE for this box)
# Also: BATCH (5000) and CONCURRENCY (32) of the generator, SOAK_STRICT=1
# to exit non-zero unless flat, SERVE_FLAGS for serve (they come last and
# win), DEDUP_HORIZON (30s, see below).
set -euo pipefail
cd "$(dirname "$0")/.."
sustainable=${SUSTAINABLE:-140000}
rate=${RATE:-$((sustainable * 70 / 100))}
duration=${SOAK_DURATION:-${DURATION:-1h}}
every=${SOAK_EVERY:-10s}
# Acks wait for the commit (linger + INSERT, a few hundred ms), so the
# events in flight must cover rate x ack latency or the load closes its loop.
batch=${BATCH:-5000}
concurrency=${CONCURRENCY:-32}
# The dedup set grows by design until its horizon (2 h, or its 200 M id
# cap: about 2 GiB), which no soak of minutes reaches; a short horizon
# brings it to steady state early, so what still grows is a leak.
dedup_horizon=${DEDUP_HORIZON:-30s}
db=clickagg_soak
mkdir -p benchmarks/out
go build -o bin/clickagg ./cmd/clickagg
go build -o bin/soakwatch ./benchmarks/soakwatch
bin/clickagg services up >/dev/null
eval "$(bin/clickagg services status)"
curl -fsS "$CLICKAGG_CLICKHOUSE_HTTP/" --data-binary "DROP DATABASE IF EXISTS $db"
bin/clickagg migrate up --clickhouse-database "$db" >/dev/null
listen=127.0.0.1:$(bin/soakwatch --free-port)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "command: benchmarks/soak.sh (rate $rate ev/s, duration $duration, every $every, batch $batch, concurrency $concurrency, dedup horizon $dedup_horizon)"

# No pprof listener, and no tokens: the watcher reads /metrics unauthenticated.
env -u CLICKAGG_QUERY_TOKENS -u CLICKAGG_QUERY_TOKENS_FILE -u CLICKAGG_INGEST_TOKENS -u CLICKAGG_INGEST_TOKENS_FILE \
	bin/clickagg serve --listen "$listen" --clickhouse-database "$db" --debug-listen "" \
	--no-reconcile --kafka-verify-every 0 --dedup-horizon "$dedup_horizon" ${SERVE_FLAGS:-} 2>benchmarks/out/soak-serve.log &
serve=$!
gen=
trap 'kill $gen $serve 2>/dev/null; wait $gen $serve 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://$listen/readyz" >/dev/null && break; sleep 0.2; done
curl -fs "http://$listen/readyz" >/dev/null || { echo "serve did not become ready; see benchmarks/out/soak-serve.log" >&2; exit 1; }

env -u CLICKAGG_INGEST_TOKENS bin/clickagg generate --target "http://$listen" --rate "$rate" --duration "$duration" \
	--batch "$batch" --concurrency "$concurrency" --bad-share 0 >benchmarks/out/soak-generate.txt 2>benchmarks/out/soak-generate.log &
gen=$!
strict=
[ "${SOAK_STRICT:-0}" = 1 ] && strict=--strict
set +e
bin/soakwatch --pid "$serve" --url "http://$listen" --every "$every" --duration "$duration" --settle 60s --clickhouse "$CLICKAGG_CLICKHOUSE_HTTP" $strict
verdict=$?
set -e
wait "$gen" || true
gen=
echo "generator: $(cat benchmarks/out/soak-generate.txt)"
exit "$verdict"
