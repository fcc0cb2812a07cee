package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
)

// pastMarker tells the cache which hours late events changed, so answers
// about them computed earlier are not served for their long TTL.
type pastMarker struct {
	cache *cache.Cache
	log   *slog.Logger
}

func (m pastMarker) OnPastCommitted(hours []time.Time) {
	rngs := make([]clickagg.Range, len(hours))
	for i, h := range hours {
		rngs[i] = clickagg.Range{From: h, To: h.Add(time.Hour)}
	}
	m.changed(rngs...)
}

// changed marks ranges whose numbers changed (late events, corrections).
func (m pastMarker) changed(rngs ...clickagg.Range) {
	if err := m.cache.MarkChanged(context.Background(), rngs...); err != nil {
		m.log.Warn("changed numbers: cached answers about them may stay stale until their TTL", "ranges", len(rngs), "err", err)
	}
}

// runJanitor drops expired partitions every 10 minutes: retention without
// TTL, which ClickHouse 18.16 lacks. kafka_inbox keeps what the drain has
// not passed yet, whatever its age.
func (s *Server) runJanitor(ctx context.Context) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		now := time.Now()
		inbox := minTime(now.Add(-s.cfg.Kafka.InboxRetention), s.drain.Stats().Watermark)
		for _, t := range []struct {
			table  string
			cutoff time.Time
		}{
			{"recent_event_ids", now.Add(-s.cfg.Dedup.Horizon - time.Hour)},
			{"dead_letters", now.Add(-s.cfg.DeadLetterRetention)},
			{"kafka_inbox", inbox},
			{"kafka_inbox_progress", inbox},
		} {
			dropped, err := s.store.DropPartitionsBefore(ctx, t.table, t.cutoff)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("retention", "table", t.table, "err", err)
			} else if len(dropped) > 0 {
				s.log.Info("retention dropped partitions", "table", t.table, "partitions", dropped)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
