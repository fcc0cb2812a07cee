package dedup

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemorySteady reports what a million remembered ids cost while
// the set turns over (every bucket full, the oldest expiring as a new one
// fills: a collector at a steady rate), averaged over two horizons, in the
// public API only so that other versions of the set can run it.
func BenchmarkMemorySteady(b *testing.B) {
	const buckets, perBucket = 24, 50_000
	for range b.N {
		now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		var base runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&base)
		s := New(Options{Horizon: 2 * time.Hour, Buckets: buckets, Now: func() time.Time { return now }})
		ids := make([]uint64, 1000)
		next := uint64(1)
		var sum, samples float64
		for bucket := range 3 * buckets {
			for i := 0; i < perBucket; i += len(ids) {
				for j := range ids {
					ids[j] = next * 0x9e3779b97f4a7c15
					next++
				}
				s.Add(now, ids...)
				now = now.Add(5 * time.Minute / (perBucket / 1000))
			}
			if bucket >= buckets && bucket%3 == 0 {
				var m runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m)
				sum += float64(m.HeapAlloc-base.HeapAlloc) / float64(s.Stats().Entries) * 1e6 / (1 << 20)
				samples++
			}
		}
		b.ReportMetric(sum/samples, "MiB/million")
		runtime.KeepAlive(s)
	}
}

// BenchmarkCheckCommit reports the cost of one new id end to end, checked
// and settled as committed, in a full set that turns over (24 buckets of
// 250 000 ids, the oldest expiring as a new one fills), in the public API
// only so that other versions of the set can run it.
func BenchmarkCheckCommit(b *testing.B) {
	const buckets, perBucket, batch = 24, 250_000, 5000
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	width := time.Minute / buckets
	s := New(Options{Horizon: time.Minute, Buckets: buckets, Now: func() time.Time { return now }})
	ids := make([]uint64, batch)
	next := uint64(1)
	round := func() {
		for j := range ids {
			ids[j] = next * 0x9e3779b97f4a7c15
			next++
		}
		c, _ := s.Check(ids, nil)
		s.Settle(c, true)
		now = now.Add(width / (perBucket / batch))
	}
	for range 2 * buckets * perBucket / batch {
		round()
	}
	b.ResetTimer()
	for range b.N {
		round()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/id")
}
