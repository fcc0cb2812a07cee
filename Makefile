# clickagg: two commands set everything up on a fresh Debian machine.
#   make run   install what is missing, start local ClickHouse and Redis in
#              ./.local, migrate, serve the collector and API with a built-in
#              traffic generator (Ctrl-C stops serve; services keep running)
#   make test  install what is missing, then the whole suite against real
#              servers that the tests start themselves
GO     ?= go
BIN    := bin/clickagg
RATE   ?= 5000
LISTEN ?= 127.0.0.1:8080
# A count, not a duration: -fuzztime with a duration can fail with a bare
# "context deadline exceeded" at its end on go1.26 (golang/go#75804).
FUZZTIME ?= 300000x

.PHONY: all build run run-cluster cluster-down run-several bench-cluster services-up services-down services-status migrate test test-short fuzz bench-query bench-go bench-go-baseline bench-kafka bench-ingest bench-profile bench-http bench bench-quick clean bench-soak screenshots

all: build

build:
	$(GO) build -o $(BIN) ./cmd/clickagg

services-up: build
	$(BIN) services up

services-down: build
	$(BIN) services down

services-status: build
	$(BIN) services status

migrate: services-up
	$(BIN) migrate up

run: migrate
	$(BIN) serve --listen $(LISTEN) --generate-rate $(RATE)

# The same on a local cluster: ZooKeeper and 2 shards x 2 replicas of
# ClickHouse 18.16 in ./.local/cluster (its own data directory, so it
# lives beside make run's single server).
CLUSTER_DIR ?= .local/cluster
run-cluster: build
	CLICKAGG_DATA_DIR=$(CLUSTER_DIR) $(BIN) services up --shards 2 --replicas 2
	CLICKAGG_DATA_DIR=$(CLUSTER_DIR) $(BIN) migrate up
	CLICKAGG_DATA_DIR=$(CLUSTER_DIR) $(BIN) serve --listen $(LISTEN) --generate-rate $(RATE)

cluster-down: build
	CLICKAGG_DATA_DIR=$(CLUSTER_DIR) $(BIN) services down

# Two instances on one database with the shared duplicate check and one
# lease for the scheduled work (README, "Several instances"): the first on
# LISTEN, the second on a port chosen for it (its banner names it), each
# generating half of RATE to itself; database clickagg_several and Redis
# database 2, apart from make run's. Ctrl-C stops both.
SEVERAL := --clickhouse-database clickagg_several --redis-db 2 --dedup-shared
run-several: services-up
	$(BIN) migrate up --clickhouse-database clickagg_several
	$(BIN) serve $(SEVERAL) --listen 127.0.0.1:0 --generate-rate $$(( $(RATE) / 2 )) & \
	second=$$!; trap 'kill $$second 2>/dev/null; wait $$second' EXIT INT TERM; \
	$(BIN) serve $(SEVERAL) --listen $(LISTEN) --generate-rate $$(( $(RATE) / 2 ))

# CLICKAGG_E2E=1: a test that cannot start its servers fails instead of skipping.
# The fault tests run alone: their 60 s overload keeps both cores busy.
test: build
	$(BIN) services install
	$(GO) vet ./...
	CLICKAGG_E2E=1 $(GO) test -count=1 -timeout 15m -skip '^TestFault' ./...
	CLICKAGG_E2E=1 $(GO) test -count=1 -timeout 10m -run '^TestFault' ./e2e
	CLICKAGG_E2E=1 $(GO) test -count=1 -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./eventjson
	CLICKAGG_E2E=1 $(GO) test -count=1 -run '^$$' -fuzz '^FuzzMetricsOne$$' -fuzztime 10000x ./queryapi
	CLICKAGG_E2E=1 $(GO) test -count=1 -run '^$$' -fuzz '^FuzzMetricsGrouped$$' -fuzztime 10000x ./queryapi
	CLICKAGG_E2E=1 $(GO) test -count=1 -run '^$$' -fuzz '^FuzzSeries$$' -fuzztime 10000x ./queryapi
	CLICKAGG_E2E=1 $(GO) test -count=1 -run '^$$' -fuzz '^FuzzTop$$' -fuzztime 10000x ./queryapi

