package server

import (
	"github.com/clickagg/clickagg/collector"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/kafkaengine"
	"github.com/clickagg/clickagg/reconcile"
)

// IngestStatus is GET /v1/ingest/status: where every event went.
type IngestStatus struct {
	Collector collector.Stats   `json:"collector"`
	Ingestor  ingestor.Stats    `json:"ingestor"`
	Dedup     dedup.Stats       `json:"dedup"`
	Kafka     kafkaengine.State `json:"kafka"`
}

// IngestStatus reports the running totals.
func (s *Server) IngestStatus() IngestStatus {
	k := s.monitor.Last()
	ds := s.drain.Stats()
	k.Drain = &ds
	k.Verify = s.verifier.Last()
	return IngestStatus{Collector: s.col.Stats(), Ingestor: s.in.Stats(), Dedup: s.seen.Stats(), Kafka: k}
}

// ReconcileStatus is GET /v1/reconcile/status.
type ReconcileStatus struct {
	Enabled bool              `json:"enabled"`
	Last    *reconcile.Report `json:"last"` // null before the first run
}

// ReconcileStatus reports the last scheduled reconciliation.
func (s *Server) ReconcileStatus() ReconcileStatus {
	if s.sched == nil {
		return ReconcileStatus{}
	}
	return ReconcileStatus{Enabled: true, Last: s.sched.Last()}
}
