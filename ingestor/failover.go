package ingestor

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Failover is a Transport over the replicas of one shard: an INSERT goes to
// the replica that answered last, and to the next one when that one cannot
// be reached or refuses for a reason another replica may not have (network,
// overload, a read-only replica). Inserts go into the replicas' local
// Replicated table, which stores an identical block once whichever replica
// takes it (block deduplication): resending a block whose answer was lost,
// to the same replica or another, lands it once.
type Failover struct {
	replicas []*HTTP
	current  atomic.Int32
}

// NewFailover returns a Failover over one HTTP transport per replica URL.
func NewFailover(urls []string, o HTTPOptions) (*Failover, error) {
	if len(urls) == 0 {
		return nil, errors.New("failover: no replicas")
	}
	f := &Failover{}
	for _, u := range urls {
		o := o
		o.URL = u
		h, err := NewHTTP(o)
		if err != nil {
			return nil, err
		}
		f.replicas = append(f.replicas, h)
	}
	return f, nil
}

// Insert implements Transport: each replica once at most, starting with
// the last that answered. When none takes the block, the error is the
// first that lost its answer, if any: the block may be in the shard then
// (a replica stopping took it and closed the connection, the next one
// refused the dial), and a caller that saw only the last error would let
// the events be resent as new ones and counted twice.
func (f *Failover) Insert(ctx context.Context, query string, block []byte) error {
	start := int(f.current.Load())
	var err, lost, first error
	for i := range f.replicas {
		r := (start + i) % len(f.replicas)
		if err = f.replicas[r].Insert(ctx, query, block); err == nil {
			f.current.Store(int32(r))
			return nil
		}
		if lost == nil && answerLost(err) {
			lost = err
		}
		if first == nil {
			first = err
		}
		if !Temporary(err) || ctx.Err() != nil {
			break
		}
	}
	switch {
	case lost != nil && lost != err:
		return fmt.Errorf("%w (then %s)", lost, err.Error())
	case first != err && first.Error() != err.Error():
		// What the first replica said is kept for the log.
		return fmt.Errorf("%w (first replica: %s)", err, first.Error())
	}
	return err
}

// Replicas are the replicas' URLs, in order.
func (f *Failover) Replicas() []string {
	out := make([]string, len(f.replicas))
	for i, r := range f.replicas {
		out[i] = r.o.URL
	}
	return out
}
