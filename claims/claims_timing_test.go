package claims_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/claims"
	"github.com/clickagg/clickagg/internal/testenv"
)

// usedMemory is Redis's used_memory.
func usedMemory(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkClaimSettle claims batches of 5000 new ids and settles them as
// committed, as a request's commit does: ids/s through one client, and
// what Redis holds per committed id (bytes/id, from INFO memory).
func BenchmarkClaimSettle(b *testing.B) {
	r := testenv.Redis(b)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	s := claims.New(rdb, claims.Options{})
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	const batch = 5000
	fps := make([]uint64, batch)
	before := usedMemory(b, rdb)
	n := 0
	b.ResetTimer()
	for i := range b.N {
		for j := range fps {
			fps[j] = uint64(i)*batch + uint64(j) + 1
		}
		c, _, err := s.Claim(b.Context(), fps, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Settle(b.Context(), func(uint64) bool { return true }); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ids/s")
	b.ReportMetric((usedMemory(b, rdb)-before)/float64(n), "bytes/id")
	b.ReportMetric(0, "ns/op")
}
