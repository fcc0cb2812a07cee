package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/reconcile"
)

// lockedBuffer is a log sink the test can read while the scheduler writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The scheduler reconciles the recent minutes on every tick and the
// previous 7 days once, fixes the slipped resend, keeps the last report and
// stops with its context.
func TestScheduler(t *testing.T) {
	db := testenv.Migrated(t)
	load(t, db)
	var logs lockedBuffer
	now := time.Date(2026, 11, 22, 0, 7, 30, 0, time.UTC) // recent range: [21 21:07, 22 00:02)
	s := reconcile.NewScheduler(open(t, db, reconcile.Options{}), reconcile.SchedulerOptions{
		Every:  20 * time.Millisecond,
		Fix:    true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    func() time.Time { return now },
	})
	if s.Last() != nil {
		t.Fatal("Last before the first run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(logs.String(), "run=recent") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("three recent runs did not happen in 30 s; logs:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}

	out := logs.String()
	// One daily pass, over each of the 7 previous days.
	if n := strings.Count(out, "run=daily"); n != 7 || !strings.Contains(out, "run=daily from=2026-11-15T00:00:00.000Z") {
		t.Errorf("%d daily runs, want 7 (one per previous day); logs:\n%s", n, out)
	}
	// At info level, one line a run: the first covers the recent range
	// and the 7 days.
	if !strings.Contains(out, "level=INFO msg=reconciled ranges=8 failed=0 differing_rows=7 fixed=true") ||
		strings.Count(out, "level=INFO") != strings.Count(out, "ranges=") {
		t.Errorf("info lines are not one summary per run; logs:\n%s", out)
	}
	// The first recent run and the daily run each fixed the slipped resend
	// (minute and hour tables, then ad_stats_daily); later runs found nothing.
	first := strings.SplitN(out, "\n", 3)
	if !strings.Contains(first[0], "run=recent") || !strings.Contains(first[0], "differing_rows=6") ||
		!strings.Contains(first[1], "run=daily") || !strings.Contains(first[1], "ad_stats_daily=1") {
		t.Errorf("first runs:\n%s", out)
	}
	last := s.Last()
	if last == nil || last.Err != "" || last.Differences() != 0 || !last.Fixed ||
		last.Range.From != time.Date(2026, 11, 21, 21, 7, 0, 0, time.UTC) || last.Range.To != time.Date(2026, 11, 22, 0, 2, 0, 0, time.UTC) {
		t.Errorf("last report %+v", last)
	}
	if rep := run(t, open(t, db, reconcile.Options{}), wholeRange, false); rep.Differences() != 0 {
		t.Errorf("after the scheduler: %+v", rep.Tables)
	}
}
