package claims_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/claims"
	"github.com/clickagg/clickagg/dedup"
	"github.com/clickagg/clickagg/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func client(t *testing.T, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// instance is one clickagg instance's Set, alive until the test ends or
// kill is called.
type instance struct {
	*claims.Set
	kill func()
}

func start(t *testing.T, rdb *redis.Client, o claims.Options) instance {
	t.Helper()
	s := claims.New(rdb, o)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return instance{s, stop}
}

func claim(t *testing.T, s *claims.Set, fps ...uint64) (*claims.Claim, []dedup.Verdict) {
	t.Helper()
	c, vs, err := s.Claim(t.Context(), fps, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, vs
}

var (
	fresh     = dedup.Fresh
	duplicate = dedup.Duplicate
	inFlight  = dedup.InFlight
)

func committed(ok bool) func(uint64) bool { return func(uint64) bool { return ok } }

// TestResendToAnotherInstance: ids A holds are in flight for B, which
// learns A's outcome: committed, they are duplicates from then on; let go,
// B's wait reports it and a resend holds them anew.
func TestResendToAnotherInstance(t *testing.T) {
	rdb := client(t, testenv.Redis(t).Addr())
	a, b := start(t, rdb, claims.Options{}), start(t, rdb, claims.Options{})

	ca, va := claim(t, a.Set, 1, 2, 3)
	if !slices.Equal(va, []dedup.Verdict{fresh, fresh, fresh}) {
		t.Fatalf("A: %v", va)
	}
	cb, vb := claim(t, b.Set, 2, 3, 4)
	if !slices.Equal(vb, []dedup.Verdict{inFlight, inFlight, fresh}) {
		t.Fatalf("B while A holds 2, 3: %v", vb)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		ca.Settle(context.Background(), committed(true))
	}()
	if ok, err := cb.Wait(t.Context()); !ok || err != nil {
		t.Errorf("B's wait on A's commit: %v %v", ok, err)
	}
	cb.Settle(t.Context(), committed(true))
	if _, v := claim(t, b.Set, 1, 4); !slices.Equal(v, []dedup.Verdict{duplicate, duplicate}) {
		t.Errorf("after both committed: %v", v)
	}

	// A commit that fails lets its ids go.
	ca, _ = claim(t, a.Set, 10, 11)
	cb, vb = claim(t, b.Set, 11)
	if !slices.Equal(vb, []dedup.Verdict{inFlight}) {
		t.Fatalf("B: %v", vb)
	}
	ca.Settle(t.Context(), func(fp uint64) bool { return fp == 10 })
	if ok, err := cb.Wait(t.Context()); ok || err != nil {
		t.Errorf("B's wait on A's failed commit: %v %v, want false", ok, err)
	}
	if _, v := claim(t, b.Set, 10, 11); !slices.Equal(v, []dedup.Verdict{duplicate, fresh}) {
		t.Errorf("resend after A's partial commit: %v, want the committed one a duplicate and the other new", v)
	}
}

// TestConcurrentClaims: many instances claim the same ids at once; each id
// is held by exactly one.
func TestConcurrentClaims(t *testing.T) {
	rdb := client(t, testenv.Redis(t).Addr())
	const n, ids = 4, 2000
	fps := make([]uint64, ids)
	for i := range fps {
		fps[i] = uint64(i + 1)
	}
	var wg sync.WaitGroup
	held := make([][]uint64, n)
	for i := range n {
		s := start(t, rdb, claims.Options{})
		wg.Go(func() {
			c, _, err := s.Claim(context.Background(), fps, nil)
			if err != nil {
				t.Error(err)
				return
			}
			held[i] = c.Fps()
		})
	}
	wg.Wait()
	count := map[uint64]int{}
	for _, h := range held {
		for _, fp := range h {
			count[fp]++
		}
	}
	for _, fp := range fps {
		if count[fp] != 1 {
			t.Fatalf("id %d held by %d instances", fp, count[fp])
		}
	}
}

// TestDeadHolder: an instance that dies holding ids (its liveness key
// expires) is taken over after Grace: the ids ClickHouse has become
// duplicates, the others are let go, and the waiter is told.
func TestDeadHolder(t *testing.T) {
	rdb := client(t, testenv.Redis(t).Addr())
	var asked []uint64
	o := claims.Options{LiveTTL: 400 * time.Millisecond, Grace: 100 * time.Millisecond,
		Committed: func(_ context.Context, fps []uint64) (map[uint64]bool, error) {
			asked = append(asked, fps...)
			return map[uint64]bool{1: true}, nil
		}}
	a, b := start(t, rdb, o), start(t, rdb, o)
	claim(t, a.Set, 1, 2)
	a.kill() // gone without settling; Run's end deletes its liveness key
	cb, vb := claim(t, b.Set, 1, 2)
	if !slices.Equal(vb, []dedup.Verdict{inFlight, inFlight}) {
		t.Fatalf("B: %v", vb)
	}
	began := time.Now()
	ok, err := cb.Wait(t.Context())
	if ok || err != nil {
		t.Errorf("wait on a dead holder with one id committed: %v %v, want false", ok, err)
	}
	if took := time.Since(began); took < o.Grace {
		t.Errorf("settled after %v, before the grace of %v", took, o.Grace)
	}
	slices.Sort(asked)
	if !slices.Equal(asked, []uint64{1, 2}) {
		t.Errorf("looked up %v in ClickHouse, want 1 and 2", asked)
	}
	if _, v := claim(t, b.Set, 1, 2); !slices.Equal(v, []dedup.Verdict{duplicate, fresh}) {
		t.Errorf("after the takeover: %v, want the committed id a duplicate and the other new", v)
	}

	// A holder whose key simply expires (killed, no Run to delete it).
	c := claims.New(rdb, o)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	claim(t, c, 5)
	cb, _ = claim(t, b.Set, 5)
	began = time.Now()
	if _, err := cb.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < o.Grace {
		t.Errorf("expired holder settled after %v", took)
	}
}

// TestRedisDown: no claim without Redis, and an instance that cannot renew
// its liveness key stops claiming even when Redis answers again before it
// renews.
func TestRedisDown(t *testing.T) {
	r := testenv.Redis(t)
	rdb := client(t, r.Addr())
	a := start(t, rdb, claims.Options{LiveTTL: 400 * time.Millisecond})
	claim(t, a.Set, 1)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Claim(t.Context(), []uint64{2}, nil); err == nil {
		t.Error("claim with Redis stopped: no error")
	}
	time.Sleep(300 * time.Millisecond)
	if _, _, err := a.Claim(t.Context(), []uint64{3}, nil); !errors.Is(err, claims.ErrNotLive) {
		t.Errorf("claim after the liveness key went unrenewed: %v, want ErrNotLive", err)
	}
}

// TestOwnHoldInFlight: an id this instance holds for a request whose
// outcome is not settled yet is in flight for the next request, not a
// duplicate: if the first fails, the second learns it and asks for a
// resend (a duplicate verdict would have lost the event).
func TestOwnHoldInFlight(t *testing.T) {
	rdb := client(t, testenv.Redis(t).Addr())
	a := start(t, rdb, claims.Options{})
	first, _ := claim(t, a.Set, 7)
	second, v := claim(t, a.Set, 7)
	if !slices.Equal(v, []dedup.Verdict{inFlight}) {
		t.Fatalf("the same instance's unsettled hold: %v, want in flight", v)
	}
	if err := first.Settle(t.Context(), committed(false)); err != nil {
		t.Fatal(err)
	}
	if ok, err := second.Wait(t.Context()); ok || err != nil {
		t.Errorf("wait on a failed hold of this instance: %v %v, want false", ok, err)
	}
	if _, v := claim(t, a.Set, 7); !slices.Equal(v, []dedup.Verdict{fresh}) {
		t.Errorf("after the failure: %v, want new", v)
	}
}
