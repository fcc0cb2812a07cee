package chstore

import (
	"testing"
	"time"

	"github.com/clickagg/clickagg"
)

// Approx mode's candidates stay within the budget over long ranges, and
// are each minute's n over short ones.
func TestPerMinute(t *testing.T) {
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		span time.Duration
		n    int
		want int
	}{
		{time.Hour, 100, 100},
		{24 * time.Hour, 100, 100},
		{24 * time.Hour, 1000, 1000},
		{7 * 24 * time.Hour, 1000, 198},
		{31 * 24 * time.Hour, 1000, 44},
		{31 * 24 * time.Hour, 5, 5},
		{366 * 24 * time.Hour, 1000, 10},
	} {
		q := clickagg.TopQuery{Range: clickagg.Range{From: from, To: from.Add(tc.span)}, N: tc.n}
		got := perMinute(q)
		if got != tc.want {
			t.Errorf("%v, n %d: %d per minute, want %d", tc.span, tc.n, got, tc.want)
		}
		if minutes := int(tc.span / time.Minute); got > 10 && got*minutes > candidateBudget {
			t.Errorf("%v, n %d: %d candidates, over the budget", tc.span, tc.n, got*minutes)
		}
	}
}
