// Package prom exports clickagg's counters in Prometheus' format. Core
// packages know nothing of Prometheus: they report through their hook
// interfaces (ingestor.Hooks, cache.Hooks, queryapi.RequestObserver), and
// their running totals (Stats) are read at scrape time.
package prom

import (
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/kafka"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/reconcile"
)

// Sources are the running totals read at each scrape; any may be nil.
type Sources struct {
	Collector func() collector.Stats
	Ingestor  func() ingestor.Stats
	Dedup     func() dedup.Stats
	Cache     func() cache.Stats
	Reconcile func() *reconcile.Report
	KafkaLag  func() *kafka.Lag
	Drain     func() *kafkaengine.DrainStats
	// KafkaRestarts counts the engine restarts by serve's watchdog.
	KafkaRestarts func() int64
	// OpenConnections is the HTTP server's open client connections (each
	// holds a goroutine while open, so goroutines follow it under load).
	OpenConnections func() int
}

// Exporter holds clickagg's metrics. Its methods implement the hook
// interfaces of the core packages; they are safe for concurrent use.
type Exporter struct {
	reg   *prometheus.Registry
	src   *Sources
	rows  prometheus.Histogram
	flush *prometheus.HistogramVec
	http  *prometheus.HistogramVec
	query *prometheus.HistogramVec
	plans *prometheus.CounterVec

	// Refusals by the API's middleware, before the collector sees a
	// request; reported with the collector's own under one metric.
	mu      sync.Mutex
	refused map[string]*atomic.Int64
}

// New returns an Exporter with Go runtime and process metrics registered.
// src is read at each scrape; fill it before serving the Handler.
func New(src *Sources) *Exporter {
	e := &Exporter{
		reg: prometheus.NewRegistry(),
		src: src,
		rows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clickagg_ingest_block_rows",
			Help:    "Rows per INSERT block sent to ClickHouse.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 9), // 64 .. 4 M
		}),
		flush: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clickagg_ingest_flush_duration_seconds",
			Help:    "Time from a block's first INSERT attempt to its last answer, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms .. 41 s
		}, []string{"result"}),
		http: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clickagg_http_request_duration_seconds",
			Help:    "HTTP requests by route pattern, method and status code.",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
		query: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clickagg_query_duration_seconds",
			Help:    "Metric questions answered through the cache, by kind and cache outcome (a miss includes ClickHouse).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"kind", "cache"}),
		plans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clickagg_query_plan_pieces_total",
			Help: "Tables read to answer questions from ClickHouse, by kind of question and table: one per piece of each plan.",
		}, []string{"kind", "table"}),
		refused: make(map[string]*atomic.Int64),
	}
	e.reg.MustRegister(
		// The live heap as of the last GC, beside the memstats: unlike the
		// heap in use it does not swing with the GC cycle, so a leak shows
		// in it directly (benchmarks/soakwatch fits its slope).
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		e.rows, e.flush, e.http, e.query, e.plans,
		stats{e},
	)
	return e
}

// Handler serves the metrics.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{Registry: e.reg})
}

// OnFlush implements ingestor.Hooks.
func (e *Exporter) OnFlush(f ingestor.FlushInfo) {
	result := "ok"
	if f.Err != nil {
		result = "error"
	}
	e.rows.Observe(float64(f.Rows))
	e.flush.WithLabelValues(result).Observe(f.Duration.Seconds())
}

// OnLookup implements cache.Hooks.
func (e *Exporter) OnLookup(kind string, outcome cache.Outcome, d time.Duration) {
	e.query.WithLabelValues(kind, string(outcome)).Observe(d.Seconds())
}

// OnPlan implements chstore.Hooks.
func (e *Exporter) OnPlan(kind string, tables []string) {
	for _, t := range tables {
		e.plans.WithLabelValues(kind, t).Inc()
	}
}

// OnRequest implements queryapi.RequestObserver.
func (e *Exporter) OnRequest(route, method string, status int, d time.Duration) {
	e.http.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
}

// OnRefused implements queryapi.Hooks: an ingest request refused before the
// collector saw it (unauthorized, rate_limited, busy). Query routes'
// refusals show in the HTTP histogram by status code.
func (e *Exporter) OnRefused(class, reason string) {
	if class != "ingest" {
		return
	}
	e.mu.Lock()
	c := e.refused[reason]
	if c == nil {
		c = new(atomic.Int64)
		e.refused[reason] = c
	}
	e.mu.Unlock()
	c.Add(1)
}
