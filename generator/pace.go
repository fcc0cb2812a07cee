package generator

import (
	"context"
	"time"
)

// maxDebt is how far the pacer may fall behind (a slow collector) before it
// forgives the backlog rather than bursting to catch up.
const maxDebt = time.Second

// Pacer spaces events evenly at rate per second; rate <= 0 means no limit.
type Pacer struct {
	rate   float64
	origin time.Time
	done   int64 // events already let through
	timer  *time.Timer
}

// NewPacer returns a Pacer starting now.
func NewPacer(rate int) *Pacer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Pacer{rate: float64(rate), origin: time.Now(), timer: t}
}

// Wait returns when n more events are due, so at any time at most
// rate × elapsed events have been let through.
func (p *Pacer) Wait(ctx context.Context, n int) error {
	p.done += int64(n)
	if p.rate <= 0 {
		return ctx.Err()
	}
	due := p.origin.Add(time.Duration(float64(p.done) / p.rate * float64(time.Second)))
	now := time.Now()
	if behind := now.Sub(due); behind > maxDebt {
		p.origin = p.origin.Add(behind)
		return ctx.Err()
	}
	d := due.Sub(now)
	if d <= 0 {
		return ctx.Err()
	}
	p.timer.Reset(d)
	select {
	case <-p.timer.C:
		return nil
	case <-ctx.Done():
		p.timer.Stop()
		return ctx.Err()
	}
}
