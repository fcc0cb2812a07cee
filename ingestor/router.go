package ingestor

import (
	"context"
	"errors"
	"sync"

	"github.com/clickagg/clickagg/dedup"
)

// Router spreads rows over the shards of a cluster, one Ingestor per shard
// (each inserting into its replicas' local table through a Failover): a row
// goes to shard cityHash64(event_id) mod the number of shards, the
// sharding key of the Distributed events table, so every copy of an event
// lives on one shard (dedup and reconciliation stay within it) and a hot
// ad's events spread over all of them. It implements the collector's Adder.
type Router struct {
	shards []*Ingestor
	split  sync.Pool // *[]Rows, one per shard
}

// NewRouter returns a Router over the shards' ingestors, in the cluster's
// shard order (remote_servers).
func NewRouter(shards []*Ingestor) *Router {
	r := &Router{shards: shards}
	r.split.New = func() any { s := make([]Rows, len(shards)); return &s }
	return r
}

// Shard is the shard (from 0) of fingerprint fp among n.
func Shard(fp uint64, n int) int { return int(fp % uint64(n)) }

// Enqueue splits r by shard and enqueues each part into its shard's
// ingestor. The parts commit independently: Wait joins the failed shards'
// errors and Landed tells a row's own shard's outcome. The error is set
// only when no shard took anything.
func (rt *Router) Enqueue(ctx context.Context, r *Rows) (Pending, error) {
	if r.Len() == 0 {
		return Pending{}, nil
	}
	sp := rt.split.Get().(*[]Rows)
	defer rt.split.Put(sp)
	split := *sp
	for i := range split {
		split[i].Reset()
	}
	for i := range r.Len() {
		split[Shard(dedup.Fingerprint(r.EventID(i)), len(split))].AppendRow(r, i)
	}
	p := Pending{parts: make([]part, len(split))}
	var errs []error
	taken := false
	for s := range split {
		if split[s].Len() == 0 {
			continue
		}
		sp, err := rt.shards[s].Enqueue(ctx, &split[s])
		p.parts[s] = part{res: sp.res, err: err}
		if err != nil {
			errs = append(errs, err)
		} else {
			taken = true
		}
	}
	if !taken {
		return Pending{}, errors.Join(errs...)
	}
	return p, nil
}

// Close closes every shard's ingestor, flushing what they hold.
func (rt *Router) Close(ctx context.Context) error {
	var errs []error
	for _, in := range rt.shards {
		errs = append(errs, in.Close(ctx))
	}
	return errors.Join(errs...)
}

// Stats adds up the shards' stats.
func (rt *Router) Stats() Stats {
	var t Stats
	for _, in := range rt.shards {
		s := in.Stats()
		t.BufferedRows += s.BufferedRows
		t.CommittedRows += s.CommittedRows
		t.FailedRows += s.FailedRows
		t.Blocks += s.Blocks
		t.FailedBlocks += s.FailedBlocks
		t.Retries += s.Retries
		t.Recovered += s.Recovered
	}
	return t
}
