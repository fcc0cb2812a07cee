package prom

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dRequests      = desc("clickagg_ingest_requests_total", "Ingest requests the collector handled.")
	dRefused       = desc("clickagg_ingest_requests_refused_total", "Ingest requests answered without taking their events, by reason (shed: 503 for lack of room or ClickHouse, bad_body: 400/413, failed: 500, unauthorized, rate_limited, busy).", "reason")
	dEvents        = desc("clickagg_ingest_events_total", "Events by outcome: accepted (committed), duplicate (already counted), rejected (to dead_letters).", "outcome")
	dRejected      = desc("clickagg_ingest_rejected_events_total", "Rejected events by reason.", "reason")
	dBuffered      = desc("clickagg_ingest_buffered_rows", "Rows accepted by the ingestor and not yet committed or failed (queue depth).")
	dCommitted     = desc("clickagg_ingest_committed_rows_total", "Rows committed to ClickHouse.")
	dFailed        = desc("clickagg_ingest_failed_rows_total", "Rows whose INSERT failed for good (their requests got 503 or 500).")
	dRetries       = desc("clickagg_clickhouse_insert_retries_total", "INSERT attempts retried after a temporary failure.")
	dCHErrors      = desc("clickagg_clickhouse_errors_total", "Errors from ClickHouse: failed blocks on the insert path, failed drains of kafka_inbox.", "path")
	dRecovered     = desc("clickagg_clickhouse_recovered_blocks_total", "Blocks whose INSERT answer was lost and which are in the table once: found committed, or on a cluster sent again as they were and deduplicated.")
	dHitRatio      = desc("clickagg_cache_hit_ratio", "Cache hits / (hits + misses) since start.")
	dCacheLookups  = desc("clickagg_cache_lookups_total", "Cache lookups by outcome.", "outcome")
	dRedisErrors   = desc("clickagg_redis_errors_total", "Failed or timed-out Redis calls and unreadable entries (answered from ClickHouse instead).")
	dDrift         = desc("clickagg_reconcile_drift_rows", "Keys whose counts differed from the raw events in the last reconciliation, per aggregate table.", "table")
	dReconcileLast = desc("clickagg_reconcile_last_run_timestamp_seconds", "When the last reconciliation finished.")
	dReconcileErr  = desc("clickagg_reconcile_last_run_failed", "1 when the last reconciliation failed.")
	dKafkaLag      = desc("clickagg_kafka_lag_messages", "Messages written to the topic and not yet committed by ClickHouse's consumer group.", "topic", "partition")
	dDrained       = desc("clickagg_kafka_drained_messages_total", "Messages drained from kafka_inbox through the collector.")
	dKafkaRestarts = desc("clickagg_kafka_engine_restarts_total", "Restarts of ClickHouse's Kafka consumer by the watchdog (the group had lag and committed nothing for --kafka-restart-after).")
	dDrainPending  = desc("clickagg_kafka_inbox_pending_rows", "Rows in kafka_inbox not yet drained.")
	dDedupIDs      = desc("clickagg_dedup_ids", "Event ids remembered for immediate deduplication.")
	dOpenConns     = desc("clickagg_http_open_connections", "Client connections the API's HTTP server holds open (one goroutine each while open).")
	dDedupHorizon  = desc("clickagg_dedup_horizon_seconds", "Span the dedup set actually covers (below the configured horizon when its entry cap forced ids out).")
)

// stats reads the Sources at scrape time.
type stats struct{ e *Exporter }

func (s stats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRequests, dRefused, dEvents, dRejected, dBuffered, dCommitted, dFailed,
		dRetries, dCHErrors, dRecovered, dHitRatio, dCacheLookups, dRedisErrors, dDrift, dReconcileLast, dReconcileErr,
		dKafkaLag, dKafkaRestarts, dDrained, dDrainPending, dDedupIDs, dDedupHorizon, dOpenConns} {
		ch <- d
	}
}

func (s stats) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	src := s.e.src
	refused := map[string]int64{}
	s.e.mu.Lock()
	for reason, n := range s.e.refused {
		refused[reason] = n.Load()
	}
	s.e.mu.Unlock()
	if src.Collector != nil {
		st := src.Collector()
		counter(dRequests, st.Requests)
		refused["shed"] += st.Shed
		refused["bad_body"] += st.BadBodies
		refused["failed"] += st.Failed
		counter(dEvents, st.Accepted, "accepted")
		counter(dEvents, st.Duplicates, "duplicate")
		counter(dEvents, st.Rejected, "rejected")
		for reason, n := range st.ByReason {
			counter(dRejected, n, reason)
		}
	}
	for reason, n := range refused {
		counter(dRefused, n, reason)
	}
	var chErrors int64
	if src.Ingestor != nil {
		st := src.Ingestor()
		gauge(dBuffered, float64(st.BufferedRows))
		counter(dCommitted, st.CommittedRows)
		counter(dFailed, st.FailedRows)
		counter(dRetries, st.Retries)
		counter(dRecovered, st.Recovered)
		chErrors = st.FailedBlocks
		counter(dCHErrors, chErrors, "insert")
	}
	if src.Cache != nil {
		st := src.Cache()
		gauge(dHitRatio, st.HitRatio)
		counter(dCacheLookups, st.Hits, "hit")
		counter(dCacheLookups, st.Misses, "miss")
		counter(dCacheLookups, st.Errors, "error")
		counter(dRedisErrors, st.Errors)
	}
	if src.Reconcile != nil {
		if r := src.Reconcile(); r != nil {
			for _, t := range r.Tables {
				gauge(dDrift, float64(t.Rows), t.Table)
			}
			gauge(dReconcileLast, float64(r.FinishedAt.UnixNano())/1e9)
			failed := 0.0
			if r.Err != "" {
				failed = 1
			}
			gauge(dReconcileErr, failed)
		}
	}
	if src.KafkaLag != nil {
		if l := src.KafkaLag(); l != nil {
			for _, p := range l.Partitions {
				gauge(dKafkaLag, float64(p.Lag), l.Topic, strconv.Itoa(int(p.Partition)))
			}
		}
	}
	if src.KafkaRestarts != nil {
		counter(dKafkaRestarts, src.KafkaRestarts())
	}
	if src.OpenConnections != nil {
		gauge(dOpenConns, float64(src.OpenConnections()))
	}
	if src.Drain != nil {
		if d := src.Drain(); d != nil {
			counter(dDrained, d.Drained)
			gauge(dDrainPending, float64(d.PendingRows))
			counter(dCHErrors, d.Errors, "kafka_drain")
		}
	}
	if src.Dedup != nil {
		st := src.Dedup()
		gauge(dDedupIDs, float64(st.Entries))
		gauge(dDedupHorizon, st.HorizonSeconds)
	}
}
