package main

import (
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/clickagg/clickagg/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestFitTwoSeparatesTimeFromBacklog(t *testing.T) {
	var ss []sample
	for i := range 60 {
		at := time.Duration(i) * 10 * time.Second
		backlog := float64((i * 7919) % 50_000) // varies, not with time
		ss = append(ss, sample{at: at, liveMiB: 60 + 0.25*at.Minutes() + 3e-4*backlog, buffered: backlog})
	}
	b, c, ok := fitTwo(ss, func(s sample) float64 { return s.liveMiB }, func(s sample) float64 { return s.buffered })
	if !ok || math.Abs(b-0.25) > 1e-9 || math.Abs(c-3e-4) > 1e-12 {
		t.Fatalf("fitTwo = %v, %v, %v; want 0.25 per minute, 3e-4 per row", b, c, ok)
	}
	ss[3].buffered = math.NaN()
	if _, _, ok := fitTwo(ss, func(s sample) float64 { return s.liveMiB }, func(s sample) float64 { return s.buffered }); ok {
		t.Fatal("a fit over an unknown value reported ok")
	}
}

func TestMedianSlopeIgnoresABurst(t *testing.T) {
	var ss []sample
	for i := range 30 {
		ss = append(ss, sample{at: time.Duration(i) * time.Minute, rssMiB: 100})
	}
	ss[10].rssMiB, ss[11].rssMiB = 300, 280
	if m := medianSlope(ss, func(s sample) float64 { return s.rssMiB }); m != 0 {
		t.Fatalf("median slope %v, want 0", m)
	}
}

func TestAcceptedRateIsTheMedianStep(t *testing.T) {
	ss := []sample{{at: 0, accepted: 0}, {at: 10 * time.Second, accepted: 1000}, {at: 20 * time.Second, accepted: 5000},
		{at: 30 * time.Second, accepted: 6000}, {at: 40 * time.Second, accepted: math.NaN()}}
	if r := acceptedRate(ss); r != 100 {
		t.Fatalf("acceptedRate = %v, want 100 (steps 100, 400, 100; the unknown step left out)", r)
	}
	if r := acceptedRate(ss[:1]); !math.IsNaN(r) {
		t.Fatalf("acceptedRate of one sample = %v, want NaN", r)
	}
}

func TestSettledPollsUntilBack(t *testing.T) {
	counts := []float64{48, 40, 17}
	i := 0
	s, _, back := settled(time.Minute, func() sample { i++; return sample{goroutines: counts[min(i, len(counts))-1]} }, 16)
	if !back || s.goroutines != 17 || i != 3 {
		t.Fatalf("settled = %v goroutines, back %v after %d samples; want 17, true, 3", s.goroutines, back, i)
	}
	if _, _, back := settled(10*time.Millisecond, func() sample { return sample{goroutines: 48} }, 16); back {
		t.Fatal("settled reported back for a count that stays up")
	}
}

func TestMergedRowsReadsClickHouse(t *testing.T) {
	db := testenv.ClickHouse(t)
	c := &http.Client{Timeout: 10 * time.Second}
	before, err := mergedRows(c, db.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Exec(t, db, "CREATE TABLE "+db.Database+".t (x UInt64) ENGINE = MergeTree ORDER BY x")
	for range 3 {
		testenv.Exec(t, db, "INSERT INTO "+db.Database+".t SELECT number FROM system.numbers LIMIT 1000")
	}
	testenv.Exec(t, db, "OPTIMIZE TABLE "+db.Database+".t FINAL")
	after, err := mergedRows(c, db.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 3000 {
		t.Fatalf("MergedRows went %v -> %v after merging 3000 rows", before, after)
	}
	if v, err := mergedRows(c, "http://127.0.0.1:"+strconv.Itoa(testenv.FreePort(t))); err == nil || !math.IsNaN(v) {
		t.Fatalf("mergedRows with nothing listening = %v, %v; want NaN and an error", v, err)
	}
	ss := []sample{{accepted: 0, merged: before}, {accepted: math.NaN(), merged: 1}, {accepted: 1000, merged: before + 5000}}
	if r := mergedPerEvent(ss); r != 5 {
		t.Fatalf("mergedPerEvent = %v, want 5 (the unknown sample left out)", r)
	}
}
