package zookeeper_test

import (
	"context"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/zookeeper"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestLeaseNode: the first session takes the node (its parents made on the
// way), another is refused while it lives, a release or the end of the
// session frees it.
func TestLeaseNode(t *testing.T) {
	addr := testenv.ZooKeeper(t).Addr()
	open := func() *zookeeper.Store {
		s, err := zookeeper.Open(zookeeper.Options{Servers: []string{addr}, SessionTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	ctx := t.Context()
	acquire := func(s *zookeeper.Store) bool {
		t.Helper()
		// The session is made in the background: the first calls may find none.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			c, cancel := context.WithTimeout(ctx, time.Second)
			ok, err := s.Acquire(c, "/a/b/lease", "token", 0)
			cancel()
			if err == nil {
				return ok
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
		}
	}
	a, b := open(), open()
	if !acquire(a) || !acquire(a) {
		t.Fatal("the first session does not hold the free lease")
	}
	if acquire(b) {
		t.Fatal("a second session took a held lease")
	}
	if err := b.Release(ctx, "/a/b/lease", "token"); err != nil || !acquire(a) {
		t.Fatalf("a release by a session that does not hold it freed the lease (%v)", err)
	}
	if err := a.Release(ctx, "/a/b/lease", "token"); err != nil {
		t.Fatal(err)
	}
	if !acquire(b) {
		t.Fatal("the released lease was not taken")
	}
	b.Close()
	if !acquire(a) {
		t.Fatal("the lease of a closed session was not taken")
	}
}

// TestNoSession: with no ZooKeeper to reach, Acquire says so at once.
func TestNoSession(t *testing.T) {
	s, err := zookeeper.Open(zookeeper.Options{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, err := s.Acquire(t.Context(), "/lease", "token", 0); ok || err == nil {
		t.Fatalf("Acquire without a session: %v, %v; want an error", ok, err)
	}
}