test-short:
	$(GO) test -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 2m ./eventjson

# The README's pictures of the console, taken by its browser tests
# (chromium is installed when missing).
screenshots:
	CLICKAGG_E2E=1 CLICKAGG_SCREENSHOTS=$(CURDIR)/console/screenshots $(GO) test -count=1 -run '^TestBrowser(Dashboard|Docs)$$' ./e2e

# Benchmarks: figures come from these, never from timed tests.
EVENTS ?= 10000000
bench-query:
	benchmarks/query.sh $(EVENTS)

# In-process benchmarks, 10 runs, compared by benchstat with the committed
# baseline (benchmarks/go-baseline.txt); `make bench-go-baseline` replaces it.
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
bench-go: build
	$(BIN) services install
	CLICKAGG_E2E=1 $(GO) test -run '^$$' -bench . -benchmem -count 10 ./ingestor ./generator | tee benchmarks/go-latest.txt
	if [ -f benchmarks/go-baseline.txt ]; then $(BENCHSTAT) benchmarks/go-baseline.txt benchmarks/go-latest.txt; else $(BENCHSTAT) benchmarks/go-latest.txt; fi

bench-go-baseline: bench-go
	cp benchmarks/go-latest.txt benchmarks/go-baseline.txt

# Ingest end to end, the peers side by side on the same corpus (INGEST_EVENTS,
# default 2 M): clickhouse-client's loader, clickhouse-go batches, JSONEachRow
# straight to ClickHouse's HTTP interface, the same into a Buffer table, and
# clickagg's collector, at each client pattern of PATTERNS (default
# "8x5000 64x500"; EVENTS_HTTP for a smaller corpus for the direct peers).
INGEST_EVENTS ?= 2000000
bench-ingest:
	benchmarks/ingest.sh $(INGEST_EVENTS)

# Where serve's CPU goes under the 64 x 500 collector load: a pprof CPU
# profile sorted into groups, in µs per event (benchmarks/profile.sh).
bench-profile:
	benchmarks/profile.sh $(INGEST_EVENTS)

# HTTP throughput with wrk: the cached metrics endpoint and the collector.
HTTP_SECONDS ?= 15
bench-http:
	command -v wrk >/dev/null || apt-get install -y wrk || sudo apt-get install -y wrk
	benchmarks/http.sh $(HTTP_SECONDS)

# Ingest and questions on one server and on local clusters (1x1, 2x1, 2x2).
CLUSTER_EVENTS ?= 1000000
bench-cluster: build
	benchmarks/cluster.sh $(CLUSTER_EVENTS)

# Every benchmark, full size (about 10 minutes), or small for development.
bench: bench-go bench-ingest bench-query bench-http bench-kafka
bench-quick:
	$(MAKE) bench-ingest INGEST_EVENTS=200000
	$(MAKE) bench-query EVENTS=200000
	$(MAKE) bench-http HTTP_SECONDS=5
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./ingestor ./generator

# Kafka through ClickHouse's engine (kfake broker in process): messages/s
# into the aggregates, and produce → visible in the API.
bench-kafka: build
	$(BIN) services install
	CLICKAGG_E2E=1 $(GO) test -run '^$$' -bench . -benchtime 3x -count 3 ./kafkaengine

clean:
	rm -rf bin

# Soak: 70 % of SUSTAINABLE (default 140000) events/s for SOAK_DURATION
# (default 1h), serve's RSS and goroutines sampled every 10 s; the verdict
# is their slope over the second half. Quick: make bench-soak SOAK_DURATION=60s
bench-soak:
	benchmarks/soak.sh
