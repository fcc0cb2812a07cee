// Package kafka is clickagg's Kafka client (franz-go): it produces generated
// traffic to a topic and reads a consumer group's lag from the brokers. The
// consuming itself is ClickHouse's (see kafkaengine).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Client talks to one Kafka cluster.
type Client struct {
	seeds []string
	kc    *kgo.Client
	adm   *kadm.Client
}

// Dial returns a Client for brokers, a comma-separated host:port list. It
// connects lazily.
func Dial(brokers string, opts ...kgo.Opt) (*Client, error) {
	seeds := strings.Split(brokers, ",")
	kc, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ProducerLinger(5 * time.Millisecond)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &Client{seeds: seeds, kc: kc, adm: kadm.NewClient(kc)}, nil
}

// Close flushes nothing: call Produce to completion first.
func (c *Client) Close() { c.kc.Close() }

// PartitionLag is how far a group is behind on one partition.
type PartitionLag struct {
	Partition int32 `json:"partition"`
	Committed int64 `json:"committed"` // next offset the group reads; -1 before its first commit
	End       int64 `json:"end"`       // next offset to be written
	Lag       int64 `json:"lag"`       // messages written and not yet committed by the group
}

// Lag is a group's lag on a topic, from the brokers' own offsets.
type Lag struct {
	Topic      string         `json:"topic"`
	Group      string         `json:"group"`
	Total      int64          `json:"total"`
	Partitions []PartitionLag `json:"partitions"`
}

// Lag reads the committed offsets of group and the end offsets of topic.
func (c *Client) Lag(ctx context.Context, group, topic string) (Lag, error) {
	l := Lag{Topic: topic, Group: group}
	ends, err := c.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return l, fmt.Errorf("kafka end offsets of %s: %w", topic, err)
	}
	starts, err := c.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return l, fmt.Errorf("kafka start offsets of %s: %w", topic, err)
	}
	commits, err := c.adm.FetchOffsets(ctx, group)
	if err == nil {
		err = commits.Error()
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // a group that never committed is behind by everything
	}
	if err != nil {
		return l, fmt.Errorf("kafka offsets of group %s: %w", group, err)
	}
	ends.Each(func(e kadm.ListedOffset) {
		p := PartitionLag{Partition: e.Partition, Committed: -1, End: e.Offset}
		from := int64(0)
		if s, ok := starts.Lookup(topic, e.Partition); ok {
			from = s.Offset
		}
		if o, ok := commits.Lookup(topic, e.Partition); ok && o.At >= 0 {
			p.Committed, from = o.At, max(o.At, from)
		}
		p.Lag = max(p.End-from, 0)
		l.Total += p.Lag
		l.Partitions = append(l.Partitions, p)
	})
	sort.Slice(l.Partitions, func(i, j int) bool { return l.Partitions[i].Partition < l.Partitions[j].Partition })
	return l, nil
}

// ProduceOptions configures Produce.
type ProduceOptions struct {
	Topic string
	// Pace, when set, returns when n more messages are due
	// (generator.Pacer.Wait); nil sends as fast as the brokers take them.
	Pace func(ctx context.Context, n int) error
	// Duration bounds the run; 0 runs until ctx ends.
	Duration time.Duration
	// Progress, when set, gets a line every second.
	Progress io.Writer
}

// ProduceReport counts what Produce did.
type ProduceReport struct {
	Sent, Acked, Failed int64
	Elapsed             time.Duration
	FirstErr            error
}

func (r ProduceReport) String() string {
	s := fmt.Sprintf("kafka: %d sent, %d acknowledged, %d failed in %s (%.0f/s acknowledged)",
		r.Sent, r.Acked, r.Failed, r.Elapsed.Round(time.Millisecond), float64(r.Acked)/max(r.Elapsed.Seconds(), 1e-9))
	if r.FirstErr != nil {
		s += "; first error: " + r.FirstErr.Error()
	}
	return s
}

// Produce sends next's messages, keyed by key(message), until ctx ends or
// the duration passes, then waits for every one to be acknowledged.
func (c *Client) Produce(ctx context.Context, next func(dst []byte) []byte, key func(msg []byte) []byte, o ProduceOptions) (ProduceReport, error) {
	if o.Topic == "" {
		return ProduceReport{}, errors.New("kafka produce: no topic")
	}
	start := time.Now()
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	var sent, acked, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, &err)
			return
		}
		acked.Add(1)
	}
	stopProgress := progress(o.Progress, &sent, &acked, &failed)
	// A record is not tied to the run's end: what was handed over is
	// delivered, up to the flush timeout below.
	recCtx := context.WithoutCancel(ctx)
	for ctx.Err() == nil {
		if o.Pace != nil && o.Pace(ctx, 1) != nil {
			break
		}
		v := next(nil)
		// Produce blocks while the client's buffer is full: backpressure.
		c.kc.Produce(recCtx, &kgo.Record{Topic: o.Topic, Key: key(v), Value: v}, done)
		sent.Add(1)
	}
	flushCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ferr := c.kc.Flush(flushCtx)
	stopProgress()
	r := ProduceReport{Sent: sent.Load(), Acked: acked.Load(), Failed: failed.Load(), Elapsed: time.Since(start)}
	if p := firstErr.Load(); p != nil {
		r.FirstErr = *p
	}
	if ferr != nil {
		return r, fmt.Errorf("kafka flush: %w", ferr)
	}
	return r, nil
}

func progress(w io.Writer, sent, acked, failed *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				a := acked.Load()
				fmt.Fprintf(w, "kafka: %d/s acknowledged, %d sent, %d acknowledged, %d failed\n", a-last, sent.Load(), a, failed.Load())
				last = a
			}
		}
	}()
	return func() { close(quit); <-finished }
}
