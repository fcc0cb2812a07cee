package main

import (
	"context"
	"log/slog"
	"time"

	agg "github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/cache"
	"github.com/clickagg/clickagg/chstore"
)

// pastMarker tells the cache which hours late events changed, so answers
// about them computed earlier are not served for their long TTL.
type pastMarker struct {
	cache *cache.Cache
	log   *slog.Logger
}

func (m pastMarker) OnPastCommitted(hours []time.Time) {
	rngs := make([]agg.Range, len(hours))
	for i, h := range hours {
		rngs[i] = agg.Range{From: h, To: h.Add(time.Hour)}
	}
	m.changed(rngs...)
}

// changed marks ranges whose numbers changed (late events, corrections).
func (m pastMarker) changed(rngs ...agg.Range) {
	if err := m.cache.MarkChanged(context.Background(), rngs...); err != nil {
		m.log.Warn("changed numbers: cached answers about them may stay stale until their TTL", "ranges", len(rngs), "err", err)
	}
}

type janitorOptions struct {
	dedupHorizon        time.Duration
	deadLetterRetention time.Duration
	kafkaInboxRetention time.Duration
	// inboxWatermark is how far kafka_inbox is drained: nothing newer goes.
	inboxWatermark func() time.Time
}

// runJanitor drops expired partitions every 10 minutes: retention without
// TTL, which ClickHouse 18.16 lacks.
func runJanitor(ctx context.Context, store *chstore.Store, o janitorOptions, log *slog.Logger) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		now := time.Now()
		inbox := now.Add(-o.kafkaInboxRetention)
		if o.inboxWatermark != nil {
			inbox = minTime(inbox, o.inboxWatermark())
		}
		for _, t := range []struct {
			table  string
			cutoff time.Time
		}{
			{"recent_event_ids", now.Add(-o.dedupHorizon - time.Hour)},
			{"dead_letters", now.Add(-o.deadLetterRetention)},
			{"kafka_inbox", inbox},
			{"kafka_inbox_progress", inbox},
		} {
			dropped, err := store.DropPartitionsBefore(ctx, t.table, t.cutoff)
			if err != nil && ctx.Err() == nil {
				log.Warn("retention", "table", t.table, "err", err)
			} else if len(dropped) > 0 {
				log.Info("retention dropped partitions", "table", t.table, "partitions", dropped)
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
