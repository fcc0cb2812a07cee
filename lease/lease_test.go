package lease_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/lease"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// instance runs work under a lease until stopped; running counts the
// instances inside work at once, and max the most ever seen.
type instance struct {
	l    *lease.Lease
	stop func()
}

type counter struct{ running, max, entries atomic.Int64 }

func (c *counter) work(ctx context.Context) {
	c.entries.Add(1)
	n := c.running.Add(1)
	for m := c.max.Load(); n > m && !c.max.CompareAndSwap(m, n); m = c.max.Load() {
	}
	<-ctx.Done()
	c.running.Add(-1)
}

func start(t *testing.T, rdb *redis.Client, o lease.Options, c *counter) instance {
	l := lease.New(rdb, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, c.work) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return instance{l, stop}
}

func held(is []instance) (n int, who int) {
	for i, in := range is {
		if in.l.Held() {
			n, who = n+1, i
		}
	}
	return n, who
}

// TestOneAtATime: three instances, one runs the work; stopped, another
// takes over within the TTL; never two at once.
func TestOneAtATime(t *testing.T) {
	r := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { rdb.Close() })
	o := lease.Options{Key: "test:lease", TTL: time.Second}
	var c counter
	is := []instance{start(t, rdb, o, &c), start(t, rdb, o, &c), start(t, rdb, o, &c)}
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := held(is); n != 1; n, _ = held(is) {
		if time.Now().After(deadline) {
			t.Fatalf("%d instances hold the lease", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * o.TTL) // several renewals: still one
	_, who := held(is)
	is[who].stop()
	gone := time.Now()
	for n, _ := held(is); n != 1; n, _ = held(is) {
		if time.Since(gone) > 2*o.TTL {
			t.Fatalf("no instance took the lease %v after its holder stopped", time.Since(gone))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("taken over %v after the holder stopped (it gave the lease up)", time.Since(gone).Round(time.Millisecond))
	if m := c.max.Load(); m != 1 {
		t.Errorf("%d instances ran the work at once", m)
	}
}

// TestHolderDies: a holder that stops renewing (Redis unreachable for it)
// stops its work before the key expires, and another takes over after.
func TestHolderDies(t *testing.T) {
	r := testenv.Redis(t)
	good := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { good.Close() })
	// The holder's own client, closed to cut it off: every call fails.
	cut := redis.NewClient(&redis.Options{Addr: r.Addr()})
	o := lease.Options{Key: "test:lease", TTL: time.Second}
	var c counter
	a := start(t, cut, o, &c)
	for !a.l.Held() {
		time.Sleep(10 * time.Millisecond)
	}
	b := start(t, good, o, &c)
	cut.Close()
	cutAt := time.Now()
	for !b.l.Held() {
		if time.Since(cutAt) > 3*o.TTL {
			t.Fatal("the other instance never took the lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a.l.Held() {
		t.Error("the cut-off holder still holds the lease")
	}
	if m := c.max.Load(); m != 1 {
		t.Errorf("%d instances ran the work at once", m)
	}
	t.Logf("taken over %v after the holder lost Redis", time.Since(cutAt).Round(time.Millisecond))
}
