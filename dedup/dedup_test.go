package dedup

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestCheckSettle(t *testing.T) {
	c := &clock{time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	s := New(Options{Now: c.now})
	a, v := s.Check([]uint64{1, 2, 1}, nil)
	if !slices.Equal(v, []Verdict{Fresh, Fresh, Duplicate}) {
		t.Fatalf("first request: %v", v)
	}
	b, v := s.Check([]uint64{2, 3}, nil)
	if !slices.Equal(v, []Verdict{InFlight, Fresh}) {
		t.Fatalf("while the first is in flight: %v", v)
	}
	s.Settle(a, true)
	if !b.Wait() {
		t.Fatal("b waits on a, which committed")
	}
	s.Settle(b, true)
	if _, v := s.Check([]uint64{1, 2, 3, 4}, nil); !slices.Equal(v, []Verdict{Duplicate, Duplicate, Duplicate, Fresh}) {
		t.Fatalf("after commits: %v", v)
	}
	if st := s.Stats(); st.Entries != 3 || st.Pending != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A failed commit releases its ids: the retry is new, and a request that
// found them in flight learns it must be retried.
func TestFailedCommitReleases(t *testing.T) {
	s := New(Options{})
	a, _ := s.Check([]uint64{7}, nil)
	b, v := s.Check([]uint64{7}, nil)
	if v[0] != InFlight {
		t.Fatalf("verdict %v", v)
	}
	s.Settle(a, false)
	if b.Wait() {
		t.Fatal("Wait reported success for a failed holder")
	}
	s.Settle(b, true)
	if _, v := s.Check([]uint64{7}, nil); v[0] != Fresh {
		t.Fatalf("retry after a failed commit: %v", v)
	}
}

func TestHorizon(t *testing.T) {
	c := &clock{time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	s := New(Options{Horizon: time.Hour, Buckets: 6, Now: c.now})
	s.Add(c.t, 1)
	c.t = c.t.Add(50 * time.Minute)
	s.Add(c.t, 2)
	if _, v := s.Check([]uint64{1}, nil); v[0] != Duplicate {
		t.Fatal("forgot within the horizon")
	}
	c.t = c.t.Add(21 * time.Minute) // id 1 is 71 minutes old: past the horizon and its 10-minute bucket
	if _, v := s.Check([]uint64{1, 2}, []Verdict{}); v[0] != Fresh || v[1] != Duplicate {
		t.Fatalf("after the horizon: %v", v)
	}
	// Reloaded ids older than the horizon are not kept.
	s.Add(c.t.Add(-2*time.Hour), 9)
	if _, v := s.Check([]uint64{9}, nil); v[0] != Fresh {
		t.Fatal("kept an id older than the horizon")
	}
	// Out-of-order Adds land in their own buckets.
	s.Add(c.t.Add(-30*time.Minute), 10)
	if _, v := s.Check([]uint64{10}, nil); v[0] != Duplicate {
		t.Fatal("lost an out-of-order add")
	}
}

func TestMaxEntriesEvictsOldest(t *testing.T) {
	c := &clock{time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	s := New(Options{Horizon: time.Hour, Buckets: 6, MaxEntries: 100, Now: c.now})
	for i := range 6 {
		ids := make([]uint64, 30)
		for j := range ids {
			ids[j] = uint64(i*100 + j)
		}
		s.Add(c.t, ids...)
		c.t = c.t.Add(10 * time.Minute)
	}
	st := s.Stats()
	if st.Entries > 100 || st.Evicted == 0 || st.HorizonSeconds >= 3600 {
		t.Fatalf("stats %+v", st)
	}
	if _, v := s.Check([]uint64{0, 529}, nil); v[0] != Fresh || v[1] != Duplicate {
		t.Fatalf("oldest should go first: %v", v)
	}
}

func TestFingerprintIsCityHash64(t *testing.T) {
	// SELECT cityHash64('abc'), cityHash64('') on ClickHouse
	if Fingerprint("abc") != 4220206313085259313 || Fingerprint("") != 11160318154034397263 {
		t.Fatal("Fingerprint differs from ClickHouse's cityHash64")
	}
}

// The table keeps every id through its rebuilds, fingerprints 0 and all
// ones included, and finds none it was not given.
func TestTableKeepsIDs(t *testing.T) {
	s := New(Options{})
	var ids []uint64
	for i := range uint64(100_000) {
		ids = append(ids, i*0x9e3779b97f4a7c15)
	}
	ids = append(ids, 1, ^uint64(0), 0xff, 0x200)
	s.Add(time.Now(), ids...)
	if st := s.Stats(); st.Entries != int64(len(ids)) {
		t.Fatalf("%d entries, want %d", st.Entries, len(ids))
	}
	_, v := s.Check(ids, nil)
	for i, x := range v {
		if x != Duplicate {
			t.Fatalf("lost id %#x", ids[i])
		}
	}
	for i := range uint64(100_000) {
		if _, v := s.Check([]uint64{i*0x9e3779b97f4a7c15 + 0x100}, nil); v[0] != Fresh {
			t.Fatalf("has %#x, never added", i*0x9e3779b97f4a7c15+0x100)
		}
	}
}

// Dead slots are passed over, reused and swept: an id whose bucket expired
// is new again however long ago that was (a tag comes round every 254
// buckets), and the table does not grow with what expired.
func TestExpiredSlotsSwept(t *testing.T) {
	c := &clock{time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	s := New(Options{Horizon: time.Hour, Buckets: 6, Now: c.now})
	for round := range 600 { // 600 buckets of 10 min
		ids := make([]uint64, 200)
		for j := range ids {
			ids[j] = uint64(round%300*1000+j) * 0x9e3779b97f4a7c15
		}
		claim, v := s.Check(ids[:1], nil)
		if round >= 300 && v[0] != Fresh {
			t.Fatalf("round %d: an id from 300 buckets ago is still known: %v", round, v)
		}
		s.Settle(claim, false)
		s.Add(c.t, ids...)
		c.t = c.t.Add(10 * time.Minute)
	}
	if st := s.Stats(); st.Entries > 7*200 {
		t.Errorf("%d entries, want at most 7 buckets of 200", st.Entries)
	}
	slots := 0
	for i := range s.shards {
		slots += len(s.shards[i].slots)
	}
	if slots > 256*minSlots+7*200*2 {
		t.Errorf("%d slots for at most 1400 live ids", slots)
	}
}

// Requests checking and settling at once on every shard: each id is
// accepted once.
func TestConcurrentChecks(t *testing.T) {
	s := New(Options{})
	var wg sync.WaitGroup
	var fresh atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]uint64, 500)
			for round := range 200 {
				for j := range ids {
					ids[j] = Fingerprint(strconv.Itoa((round*500 + j + g*250) % 60_000))
				}
				c, v := s.Check(ids, nil)
				for _, x := range v {
					if x == Fresh {
						fresh.Add(1)
					}
				}
				s.Settle(c, true) // as the collector: commit, settle, then wait
				c.Wait()
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); fresh.Load() != 60_000 || st.Entries != 60_000 || st.Pending != 0 {
		t.Fatalf("%d fresh, stats %+v, want 60000 ids once each", fresh.Load(), st)
	}
}

// BenchmarkMemoryPerMillion reports what a million remembered ids cost.
func BenchmarkMemoryPerMillion(b *testing.B) {
	const n = 1_000_000
	var before, after runtime.MemStats
	for range b.N {
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := New(Options{MaxEntries: 2 * n})
		ids := make([]uint64, 1000)
		now := time.Now()
		for i := 0; i < n; i += len(ids) {
			for j := range ids {
				ids[j] = Fingerprint(string(rune(i+j)))*31 + uint64(i+j)
			}
			s.Add(now, ids...)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB/million")
		runtime.KeepAlive(s)
	}
}

// BenchmarkCheck reports the cost of checking one new id against a full set
// (24 buckets, 6 M ids, as at 100k events/s over a 1 min horizon).
func BenchmarkCheck(b *testing.B) {
	const buckets, perBucket, batch = 24, 250_000, 5000
	now := time.Now()
	s := New(Options{Horizon: time.Minute, Buckets: buckets, Now: func() time.Time { return now }})
	ids := make([]uint64, perBucket)
	for k := range buckets {
		for j := range ids {
			ids[j] = Fingerprint(strconv.Itoa(k*perBucket + j))
		}
		s.Add(now.Add(-time.Minute+time.Duration(k+1)*s.width-time.Nanosecond), ids...)
	}
	if st := s.Stats(); st.Entries < buckets*perBucket {
		b.Fatalf("set holds %d ids, want %d", st.Entries, buckets*perBucket)
	}
	// Released, not committed: the same fresh ids serve every round.
	fresh := make([]uint64, batch)
	for j := range fresh {
		fresh[j] = Fingerprint("new-" + strconv.Itoa(j))
	}
	var out []Verdict
	b.ResetTimer()
	for range b.N {
		var c *Claim
		c, out = s.Check(fresh, out)
		s.Settle(c, false)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/id")
}

// SettleEach keeps the committed ids of a partly failed claim (its other
// ids are free again); a waiter learns the outcome of the ids it waited
// for: one that failed must be resent, one that committed need not.
func TestSettleEach(t *testing.T) {
	s := New(Options{})
	c, v := s.Check([]uint64{1, 2, 3, 4}, nil)
	if v[0] != Fresh || v[3] != Fresh {
		t.Fatalf("verdicts %v", v)
	}
	onFailed, v2 := s.Check([]uint64{1, 9}, nil)
	onCommitted, v4 := s.Check([]uint64{2, 10}, nil)
	if v2[0] != InFlight || v4[0] != InFlight {
		t.Fatalf("verdicts %v and %v", v2, v4)
	}
	s.SettleEach(c, func(fp uint64) bool { return fp%2 == 0 })
	if onFailed.Wait() {
		t.Error("a waiter on an id that failed saw it committed")
	}
	if !onCommitted.Wait() {
		t.Error("a waiter on an id that committed saw it failed")
	}
	s.Settle(onFailed, false)
	s.Settle(onCommitted, false)
	_, v3 := s.Check([]uint64{1, 2, 3, 4}, nil)
	want := []Verdict{Fresh, Duplicate, Fresh, Duplicate}
	for i := range want {
		if v3[i] != want[i] {
			t.Errorf("after SettleEach: verdicts %v, want %v", v3, want)
			break
		}
	}
}

// An id settled in a newer bucket than the window a concurrent Check
// started with is still a duplicate to that Check: the clock moves 10 s on
// every call (buckets of 28 s), and two requesters send the same new ids,
// so Checks and Settles keep straddling bucket boundaries.
func TestWindowMovesDuringCheck(t *testing.T) {
	var ticks atomic.Int64
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	s := New(Options{Horizon: 10 * time.Hour, Buckets: 128, Now: func() time.Time {
		return start.Add(time.Duration(ticks.Add(1)) * 10 * time.Second)
	}})
	const rounds, size = 300, 500
	var fresh atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]uint64, size)
			for r := range rounds {
				for i := range ids {
					ids[i] = Fingerprint(strconv.Itoa(r*size + i))
				}
				c, v := s.Check(ids, nil)
				for _, x := range v {
					if x == Fresh {
						fresh.Add(1)
					}
				}
				s.Settle(c, true)
				c.Wait()
			}
		}()
	}
	wg.Wait()
	if fresh.Load() != rounds*size {
		t.Fatalf("%d fresh verdicts for %d ids: a settled id was taken for new", fresh.Load(), rounds*size)
	}
}

// A claim's ids stay held while their shard is rebuilt under them (the
// slots it noted move): settling finds them again, committed ones are
// remembered and failed ones free.
func TestSettleAfterRebuild(t *testing.T) {
	s := New(Options{})
	inShard := func(k uint64) uint64 { return k<<8 | 7 }
	ok, failed := []uint64{inShard(1), inShard(2)}, []uint64{inShard(3)}
	cOK, _ := s.Check(ok, nil)
	cFailed, _ := s.Check(failed, nil)
	gen := s.shards[7].gen
	for k := uint64(100); k < 2100; k++ { // grows shard 7 past its table
		s.Add(time.Now(), inShard(k))
	}
	if s.shards[7].gen == gen {
		t.Fatal("shard 7 was not rebuilt")
	}
	if _, v := s.Check(append(ok, failed...), nil); !slices.Equal(v, []Verdict{InFlight, InFlight, InFlight}) {
		t.Fatalf("held ids after a rebuild: %v, want in flight", v)
	}
	s.Settle(cOK, true)
	s.Settle(cFailed, false)
	c, v := s.Check(append(ok, failed...), nil)
	if !slices.Equal(v, []Verdict{Duplicate, Duplicate, Fresh}) {
		t.Fatalf("after settling: %v, want committed ids duplicates and the failed one fresh", v)
	}
	s.Settle(c, false)
	if st := s.Stats(); st.Entries != 2000+2 || st.Pending != 0 {
		t.Fatalf("stats %+v, want 2002 ids and none pending", st)
	}
}

// Wait blocks while the id is held, and wakes when its holder settles.
func TestWaitBlocksUntilSettled(t *testing.T) {
	s := New(Options{})
	a, _ := s.Check([]uint64{5, 6}, nil)
	b, v := s.Check([]uint64{5}, nil)
	if v[0] != InFlight {
		t.Fatalf("verdict %v", v)
	}
	settled := make(chan struct{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(settled)
		s.Settle(a, true)
	}()
	if !b.Wait() {
		t.Fatal("the holder committed")
	}
	select {
	case <-settled:
	default:
		t.Fatal("Wait returned before the holder settled")
	}
}
