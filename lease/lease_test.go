package lease_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/lease"
	"github.com/clickagg/clickagg/zookeeper"
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

func start(t *testing.T, store lease.Store, o lease.Options, c *counter) instance {
	l := lease.New(store, o)
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

// backend is a lease store for the tests, with the shortest TTL it takes.
type backend struct {
	name string
	ttl  time.Duration
}

// 2 s: the test ZooKeeper's shortest session.
var backends = []backend{{"redis", time.Second}, {"zookeeper", 2 * time.Second}}

// open starts b's server and returns a maker of stores on it (each instance
// gets its own: a ZooKeeper session, not a token, owns the node) and of a
// store cut off from it at cut, as if its holder died: its connection
// closed without a goodbye, every call failing.
func (b backend) open(t *testing.T) (store func() lease.Store, cutOff func() (lease.Store, func())) {
	switch b.name {
	case "redis":
		addr := testenv.Redis(t).Addr()
		store = func() lease.Store {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { rdb.Close() })
			return lease.Redis(rdb)
		}
		// The holder's own client, closed to cut it off: every call fails.
		cutOff = func() (lease.Store, func()) {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			return lease.Redis(rdb), func() { rdb.Close() }
		}
	default:
		addr := testenv.ZooKeeper(t).Addr()
		open := func(addr string) lease.Store {
			s, err := zookeeper.Open(zookeeper.Options{Servers: []string{addr}, SessionTimeout: b.ttl})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			return s
		}
		store = func() lease.Store { return open(addr) }
		// Through a proxy that drops every connection at cut and takes no
		// more: the server hears nothing and expires the session.
		cutOff = func() (lease.Store, func()) {
			p := newProxy(t, addr)
			return open(p.addr()), p.cut
		}
	}
	return store, cutOff
}

// TestOneAtATime: three instances, one runs the work; stopped, another
// takes over within the TTL; never two at once.
func TestOneAtATime(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			store, _ := b.open(t)
			o := lease.Options{Key: "/test/lease", TTL: b.ttl}
			var c counter
			is := []instance{start(t, store(), o, &c), start(t, store(), o, &c), start(t, store(), o, &c)}
			one := func() bool { n, _ := held(is); return n == 1 }
			waitFor(t, 10*time.Second, "one instance holding the lease", one)
			time.Sleep(2 * o.TTL) // several renewals: still one
			_, who := held(is)
			is[who].stop()
			gone := time.Now()
			waitFor(t, 2*o.TTL, "another instance taking the lease after its holder stopped", one)
			t.Logf("taken over %v after the holder stopped (it gave the lease up)", time.Since(gone).Round(time.Millisecond))
			if m := c.max.Load(); m != 1 {
				t.Errorf("%d instances ran the work at once", m)
			}
		})
	}
}

// TestHolderDies: a holder cut off from the store stops its work before its
// lease can pass (the key expires, the session is expired), and another
// takes over after.
func TestHolderDies(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			store, cutOff := b.open(t)
			o := lease.Options{Key: "/test/lease", TTL: b.ttl}
			var c counter
			s, cut := cutOff()
			a := start(t, s, o, &c)
			waitFor(t, 10*time.Second, "the first instance taking the lease", a.l.Held)
			other := start(t, store(), o, &c)
			time.Sleep(o.TTL) // the other tries and fails a few times
			cut()
			cutAt := time.Now()
			waitFor(t, 3*o.TTL, "the other instance taking the lease", other.l.Held)
			if a.l.Held() {
				t.Error("the cut-off holder still holds the lease")
			}
			if m := c.max.Load(); m != 1 {
				t.Errorf("%d instances ran the work at once", m)
			}
			t.Logf("taken over %v after the holder was cut off", time.Since(cutAt).Round(time.Millisecond))
		})
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: no %s", limit, what)
		}
	}
}

// proxy forwards TCP connections to a server until cut.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func newProxy(t *testing.T, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			if p.closed {
				c.Close()
				s.Close()
			}
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// cut closes the listener and every connection through it.
func (p *proxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
