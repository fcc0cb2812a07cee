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

// Defaults of SchedulerOptions. DefaultFix is serve's: the zero options
// only report.
const (
	DefaultEvery     = time.Hour
	DefaultLookback  = 3 * time.Hour
	DefaultSettle    = 5 * time.Minute
	DefaultDailyDays = 7
	DefaultFix       = true
)

// WithDefaults returns o with its zero durations and counts set to the
// defaults.
func (o SchedulerOptions) WithDefaults() SchedulerOptions {
	o.Every = clickagg.PositiveOr(o.Every, DefaultEvery)
	o.Lookback = clickagg.PositiveOr(o.Lookback, DefaultLookback)
	o.Settle = clickagg.PositiveOr(o.Settle, DefaultSettle)
	o.DailyDays = clickagg.PositiveOr(o.DailyDays, DefaultDailyDays)
	return o
}

// Validate checks complete options: positive durations, a lookback longer
// than the settled minutes, at least one daily day.
func (o SchedulerOptions) Validate() error {
	return clickagg.FirstError(
		clickagg.Positive("Every", o.Every),
		clickagg.Positive("Settle", o.Settle),
		clickagg.AtLeast("Lookback", o.Lookback, o.Settle+time.Minute, "Settle plus a minute, or nothing is reconciled"),
		clickagg.Between("DailyDays", o.DailyDays, 1, 366),
	)
}

// NewScheduler returns a Scheduler; call Run to start it.
func NewScheduler(r *Reconciler, o SchedulerOptions) *Scheduler {
	o = o.WithDefaults()
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

// runOnce reconciles the recent range and, once a day, the previous days.
// Each range is logged at debug level (warn when it differs, error when it
// fails); the run as a whole in one info line.
func (s *Scheduler) runOnce(ctx context.Context) {
	var sum runSummary
	s.runRanges(ctx, &sum)
	if ctx.Err() != nil || sum.ranges == 0 {
		return
	}
	s.o.Logger.Info("reconciled", "ranges", sum.ranges, "failed", sum.failed, "differing_rows", sum.differing,
		"fixed", s.o.Fix, "took", time.Since(sum.start).Round(time.Millisecond))
}

// runSummary adds up one runOnce.
type runSummary struct {
	start                     time.Time
	ranges, failed, differing int64
}

func (s *Scheduler) runRanges(ctx context.Context, sum *runSummary) {
	sum.start = time.Now()
	now := s.o.Now().UTC()
	rng := clickagg.Range{From: now.Add(-s.o.Lookback).Truncate(time.Minute), To: now.Add(-s.o.Settle).Truncate(time.Minute)}
	if rng.From.Before(rng.To) {
		s.reconcile(ctx, "recent", rng, sum)
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
		ok = s.reconcile(ctx, "daily", clickagg.Range{From: from, To: from.AddDate(0, 0, 1)}, sum) && ok
		if ctx.Err() != nil {
			return
		}
	}
	if ok {
		s.lastDaily = yesterday
	}
}

// reconcile runs one range, logs and keeps its report; ok says it succeeded.
func (s *Scheduler) reconcile(ctx context.Context, kind string, rng clickagg.Range, sum *runSummary) (ok bool) {
	rep, err := s.r.Run(ctx, rng, s.o.Fix)
	if ctx.Err() != nil {
		return false // stopping: not a result worth keeping
	}
	s.mu.Lock()
	s.last = &rep
	s.mu.Unlock()
	sum.ranges++
	sum.differing += rep.Differences()
	attrs := []any{"run", kind, "from", rng.From, "to", rng.To, "differing_rows", rep.Differences(),
		"fixed", rep.Fixed, "took", rep.FinishedAt.Sub(rep.StartedAt).Round(time.Millisecond)}
	for _, t := range rep.Tables {
		attrs = append(attrs, t.Table, t.Rows)
	}
	switch {
	case err != nil:
		sum.failed++
		s.o.Logger.Error("reconcile failed", append(attrs, "err", err)...)
	case rep.Unfixed():
		s.o.Logger.Warn("reconcile: aggregates differ from raw events", attrs...)
	default:
		s.o.Logger.Debug("reconciled range", attrs...)
	}
	return err == nil
}
