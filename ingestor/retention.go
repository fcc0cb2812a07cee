package ingestor

// retention decides whether a reused buffer keeps the memory it grew to: only
// while that is at most twice the typical use (a moving average over the
// last few dozen uses), so one burst's peak is not pinned for the life of
// the process. A soak showed RSS creeping up for 20 minutes as the free
// blocks and encode buffers grew, one rare large block at a time, to the
// largest ever seen.
type retention struct {
	floor int     // always kept up to this
	avg   float64 // moving average of the uses
	seen  bool
}

func (r *retention) observe(n int) {
	if !r.seen {
		r.avg, r.seen = float64(n), true
		return
	}
	r.avg += (float64(n) - r.avg) / 16
}

func (r *retention) keep(capacity int) bool {
	return capacity <= max(r.floor, int(2*r.avg))
}
