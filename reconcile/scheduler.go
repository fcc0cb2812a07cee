package reconcile

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/clickagg/clickagg"
)

// SchedulerOptions configures a Scheduler. The zero value works.
type SchedulerOptions struct {
	Every    time.Duration // between runs; default 1 h
	Lookback time.Duration // each run reconciles [now-Lookback, now-Settle) in whole minutes; default 3 h
	Settle   time.Duration // recent minutes left alone while they still receive events; default 5 min
	NoDaily  bool          // skip the daily run over whole previous UTC days
	// DailyDays is how many previous UTC days the daily run reconciles, one
	// day per statement; default 7, the allowed lateness: a resend the
	// immediate dedup missed is removed within a day wherever its event
	// time falls in that span.
	DailyDays int
	Fix       bool         // write corrections, not only report
	Logger    *slog.Logger // default: discard
	Now       func() time.Time
}

// Scheduler runs a Reconciler periodically, for serve.
type Scheduler struct {
	r *Reconciler
	o SchedulerOptions

	mu        sync.Mutex
	last      *Report
	lastDaily time.Time // the previous day last reconciled by the daily run
}

// NewScheduler returns a Scheduler; call Run to start it.
func NewScheduler(r *Reconciler, o SchedulerOptions) *Scheduler {
	if o.Every <= 0 {
		o.Every = time.Hour
	}
	if o.Lookback <= 0 {
		o.Lookback = 3 * time.Hour
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Minute
	}
	if o.DailyDays <= 0 {
		o.DailyDays = 7
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Scheduler{r: r, o: o}
}

// Run reconciles at once, then every Every, until ctx ends; it returns
// ctx's error. A failed run is logged and kept as Last; the next one runs
// as planned.
func (s *Scheduler) Run(ctx context.Context) error {
	tick := time.NewTicker(s.o.Every)
	defer tick.Stop()
	for {
		s.runOnce(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Last returns the last finished run's report, nil before the first.
func (s *Scheduler) Last() *Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return nil
	}
	rep := *s.last
	return &rep
}

func (s *Scheduler) runOnce(ctx context.Context) {
	now := s.o.Now().UTC()
	rng := clickagg.Range{From: now.Add(-s.o.Lookback).Truncate(time.Minute), To: now.Add(-s.o.Settle).Truncate(time.Minute)}
	if rng.From.Before(rng.To) {
		s.reconcile(ctx, "recent", rng)
	}
	today := day(now)
	yesterday := today.AddDate(0, 0, -1)
	// The previous day is reconciled once it has settled too.
	if s.o.NoDaily || now.Before(today.Add(s.o.Settle)) || s.lastDaily.Equal(yesterday) || ctx.Err() != nil {
		return
	}
	ok := true
	for d := range s.o.DailyDays {
		from := yesterday.AddDate(0, 0, -d)
		ok = s.reconcile(ctx, "daily", clickagg.Range{From: from, To: from.AddDate(0, 0, 1)}) && ok
		if ctx.Err() != nil {
			return
		}
	}
	if ok {
		s.lastDaily = yesterday
	}
}

// reconcile runs one range, logs and keeps its report; ok says it succeeded.
func (s *Scheduler) reconcile(ctx context.Context, kind string, rng clickagg.Range) (ok bool) {
	rep, err := s.r.Run(ctx, rng, s.o.Fix)
	if ctx.Err() != nil {
		return false // stopping: not a result worth keeping
	}
	s.mu.Lock()
	s.last = &rep
	s.mu.Unlock()
	attrs := []any{"run", kind, "from", rng.From, "to", rng.To, "differing_rows", rep.Differences(),
		"fixed", rep.Fixed, "took", rep.FinishedAt.Sub(rep.StartedAt).Round(time.Millisecond)}
	for _, t := range rep.Tables {
		attrs = append(attrs, t.Table, t.Rows)
	}
	switch {
	case err != nil:
		s.o.Logger.Error("reconcile failed", append(attrs, "err", err)...)
	case rep.Unfixed():
		s.o.Logger.Warn("reconcile: aggregates differ from raw events", attrs...)
	default:
		s.o.Logger.Info("reconciled", attrs...)
	}
	return err == nil
}
