package generator

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Report is what Load offered and what the collector answered.
type Report struct {
	Sent       int64 // events posted; a retried batch counts once
	Accepted   int64 // as the collector reported
	Rejected   int64 // as the collector reported
	Duplicates int64 // as the collector reported, when it does
	Failed     int64 // events in batches that got no 2xx answer
	Retries    int64 // 503 and 429 answers; all but a last straw are resent
	Elapsed    time.Duration
	P50, P99   time.Duration // ack latency of batches answered 2xx
	Max        time.Duration
	LastError  string // why the last batch failed, if one did
}

// String sums the report up in one line.
func (r Report) String() string {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Sent) / r.Elapsed.Seconds()
	}
	s := fmt.Sprintf("sent %d in %s (%.0f ev/s): accepted %d, rejected %d, duplicates %d, failed %d, retries %d; ack p50 %s p99 %s max %s",
		r.Sent, r.Elapsed.Round(time.Millisecond), rate, r.Accepted, r.Rejected, r.Duplicates, r.Failed, r.Retries,
		r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond))
	if r.LastError != "" {
		s += "; last error: " + r.LastError
	}
	return s
}

// Latencies are recorded in microseconds up to a minute.
const (
	latencyUnit = time.Microsecond
	latencyMax  = int64(time.Minute / latencyUnit)
)

// stats is shared by the workers and the progress line.
type stats struct {
	sent, accepted, rejected, duplicates, failed, retries atomic.Int64
	errors                                                atomic.Int64 // failed requests and 503s, for the progress line
	sawDuplicates                                         atomic.Bool

	mu      sync.Mutex
	all     *hdrhistogram.Histogram
	window  *hdrhistogram.Histogram // since the last progress line
	lastErr string
}

func newStats() *stats {
	return &stats{
		all:    hdrhistogram.New(1, latencyMax, 3),
		window: hdrhistogram.New(1, latencyMax, 3),
	}
}

func (st *stats) ack(d time.Duration) {
	v := min(max(int64(d/latencyUnit), 1), latencyMax)
	st.mu.Lock()
	defer st.mu.Unlock()
	_ = st.all.RecordValue(v) // v is within range, so it cannot fail
	_ = st.window.RecordValue(v)
}

func (st *stats) fail(events int, err error) {
	st.failed.Add(int64(events))
	st.errors.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.lastErr = err.Error()
}

// takeWindow returns the window's p50 and p99 and starts a new window.
func (st *stats) takeWindow() (p50, p99 time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	p50, p99 = quantile(st.window, 50), quantile(st.window, 99)
	st.window.Reset()
	return p50, p99
}

func (st *stats) report(elapsed time.Duration) Report {
	st.mu.Lock()
	defer st.mu.Unlock()
	return Report{
		Sent:       st.sent.Load(),
		Accepted:   st.accepted.Load(),
		Rejected:   st.rejected.Load(),
		Duplicates: st.duplicates.Load(),
		Failed:     st.failed.Load(),
		Retries:    st.retries.Load(),
		Elapsed:    elapsed,
		P50:        quantile(st.all, 50),
		P99:        quantile(st.all, 99),
		Max:        time.Duration(st.all.Max()) * latencyUnit,
		LastError:  st.lastErr,
	}
}

func quantile(h *hdrhistogram.Histogram, p float64) time.Duration {
	return time.Duration(h.ValueAtPercentile(p)) * latencyUnit
}
