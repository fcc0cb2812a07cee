package generator

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/clickagg/clickagg"
)

// LoadOptions configures Load. The zero value works except for Target.
type LoadOptions struct {
	// Target is the collector's base URL, e.g. "http://127.0.0.1:8080";
	// events go to Target+"/v1/events" as NDJSON.
	Target string
	// Rate is the events per second offered; default 5000, negative for as
	// fast as the collector takes them.
	Rate int
	// Duration bounds the run; 0 runs until ctx is cancelled.
	Duration time.Duration
	// Batch is the most events per request, default 500. With a low Rate
	// batches shrink so a request still goes out about every 100 ms.
	Batch int
	// Concurrency is the number of requests in flight, default 4.
	Concurrency int
	// Gzip compresses request bodies.
	Gzip bool
	// Token is sent as "Authorization: Bearer <Token>" when set.
	Token string
	// Progress, when set, gets a line every second about the last second.
	Progress io.Writer
	// Client sends the requests; default one with a 30 s timeout.
	Client *http.Client
	// StopGrace is how long requests in flight may finish after ctx ends,
	// so that a stopped run counts what the collector took; default 5 s.
	StopGrace time.Duration
}

// Defaults of LoadOptions.
const (
	DefaultRate        = 5000
	DefaultBatch       = 500
	DefaultConcurrency = 4
	DefaultStopGrace   = 5 * time.Second
)

// WithDefaults returns o with its zero fields set to the defaults.
func (o LoadOptions) WithDefaults() LoadOptions {
	o.Rate = cmp.Or(o.Rate, DefaultRate)
	o.Batch = clickagg.PositiveOr(o.Batch, DefaultBatch)
	o.Concurrency = clickagg.PositiveOr(o.Concurrency, DefaultConcurrency)
	o.StopGrace = clickagg.PositiveOr(o.StopGrace, DefaultStopGrace)
	return o
}

// Validate checks complete options: a rate (negative: as fast as
// accepted), positive batch, concurrency and grace, a duration of 0 (until
// stopped) or more.
func (o LoadOptions) Validate() error {
	rate := error(nil)
	if o.Rate == 0 {
		rate = &clickagg.ConfigError{Field: "Rate", Value: 0, Want: "events per second, or negative for as fast as accepted"}
	}
	return clickagg.FirstError(rate,
		clickagg.NonNegative("Duration", o.Duration),
		clickagg.Between("Batch", o.Batch, 1, 1_000_000),
		clickagg.Between("Concurrency", o.Concurrency, 1, 4096),
		clickagg.Positive("StopGrace", o.StopGrace),
	)
}

// eventsURL checks the target and returns where events are posted.
func eventsURL(target string) (string, error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", fmt.Errorf("target: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("target %q: want http(s)://host[:port]", target)
	}
	return strings.TrimSuffix(target, "/") + "/v1/events", nil
}

// Load offers events from src to the collector at o.Target until o.Duration
// has passed or ctx is done, then waits for the requests in flight. Both
// ends are normal, so the error is only for unusable options. Batches built
// but not yet posted when the run ends are dropped and not counted.
func Load(ctx context.Context, src *Source, o LoadOptions) (Report, error) {
	if src == nil {
		return Report{}, errors.New("source: nil")
	}
	target, err := eventsURL(o.Target)
	if err != nil {
		return Report{}, err
	}
	o = o.WithDefaults()
	if o.Rate > 0 {
		// Low rates send smaller batches, so one goes out every ~100 ms.
		o.Batch = max(min(o.Batch, o.Rate/10), 1)
	}
	client := o.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = o.Concurrency
		defer tr.CloseIdleConnections()
		client = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	// run ends production; requests in flight get StopGrace more after ctx
	// ends, so a stopped run reports what the collector really took.
	inflight, stopInflight := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInflight()
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-time.After(o.StopGrace):
			case <-inflight.Done():
			}
		case <-inflight.Done():
		}
		stopInflight()
	}()
	run := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		run, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}

	st := newStats()
	stopProgress := startProgress(o.Progress, st)
	began := time.Now()
	p := &poster{client: client, url: target, gzip: o.Gzip, token: o.Token, st: st}
	queue := make(chan *batch, o.Concurrency)
	// Every batch is with the producer, in the queue or with a worker; free
	// holds the idle ones so a run reuses a fixed set of buffers.
	free := make(chan *batch, 2*o.Concurrency+1)
	for range cap(free) {
		free <- &batch{}
	}
	var workers sync.WaitGroup
	for range o.Concurrency {
		workers.Go(func() {
			for b := range queue {
				if run.Err() == nil {
					p.send(inflight, run, b)
				}
				free <- b
			}
		})
	}
	produce(run, src, o, queue, free)
	close(queue)
	workers.Wait()
	stopProgress()
	return st.report(time.Since(began)), nil
}

// startProgress runs the progress line when w is set; the returned func
// stops it and waits for its last write.
func startProgress(w io.Writer, st *stats) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	p := newProgress(w, st)
	wg.Go(func() { p.run(done) })
	return func() {
		close(done)
		wg.Wait()
	}
}

// produce fills batches from src at the paced rate until ctx is done.
func produce(ctx context.Context, src *Source, o LoadOptions, queue, free chan *batch) {
	pace := NewPacer(o.Rate)
	var zw *gzip.Writer
	if o.Gzip {
		zw = gzip.NewWriter(io.Discard)
	}
	for pace.Wait(ctx, o.Batch) == nil {
		var b *batch
		select {
		case b = <-free:
		case <-ctx.Done():
			return
		}
		fill(b, src, o.Batch, zw)
		select {
		case queue <- b:
		case <-ctx.Done():
			return
		}
	}
}

// fill puts the next n events of src into b as NDJSON, gzipped when zw is set.
func fill(b *batch, src *Source, n int, zw *gzip.Writer) {
	b.raw = b.raw[:0]
	for range n {
		b.raw = src.AppendNext(b.raw)
		b.raw = append(b.raw, '\n')
	}
	b.events = n
	if zw == nil {
		b.body = b.raw
		return
	}
	buf := bytes.NewBuffer(b.zipped[:0])
	zw.Reset(buf)
	_, _ = zw.Write(b.raw) // a bytes.Buffer does not fail
	_ = zw.Close()
	b.zipped = buf.Bytes()
	b.body = b.zipped
}
