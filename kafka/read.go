package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one message read back by Range.
type Record struct {
	Partition int32
	Offset    int64
	Time      time.Time
	Value     []byte
}

// Range calls fn with every message of topic whose timestamp is in
// [from, to) and that group has consumed: below its committed offset on
// each partition. Messages the group has not reached are left out, so a
// consumer that is behind (or has not started) is never raced.
func (c *Client) Range(ctx context.Context, topic, group string, from, to time.Time, fn func(Record) error) error {
	starts, err := c.adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka offsets of %s after %s: %w", topic, from.Format(time.RFC3339), err)
	}
	l, err := c.Lag(ctx, group, topic)
	if err != nil {
		return err
	}
	stops := map[int32]int64{} // the first offset not to read
	for _, p := range l.Partitions {
		stops[p.Partition] = max(p.Committed, 0)
	}
	parts := map[int32]kgo.Offset{}
	left := 0
	starts.Each(func(o kadm.ListedOffset) {
		if o.Offset >= 0 && o.Offset < stops[o.Partition] {
			parts[o.Partition] = kgo.NewOffset().At(o.Offset)
			left++
		}
	})
	if left == 0 {
		return nil
	}
	rc, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer rc.Close()
	done := map[int32]bool{}
	for len(done) < left {
		fs := rc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("kafka fetch of partition %d: %w", p, err) })
		if ferr != nil {
			return ferr
		}
		var cbErr error
		fs.EachRecord(func(r *kgo.Record) {
			if cbErr != nil || done[r.Partition] {
				return
			}
			if r.Offset >= stops[r.Partition] {
				done[r.Partition] = true
				return
			}
			if !r.Timestamp.Before(from) && r.Timestamp.Before(to) {
				cbErr = fn(Record{Partition: r.Partition, Offset: r.Offset, Time: r.Timestamp, Value: r.Value})
			}
			if r.Offset+1 >= stops[r.Partition] {
				done[r.Partition] = true
			}
		})
		if cbErr != nil {
			return cbErr
		}
	}
	return nil
}
